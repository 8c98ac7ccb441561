//! Every documented operation of shop-order, driven against the real service (with a real
//! shop-inventory, fresh MariaDB databases and Kafka) with good and bad input; each response must
//! conform to the OpenAPI document the service itself serves at `/openapi.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Opts, Shop};
use serde_json::json;
use shop_testkit::openapi::Spec;

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let shop = Shop::start(Opts::default()).await;
    let spec = Spec::fetch(&shop.order.base_url()).await;
    let h = &shop.http;
    shop.set_stock("oas_phone", 3).await;
    let t = "/api/order";
    let line = |q: i64| json!({"orderLineItemsDtoList": [{"skuCode": "oas_phone", "price": "10.00", "quantity": q}]});

    let r = h
        .post(shop.order_url(t))
        .header("Idempotency-Key", "oas-key-1")
        .json(&line(1))
        .send()
        .await
        .unwrap();
    let placed = spec.conform("POST", t, r).await;
    assert_eq!(placed.status, 201);
    let number = placed.json["orderNumber"].as_str().unwrap().to_owned();
    // Replay with the same key: the same answer.
    let r = h
        .post(shop.order_url(t))
        .header("Idempotency-Key", "oas-key-1")
        .json(&line(1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec.conform("POST", t, r).await.json["orderNumber"],
        number.as_str()
    );
    // Same key, other body.
    let r = h
        .post(shop.order_url(t))
        .header("Idempotency-Key", "oas-key-1")
        .json(&line(2))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 422);
    // Not enough stock.
    let r = h
        .post(shop.order_url(t))
        .json(&line(100))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 409);
    let r = h
        .post(shop.order_url(t))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 400);
    let r = h.post(shop.order_url(t)).body("x").send().await.unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 415);
    let r = h
        .post(shop.order_url(t))
        .json(&json!({"orderLineItemsDtoList": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 422);

    let r = h
        .get(shop.order_url("/api/order?page=0&size=5"))
        .send()
        .await
        .unwrap();
    let page = spec.conform("GET", t, r).await;
    assert_eq!(page.json["totalElements"], 1);
    let r = h
        .get(shop.order_url("/api/order?size=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.status, 400);

    let t = "/api/order/{order_number}";
    let r = h
        .get(shop.order_url(&format!("/api/order/{number}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.json["status"], "PLACED");
    let r = h
        .get(shop.order_url("/api/order/no-such-order"))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.status, 404);

    spec.assert_every_operation_exercised();

    // The checker is not vacuous: an order whose total is a number, or a page without its content,
    // leaves the document.
    let mut bad = placed.json.clone();
    bad["total"] = json!(10.0);
    assert!(
        spec.check(
            "GET",
            t,
            200,
            Some("application/json"),
            bad.to_string().as_bytes()
        )
        .is_err()
    );
    assert!(
        spec.check(
            "GET",
            "/api/order",
            200,
            Some("application/json"),
            br#"{"page":0}"#
        )
        .is_err()
    );
    assert!(
        spec.check(
            "POST",
            "/api/order",
            201,
            Some("application/json"),
            placed.body.as_slice()
        )
        .is_ok()
    );
}
