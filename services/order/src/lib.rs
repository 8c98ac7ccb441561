//! shop-order: orders on MySQL with Idempotency-Key semantics, stock reserved in inventory
//! behind a circuit breaker, and a transactional outbox relayed to Kafka. The library holds the
//! domain so the binary is only wiring.

pub mod api;
pub mod inventory;
pub mod lease;
pub mod model;
pub mod reconcile;
pub mod relay;
pub mod store;
