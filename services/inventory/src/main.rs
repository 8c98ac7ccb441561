//! shop-inventory: stock on MySQL with atomic, idempotent reservations.

fn main() {}
