//! Integration tests of what a hostile or careless client can make the real `shop-gateway` process
//! do on the request side: path tricks that reach a protected route's upstream path through a
//! public route, framing tricks that could desynchronise the upstream connection (request
//! smuggling), a client that announces a body and never sends it, and more connections than the
//! gateway's limit.
//!
//! Exists because each of these was a defect found in review: the tests speak raw HTTP/1.1 to the
//! gateway (so the bytes are exactly the attacker's) and, where it matters, a raw TCP upstream
//! records the bytes the gateway sent on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::Gateway;
use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A raw upstream that records, per connection, every byte it received until the gateway went
/// quiet for 300 ms, then answers `200 ok` and closes (the `open` route's timeout leaves that
/// answer 1.7 s to spare on a loaded machine).
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    log.lock().push(String::from_utf8_lossy(&got).into_owned());
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        Recorder { url, seen, task }
    }

    /// Everything received so far, all connections joined.
    fn received(&self) -> String {
        self.seen.lock().concat()
    }
}

/// Sends `bytes` on a new connection to the gateway and returns what came back until the
/// gateway closed the connection (or `wait` passed).
/// A raw TCP connection to the gateway.
async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.svc.port()))
        .await
        .unwrap()
}

async fn raw(gw: &Gateway, bytes: &[u8], wait: Duration) -> String {
    let mut s = connect(gw).await;
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `req` on its own connection and asserts the gateway answered `status`.
async fn refused(gw: &Gateway, req: &str, status: u16) {
    let resp = raw(gw, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), status, "{req:?}: {resp}");
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn start(up: &Recorder) -> Gateway {
    let yaml = format!(
        r#"routes:
  - {{id: admin, prefix: /api/product/admin, upstreams: ["{u}"], auth: authenticated}}
  - {{id: product, prefix: /api/product, upstreams: ["{u}"]}}
  - {{id: open, prefix: /open, upstreams: ["{u}"], auth: public, timeout_ms: 2000}}
proxy: {{retries: 0}}
"#,
        u = up.url
    );
    Gateway::start(
        &yaml,
        &[("SHOP_JWT_SECRET", "request-hardening-secret-0123456789")],
    )
    .await
}

#[tokio::test]
async fn paths_that_upstreams_normalise_into_a_protected_route_are_refused() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let direct = raw(
        &gw,
        b"GET /api/product/admin HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&direct), 401, "{direct}");
    for path in [
        "/api/product/x/../admin",
        "/api/product/./admin",
        "/api/product/%2e%2e/product/admin",
        "/api/product/.%2E/product/admin",
        "/api/product/%61dmin",
        "/api/product/admin;x=1",
        "/api/product//admin",
        "/api/product/x%2F..%2Fadmin",
        "/api/product/x%5c..%5cadmin",
        "/api/product/x\\..\\admin",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
        let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
        let status = status_of(&resp);
        assert!(
            status == 400 || status == 401,
            "{path} must not pass as a public read of the product route: {resp}"
        );
        if status == 400 {
            assert!(resp.contains("application/problem+json"), "{path}: {resp}");
        }
    }
    assert_eq!(up.received(), "", "nothing reached the upstream");

    // An encoded unreserved character is the character itself (RFC 3986 §6.2.2.2): routed and
    // forwarded decoded, never refused (Java's URLEncoder writes `~` as `%7E`).
    let resp = raw(
        &gw,
        b"GET /api/product/%7Ejo%2Dx HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        up.received().contains("GET /api/product/~jo-x HTTP/1.1"),
        "forwarded decoded: {}",
        up.received()
    );

    // Ordinary paths (with an encoded space, a query, a trailing slash) still pass.
    let resp = raw(
        &gw,
        b"GET /api/product/a%20b/?q=../x HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[tokio::test]
async fn a_request_framed_by_both_transfer_encoding_and_content_length_cannot_smuggle() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n";
    let req = format!(
        "POST /open/a HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
    let status = status_of(&resp);
    let got = up.received();
    assert!(status == 400 || status == 200, "{resp}");
    if status == 200 {
        // Forwarded: then only with one framing, the whole body as one request.
        let head = got.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        let framings =
            head.matches("content-length:").count() + head.matches("transfer-encoding:").count();
        assert_eq!(framings, 1, "exactly one framing header upstream: {got}");
        assert!(!head.contains("content-length: 4"), "{got}");
    }
}

#[tokio::test]
async fn content_length_named_in_connection_keeps_the_upstream_framing() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: shop\r\n\r\n";
    let req = format!(
        "POST /open/a HTTP/1.1\r\nHost: shop\r\nConnection: close, content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
    let status = status_of(&resp);
    let got = up.received();
    assert!(status == 400 || status == 200, "{resp}");
    if status == 200 {
        let head = got.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-length: {}", smuggled.len()))
                || head.contains("transfer-encoding: chunked"),
            "the body is framed upstream: {got}"
        );
    }
}

#[tokio::test]
async fn a_client_that_announces_a_small_body_and_never_sends_it_is_timed_out() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let started = std::time::Instant::now();
    let resp = raw(
        &gw,
        b"POST /open/a HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly a part",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status_of(&resp), 408, "{resp}");
    assert!(resp.contains("application/problem+json"), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn oversized_request_heads_are_refused_at_the_edge() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let big = "c".repeat(100 * 1024);
    let req =
        format!("GET /open/a HTTP/1.1\r\nHost: shop\r\nCookie: {big}\r\nConnection: close\r\n\r\n");
    let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 431, "{resp}");
    assert_eq!(up.received(), "", "nothing reached the upstream");

    // A head with a large token and cookies (16 KiB) still passes.
    let fair = "c".repeat(16 * 1024);
    let req = format!(
        "GET /open/a HTTP/1.1\r\nHost: shop\r\nCookie: {fair}\r\nConnection: close\r\n\r\n"
    );
    let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[tokio::test]
async fn a_client_cannot_choose_the_forwarded_host_by_leaving_out_host() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    for (req, want) in [
        (
            "GET /open/a HTTP/1.1\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /open/a HTTP/1.1\r\nHost: shop\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /open/a HTTP/1.1\r\nHost: shop/evil\r\nConnection: close\r\n\r\n",
            400,
        ),
        // HTTP/1.0 needs no Host; the client's X-Forwarded-Host is dropped all the same.
        (
            "GET /open/a HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
            200,
        ),
    ] {
        let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&resp), want, "{req:?}: {resp}");
        if want == 400 {
            assert!(resp.contains("application/problem+json"), "{resp}");
        }
        assert!(
            !up.received().contains("evil"),
            "{req:?} reached the upstream with the client's host: {}",
            up.received()
        );
    }
}

#[tokio::test]
async fn requests_with_unusable_framing_never_reach_the_upstream() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    for req in [
        "POST /open/a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "POST /open/a HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc",
        "POST /open/a HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /open/a HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nX-Folded: a\r\n b\r\n\r\nabc",
    ] {
        refused(&gw, req, 400).await;
    }
    assert_eq!(up.received(), "", "nothing reached the upstream");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_and_refusals_need_no_body() {
    let up = Recorder::start().await;
    let gw = start(&up).await;

    // Refused (a write without a token): the 401 comes without the body being sent.
    let resp = raw(
        &gw,
        b"POST /api/product/1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&resp), 401, "{resp}");

    // Accepted: `100 Continue` first, then the body goes through.
    let mut s = connect(&gw).await;
    s.write_all(b"POST /open/a HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("no 100 Continue: the client would wait")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(status_of(&rest), 200, "{rest}");
    assert!(up.received().ends_with("hello"), "{}", up.received());
}

#[tokio::test]
async fn requests_refused_by_authentication_still_count_against_the_clients_rate_limit() {
    let up = Recorder::start().await;
    let yaml = format!(
        "routes:\n  - {{id: p, prefix: /api/product, upstreams: [\"{}\"], rate_limit: {{per_second: 0.01, burst: 2}}}}\n",
        up.url
    );
    let gw = Gateway::start(
        &yaml,
        &[("SHOP_JWT_SECRET", "request-hardening-secret-0123456789")],
    )
    .await;
    let c = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c
            .post(gw.url("/api/product/1"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        assert_eq!(
            common::header(r.headers(), "content-type"),
            "application/problem+json"
        );
    }
    assert_eq!(statuses, [401, 401, 429, 429], "bad tokens are not free");
}

/// Starts a request with a chunked body, sends one chunk, then stalls (or, with `abort`, closes
/// the connection); returns the status the gateway answered (0: none).
async fn stalled_upload(gw: &Gateway, abort: bool) -> u16 {
    let mut s = connect(gw).await;
    s.write_all(
        b"POST /echo/upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    if abort {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        tokio::time::sleep(Duration::from_millis(200)).await;
        return 0;
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    status_of(&String::from_utf8_lossy(&got))
}

#[tokio::test]
async fn clients_that_stall_or_abort_their_upload_do_not_open_the_upstreams_breaker() {
    let up = common::Upstream::start("echo").await;
    let yaml = format!(
        "routes:\n  - {{id: echo, prefix: /echo, upstreams: [\"{}\"], auth: public, timeout_ms: 1000}}\nproxy: {{retries: 0}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = reqwest::Client::new();
    for abort in [false, true] {
        let statuses = futures::future::join_all((0..6).map(|_| stalled_upload(&gw, abort))).await;
        if !abort {
            assert!(
                statuses.iter().all(|&s| s == 408),
                "a stalled upload is the client's timeout: {statuses:?}"
            );
        }
        let r = c.get(gw.url("/echo/x")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "abort={abort}: the upstream is healthy: {}",
            r.text().await.unwrap()
        );
    }
}

#[tokio::test]
async fn a_protected_get_or_host_route_is_not_bypassed_by_head_or_a_trailing_dot() {
    let up = Recorder::start().await;
    let yaml = format!(
        r#"routes:
  - {{id: vhost, prefix: /v, upstreams: ["{u}"], host: admin.example, auth: authenticated}}
  - {{id: v, prefix: /v, upstreams: ["{u}"], auth: public}}
  - {{id: reads, prefix: /r, upstreams: ["{u}"], methods: [GET], auth: authenticated}}
  - {{id: r, prefix: /r, upstreams: ["{u}"], auth: public}}
"#,
        u = up.url
    );
    let gw = Gateway::start(
        &yaml,
        &[("SHOP_JWT_SECRET", "request-hardening-secret-0123456789")],
    )
    .await;
    for req in [
        "GET /r/1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        "HEAD /r/1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        "GET /v/1 HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
        "GET /v/1 HTTP/1.1\r\nHost: ADMIN.example.:8080\r\nConnection: close\r\n\r\n",
    ] {
        refused(&gw, req, 401).await;
    }
    assert_eq!(up.received(), "", "nothing reached the upstream");
}

#[tokio::test]
async fn request_trailers_cannot_carry_a_subject_or_other_headers_upstream() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let req = "POST /open/a HTTP/1.1\r\nHost: shop\r\nTE: trailers\r\nTrailer: X-User-Id\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
               5\r\nhello\r\n0\r\nX-User-Id: mallory\r\n\r\n";
    let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let got = up.received();
    assert!(got.contains("hello"), "{got}");
    assert!(!got.to_ascii_lowercase().contains("x-user-id"), "{got}");
}

#[tokio::test]
async fn a_client_request_id_with_odd_bytes_is_replaced_not_forwarded() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let long = "x".repeat(200);
    for id in ["a b", "caf\u{e9}", "a\"<script>", "one,two", long.as_str()] {
        let req = format!(
            "GET /open/a HTTP/1.1\r\nHost: shop\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
        );
        let resp = raw(&gw, req.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&resp), 200, "{resp}");
        let echoed = resp
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap();
        assert_eq!(echoed.len(), 36, "a UUID instead of {id:?}: {echoed}");
    }
    assert!(
        !up.received().contains("script") && !up.received().contains("xxxxxxxx"),
        "{}",
        up.received()
    );
}

/// Reads one response head from a kept-alive connection: its status, None when nothing complete
/// arrived within `wait`.
async fn status_within(s: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read_head).await.ok()?;
    let status = status_of(&String::from_utf8_lossy(&got));
    (status != 0).then_some(status)
}

#[tokio::test]
async fn at_its_connection_limit_the_gateway_takes_a_new_connection_only_when_one_closes() {
    let up = common::Upstream::start("limited").await;
    let yaml = format!(
        "routes:\n  - {{id: up, prefix: /up, upstreams: [\"{}\"], auth: public}}\nproxy: {{max_connections: 2}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml, &[("SHOP_GATEWAY_WORKERS", "1")]).await;
    // The start-up readiness probe's connection is closed once its client is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let req = b"GET /up/x HTTP/1.1\r\nHost: shop\r\n\r\n";
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = connect(&gw).await;
        s.write_all(req).await.unwrap();
        assert_eq!(
            status_within(&mut s, Duration::from_secs(5)).await,
            Some(200),
            "connection {i} is within the limit"
        );
        held.push(s);
    }
    // The kernel still completes the handshake (listen backlog), but the gateway does not take the
    // connection while both kept-alive ones are open.
    let mut third = connect(&gw).await;
    third.write_all(req).await.unwrap();
    assert_eq!(
        status_within(&mut third, Duration::from_millis(700)).await,
        None,
        "a third connection is served beyond the limit of 2"
    );
    drop(held.pop());
    assert_eq!(
        status_within(&mut third, Duration::from_secs(5)).await,
        Some(200),
        "once one closes, the waiting connection is taken and answered"
    );
    // The connection still held keeps working.
    let s = held.first_mut().unwrap();
    s.write_all(req).await.unwrap();
    assert_eq!(status_within(s, Duration::from_secs(5)).await, Some(200));
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_refused_after_a_bounded_amount() {
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let mut s = connect(&gw).await;
    // 100 KiB of one header line that never ends: the head limit (32 KiB) applies to an
    // unfinished head too, so the gateway gives up on it instead of buffering it (hyper's read
    // buffer alone would grow to about 400 KiB per connection).
    s.write_all(b"GET /open/a HTTP/1.1\r\nHost: shop\r\nX-Fill: ")
        .await
        .unwrap();
    let fill = vec![b'f'; 100 * 1024];
    let _ = s.write_all(&fill).await;
    assert_eq!(
        status_within(&mut s, Duration::from_secs(5)).await,
        Some(431),
        "an unfinished head over the head limit is refused"
    );
    assert_eq!(up.received(), "", "nothing reached the upstream");
}

#[tokio::test]
async fn only_a_trusted_proxy_may_say_the_request_came_over_https() {
    let req = b"GET /open/a HTTP/1.1\r\nHost: shop\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let up = Recorder::start().await;
    let gw = start(&up).await;
    let resp = raw(&gw, req, Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let got = up.received().to_ascii_lowercase();
    assert!(got.contains("x-forwarded-proto: http\r\n"), "{got}");
    assert!(
        !got.contains("x-forwarded-proto: https"),
        "a client's claim of https is not passed on: {got}"
    );

    let trusted = Recorder::start().await;
    let yaml = format!(
        "routes:\n  - {{id: open, prefix: /open, upstreams: [\"{}\"], auth: public, timeout_ms: 2000}}\nproxy: {{trusted_proxies: [\"127.0.0.0/8\"]}}\n",
        trusted.url
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let resp = raw(&gw, req, Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let got = trusted.received().to_ascii_lowercase();
    assert_eq!(
        got.matches("x-forwarded-proto:").count(),
        1,
        "one value: {got}"
    );
    assert!(
        got.contains("x-forwarded-proto: https\r\n"),
        "a trusted proxy's value is kept: {got}"
    );
}

/// Seconds until the gateway closes `s` (EOF or a reset, after any answer it wrote), at most `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let until_closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, until_closed).await.ok()?;
    Some(start.elapsed())
}

#[tokio::test]
async fn a_slow_or_missing_request_head_closes_the_connection_at_the_header_timeout() {
    let up = common::Upstream::start("timely").await;
    let yaml = format!(
        "routes:\n  - {{id: up, prefix: /up, upstreams: [\"{}\"], auth: public}}\nproxy: {{header_timeout_ms: 1000}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml, &[("SHOP_GATEWAY_WORKERS", "1")]).await;
    let req = b"GET /up/x HTTP/1.1\r\nHost: shop\r\n\r\n";

    // A head that stops half-way.
    let mut slow = connect(&gw).await;
    slow.write_all(b"GET /up/x HTTP/1.1\r\nHost: sh")
        .await
        .unwrap();
    // A connection idle after one answer (keep-alive).
    let mut idle = connect(&gw).await;
    idle.write_all(req).await.unwrap();
    assert_eq!(
        status_within(&mut idle, Duration::from_secs(5)).await,
        Some(200)
    );
    // A connection sending a request every 300 ms, for longer than the timeout.
    let mut busy = connect(&gw).await;
    let busy_client = async {
        for i in 0..8 {
            busy.write_all(req).await.unwrap();
            assert_eq!(
                status_within(&mut busy, Duration::from_secs(5)).await,
                Some(200),
                "request {i} on a busy connection"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let (slow_closed, idle_closed, ()) = tokio::join!(
        closed_within(&mut slow, Duration::from_secs(10)),
        closed_within(&mut idle, Duration::from_secs(10)),
        busy_client
    );
    for (what, closed) in [
        ("half a head", slow_closed),
        ("an idle connection", idle_closed),
    ] {
        let after = closed.unwrap_or_else(|| panic!("{what} was still open after 10 s"));
        // 1 s timeout, checked every 100 ms; generous upper bound for a loaded machine.
        assert!(
            after >= Duration::from_millis(900),
            "{what} closed early: {after:?}"
        );
        assert!(
            after < Duration::from_secs(5),
            "{what} closed late: {after:?}"
        );
    }
}
