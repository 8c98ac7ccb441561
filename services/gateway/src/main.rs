//! shop-gateway: the single entry point of a shop: discovery routing, JWT security, rate limits, breakers.

fn main() {}
