//! shop-inventory: stock on MySQL with atomic, idempotent reservations. The library holds the
//! domain (store), the HTTP API and its error type so the binary is only wiring.

pub mod api;
pub mod problem;
pub mod store;
