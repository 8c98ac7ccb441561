//! The storefront through the real `shop-gateway` process: it answers `/`, `/admin` and its
//! assets with security headers, a configured route that overlaps it wins, `SHOP_STOREFRONT=false`
//! switches it off and a bad value stops the gateway with a message, and `SHOP_STATUS_FILE` is
//! served at `/admin/status.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Gateway, Upstream, header};
use serde_json::Value;

fn routes(product: &Upstream, extra: &str) -> String {
    format!(
        "routes:\n  - {{id: product, prefix: /api/product, upstreams: [\"{}\"]}}\n{extra}",
        product.url()
    )
}

#[tokio::test]
async fn the_gateway_serves_the_store_and_its_routes_still_go_upstream() {
    let product = Upstream::start("product").await;
    let gw = Gateway::start(&routes(&product, ""), &[]).await;
    let http = reqwest::Client::new();

    let r = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "content-type"),
        "text/html; charset=utf-8"
    );
    let csp = header(r.headers(), "content-security-policy").to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let etag = header(r.headers(), "etag").to_owned();
    assert!(r.text().await.unwrap().contains("Search products"));

    let again = http
        .get(gw.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "a matching ETag is answered 304");

    let js = http
        .get(gw.url("/storefront/store.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(
        header(js.headers(), "content-type"),
        "text/javascript; charset=utf-8"
    );

    let api: Value = http
        .get(gw.url("/api/product?q=x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["upstream"], "product", "{api}");

    let unknown = http
        .get(gw.url("/storefront/missing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        header(unknown.headers(), "content-type"),
        "application/problem+json"
    );

    let status = http.get(gw.url("/admin/status.json")).send().await.unwrap();
    assert_eq!(status.status(), 404, "no SHOP_STATUS_FILE, no status");
    assert!(status.text().await.unwrap().contains("SHOP_STATUS_FILE"));
}

#[tokio::test]
async fn a_configured_route_wins_over_the_storefront() {
    let product = Upstream::start("product").await;
    let admin = Upstream::start("admin-app").await;
    let extra = format!(
        "  - {{id: admin, prefix: /admin, upstreams: [\"{}\"]}}\n",
        admin.url()
    );
    let gw = Gateway::start(&routes(&product, &extra), &[]).await;
    let http = reqwest::Client::new();

    let r: Value = http
        .get(gw.url("/admin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["upstream"], "admin-app", "{r}");
    assert_eq!(admin.hits(), 1);
    let store = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(store.status(), 200, "the rest of the storefront stays");
}

#[tokio::test]
async fn shop_storefront_false_switches_it_off() {
    let product = Upstream::start("product").await;
    let gw = Gateway::start(&routes(&product, ""), &[("SHOP_STOREFRONT", "false")]).await;
    let r = reqwest::get(gw.url("/")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        header(r.headers(), "content-type"),
        "application/problem+json"
    );
    let admin = reqwest::get(gw.url("/admin")).await.unwrap();
    assert_eq!(admin.status(), 404);
}

#[test]
fn a_bad_storefront_switch_stops_the_gateway_with_a_message() {
    let out = std::process::Command::new(shop_testkit::binary_path("shop-gateway"))
        .env("SHOP_STOREFRONT", "maybe")
        .env("SHOP_PORT", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("maybe") && err.contains("storefront"),
        "the error names the value and the setting: {err}"
    );
}

#[tokio::test]
async fn the_shop_status_file_is_served_to_the_admin_page() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.json");
    std::fs::write(
        &file,
        r#"{"phase":"Ready","readyComponents":"6/6","components":[]}"#,
    )
    .unwrap();
    let product = Upstream::start("product").await;
    let gw = Gateway::start(
        &routes(&product, ""),
        &[("SHOP_STATUS_FILE", file.to_str().unwrap())],
    )
    .await;
    let r = reqwest::get(gw.url("/admin/status.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "cache-control"), "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["phase"], "Ready");
    // The file is read per request: the operator's updates show without a restart.
    std::fs::write(&file, r#"{"phase":"Degraded"}"#).unwrap();
    let v: Value = reqwest::get(gw.url("/admin/status.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["phase"], "Degraded");
}
