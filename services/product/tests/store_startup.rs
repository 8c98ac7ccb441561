//! shop-product started before its MongoDB, as a pod often is: it stays alive and unready, its
//! readiness naming the store and its address, and serves — with its unique SKU index — once the
//! server answers. It used to exit after 5 s and crash-loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shop_testkit::{Service, free_port, fresh_name, lossy_link::LossyLink, mongo_url, wait_until};

#[tokio::test]
async fn product_waits_unready_for_its_mongodb_then_serves_with_its_index() {
    let real = mongo_url(); // the real server; fails loudly when it is down
    assert!(real.contains("127.0.0.1:27017"), "{real}");
    // Where MongoDB will appear later (a server not ours, started after product): chosen up front.
    let mongo_port = free_port();
    let url = format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true");
    let db = fresh_name("late-");
    let svc = Service::launch(
        "shop-product",
        &[],
        &[("SHOP_MONGO_URL", &url), ("SHOP_MONGO_DB", &db)],
        0,
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |path: &'static str| {
        let (http, base) = (http.clone(), svc.base_url());
        async move { http.get(format!("{base}{path}")).send().await }
    };

    // Live, not ready, for longer than the old 5 s exit; the reason names the store.
    let live = wait_until(Duration::from_secs(20), || async {
        matches!(get("/health/live").await, Ok(r) if r.status().is_success())
    })
    .await;
    assert!(live, "shop-product never answered /health/live");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let r = get("/health/ready").await.expect("still running after 7 s");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("mongodb") && body.contains(&format!("127.0.0.1:{mongo_port}/{db}")),
        "{body}"
    );

    // MongoDB appears at that address: ready, and the SKU index exists.
    let forwarder = LossyLink::start_on(mongo_port, "127.0.0.1:27017").await;
    let ready = wait_until(Duration::from_secs(30), || async {
        matches!(get("/health/ready").await, Ok(r) if r.status().is_success())
    })
    .await;
    assert!(ready, "not ready after MongoDB appeared");
    let product = json!({"name": "Late", "description": "", "price": "1.00", "skuCode": fresh_name("late-sku-")});
    let post = || {
        let (http, base, product) = (http.clone(), svc.base_url(), product.clone());
        async move {
            http.post(format!("{base}/api/product"))
                .json(&product)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post().await, StatusCode::CREATED);
    assert_eq!(
        post().await,
        StatusCode::CONFLICT,
        "the unique SKU index was created"
    );
    drop(forwarder);
}
