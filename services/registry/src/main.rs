//! shop-registry: Eureka-compatible discovery registry with fast lease expiry and peer replication.

fn main() {}
