//! Integration test of discovery routing: a real `shop-registry` process, upstream instances
//! registered in it over the Eureka REST API, and the real `shop-gateway` routing by service name —
//! round-robin over UP instances, failover when one dies, new instances picked up.
//! Needs `cargo build -p shop-registry --bins` (make test builds every binary first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Gateway, Upstream};
use shop_runtime::eureka::InstanceInfo;
use shop_testkit::Service;
use shop_testkit::clients::Eureka;

async fn register(registry: &str, app: &str, up: &Upstream) {
    let info = InstanceInfo::new(
        app,
        &format!("{app}-{}", up.addr.port()),
        "127.0.0.1",
        up.addr.port(),
    );
    Eureka::new(format!("{registry}/eureka"))
        .register(
            &app.to_ascii_uppercase(),
            &serde_json::json!({"instance": info.to_value()}),
        )
        .await;
}

#[tokio::test]
async fn routes_by_service_name_through_the_registry_with_balancing_and_failover() {
    let registry = Service::spawn("shop-registry", &[], &[], 0).await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    register(&registry.base_url(), "catalog", &a).await;
    register(&registry.base_url(), "catalog", &b).await;

    let yaml = "routes:\n  - {id: catalog, prefix: /api/catalog, service: catalog, auth: public}\n";
    let reg_url = format!("{}/eureka", registry.base_url());
    let gw = Gateway::start(
        yaml,
        &[
            ("SHOP_REGISTRY_URL", &reg_url),
            ("SHOP_REGISTRY_FETCH_SECS", "1"),
        ],
    )
    .await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    for _ in 0..10 {
        assert_eq!(
            c.get(gw.url("/api/catalog/items"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (5, 5),
        "round robin over the two registered instances"
    );

    // b dies without deregistering: the gateway skips it on the refused connection.
    b.kill().await;
    for i in 0..10 {
        let r = c.get(gw.url("/api/catalog/items")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i} after b died");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["upstream"], "a");
    }

    // A new instance registered later receives traffic once the gateway's cache refreshes.
    let c2 = Upstream::start("c").await;
    register(&registry.base_url(), "catalog", &c2).await;
    let mut hit_c = false;
    for _ in 0..50 {
        let _ = c.get(gw.url("/api/catalog/items")).send().await.unwrap();
        if c2.hits() > 0 {
            hit_c = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        hit_c,
        "a newly registered instance must receive traffic within 10 s"
    );

    // An unknown service is a 503 problem, not a hang.
    let yaml2 = "routes:\n  - {id: ghost, prefix: /ghost, service: ghost, auth: public}\n";
    let gw2 = Gateway::start(yaml2, &[("SHOP_REGISTRY_URL", &reg_url)]).await;
    let r = c.get(gw2.url("/ghost")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn falls_back_to_the_dns_pattern_without_a_registry() {
    let up = Upstream::start("dns").await;
    // `{service}` would be the app name; a loopback test cannot resolve names, so the pattern
    // pins the address and the test checks that the service route is resolved through it.
    let pattern = format!("{}/{{service}}-base", up.url());
    let yaml = "routes:\n  - {id: product, prefix: /api/product, service: product, auth: public}\n";
    let gw = Gateway::start(yaml, &[("SHOP_DNS_PATTERN", &pattern)]).await;
    let r = reqwest::get(gw.url("/api/product/7")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["upstream"], "dns");
    assert_eq!(
        body["path"], "/product-base/api/product/7",
        "base path of the pattern is kept"
    );
}
