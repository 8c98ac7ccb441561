//! The OpenAPI documents through the gateway: its own `/openapi.json` (which must describe its own
//! endpoints truthfully) and a real service's document forwarded at `/openapi/<service>.json`,
//! byte-for-byte what the service itself serves. Needs the shop-inventory binary (built by
//! `make test`) and the local MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Gateway;
use shop_testkit::openapi::Spec;
use shop_testkit::{Service, free_port, fresh_mysql_database};

#[tokio::test]
async fn service_documents_are_forwarded_and_the_gateways_own_document_conforms() {
    let db = fresh_mysql_database("gwoas").await;
    let inventory = Service::spawn(
        "shop-inventory",
        &[],
        &[("DATABASE_URL", db.as_str())],
        free_port(),
    )
    .await;
    let pattern = inventory.base_url();
    let gw = Gateway::start("", &[("SHOP_DNS_PATTERN", pattern.as_str())]).await;
    let http = reqwest::Client::new();

    let direct = http
        .get(format!("{}/openapi.json", inventory.base_url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let through = http
        .get(gw.url("/openapi/inventory.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 200);
    assert!(
        through.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let through = through.bytes().await.unwrap();
    assert_eq!(
        through, direct,
        "the gateway must forward the service's document unchanged"
    );
    let doc: serde_json::Value = serde_json::from_slice(&through).unwrap();
    assert!(doc["paths"]["/api/inventory/reservations"].is_object());

    // The gateway's own document, and its own endpoints answering as it says.
    let spec = Spec::fetch(&gw.svc.base_url()).await;
    for path in ["/health/live", "/metrics", "/openapi.json"] {
        let r = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(spec.conform("GET", path, r).await.status, 200, "{path}");
    }
    let r = http.get(gw.url("/health/ready")).send().await.unwrap();
    spec.conform("GET", "/health/ready", r).await;
    let r = http
        .get(gw.url("/openapi/inventory.json"))
        .send()
        .await
        .unwrap();
    let c = spec.conform("GET", "/openapi/{service}.json", r).await;
    assert_eq!(c.json["info"]["title"], "shop-inventory");
    // An unknown service's document is no route at all: the gateway's 404 problem.
    let r = http
        .get(gw.url("/openapi/nosuch.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec.conform("GET", "/openapi/{service}.json", r)
            .await
            .status,
        404
    );
    // Not vacuous: metrics claimed as JSON, or an undocumented status, are refused.
    assert!(
        spec.check("GET", "/metrics", 200, Some("application/json"), b"{}")
            .is_err()
    );
    assert!(
        spec.check("GET", "/health/live", 500, Some("application/json"), b"{}")
            .is_err()
    );
}
