//! Integration tests of the real `shop-gateway` process against real HTTP upstream servers on
//! loopback: routing, balancing, failover, retries, SSE, large streamed bodies, limits, timeouts,
//! CORS, tracing, the circuit breaker and shutdown. Each case runs over HTTP/1.1 and over HTTP/2
//! (h2c) (see `both!` in `common/cases.rs`), the protocol-specific ones over the protocol they are
//! about. JWT and rate limits are in `gateway_auth.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::cases::*;
use common::{Gateway, Upstream, header, rss_kib};
use futures::StreamExt;
use serde_json::{Value, json};
use shop_testkit::send;

both!(routes_by_prefix_rewrites_and_sets_forwarding_headers);
async fn routes_by_prefix_rewrites_and_sets_forwarding_headers(proto: Proto) {
    let product = Upstream::start("product").await;
    let registry = Upstream::start("registry").await;
    let yaml = format!(
        r#"
routes:
  - {{id: product, prefix: /api/product, upstreams: ["{p}"]}}
  - {{id: dashboard, prefix: /eureka/web, upstreams: ["{r}"], rewrite: /}}
  - {{id: eureka, prefix: /eureka, upstreams: ["{r}"]}}
"#,
        p = product.url(),
        r = registry.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);

    let r = c
        .get(gw.url("/api/product/42?color=red"))
        .header("x-request-id", "req-123")
        .header("x-user-id", "mallory")
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.version(),
        proto.version(),
        "the protocol the client asked for"
    );
    assert_eq!(header(r.headers(), "x-request-id"), "req-123");
    let body = json_of(r).await;
    assert_eq!(body["upstream"], "product");
    assert_eq!(body["path"], "/api/product/42?color=red");
    let h = &body["headers"];
    assert_eq!(h["x-request-id"], "req-123");
    assert!(
        h.get("x-user-id").is_none(),
        "client-sent X-User-Id must be stripped: {h}"
    );
    if proto == Proto::Http1 {
        // HTTP/2 has no `Connection` header (the client drops it before sending).
        assert!(
            h.get("x-secret").is_none(),
            "header named in Connection must be stripped: {h}"
        );
    }
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["x-forwarded-host"],
        format!("127.0.0.1:{}", gw.svc.port())
    );

    // A request id is generated when the client sends none, and is the same on both sides.
    let r = send(c.get(gw.url("/api/product"))).await;
    let rid = header(&r.headers, "x-request-id").to_owned();
    assert_eq!(rid.len(), 36, "uuid expected, got {rid:?}");
    assert_eq!(r.json["headers"]["x-request-id"], rid);

    // Dashboard is rewritten to `/`, the Eureka API is passed as is.
    let body = json_of(c.get(gw.url("/eureka/web")).send().await.unwrap()).await;
    assert_eq!(
        (body["upstream"].as_str(), body["path"].as_str()),
        (Some("registry"), Some("/"))
    );
    let body = json_of(c.get(gw.url("/eureka/apps/PRODUCT")).send().await.unwrap()).await;
    assert_eq!(body["path"], "/eureka/apps/PRODUCT");

    // No route: 404 problem naming the path, nothing proxied; `/api/products` is not `/api/product`.
    for p in ["/nothing", "/api/products"] {
        let r = send(c.get(gw.url(p))).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            header(&r.headers, "content-type"),
            "application/problem+json"
        );
        let b = r.json;
        assert_eq!(b["field"], "path");
    }
    assert_eq!(product.hits(), 2);
}

both!(balances_round_robin_and_fails_over_when_an_instance_dies);
async fn balances_round_robin_and_fails_over_when_an_instance_dies(proto: Proto) {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let yaml = format!(
        "routes:\n  - {{id: svc, prefix: /api/svc, upstreams: [\"{}\", \"{}\"], auth: public}}\n",
        a.url(),
        b.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);
    for _ in 0..10 {
        assert_eq!(
            c.get(gw.url("/api/svc/x")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (5, 5),
        "round robin over two instances"
    );

    let b_hits = b.hits.clone();
    b.kill().await;
    for i in 0..10 {
        let r = send(c.get(gw.url("/api/svc/x"))).await;
        assert_eq!(r.status, 200, "request {i} after b died");
        assert_eq!(r.json["upstream"], "a");
    }
    // A small POST is replayed on the live instance when the dead one refuses the connection.
    for i in 0..4 {
        let r = send(c.post(gw.url("/api/svc/orders")).body("{\"n\":1}")).await;
        assert_eq!(r.status, 200, "POST {i} after b died");
        assert_eq!(r.json["body_len"], 7);
    }
    assert_eq!(a.hits(), 5 + 10 + 4);
    assert_eq!(b_hits.load(std::sync::atomic::Ordering::SeqCst), 5);
}

both!(dead_only_upstream_is_502_problem_and_breaker_opens);
async fn dead_only_upstream_is_502_problem_and_breaker_opens(proto: Proto) {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let failing = Upstream::start("failing").await;
    let yaml = format!(
        r#"
routes:
  - {{id: gone, prefix: /gone, upstreams: ["{dead_url}"], auth: public}}
  - {{id: failing, prefix: /fail, upstreams: ["{f}"], auth: public}}
proxy: {{retries: 0}}
"#,
        f = failing.url()
    );
    let gw = Gateway::start(&yaml, &[("SHOP_BREAKER_OPEN_SECS", "30")]).await;
    let c = client(proto);
    let r = send(c.get(gw.url("/gone"))).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        header(&r.headers, "content-type"),
        "application/problem+json"
    );

    // 5 upstream 500s fill the breaker window (50 % failure rate): the next call is short-circuited.
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/fail")).send().await.unwrap().status(), 500);
    }
    let r = send(c.get(gw.url("/fail"))).await;
    assert_eq!(r.status, 503);
    assert!(header(&r.headers, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(r.json["title"], "Upstream circuit open");
    assert_eq!(
        failing.hits(),
        5,
        "the open breaker must not call the upstream"
    );
    let metrics = shop_testkit::metrics(&c, &gw.url("")).await;
    assert!(
        metrics.contains("circuit_breaker_state{service=\"route:failing\"} 1"),
        "{metrics}"
    );
}

both!(an_instance_dropping_connections_is_ejected_and_the_breaker_stays_closed_for_the_healthy_one);
/// One replica of two dies with requests in flight (the chaos soak's killed order pod): its
/// connections break after the request was sent, so a POST there gets a 502 (it may have been
/// processed), but the instance is then skipped and its failures must not open the service's
/// breaker while the healthy replica answers.
async fn an_instance_dropping_connections_is_ejected_and_the_breaker_stays_closed_for_the_healthy_one(
    proto: Proto,
) {
    use tokio::io::AsyncReadExt;
    let ok = Upstream::start("ok").await;
    let dropper = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let drop_url = format!("http://{}", dropper.local_addr().unwrap());
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn({
        let dropped = dropped.clone();
        async move {
            while let Ok((mut s, _)) = dropper.accept().await {
                // Reads the request, then closes without answering.
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                dropped.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let yaml = format!(
        "routes:\n  - {{id: pair, prefix: /pair, upstreams: [\"{drop_url}\", \"{}\"], auth: public}}\n",
        ok.url()
    );
    let gw = Gateway::start(&yaml, &[("SHOP_BREAKER_OPEN_SECS", "30")]).await;
    let c = client(proto);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            c.post(gw.url("/pair"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        !statuses.contains(&503),
        "the breaker opened although a healthy instance answered: {statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 502).count() <= 1,
        "the dropping instance was not skipped after its first failure: {statuses:?}"
    );
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst) <= 1);
    let metrics = shop_testkit::metrics(&c, &gw.url("")).await;
    assert!(
        metrics.contains("circuit_breaker_state{service=\"route:pair\"} 0"),
        "{metrics}"
    );
}

both!(idempotent_get_is_retried_on_another_instance_but_post_is_not);
async fn idempotent_get_is_retried_on_another_instance_but_post_is_not(proto: Proto) {
    let ok = Upstream::start("ok").await;
    let bad = Upstream::start("bad").await;
    let yaml = format!(
        "routes:\n  - {{id: mixed, prefix: /fail, upstreams: [\"{}\", \"{}\"], auth: public}}\n",
        bad.url(),
        ok.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);
    // Both instances answer 500 on /fail: a GET is tried on 3 attempts (1 + 2 retries), a POST once.
    let r = send(c.get(gw.url("/fail"))).await;
    assert_eq!(r.status, 500);
    assert_eq!(ok.hits() + bad.hits(), 3, "GET retried twice");
    let token = hs256(&claims(json!({})), SECRET.as_bytes());
    drop(gw);
    let gw = Gateway::start(&yaml, &auth_env()).await;
    let before = ok.hits() + bad.hits();
    let r = send(c.post(gw.url("/fail")).bearer_auth(&token).body("x")).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        ok.hits() + bad.hits() - before,
        1,
        "POST must not be retried"
    );
}

both!(sse_events_pass_through_unbuffered);
async fn sse_events_pass_through_unbuffered(proto: Proto) {
    let up = Upstream::start("events").await;
    let yaml = format!(
        "routes:\n  - {{id: ev, prefix: /sse, upstreams: [\"{}\"], auth: public}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let r = client(proto).get(gw.url("/sse")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "content-type"), "text/event-stream");
    let mut stream = r.bytes_stream();
    let mut seen = Vec::new();
    // The upstream holds the second event back until we have received the first through the gateway.
    while !seen.ends_with(b"data: one\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("first event not delivered while the stream is open: gateway buffers")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    up.sse_next.notify_one();
    while let Some(chunk) = stream.next().await {
        seen.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(seen, b"data: one\n\ndata: two\n\n");
}

both!(large_streamed_upload_and_download_do_not_grow_gateway_memory);
async fn large_streamed_upload_and_download_do_not_grow_gateway_memory(proto: Proto) {
    const SIZE: u64 = 256 * 1024 * 1024;
    let up = Upstream::start("blob").await;
    let yaml = format!(
        "routes:\n  - {{id: blob, prefix: /, upstreams: [\"{}\"], auth: public, max_body_bytes: {}}}\n",
        up.url(),
        SIZE * 2
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);
    // Warm up the connection pool and allocator.
    assert_eq!(
        c.get(gw.url("/download?bytes=1048576"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, hwm_before) = rss_kib(gw.pid());

    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let n = SIZE / chunk.len() as u64;
    let body = futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = send(
        c.post(gw.url("/upload"))
            .body(reqwest::Body::wrap_stream(body)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["received"], SIZE);

    let r = c
        .get(gw.url(&format!("/download?bytes={SIZE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0u64;
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, SIZE);

    let (_, hwm_after) = rss_kib(gw.pid());
    let growth_mib = (hwm_after.saturating_sub(hwm_before)) / 1024;
    eprintln!("gateway peak RSS before {hwm_before} KiB, after {hwm_after} KiB (512 MiB streamed)");
    assert!(
        growth_mib < 32,
        "gateway peak RSS grew by {growth_mib} MiB while streaming 2 x 256 MiB"
    );
}

both!(body_limit_413_and_timeout_504);
async fn body_limit_413_and_timeout_504(proto: Proto) {
    let up = Upstream::start("u").await;
    let yaml = format!(
        r#"
routes:
  - {{id: small, prefix: /upload, upstreams: ["{u}"], auth: public, max_body_bytes: 1000}}
  - {{id: slow, prefix: /slow, upstreams: ["{u}"], auth: public, timeout_ms: 300}}
"#,
        u = up.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);
    // Declared too large: refused before anything is sent upstream.
    let r = c
        .post(gw.url("/upload"))
        .body(vec![0u8; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(json_of(r).await["field"], "body");
    assert_eq!(up.hits(), 0);
    // Chunked (no length) and too large: 413 too.
    let chunks = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 100]))),
    );
    let r = send(
        c.post(gw.url("/upload"))
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(r.status, 413);
    // Within the limit: passes.
    let r = c
        .post(gw.url("/upload"))
        .body(vec![0u8; 900])
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["received"], 900);

    let r = send(c.get(gw.url("/slow"))).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        header(&r.headers, "content-type"),
        "application/problem+json"
    );
}

both!(cors_preflight_and_headers);
async fn cors_preflight_and_headers(proto: Proto) {
    let up = Upstream::start("u").await;
    let yaml = format!(
        r#"
routes:
  - {{id: p, prefix: /api/p, upstreams: ["{u}"]}}
cors: {{allowed_origins: ["https://shop.example"], max_age_secs: 600}}
"#,
        u = up.url()
    );
    let gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);
    let r = send(
        c.request(reqwest::Method::OPTIONS, gw.url("/api/p"))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        header(&r.headers, "access-control-allow-origin"),
        "https://shop.example"
    );
    assert!(header(&r.headers, "access-control-allow-methods").contains("POST"));
    assert_eq!(header(&r.headers, "access-control-max-age"), "600");
    let r = send(
        c.get(gw.url("/api/p"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = send(
        c.get(gw.url("/api/p"))
            .header("origin", "https://shop.example"),
    )
    .await;
    assert_eq!(
        header(&r.headers, "access-control-allow-origin"),
        "https://shop.example"
    );
    assert_eq!(up.hits(), 2, "preflight is answered by the gateway");
}

#[tokio::test]
async fn trace_context_is_propagated_and_the_gateway_span_reaches_zipkin() {
    let zipkin = shop_testkit::zipkin_url();
    let up = Upstream::start("traced").await;
    let yaml = format!(
        "routes:\n  - {{id: t, prefix: /api/t, upstreams: [\"{}\"], auth: public}}\n",
        up.url()
    );
    let endpoint = format!("{zipkin}/api/v2/spans");
    let mut gw = Gateway::start(&yaml, &[("SHOP_ZIPKIN_ENDPOINT", &endpoint)]).await;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let client_span = "00f067aa0ba902b7";
    let r = client(Proto::Http1)
        .get(gw.url("/api/t"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json_of(r).await;
    let tp = body["headers"]["traceparent"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace downstream: {tp}");
    assert_ne!(
        parts[2], client_span,
        "the gateway's own span is the downstream parent: {tp}"
    );
    let h = &body["headers"];
    let b3 = h["x-b3-traceid"]
        .as_str()
        .or_else(|| h["b3"].as_str())
        .unwrap_or("");
    assert!(
        b3.starts_with(&trace_id),
        "B3 headers carry the trace too: {h}"
    );

    // SIGTERM flushes spans; the gateway's server span is then in Zipkin under that trace id.
    let exited = tokio::task::spawn_blocking(move || gw.svc.terminate())
        .await
        .unwrap();
    assert!(exited, "gateway exits by itself on SIGTERM");
    let url = format!("{zipkin}/api/v2/trace/{trace_id}");
    let c = client(Proto::Http1);
    let found = shop_testkit::wait_until(Duration::from_secs(10), || {
        let c = c.clone();
        let url = url.clone();
        let span = parts[2].to_owned();
        async move {
            let Ok(r) = c.get(&url).send().await else {
                return false;
            };
            let Ok(spans) = r.json::<Value>().await else {
                return false;
            };
            spans.as_array().is_some_and(|a| {
                // The gateway's SERVER span, child of the client's span. (localEndpoint.serviceName is
                // set by the runtime's exporter; not asserted here.)
                a.iter().any(|s| {
                    s["id"] == span.as_str()
                        && s["parentId"] == client_span
                        && s["kind"] == "SERVER"
                })
            })
        }
    })
    .await;
    assert!(
        found,
        "gateway span {} of trace {trace_id} not found in Zipkin",
        parts[2]
    );
}

both!(sigterm_drains_in_flight_requests_and_stops_accepting);
async fn sigterm_drains_in_flight_requests_and_stops_accepting(proto: Proto) {
    let up = Upstream::start("slow").await;
    let yaml = format!(
        "routes:\n  - {{id: s, prefix: /slow, upstreams: [\"{}\"], auth: public, timeout_ms: 10000}}\n",
        up.url()
    );
    let mut gw = Gateway::start(&yaml, &[]).await;
    let c = client(proto);
    let inflight = tokio::spawn(c.get(gw.url("/slow?ms=3500")).send());
    // Wait until the request is at the upstream, then SIGTERM the gateway.
    assert!(shop_testkit::wait_until(Duration::from_secs(5), || async { up.hits() == 1 }).await);
    gw.svc.signal(shop_testkit::Signal::SIGTERM);
    // A connection arriving right after is still served (a kube-proxy may not have seen this
    // pod leave yet), and told to close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = reqwest::Client::new()
        .get(gw.url("/slow?ms=1"))
        .send()
        .await
        .expect("a late arrival is served");
    assert_eq!(late.status(), 200);
    assert_eq!(late.headers()["connection"], "close");
    // After a second without arrivals, no new connection is accepted; the slow one drains.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = reqwest::Client::new()
        .get(gw.url("/slow?ms=1"))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "no new connections are accepted while draining"
    );
    assert!(
        !inflight.is_finished(),
        "the slow request is still in flight"
    );
    let r = inflight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "late");
    let exited =
        tokio::task::spawn_blocking(move || gw.svc.terminate_within(Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(exited, "gateway exits by itself after draining");
}

#[tokio::test]
async fn answers_during_the_shutdown_delay_close_the_clients_connection() {
    let up = Upstream::start("ok").await;
    let yaml = format!(
        "routes:\n  - {{id: o, prefix: /ok, upstreams: [\"{}\"], auth: public}}\n",
        up.url()
    );
    let mut gw = Gateway::start(&yaml, &[("SHOP_SHUTDOWN_DELAY_SECS", "4")]).await;
    let c = client(Proto::Http1);
    let r = c.get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("connection").is_none(),
        "kept alive while serving"
    );
    gw.svc.signal(shop_testkit::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Unready but still serving for the delay: each answer ends the client's connection, so a
    // kept-alive client moves to another gateway instead of meeting this one's idle close.
    let r = c.get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200, "still serving during the delay");
    assert_eq!(r.headers()["connection"], "close");
    let exited =
        tokio::task::spawn_blocking(move || gw.svc.terminate_within(Duration::from_secs(15)))
            .await
            .unwrap();
    assert!(exited);
}
