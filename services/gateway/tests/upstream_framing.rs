//! Integration tests of how the real `shop-gateway` process reads upstream responses on the wire:
//! a raw TCP upstream on loopback answers with hand-written HTTP/1.1 (chunked bodies with
//! extensions and trailers, bodies delimited by close, HEAD and 204 answers, a connection closed
//! while pooled, an unsolicited answer sent while pooled, invalid framing), and the tests check what a client of the gateway gets and how
//! many upstream connections it took (kept-alive connections are reused, others are not).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Gateway, header};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A raw HTTP/1.1 upstream: answers each request head by its path with a fixed byte string.
struct RawUpstream {
    url: String,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the raw upstream sends for a path, and whether it closes the connection afterwards.
fn answer(method: &str, path: &str) -> (Vec<u8>, bool) {
    let (bytes, close): (&[u8], bool) = match path {
        "/raw/length" if method == "HEAD" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Kind: length\r\n\r\n",
            false,
        ),
        "/raw/length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Kind: length\r\n\r\nhello world",
            false,
        ),
        "/raw/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: dropped\r\n\r\n",
            false,
        ),
        "/raw/continue" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/raw/nocontent" => (b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n", false),
        "/raw/until-close" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the end",
            true,
        ),
        // Announces keep-alive but closes right after: like an upstream's idle timeout striking
        // while the gateway holds the connection in its pool.
        "/raw/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye!", true),
        "/raw/then-408" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate", false),
        "/raw/conflicting-length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
            true,
        ),
        "/raw/truncated" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
            true,
        ),
        "/raw/garbage" => (b"SSH-2.0-OpenSSH\r\n\r\n", true),
        _ => (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            false,
        ),
    };
    (bytes.to_vec(), close)
}

async fn serve_conn(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut line = head.split_whitespace();
        let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
        let (bytes, close) = answer(method, path);
        if s.write_all(&bytes).await.is_err() {
            return;
        }
        if path == "/raw/then-408" {
            // Like a server whose idle timeout answers `408` on a kept-alive connection before
            // closing it: bytes nobody asked for wait in the gateway's pooled socket.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s
                .write_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
        if close {
            return;
        }
    }
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_conn(s));
            }
        });
        RawUpstream {
            url,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// One client connection to the gateway, so its requests stay on one gateway worker (and pool).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

async fn start() -> (RawUpstream, Gateway) {
    let up = RawUpstream::start().await;
    let yaml = format!(
        "routes:\n  - {{id: raw, prefix: /raw, upstreams: [\"{}\"], auth: public}}\n",
        up.url
    );
    let gw = Gateway::start(&yaml, &[]).await;
    (up, gw)
}

#[tokio::test]
async fn length_chunked_head_and_204_answers_pass_through_on_one_kept_alive_connection() {
    let (up, gw) = start().await;
    let c = client();
    for round in 0..2 {
        let r = c.get(gw.url("/raw/length")).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(header(r.headers(), "x-kind"), "length");
        assert_eq!(r.text().await.unwrap(), "hello world");

        let r = c.get(gw.url("/raw/chunked")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "x-kind"), "chunked");
        assert_eq!(
            r.text().await.unwrap(),
            "hello, world",
            "chunks joined, extension and trailer dropped"
        );

        let r = c.head(gw.url("/raw/length")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "content-length"), "11");
        assert_eq!(r.bytes().await.unwrap().len(), 0, "HEAD has no body");

        let r = c.delete(gw.url("/raw/nocontent")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(header(r.headers(), "x-kind"), "none");

        let r = c.get(gw.url("/raw/continue")).send().await.unwrap();
        assert_eq!(r.status(), 200, "an interim 100 is skipped");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(
        up.connections(),
        1,
        "ten exchanges framed by length or chunks share one upstream connection"
    );
}

#[tokio::test]
async fn bodies_delimited_by_close_arrive_whole_and_the_connection_is_not_reused() {
    let (up, gw) = start().await;
    let c = client();
    for i in 0..3 {
        let r = c.get(gw.url("/raw/until-close")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "read until the end", "request {i}");
    }
    assert_eq!(
        up.connections(),
        3,
        "a body read to close ends its connection"
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_replaced_without_an_error() {
    let (up, gw) = start().await;
    let c = client();
    let r = c.get(gw.url("/raw/then-close")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "bye!");
    // Let the close reach the gateway's side of the pooled connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let r = c.get(gw.url("/raw/length")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i} after the upstream closed");
        assert_eq!(r.text().await.unwrap(), "hello world");
    }
    assert_eq!(
        up.connections(),
        2,
        "one replacement connection, then reused"
    );
}

#[tokio::test]
async fn an_answer_the_upstream_sent_while_the_connection_was_pooled_is_never_taken_for_the_next_one()
 {
    let (up, gw) = start().await;
    let c = client();
    let r = c.get(gw.url("/raw/then-408")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "late");
    // Let the unsolicited 408 and the close reach the gateway's pooled socket.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..3 {
        let r = c.get(gw.url("/raw/length")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "request {i}: the stale 408 must not be read as its answer"
        );
        assert_eq!(r.text().await.unwrap(), "hello world");
    }
    assert_eq!(
        up.connections(),
        2,
        "the connection with stale bytes is dropped, one new one serves the rest"
    );
}

#[tokio::test]
async fn invalid_or_truncated_upstream_responses_are_502_problems() {
    let c = client();
    // Each case on a fresh gateway: repeated failures would open the route's circuit (503).
    for path in ["/raw/garbage", "/raw/conflicting-length"] {
        let (_up, gw) = start().await;
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        assert_eq!(
            header(r.headers(), "content-type"),
            "application/problem+json",
            "{path}"
        );
    }
    // The head was fine, the body ends early: the client must not get a complete-looking body.
    let (_up, gw) = start().await;
    let outcome = match c.get(gw.url("/raw/truncated")).send().await {
        Ok(r) => {
            assert_eq!(r.status(), 200);
            r.bytes().await.map(|b| b.len())
        }
        Err(e) => Err(e),
    };
    assert!(
        outcome.is_err(),
        "a truncated body is an error for the client, not a short success: {outcome:?}"
    );
    // The gateway still serves well-formed answers afterwards.
    let r = c.get(gw.url("/raw/length")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");
}
