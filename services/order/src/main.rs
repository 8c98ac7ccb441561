//! shop-order: orders on MySQL with idempotency keys and a transactional outbox to Kafka.

fn main() {}
