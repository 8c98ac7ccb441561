//! shop-registry: Eureka-compatible discovery registry with fast lease expiry and peer replication.
//! The binary in main.rs wires these modules to the shared runtime.

pub mod api;
pub mod dashboard;
pub mod openapi;
pub mod replication;
pub mod store;
