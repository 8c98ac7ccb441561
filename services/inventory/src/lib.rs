//! shop-inventory: stock on MySQL with atomic, idempotent reservations. The library holds the
//! domain (store) and the HTTP API (errors are `shop_runtime::Problem`s) so the binary is only wiring.

pub mod api;
pub mod batch;
pub mod faults;
pub mod store;
