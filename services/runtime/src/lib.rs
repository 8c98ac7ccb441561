//! Shared runtime for the six shopkeeper services: config, logs, tracing, health, metrics, shutdown, registry client, resilient HTTP client.
