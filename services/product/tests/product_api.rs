//! Integration tests of shop-product against the real MongoDB wire server, as a real process:
//! CRUD with the original's body shape, validation that names the field and writes nothing,
//! unique SKU codes, and stock seeding into a real shop-inventory (up, and down-then-back).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_testkit::{Service, free_port, fresh_name, mongo_url, wait_until};

struct Product {
    svc: Service,
    http: reqwest::Client,
    db: String,
}

impl Product {
    async fn start(inventory_port: Option<u16>) -> Product {
        Self::start_on(fresh_name("product-"), inventory_port).await
    }

    /// A new process on the same database as `old`.
    async fn restart_on(old: &Product, inventory_port: Option<u16>) -> Product {
        Self::start_on(old.db.clone(), inventory_port).await
    }

    async fn start_on(db: String, inventory_port: Option<u16>) -> Product {
        let mongo = mongo_url();
        // Inventory is found through the DNS fallback of the runtime's discovery, pointed at a
        // loopback port (no registry in these tests).
        let inv = inventory_port.unwrap_or_else(free_port);
        let pattern = format!("http://127.0.0.1:{inv}");
        let port = free_port();
        let svc = Service::spawn(
            "shop-product",
            &[],
            &[
                ("SHOP_MONGO_URL", mongo.as_str()),
                ("SHOP_MONGO_DB", db.as_str()),
                ("SHOP_DNS_PATTERN", pattern.as_str()),
                ("SHOP_STOCK_RETRY_MS", "200"),
                ("SHOP_STOCK_RETRY_MAX_MS", "500"),
                ("SHOP_INVENTORY_TIMEOUT_MS", "1000"),
            ],
            port,
        )
        .await;
        Product {
            svc,
            http: reqwest::Client::new(),
            db,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.svc.base_url())
    }

    async fn post(&self, body: &Value) -> (StatusCode, Value, Option<String>) {
        let r = self
            .http
            .post(self.url("/api/product"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, r.json().await.unwrap_or(Value::Null), ct)
    }

    async fn total(&self) -> u64 {
        let r = self
            .http
            .get(self.url("/api/product"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.headers()["x-total-count"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn get(&self, id: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(&format!("/api/product/{id}")))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

fn assert_problem(
    status: StatusCode,
    body: &Value,
    ct: Option<&str>,
    want: StatusCode,
    field: &str,
) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(ct, Some("application/problem+json"), "body: {body}");
    assert_eq!(body["field"], field, "body: {body}");
    assert_eq!(body["status"], want.as_u16(), "body: {body}");
}

#[tokio::test]
async fn crud_with_the_original_body_shape() {
    let p = Product::start(None).await;
    // The original's exact body: no skuCode, no quantity.
    let (status, created, _) = p
        .post(&json!({"name":"iPhone 13","description":"iPhone 13","price":1200}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["price"], "1200.00");
    assert_eq!(created["stockSync"], "SYNCED");
    let sku = created["skuCode"].as_str().unwrap();
    assert!(sku.starts_with("iphone_13-"), "{sku}");

    let (status, got) = p.get(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["name"], "iPhone 13");
    assert_eq!(got["description"], "iPhone 13");

    // The list is the original's bare array with id/name/description/price.
    let list: Value = p
        .http
        .get(p.url("/api/product"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());

    // Replace.
    let r = p
        .http
        .put(p.url(&format!("/api/product/{id}")))
        .json(&json!({"name":"iPhone 13 Pro","description":"pro","price":"1299.99"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, got) = p.get(&id).await;
    assert_eq!(got["name"], "iPhone 13 Pro");
    assert_eq!(got["price"], "1299.99");
    assert_eq!(got["skuCode"], created["skuCode"]);

    // Delete, then it is gone with a problem body naming the id.
    let r = p
        .http
        .delete(p.url(&format!("/api/product/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, body) = p.get(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["field"], "id");
    assert_eq!(p.total().await, 0);
}

#[tokio::test]
async fn paging_and_name_filter() {
    let p = Product::start(None).await;
    for i in 0..5 {
        let (s, b, _) = p
            .post(&json!({"name": format!("item {i}"), "description": "", "price": "1.00"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let page: Value = p
        .http
        .get(p.url("/api/product?page=1&size=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["item 2", "item 3"]);
    let filtered: Value = p
        .http
        .get(p.url("/api/product?name=item%204"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["name"], "item 4");
    let r = p
        .http
        .get(p.url("/api/product?size=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "size");
}

#[tokio::test]
async fn invalid_bodies_name_the_field_and_write_nothing() {
    let p = Product::start(None).await;
    let cases = [
        (
            json!({"name":"","description":"x","price":1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"description":"x","price":1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"name":"a","price":-0.01}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price",
        ),
        (
            json!({"name":"a","price":"1.999"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "price",
        ),
        (
            json!({"name":"a","price":"twelve"}),
            StatusCode::BAD_REQUEST,
            "price",
        ),
        (
            json!({"name":"a","price":1,"quantity":-3}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
        (
            json!({"name":"a","price":1,"quantity":2.5}),
            StatusCode::BAD_REQUEST,
            "quantity",
        ),
        (
            json!({"name":"a","price":1,"skuCode":"has space"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "skuCode",
        ),
        (
            json!(["not", "an", "object"]),
            StatusCode::BAD_REQUEST,
            "body",
        ),
    ];
    for (body, want, field) in cases {
        let (status, problem, ct) = p.post(&body).await;
        assert_problem(status, &problem, ct.as_deref(), want, field);
    }
    // Not JSON at all, and not declared as JSON.
    let r = p
        .http
        .post(p.url("/api/product"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = p
        .http
        .post(p.url("/api/product"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Oversized body (limit 64 KiB by default).
    let huge = json!({"name":"a","price":1,"description":"x".repeat(200 * 1024)});
    let (status, problem, ct) = p.post(&huge).await;
    assert_problem(
        status,
        &problem,
        ct.as_deref(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body",
    );
    assert_eq!(
        p.total().await,
        0,
        "a rejected request must not write anything"
    );

    // Unique SKU: the second product with the same SKU is refused and not written.
    let sku = fresh_name("sku-");
    let (s, _, _) = p.post(&json!({"name":"a","price":1,"skuCode":sku})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, problem, ct) = p.post(&json!({"name":"b","price":2,"skuCode":sku})).await;
    assert_problem(s, &problem, ct.as_deref(), StatusCode::CONFLICT, "skuCode");
    assert_eq!(p.total().await, 1);

    // An invalid replace leaves the stored product untouched.
    let list: Value = p
        .http
        .get(p.url("/api/product"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list[0]["id"].as_str().unwrap();
    let r = p
        .http
        .put(p.url(&format!("/api/product/{id}")))
        .json(&json!({"name":"a","price":"-5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The SKU is the product's identity in inventory: it cannot be changed by a replace.
    let r = p
        .http
        .put(p.url(&format!("/api/product/{id}")))
        .json(&json!({"name":"a","price":"2","skuCode":"another-sku"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "skuCode");
    let (_, got) = p.get(id).await;
    assert_eq!(got["price"], "1.00");
    assert_eq!(got["skuCode"], sku.as_str());
}

/// A real shop-inventory process on `port` with a fresh MariaDB database.
async fn start_inventory(port: u16, database_url: &str) -> Service {
    Service::spawn(
        "shop-inventory",
        &[],
        &[("DATABASE_URL", database_url)],
        port,
    )
    .await
}

async fn available(http: &reqwest::Client, inventory: &Service, sku: &str) -> Option<i64> {
    let r = http
        .get(format!(
            "{}/api/inventory?skuCode={sku}",
            inventory.base_url()
        ))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v[0]["availableQuantity"].as_i64()
}

#[tokio::test]
async fn stock_is_seeded_into_a_running_inventory() {
    let db = shop_testkit::fresh_mysql_database("inventory").await;
    let inv_port = free_port();
    let inventory = start_inventory(inv_port, &db).await;
    let p = Product::start(Some(inv_port)).await;
    let sku = fresh_name("sku-");
    let (status, created, _) = p
        .post(&json!({"name":"iPhone 13","description":"x","price":"999.99","skuCode":sku,"quantity":7}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["quantity"], 7);
    assert_eq!(
        created["stockSync"], "SYNCED",
        "inventory was up: synced inline"
    );
    assert_eq!(available(&p.http, &inventory, &sku).await, Some(7));

    // Setting a new quantity through PUT replaces the stock (idempotent set).
    let id = created["id"].as_str().unwrap();
    let r = p
        .http
        .put(p.url(&format!("/api/product/{id}")))
        .json(&json!({"name":"iPhone 13","description":"x","price":"999.99","quantity":3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["stockSync"], "SYNCED");
    assert_eq!(available(&p.http, &inventory, &sku).await, Some(3));
}

#[tokio::test]
async fn stock_is_not_lost_while_inventory_is_down() {
    let db = shop_testkit::fresh_mysql_database("inventory").await;
    let inv_port = free_port();
    // Inventory is NOT running yet.
    let p = Product::start(Some(inv_port)).await;
    let sku = fresh_name("sku-");
    let (status, created, _) = p
        .post(
            &json!({"name":"Pixel","description":"x","price":"499.00","skuCode":sku,"quantity":5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["stockSync"], "PENDING", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // Still pending a moment later: the retry loop keeps failing while inventory is down.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(p.get(&id).await.1["stockSync"], "PENDING");

    // Inventory comes up; the marker is retried until inventory confirms, then cleared.
    let inventory = start_inventory(inv_port, &db).await;
    let synced = wait_until(Duration::from_secs(20), || async {
        p.get(&id).await.1["stockSync"] == "SYNCED"
    })
    .await;
    assert!(synced, "stock never reached inventory after it came back");
    assert_eq!(available(&p.http, &inventory, &sku).await, Some(5));
    // Operators see the retries in /metrics.
    let metrics = p
        .http
        .get(p.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| shop_testkit::metric_value(&metrics, name);
    assert!(value("product_stock_push_failures_total") >= 1.0);
    assert!(value("product_stock_push_confirmed_total") >= 1.0);
}

#[tokio::test]
async fn pending_stock_survives_a_product_restart() {
    let db = shop_testkit::fresh_mysql_database("inventory").await;
    let inv_port = free_port();
    let mut p = Product::start(Some(inv_port)).await;
    let sku = fresh_name("sku-");
    let (status, created, _) = p
        .post(&json!({"name":"Galaxy","price":"10","skuCode":sku,"quantity":9}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["stockSync"], "PENDING");
    let id = created["id"].as_str().unwrap().to_owned();
    // The product process dies before inventory ever came up.
    p.svc.kill();
    let inventory = start_inventory(inv_port, &db).await;
    // A new product process on the same database finds the marker and finishes the job.
    let p2 = Product::restart_on(&p, Some(inv_port)).await;
    let synced = wait_until(Duration::from_secs(20), || async {
        p2.get(&id).await.1["stockSync"] == "SYNCED"
    })
    .await;
    assert!(synced, "marker left by the dead process was not retried");
    assert_eq!(available(&p2.http, &inventory, &sku).await, Some(9));
}

/// Many PUTs of one product at once, each with its own name and quantity, while the stock of each
/// is pushed and its marker cleared: afterwards the product is SYNCED, and the stock inventory
/// holds is the quantity the product shows, from the same PUT as its name. A lost update (one
/// write of the product undoing another) shows as a product stuck PENDING, or a name and a
/// quantity from different PUTs, or inventory holding another quantity than the product.
#[tokio::test]
async fn concurrent_updates_of_one_product_lose_nothing() {
    let db = shop_testkit::fresh_mysql_database("inventory").await;
    let inv_port = free_port();
    let inventory = start_inventory(inv_port, &db).await;
    let p = Product::start(Some(inv_port)).await;
    let sku = fresh_name("sku-");
    let (status, created, _) = p
        .post(&json!({"name":"v0","price":"1.00","skuCode":sku,"quantity":1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    for round in 0..3 {
        let puts = (1..=12).map(|i| {
            let (http, url) = (p.http.clone(), p.url(&format!("/api/product/{id}")));
            let q = round * 100 + i;
            async move {
                let r = http
                    .put(url)
                    .json(&json!({"name": format!("v{q}"), "price":"1.00", "quantity": q}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
        });
        futures::future::join_all(puts).await;
    }
    let settled = wait_until(Duration::from_secs(20), || async {
        p.get(&id).await.1["stockSync"] == "SYNCED"
    })
    .await;
    let (_, got) = p.get(&id).await;
    assert!(settled, "product never got back to SYNCED: {got}");
    let q = got["quantity"].as_i64().unwrap();
    assert_eq!(
        got["name"],
        format!("v{q}"),
        "name and quantity from different PUTs: {got}"
    );
    assert_eq!(available(&p.http, &inventory, &sku).await, Some(q), "{got}");
}
