//! Shared helpers of the runtime's integration tests: start shop-echo processes wired to a registry.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use shop_testkit::registry::eureka_url;
use shop_testkit::{Service, wait_until};
use std::time::Duration;

/// Starts shop-echo as `app`, registered with `registry` (if any), with 1 s lease and fetch intervals.
pub async fn echo(app: &str, registry: Option<&Service>, extra_env: &[(&str, &str)]) -> Service {
    echo_on(0, app, registry, extra_env).await
}

/// [`echo`] on a given port.
pub async fn echo_on(
    port: u16,
    app: &str,
    registry: Option<&Service>,
    extra_env: &[(&str, &str)],
) -> Service {
    let reg_url = registry.map(eureka_url).unwrap_or_default();
    let mut env: Vec<(&str, &str)> = vec![
        ("SHOP_ECHO_APP", app),
        ("SHOP_LEASE_RENEWAL_SECS", "1"),
        ("SHOP_LEASE_DURATION_SECS", "3"),
        ("SHOP_REGISTRY_FETCH_SECS", "1"),
        ("SHOP_SHUTDOWN_GRACE_SECS", "10"),
    ];
    if registry.is_some() {
        env.push(("SHOP_REGISTRY_URL", &reg_url));
    }
    env.extend_from_slice(extra_env);
    Service::spawn("shop-echo", &[], &env, port).await
}

/// Waits until `registry` lists exactly `n` instances of `app`.
pub async fn wait_registered(registry: &Service, app: &str, n: usize) -> bool {
    let e = eureka_url(registry);
    wait_until(Duration::from_secs(10), || {
        let e = e.clone();
        async move { shop_testkit::registry::instance_ids(&e, app).await.len() == n }
    })
    .await
}

/// GET `url` and return (status, body).
pub async fn get(url: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}
