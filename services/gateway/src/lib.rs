//! shop-gateway library: the pieces of the single entry point of a shop (routing table, JWT security,
//! rate limiting, the streaming proxy, TLS termination with certificate reload), kept in a library so
//! each is unit-tested on its own and the binary only wires them to the shared runtime.

pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod h1;
pub mod openapi;
pub mod outgoing;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod redirect;
pub mod routes;
pub mod server;
pub mod storefront;
pub mod timer;
pub mod tls;
pub mod upstream;
