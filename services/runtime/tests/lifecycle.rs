//! Serving basics and shutdown of a real service built on the runtime: health, metrics, request ids,
//! problem+json, and SIGTERM draining in-flight requests after deregistering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{echo, get, wait_registered};
use shop_testkit::fresh_name;
use shop_testkit::registry::{eureka_url, instance_ids, spawn_registry};
use std::time::{Duration, Instant};

#[tokio::test]
async fn health_metrics_request_id_and_problems() {
    let svc = echo(&fresh_name("e"), None, &[]).await;
    let http = reqwest::Client::new();
    let live = http
        .get(format!("{}/health/live", svc.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let r = http
        .get(format!("{}/hello", svc.base_url()))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let r = http
        .get(format!("{}/hello", svc.base_url()))
        .send()
        .await
        .unwrap();
    assert!(
        !r.headers()["x-request-id"].is_empty(),
        "a request id is generated when absent"
    );
    let r = http
        .get(format!("{}/status/1000", svc.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let (_, metrics) = get(&format!("{}/metrics", svc.base_url())).await;
    assert!(
        metrics
            .contains(r#"http_server_requests_total{method="GET",route="/hello",status="200"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"http_server_request_duration_seconds_bucket{le="0.005",method="GET",route="/hello",status="200"}"#)
        || metrics.contains("http_server_request_duration_seconds_bucket"));
    assert!(metrics.contains("http_server_requests_in_flight"));
}

#[tokio::test]
async fn sigterm_deregisters_then_drains_in_flight_requests() {
    let reg = spawn_registry(&[]).await;
    let app = fresh_name("s");
    let mut svc = echo(&app, Some(&reg), &[]).await;
    assert!(wait_registered(&reg, &app, 1).await);
    let base = svc.base_url();

    let slow = tokio::spawn(async move { get(&format!("{base}/slow?ms=2500")).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let term = tokio::task::spawn_blocking(move || {
        let exited = svc.terminate_within(Duration::from_secs(15));
        (exited, svc)
    });

    // Deregistered right away, while the slow request is still being served.
    let eureka = eureka_url(&reg);
    let mut gone = false;
    while started.elapsed() < Duration::from_millis(1500) {
        if instance_ids(&eureka, &app).await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "instance must deregister at SIGTERM");
    assert!(
        !slow.is_finished(),
        "the slow request should still be in flight"
    );

    let (code, body) = slow.await.unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, "slept 2500 ms"),
        "in-flight request must complete"
    );
    let (exited, _svc) = term.await.unwrap();
    assert!(exited, "process must exit by itself after draining");
}

#[tokio::test]
async fn answers_during_the_shutdown_delay_close_the_callers_kept_alive_connection() {
    let app = fresh_name("d");
    let mut svc = echo(&app, None, &[("SHOP_SHUTDOWN_DELAY_SECS", "4")]).await;
    let http = reqwest::Client::new();
    let hello = format!("{}/hello", svc.base_url());
    let r = http.get(&hello).send().await.unwrap();
    assert!(
        r.headers().get("connection").is_none(),
        "a serving instance keeps connections alive"
    );

    // SIGTERM: unready and still serving for the delay; every answer now ends its connection,
    // so callers move to other instances before this one closes idle connections.
    svc.signal(shop_testkit::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = http.get(&hello).send().await.unwrap();
    assert_eq!(r.status(), 200, "still serving during the delay");
    assert_eq!(r.headers()["connection"], "close");
    assert!(svc.terminate_within(Duration::from_secs(15)));
}

#[tokio::test]
async fn connections_arriving_after_the_delay_are_served_until_a_quiet_second() {
    let app = fresh_name("q");
    let mut svc = echo(&app, None, &[("SHOP_SHUTDOWN_DELAY_SECS", "1")]).await;
    let hello = format!("{}/hello", svc.base_url());
    svc.signal(shop_testkit::Signal::SIGTERM);
    // A caller whose view of the Service is stale (a kube-proxy that has not caught up) keeps
    // opening connections well past the 1 s delay: each is still served, and told to close.
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let r = reqwest::Client::new()
            .get(&hello)
            .send()
            .await
            .unwrap_or_else(|e| panic!("refused {:?} after SIGTERM: {e}", started.elapsed()));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["connection"], "close");
        served += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(served >= 10, "{served}");
    // Once nobody arrives for a second, the listener closes and the process exits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        reqwest::Client::new().get(&hello).send().await.is_err(),
        "still accepting after a quiet second"
    );
    assert!(svc.terminate_within(Duration::from_secs(15)));
}
