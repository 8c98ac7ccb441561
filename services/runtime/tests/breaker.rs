//! The per-service circuit breaker of the runtime's client, in real processes: 4xx do not trip it, 5xx
//! open it, it short-circuits while open, reports its state as a metric, and closes after good trials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{echo, get, wait_registered};
use shop_testkit::fresh_name;
use shop_testkit::registry::spawn_registry;
use std::time::{Duration, Instant};

async fn breaker_gauge(a: &shop_testkit::Service, service: &str) -> Option<i64> {
    let (_, text) = get(&format!("{}/metrics", a.base_url())).await;
    let needle = format!("circuit_breaker_state{{service=\"{service}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn breaker_opens_short_circuits_and_recovers() {
    let reg = spawn_registry(&[]).await;
    let b = fresh_name("b");
    let _b1 = echo(&b, Some(&reg), &[]).await;
    let a = echo(&fresh_name("a"), Some(&reg), &[]).await;
    assert!(wait_registered(&reg, &b, 1).await);
    let call = |path: &str| format!("{}/call/{b}/{path}", a.base_url());

    // Client errors are the caller's problem, not the target's: the breaker stays closed.
    for _ in 0..8 {
        assert_eq!(get(&call("status/404")).await.0, 404);
    }
    assert_eq!(breaker_gauge(&a, &b).await, Some(0));

    // Count window of 5 holding [ok, ok, ok, ok, ok]: three server errors make it 3 of 5 = 60 % >= 50 %: open.
    for _ in 0..3 {
        assert_eq!(get(&call("status/503")).await.0, 503);
    }
    assert_eq!(breaker_gauge(&a, &b).await, Some(1));
    let opened = Instant::now();
    let (code, body) = get(&call("status/200")).await;
    assert_eq!(code, 502);
    assert!(
        body.contains("breaker_open"),
        "open breaker must short-circuit: {body}"
    );

    // After the 5 s open wait: three good trial calls close it again.
    let wait = Duration::from_millis(5200).saturating_sub(opened.elapsed());
    tokio::time::sleep(wait).await;
    for _ in 0..3 {
        assert_eq!(get(&call("status/200")).await.0, 200);
    }
    assert_eq!(breaker_gauge(&a, &b).await, Some(0));
    assert_eq!(get(&call("hello")).await.0, 200);
}
