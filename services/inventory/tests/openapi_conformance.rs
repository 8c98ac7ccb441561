//! Every documented operation of shop-inventory, driven against the real service (fresh MariaDB
//! database) with good and bad input; each response must conform to the OpenAPI document the
//! service itself serves at `/openapi.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Inv;
use serde_json::json;
use shop_testkit::openapi::Spec;

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let inv = Inv::start().await;
    let spec = Spec::fetch(&inv.svc.base_url()).await;
    let h = &inv.http;
    let sku = "oas_sku";
    let order = format!("oas-{}", shop_testkit::fresh_name("o"));

    // PUT /api/inventory/{skuCode}
    let t = "/api/inventory/{skuCode}";
    let r = h
        .put(inv.url(&format!("/api/inventory/{sku}")))
        .json(&json!({"quantity": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", t, r).await.status, 200);
    let r = h
        .put(inv.url(&format!("/api/inventory/{sku}")))
        .json(&json!({"quantity": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", t, r).await.status, 422);
    let r = h
        .put(inv.url(&format!("/api/inventory/{sku}")))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", t, r).await.status, 400);
    let r = h
        .put(inv.url(&format!("/api/inventory/{sku}")))
        .body("quantity=1")
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", t, r).await.status, 415);
    let r = h
        .put(inv.url(&format!("/api/inventory/{sku}")))
        .json(&json!({"pad": "x".repeat(70_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", t, r).await.status, 413);

    // GET /api/inventory/{skuCode}
    let r = h
        .get(inv.url(&format!("/api/inventory/{sku}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.json["quantity"], 5);
    let r = h
        .get(inv.url("/api/inventory/no_such_sku"))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.status, 404);

    // POST /api/inventory/{skuCode}/adjust
    let t = "/api/inventory/{skuCode}/adjust";
    let r = h
        .post(inv.url(&format!("/api/inventory/{sku}/adjust")))
        .json(&json!({"delta": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.json["quantity"], 7);
    let r = h
        .post(inv.url(&format!("/api/inventory/{sku}/adjust")))
        .json(&json!({"delta": -100}))
        .send()
        .await
        .unwrap();
    let c = spec.conform("POST", t, r).await;
    assert_eq!(c.status, 409);
    assert_eq!(c.content_type.as_deref(), Some("application/problem+json"));
    let r = h
        .post(inv.url("/api/inventory/no_such_sku/adjust"))
        .json(&json!({"delta": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 404);
    let r = h
        .post(inv.url(&format!("/api/inventory/{sku}/adjust")))
        .json(&json!({"delta": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 422);

    // GET /api/inventory
    let t = "/api/inventory";
    let r = h
        .get(inv.url(&format!("/api/inventory?skuCode={sku},unknown&quantity=2")))
        .send()
        .await
        .unwrap();
    let c = spec.conform("GET", t, r).await;
    assert_eq!(c.json[0]["inStock"], true);
    assert_eq!(c.json[1]["inStock"], false);
    let r = h.get(inv.url("/api/inventory")).send().await.unwrap();
    assert_eq!(spec.conform("GET", t, r).await.status, 400);
    let r = h
        .get(inv.url(&format!("/api/inventory?skuCode={sku}&quantity=0")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.status, 422);

    // POST /api/inventory/reservations
    let t = "/api/inventory/reservations";
    let lines = json!([{"skuCode": sku, "quantity": 1}]);
    let r = h
        .post(inv.url(t))
        .json(&json!({"orderNumber": order, "lines": lines}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 201);
    let r = h
        .post(inv.url(t))
        .json(&json!({"orderNumber": order, "lines": lines}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 200);
    let r = h
        .post(inv.url(t))
        .json(&json!({"orderNumber": "o-big", "lines": [{"skuCode": sku, "quantity": 1000}]}))
        .send()
        .await
        .unwrap();
    let c = spec.conform("POST", t, r).await;
    assert_eq!(c.status, 409);
    assert_eq!(c.json["unavailable"][0]["skuCode"], sku);
    let r = h
        .post(inv.url(t))
        .json(&json!({"orderNumber": "o-x", "lines": [{"skuCode": "nope", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert!(matches!(spec.conform("POST", t, r).await.status, 404 | 409));
    let r = h
        .post(inv.url(t))
        .json(&json!({"orderNumber": "o-x", "lines": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 422);

    // POST /api/inventory/reservations/batch
    let t = "/api/inventory/reservations/batch";
    let r = h
        .post(inv.url(t))
        .json(&json!({"reservations": [
            {"orderNumber": format!("{order}-b"), "lines": lines},
            {"orderNumber": "o-y", "lines": []},
            {"orderNumber": "o-z", "lines": [{"skuCode": sku, "quantity": 1000}]},
        ]}))
        .send()
        .await
        .unwrap();
    let c = spec.conform("POST", t, r).await;
    assert_eq!(c.json["results"][0]["status"], 201);
    assert_eq!(c.json["results"][1]["status"], 422);
    assert_eq!(c.json["results"][2]["status"], 409);
    let r = h
        .post(inv.url(t))
        .json(&json!({"reservations": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", t, r).await.status, 422);

    // GET /api/inventory/reservations
    let r = h
        .get(inv.url("/api/inventory/reservations?status=RESERVED&limit=10"))
        .send()
        .await
        .unwrap();
    let c = spec.conform("GET", "/api/inventory/reservations", r).await;
    assert!(c.json.as_array().is_some_and(|a| !a.is_empty()));
    let r = h
        .get(inv.url("/api/inventory/reservations?status=MAYBE"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec.conform("GET", "/api/inventory/reservations", r)
            .await
            .status,
        400
    );

    // GET / DELETE /api/inventory/reservations/{orderNumber}
    let t = "/api/inventory/reservations/{orderNumber}";
    let r = h
        .get(inv.url(&format!("/api/inventory/reservations/{order}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.json["status"], "RESERVED");
    let r = h
        .get(inv.url("/api/inventory/reservations/never-made"))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("GET", t, r).await.status, 404);
    let r = h
        .delete(inv.url(&format!("/api/inventory/reservations/{order}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        spec.conform("DELETE", t, r).await.json["status"],
        "RELEASED"
    );
    let long = "x".repeat(65);
    let r = h
        .delete(inv.url(&format!("/api/inventory/reservations/{long}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("DELETE", t, r).await.status, 422);

    spec.assert_every_operation_exercised();
}

#[tokio::test]
async fn the_checker_rejects_responses_that_leave_the_document() {
    let inv = Inv::start().await;
    let spec = Spec::fetch(&inv.svc.base_url()).await;
    let t = "/api/inventory/{skuCode}";
    // A level whose quantity is a string, a level without its SKU, an undocumented status, a
    // problem served as plain JSON: each must be refused.
    for (status, ct, body) in [
        (200, "application/json", r#"{"skuCode":"a","quantity":"5"}"#),
        (200, "application/json", r#"{"quantity":5}"#),
        (418, "application/json", r#"{"skuCode":"a","quantity":5}"#),
        (
            404,
            "application/json",
            r#"{"type":"about:blank","title":"Not found","status":404}"#,
        ),
        (
            404,
            "application/problem+json",
            r#"{"title":"Not found","status":"404"}"#,
        ),
    ] {
        assert!(
            spec.check("GET", t, status, Some(ct), body.as_bytes())
                .is_err(),
            "accepted {status} {ct} {body}"
        );
    }
    assert!(
        spec.check(
            "GET",
            t,
            200,
            Some("application/json"),
            br#"{"skuCode":"a","quantity":5}"#
        )
        .is_ok()
    );
}
