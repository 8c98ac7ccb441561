//! The OpenAPI documents through the gateway: its own `/openapi.json` (which must describe its own
//! endpoints truthfully) and a real service's document forwarded at `/openapi/<service>.json`,
//! byte-for-byte what the service itself serves. Needs the shop-inventory binary (built by
//! `make test`) and the local MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Gateway;
use shop_testkit::openapi::Spec;
use shop_testkit::{Service, fresh_mysql_database};

#[tokio::test]
async fn service_documents_are_forwarded_and_the_gateways_own_document_conforms() {
    let db = fresh_mysql_database("gwoas").await;
    let inventory =
        Service::spawn("shop-inventory", &[], &[("DATABASE_URL", db.as_str())], 0).await;
    let pattern = inventory.base_url();
    let secret = "openapi-documents-secret-0123456789";
    let gw = Gateway::start(
        "",
        &[
            ("SHOP_DNS_PATTERN", pattern.as_str()),
            ("SHOP_JWT_SECRET", secret),
        ],
    )
    .await;
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
    // Found by fuzzing (tests/e2e/tests/fuzz.rs): the gateway's own endpoints answered any method
    // (`TRACE /metrics` returned the metrics); they are read-only.
    for (method, path) in [
        ("TRACE", "/metrics"),
        ("POST", "/health/live"),
        ("DELETE", "/health/ready"),
        ("PUT", "/openapi.json"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(method.clone(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], "GET, HEAD", "{method} {path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["status"], 405);
    }
    let r = http.head(gw.url("/health/live")).send().await.unwrap();
    assert_eq!(r.status(), 200, "HEAD stays allowed");

    // Found by fuzzing: a body over inventory's 64 KiB limit came back through the gateway as 502
    // "upstream unreachable": inventory answered 413 without reading the body and closed the
    // connection, whose reset reached the still-sending gateway before the answer did. The
    // services now read the rest of a refused body first (shop_runtime's server), so the 413
    // arrives.
    let out = std::process::Command::new(shop_testkit::binary_path("shop-gateway"))
        .args(["mint-token", "--secret", secret, "--sub", "docs"])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Large enough that the gateway is still sending when inventory has answered and closed.
    let padding = "x".repeat(4 * 1024 * 1024);
    let body =
        serde_json::to_vec(&serde_json::json!({ "reservations": [], "pad": padding })).unwrap();
    for _ in 0..5 {
        let r = http
            .post(gw.url("/api/inventory/reservations/batch"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{}", r.text().await.unwrap());
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
