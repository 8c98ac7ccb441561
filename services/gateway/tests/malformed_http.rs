//! Generated malformed HTTP/1.1 at the real `shop-gateway` process: thousands of requests built
//! from a valid one by seeded mutations of the shapes request smuggling and parser bugs come
//! from (Content-Length and Transfer-Encoding conflicts and obfuscations, bad chunk framing, bare
//! LF and obs-fold, control bytes, oversized and absurd values, odd request lines, random byte
//! flips), each on its own connection.
//!
//! Exists because request_hardening.rs pins the shapes found in review one by one; this asks the
//! general question for every shape at once and counts the cases (docs/reliability.md): the gateway
//! never answers a 5xx of its own to a malformed request, never forwards one client message as two
//! upstream requests (the smuggling signature: the body of each case carries a second, complete
//! request), and is alive and serving normally afterwards. `SHOP_FUZZ_HTTP_CASES` sets the number
//! of cases (default 1,000), `SHOP_FUZZ_HTTP_SEED` the seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use common::Gateway;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request as lines of a head and a body, before it is turned into bytes.
struct Req {
    line: String,
    headers: Vec<String>,
    body: Vec<u8>,
    eol: &'static str,
}

/// An upstream that records the target of every request it parses.
struct Targets {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn record(State(seen): State<Arc<Mutex<Vec<String>>>>, req: Request) -> &'static str {
    seen.lock().push(req.uri().to_string());
    "ok"
}

impl Targets {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = Router::new().fallback(record).with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    /// Targets received for case `n` (its requests carry `c=<n>`).
    fn of_case(&self, n: usize) -> Vec<String> {
        let mark = format!("c={n}");
        self.seen
            .lock()
            .iter()
            .filter(|t| t.split(['?', '&']).any(|p| p == mark))
            .cloned()
            .collect()
    }
}

/// The second request every case hides in its body: if the upstream ever receives it, one client
/// message became two upstream requests.
fn smuggled(case: usize) -> String {
    format!("GET /smuggled?c={case} HTTP/1.1\r\nHost: up\r\n\r\n")
}

impl Req {
    fn valid(case: usize) -> Self {
        let body = format!("0\r\n\r\n{}", smuggled(case)).into_bytes();
        Self {
            line: format!("POST /open?c={case} HTTP/1.1"),
            headers: vec![
                "Host: gw.test".into(),
                format!("Content-Length: {}", body.len()),
                "Content-Type: text/plain".into(),
                "Connection: close".into(),
            ],
            body,
            eol: "\r\n",
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(self.line.as_bytes());
        b.extend_from_slice(self.eol.as_bytes());
        for h in &self.headers {
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(self.eol.as_bytes());
        }
        b.extend_from_slice(self.eol.as_bytes());
        b.extend_from_slice(&self.body);
        b
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|h| {
            !h.to_ascii_lowercase()
                .starts_with(&name.to_ascii_lowercase())
        });
        self.headers.push(format!("{name}: {value}"));
    }
}

/// One mutation, named for the counts.
fn mutate(r: &mut Req, case: usize, rng: &mut StdRng) -> &'static str {
    let smuggled = smuggled(case);
    let n = r.body.len();
    match rng.random_range(0..22) {
        0 => {
            r.headers.push("Transfer-Encoding: chunked".into());
            "CL + TE: chunked"
        }
        1 => {
            let te = [
                " chunked",
                "chunked, identity",
                "identity, chunked",
                "xchunked",
                "Chunked",
                "chunked\t",
                "\"chunked\"",
                "chunked;q=1",
            ];
            r.set("Transfer-Encoding", te[rng.random_range(0..te.len())]);
            "obfuscated TE"
        }
        2 => {
            r.headers.push(format!("Content-Length: {}", n + 7));
            "two different CL"
        }
        3 => {
            r.headers.push(format!("Content-Length: {n}"));
            "two equal CL"
        }
        4 => {
            let cl = [
                "-1",
                "+5",
                "0x10",
                "1e3",
                "99999999999999999999",
                " 5",
                "5 5",
                "",
                "٥",
            ];
            r.set("Content-Length", cl[rng.random_range(0..cl.len())]);
            "absurd CL"
        }
        5 => {
            r.set("Content-Length", "0");
            "CL 0 with a body"
        }
        6 => {
            r.headers.retain(|h| !h.starts_with("Content-Length"));
            r.headers.push("Transfer-Encoding: chunked".into());
            let sizes = ["zz", "-5", "0x5", "5;ext=\"x", "ffffffffffffffffff", "5 "];
            r.body = format!(
                "{}\r\nhello\r\n0\r\n\r\n{smuggled}",
                sizes[rng.random_range(0..sizes.len())]
            )
            .into_bytes();
            "bad chunk size"
        }
        7 => {
            r.headers.retain(|h| !h.starts_with("Content-Length"));
            r.headers.push("Transfer-Encoding: chunked".into());
            r.body = format!("5\r\nhello\r\n{smuggled}").into_bytes();
            "chunked without its last chunk"
        }
        8 => {
            r.eol = "\n";
            "bare LF"
        }
        9 => {
            r.headers.push("X-Folded: a".into());
            r.headers.push(" continued".into());
            "obs-fold"
        }
        10 => {
            let ctl = ["\0", "\x01", "\x7f", "\r", "\x0b"];
            r.headers
                .push(format!("X-Ctl: a{}b", ctl[rng.random_range(0..ctl.len())]));
            "control byte in a value"
        }
        11 => {
            r.headers.push("Content-Length : 5".into());
            "space before the colon"
        }
        12 => {
            r.headers.push(format!(
                "X-Big: {}",
                "a".repeat(rng.random_range(8_000..70_000))
            ));
            "oversized header"
        }
        13 => {
            for i in 0..rng.random_range(100..400) {
                r.headers.push(format!("X-Many-{i}: v"));
            }
            "many headers"
        }
        14 => {
            let lines = [
                "POST  /open?c={c} HTTP/1.1",
                "post /open?c={c} HTTP/1.1",
                "POST /open?c={c} HTTP/1.0",
                "POST /open?c={c} HTTP/2.0",
                "POST /open?c={c}",
                "POST http://evil.test/open?c={c} HTTP/1.1",
                "POST * HTTP/1.1",
                "POST /open?c={c} HTTP/1.1 extra",
                "PO ST /open?c={c} HTTP/1.1",
                "POST /op\0en?c={c} HTTP/1.1",
                "POST /open?c={c}&%zz HTTP/1.1",
                "POST /%2e%2e/open?c={c} HTTP/1.1",
            ];
            r.line = lines[rng.random_range(0..lines.len())].replace("{c}", &case.to_string());
            "odd request line"
        }
        15 => {
            r.line = format!(
                "POST /open?c={case}&{} HTTP/1.1",
                "q".repeat(rng.random_range(10_000..100_000))
            );
            "very long target"
        }
        16 => {
            r.headers.retain(|h| !h.starts_with("Host"));
            "no Host"
        }
        17 => {
            r.headers.push("Host: other.test".into());
            "two Host"
        }
        18 => {
            r.headers.push("Expect: 100-continue".into());
            "Expect"
        }
        19 => {
            r.headers.retain(|h| !h.starts_with("Connection"));
            r.headers
                .push("Connection: keep-alive, Content-Length".into());
            "CL named in Connection"
        }
        20 => {
            r.headers.push("Transfer-Encoding: gzip, chunked".into());
            r.headers.retain(|h| !h.starts_with("Content-Length"));
            "TE gzip, chunked"
        }
        _ => {
            r.headers.push(format!("Content-Length: {n}, {n}"));
            "CL list"
        }
    }
}

/// Flips a few random bytes of the head (after the method, so most still look like requests).
fn flip(bytes: &mut [u8], head_len: usize, rng: &mut StdRng) {
    for _ in 0..rng.random_range(1..4) {
        let i = rng.random_range(4..head_len.max(5));
        if let Some(b) = bytes.get_mut(i) {
            *b = rng.random();
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it or goes quiet;
/// the status of the first answer, if any.
async fn exchange(gw: &Gateway, bytes: &[u8]) -> Option<u16> {
    let addr = gw
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before reading everything: a failed write is an answer.
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(1_500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => {
                got.extend_from_slice(&buf[..k]);
                if got.len() > 64 * 1024 {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn generated_malformed_requests_never_get_a_5xx_never_smuggle_and_never_stop_the_gateway() {
    let up = Targets::start().await;
    let yaml = format!(
        "routes:\n  - {{id: open, prefix: /open, upstreams: [\"{}\"], auth: public, timeout_ms: 2000}}\nproxy: {{retries: 0}}\n",
        up.url
    );
    // A generous rate limit: the cases come from one address as fast as they can.
    let gw = Gateway::start(
        &yaml,
        &[
            ("SHOP_RATE_LIMIT_PER_SECOND", "100000"),
            ("SHOP_RATE_LIMIT_BURST", "100000"),
        ],
    )
    .await;
    let cases: usize = shop_testkit::env_or("SHOP_FUZZ_HTTP_CASES", 1_000);
    let seed: u64 = shop_testkit::env_or("SHOP_FUZZ_HTTP_SEED", 0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut by_shape: BTreeMap<&str, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for case in 0..cases {
        let mut r = Req::valid(case);
        let mut shapes = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            shapes.push(mutate(&mut r, case, &mut rng));
        }
        let mut bytes = r.bytes();
        if rng.random_bool(0.15) {
            let head_len = bytes.len() - r.body.len();
            flip(&mut bytes, head_len, &mut rng);
            shapes.push("byte flips");
        }
        for s in &shapes {
            *by_shape.entry(s).or_default() += 1;
        }
        let status = exchange(&gw, &bytes).await;
        *statuses
            .entry(status.map_or_else(|| "closed".to_owned(), |s| s.to_string()))
            .or_default() += 1;
        results.push((case, shapes, status, bytes));
    }
    // Late forwards land too before the targets are read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (case, shapes, status, bytes) in &results {
        let targets = up.of_case(*case);
        // The smuggling signature: the request hidden in the body reached the upstream, or one
        // client message was forwarded twice.
        let smuggled = targets.iter().any(|t| t.starts_with("/smuggled"));
        let forwarded = targets.len();
        let bad_status = status.is_some_and(|s| s >= 500 && s != 502 && s != 504);
        // A 502/504 is the upstream's doing only if the gateway forwarded the request.
        let blamed_upstream = status.is_some_and(|s| s == 502 || s == 504) && forwarded == 0;
        if bad_status || smuggled || forwarded > 1 || blamed_upstream {
            failures.push(format!(
                "case {case} {shapes:?}: status {status:?}, upstream got {targets:?}; bytes {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
    }
    eprintln!(
        "{cases} malformed requests (seed {seed:#x}): by shape {by_shape:?}; answers {statuses:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed (seed {seed:#x}):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Alive and serving normally after all of it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gw.pid() as i32), None)
        .expect("the gateway process died during the malformed requests");
    let ok = reqwest::Client::new()
        .post(gw.url("/open"))
        .body("fine")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
