//! Test support shared by every integration test of the workspace.
//!
//! It exists so that all tests find the local stack the same way, fail the same loud way when a
//! server is missing (never skipping), isolate themselves with fresh databases and names, and start
//! our real binaries as child processes. Nothing here fakes a server: it only locates real ones.

pub mod clients;
pub mod cluster;
pub mod host_shop;
pub mod kafka;
pub mod lossy_link;
pub mod openapi;
pub mod process;
pub mod registry;
pub mod shop;
pub mod sse;
pub mod stack;

pub use nix::sys::signal::Signal;
pub use process::{Service, binary_path, free_port};
pub use stack::*;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A name unique to this test run, safe for databases, topics, namespaces and consumer groups
/// (lower-case letters, digits and `-`/`_` only, as given in `prefix`).
pub fn fresh_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// Environment variable `name` parsed as `T` (a test's size or seed), or `default` when it is unset;
/// panics naming the variable when it does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

/// `GET url` with `http`, its body as JSON; panics naming the URL, and showing the status and
/// body when it is not JSON, so a failing test says what the server answered.
pub async fn get_json(http: &reqwest::Client, url: impl AsRef<str>) -> serde_json::Value {
    let url = url.as_ref();
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {url} answered {status}, not JSON ({e}): {body}"))
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition (`/metrics`);
/// panics, showing the text, when it is absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics:\n{text}"))
}
