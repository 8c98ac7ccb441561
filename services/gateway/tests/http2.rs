//! HTTP/2 on the gateway's plain port (h2c with prior knowledge) seen from a raw HTTP/2 client:
//! the limits a hostile or careless client meets (concurrent streams, header list size, rapid
//! stream resets, idle connections) and that the gateway goes on serving others meanwhile. The
//! same routing, auth, limit, breaker, streaming and SSE cases as HTTP/1.1 run in gateway.rs
//! (each case over both protocols); ALPN `h2` over TLS in tls.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, Upstream};
use http::{Request, StatusCode};
use tokio::net::TcpStream;

/// Routes every path to `up` with `proxy` settings (YAML flow mapping body).
fn routes(up: &Upstream, proxy: &str) -> String {
    format!(
        "routes:\n  - {{id: all, prefix: /, upstreams: [\"{}\"], auth: public}}\nproxy: {{{proxy}}}\n",
        up.url()
    )
}

/// An HTTP/2 connection to the gateway (prior knowledge) and the task driving it, which ends with
/// the connection.
async fn connect(
    gw: &Gateway,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(("127.0.0.1", gw.svc.port()))
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

fn get(gw: &Gateway, path: &str) -> Request<()> {
    Request::get(gw.url(path)).body(()).unwrap()
}

/// Sends a GET on `send` and returns its status (or the stream's error).
async fn status_of(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    req: Request<()>,
) -> Result<StatusCode, h2::Error> {
    let mut ready = send.clone().ready().await?;
    let (resp, _) = ready.send_request(req, true)?;
    let resp = resp.await?;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

#[tokio::test]
async fn streams_beyond_the_concurrency_limit_wait_their_turn_and_are_all_served() {
    let up = Upstream::start("slow").await;
    let gw = Gateway::start(&routes(&up, "http2_max_concurrent_streams: 4"), &[]).await;
    let (send, _conn) = connect(&gw).await;
    // One request first: its answer comes after the gateway's SETTINGS, so the client knows the
    // limit (streams it opens beyond a limit it has not heard of yet are refused, REFUSED_STREAM,
    // which clients retry).
    assert_eq!(
        status_of(&mut send.clone(), get(&gw, "/api/first"))
            .await
            .unwrap(),
        StatusCode::OK
    );
    // 8 requests of 600 ms each on one connection that takes 4 at a time: two waves.
    let started = Instant::now();
    let all = futures::future::join_all((0..8).map(|_| {
        let mut send = send.clone();
        let req = get(&gw, "/slow?ms=600");
        async move { status_of(&mut send, req).await }
    }))
    .await;
    let took = started.elapsed();
    assert!(
        all.iter().all(|r| matches!(r, Ok(StatusCode::OK))),
        "{all:?}"
    );
    assert_eq!(up.hits(), 9);
    assert!(
        took >= Duration::from_millis(1150),
        "8 x 600 ms through 4 streams at a time took {took:?}: the limit was not applied"
    );
}

#[tokio::test]
async fn an_oversized_header_list_is_refused_before_the_upstream() {
    let up = Upstream::start("echo").await;
    let gw = Gateway::start(&routes(&up, ""), &[]).await;
    let (mut send, _conn) = connect(&gw).await;
    let mut req = get(&gw, "/api/big");
    req.headers_mut()
        .insert("x-big", "b".repeat(40 * 1024).parse().unwrap());
    let refused = status_of(&mut send, req).await;
    assert!(
        matches!(
            refused,
            Ok(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) | Err(_)
        ),
        "a 40 KiB header list (limit 32 KiB) was served: {refused:?}"
    );
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    // The same client, on a new connection, is served normally.
    let (mut send, _conn) = connect(&gw).await;
    assert_eq!(
        status_of(&mut send, get(&gw, "/api/ok")).await.unwrap(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn rapid_stream_resets_end_the_connection_and_others_are_served_meanwhile() {
    let up = Upstream::start("echo").await;
    let gw = Gateway::start(&routes(&up, ""), &[]).await;
    let (send, conn) = connect(&gw).await;
    // CVE-2023-44487: open streams and cancel them at once, as fast as the connection allows.
    let mut opened = 0;
    let mut refused = false;
    for _ in 0..10_000 {
        let Ok(mut ready) = send.clone().ready().await else {
            refused = true;
            break;
        };
        match ready.send_request(get(&gw, "/api/reset"), false) {
            Ok((_resp, mut body)) => {
                body.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the attacking connection is closed by the gateway")
        .unwrap();
    assert!(
        refused,
        "all {opened} resets were taken without closing the connection"
    );
    let err = ended.expect_err("closed with an error (GOAWAY)");
    eprintln!("after {opened} reset streams: {err}");
    assert!(
        err.is_go_away() || err.is_io() || err.reason().is_some(),
        "{err}"
    );
    assert!(
        up.hits() < opened,
        "{} of {opened} cancelled requests reached the upstream",
        up.hits()
    );
    // Another client is served as usual.
    let (mut other, _conn) = connect(&gw).await;
    assert_eq!(
        status_of(&mut other, get(&gw, "/api/ok")).await.unwrap(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_head_timeout_but_a_busy_one_is_not() {
    let up = Upstream::start("echo").await;
    let gw = Gateway::start(&routes(&up, "header_timeout_ms: 500"), &[]).await;

    // A request 2.5 s long on a connection with a 500 ms idle timeout: kept while it is in flight.
    let (mut busy, busy_conn) = connect(&gw).await;
    assert_eq!(
        status_of(&mut busy, get(&gw, "/slow?ms=2500"))
            .await
            .unwrap(),
        StatusCode::OK
    );
    assert!(
        !busy_conn.is_finished(),
        "closed while a request was in flight"
    );

    // Nothing more on it: closed within two timeouts (plus scheduling slack), without an error
    // the client could blame on a request.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), busy_conn)
        .await
        .expect("an idle HTTP/2 connection must be closed")
        .unwrap();
    eprintln!(
        "idle connection ended after {:?}: {ended:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed at once, not after the idle timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn grpc_passes_through_to_an_h2c_upstream_with_its_trailers() {
    let up = Upstream::start("grpc").await;
    let yaml = format!(
        "routes:\n  - {{id: grpc, prefix: /grpc, upstreams: [\"{}\"], auth: public, upstream_protocol: h2c}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let (send, _conn) = connect(&gw).await;
    // A length-prefixed gRPC message: not compressed, 5 bytes.
    let message = bytes::Bytes::from_static(b"\0\0\0\0\x05hello");
    for call in 0..3 {
        let req = Request::post(gw.url("/grpc/shop.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut ready = send.clone().ready().await.unwrap();
        let (resp, mut body) = ready.send_request(req, false).unwrap();
        body.send_data(message.clone(), true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "call {call}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(
            h["x-upstream-version"], "HTTP/2.0",
            "the upstream is spoken to in HTTP/2"
        );
        assert_eq!(
            h["x-upstream-te"], "trailers",
            "the client's TE: trailers reaches it"
        );
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, message, "the message passes unchanged");
        let trailers = body
            .trailers()
            .await
            .unwrap()
            .expect("the upstream's trailers reach the client");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
    }
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn a_plain_request_split_after_its_first_byte_is_http11_and_a_stalled_one_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("echo").await;
    let gw = Gateway::start(&routes(&up, "header_timeout_ms: 1000"), &[]).await;
    let addr = ("127.0.0.1", gw.svc.port());

    // `P` alone could begin the h2c preface: the gateway waits for the next byte, then serves
    // HTTP/1.1.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(
        b"OST /split HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("/split"), "{answer}");

    // `P` and then nothing: closed after the head timeout (1 s here), like any silent client.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"P").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("a stalled client must not hold its connection beyond the head timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "closed: {n:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after the timeout, not at once: {:?}",
        started.elapsed()
    );
}
