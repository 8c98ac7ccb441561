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

/// What a service answered: status, headers and body as JSON (`Null` when the body is empty or
/// not JSON), for a test that checks all three.
#[derive(Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

impl Answer {
    /// The header `name` as text, `None` when absent (panics when it is not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| {
            v.to_str()
                .unwrap_or_else(|e| panic!("header {name} is not text ({e}): {v:?}"))
        })
    }
}

/// Sends `req` and reads the answer whatever its status; panics naming the method, URL and the
/// request's body when it cannot be sent or its body cannot be read, so a failing test says which
/// call failed.
pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let (http, req) = req.build_split();
    let req = req.unwrap_or_else(|e| panic!("cannot build the request: {e}"));
    let call = format!(
        "{} {} {}",
        req.method(),
        req.url(),
        req.body()
            .and_then(|b| b.as_bytes())
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
            .unwrap_or_default()
    );
    let resp = http
        .execute(req)
        .await
        .unwrap_or_else(|e| panic!("{call}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{call}: reading the body: {e}"));
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

/// [`send`], the status and the JSON body (`Null` when not JSON).
pub async fn send_json(req: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let a = send(req).await;
    (a.status, a.json)
}

/// `POST url` with the JSON `body` (see [`send_json`]).
pub async fn post_json(
    http: &reqwest::Client,
    url: impl AsRef<str>,
    body: &serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    send_json(http.post(url.as_ref()).json(body)).await
}

/// `GET url` as text; panics naming the URL when it cannot be read.
pub async fn get_text(http: &reqwest::Client, url: impl AsRef<str>) -> String {
    let url = url.as_ref();
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

/// The Prometheus text a service at `base` (`http://host:port`) exposes on `/metrics`; panics
/// naming the URL when it does not answer 200.
pub async fn metrics(http: &reqwest::Client, base: &str) -> String {
    let url = format!("{base}/metrics");
    let resp = http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let text = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
    assert_eq!(status, reqwest::StatusCode::OK, "GET {url}: {text}");
    text
}

/// The value of the sample written exactly `series` (a name, with its labels in braces as the
/// exposition writes them, e.g. `circuit_breaker_state{service="order"}`) in a Prometheus text;
/// `None` when absent.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition (`/metrics`);
/// panics, showing the text, when it is absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    metric_sample(text, name).unwrap_or_else(|| panic!("{name} not on /metrics:\n{text}"))
}
