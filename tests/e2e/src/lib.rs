//! shop-e2e holds no library code: its integration tests in `tests/` drive the whole shop
//! (registry, product, inventory, order, notification) as real processes against the real stack.
