//! Integration tests of shop-product against the real MongoDB wire server, as a real process:
//! CRUD with the original's body shape, validation that names the field and writes nothing,
//! unique SKU codes, and stock seeding into a real shop-inventory (up, and down-then-back).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_testkit::clients::{self, Inventory};
use shop_testkit::{Answer, Service, free_port, fresh_name, get_json, mongo_url, wait_until};

/// A shop-product process, its typed client (the methods of [`clients::Product`] are called on
/// it directly) and its database, so a second process can share it.
struct Product {
    svc: Service,
    api: clients::Product,
    db: String,
}

impl std::ops::Deref for Product {
    type Target = clients::Product;
    fn deref(&self) -> &clients::Product {
        &self.api
    }
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
        // The port is known before inventory starts (or never does), so it is chosen up front.
        let inv = inventory_port.unwrap_or_else(free_port);
        let pattern = format!("http://127.0.0.1:{inv}");
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
            0,
        )
        .await;
        Product {
            api: clients::Product::new(svc.base_url()),
            svc,
            db,
        }
    }
}

/// `a` is the problem `want` naming `field`, as `application/problem+json`.
fn assert_problem(a: &Answer, want: StatusCode, field: &str) {
    let body = &a.json;
    assert_eq!(a.status, want, "body: {body}");
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "body: {body}"
    );
    assert_eq!(body["field"], field, "body: {body}");
    assert_eq!(body["status"], want.as_u16(), "body: {body}");
}

#[tokio::test]
async fn crud_with_the_original_body_shape() {
    let p = Product::start(None).await;
    // The original's exact body: no skuCode, no quantity.
    let created = p
        .create(&json!({"name":"iPhone 13","description":"iPhone 13","price":1200}))
        .await;
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
    let list: Value = get_json(p.http(), p.url("/api/product")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());

    // Replace.
    let (status, _) = p
        .replace(
            &id,
            &json!({"name":"iPhone 13 Pro","description":"pro","price":"1299.99"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = p.get(&id).await;
    assert_eq!(got["name"], "iPhone 13 Pro");
    assert_eq!(got["price"], "1299.99");
    assert_eq!(got["skuCode"], created["skuCode"]);

    // Delete, then it is gone with a problem body naming the id.
    assert_eq!(p.delete(&id).await, StatusCode::NO_CONTENT);
    let (status, body) = p.get(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["field"], "id");
    assert_eq!(p.total().await, 0);
}

#[tokio::test]
async fn paging_and_name_filter() {
    let p = Product::start(None).await;
    for i in 0..5 {
        p.create(&json!({"name": format!("item {i}"), "description": "", "price": "1.00"}))
            .await;
    }
    let page: Value = get_json(p.http(), p.url("/api/product?page=1&size=2")).await;
    let names: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["item 2", "item 3"]);
    let filtered: Value = get_json(p.http(), p.url("/api/product?name=item%204")).await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["name"], "item 4");
    let a = p.list("size=0").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["field"], "size");
    // Found by fuzzing: a page past 2^63 products was a 503 (MongoDB's skip is an int64), `page=`
    // and `page=2^63` (no int64) were served, and `size=1&size=2` was a text/plain 400.
    let a = p.list("page=9223372036854775807&size=2").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-total-count"), Some("5"));
    assert_eq!(a.json, json!([]));
    for (query, field) in [
        ("page=", "page"),
        ("page=9223372036854775808", "page"),
        ("size=1&size=2", "size"),
    ] {
        let a = p.list(query).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            a.header("content-type"),
            Some("application/problem+json"),
            "{query}"
        );
        assert_eq!(a.json["field"], field, "{query}");
    }
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
        assert_problem(&p.post(&body).await, want, field);
    }
    // Not JSON at all, and not declared as JSON.
    let r = p
        .http()
        .post(p.url("/api/product"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = p
        .http()
        .post(p.url("/api/product"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Oversized body (limit 64 KiB by default).
    let huge = json!({"name":"a","price":1,"description":"x".repeat(200 * 1024)});
    assert_problem(&p.post(&huge).await, StatusCode::PAYLOAD_TOO_LARGE, "body");
    assert_eq!(
        p.total().await,
        0,
        "a rejected request must not write anything"
    );

    // Unique SKU: the second product with the same SKU is refused and not written.
    let sku = fresh_name("sku-");
    p.create(&json!({"name":"a","price":1,"skuCode":sku})).await;
    let a = p.post(&json!({"name":"b","price":2,"skuCode":sku})).await;
    assert_problem(&a, StatusCode::CONFLICT, "skuCode");
    assert_eq!(p.total().await, 1);

    // An invalid replace leaves the stored product untouched.
    let list: Value = get_json(p.http(), p.url("/api/product")).await;
    let id = list[0]["id"].as_str().unwrap();
    let (status, _) = p.replace(id, &json!({"name":"a","price":"-5"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The SKU is the product's identity in inventory: it cannot be changed by a replace.
    let (status, body) = p
        .replace(id, &json!({"name":"a","price":"2","skuCode":"another-sku"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "skuCode");
    let (_, got) = p.get(id).await;
    assert_eq!(got["price"], "1.00");
    assert_eq!(got["skuCode"], sku.as_str());
}

/// A real shop-inventory process on `port` with a fresh MariaDB database.
/// Inventory on `port`, chosen with `free_port` because product is pointed at it before it starts
/// (or while it is down, or across its restart).
async fn start_inventory(port: u16, database_url: &str) -> Service {
    Service::spawn(
        "shop-inventory",
        &[],
        &[("DATABASE_URL", database_url)],
        port,
    )
    .await
}

/// Available quantity of `sku` in the inventory process (panics when it has none).
async fn available(inventory: &Service, sku: &str) -> i64 {
    Inventory::new(inventory.base_url()).available(sku).await
}

#[tokio::test]
async fn stock_is_seeded_into_a_running_inventory() {
    let db = shop_testkit::fresh_mysql_database("inventory").await;
    let inv_port = free_port();
    let inventory = start_inventory(inv_port, &db).await;
    let p = Product::start(Some(inv_port)).await;
    let sku = fresh_name("sku-");
    let created = p
        .create(&json!({"name":"iPhone 13","description":"x","price":"999.99","skuCode":sku,"quantity":7}))
        .await;
    assert_eq!(created["quantity"], 7);
    assert_eq!(
        created["stockSync"], "SYNCED",
        "inventory was up: synced inline"
    );
    assert_eq!(available(&inventory, &sku).await, 7);

    // Setting a new quantity through PUT replaces the stock (idempotent set).
    let id = created["id"].as_str().unwrap();
    let (status, body) = p
        .replace(
            id,
            &json!({"name":"iPhone 13","description":"x","price":"999.99","quantity":3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stockSync"], "SYNCED");
    assert_eq!(available(&inventory, &sku).await, 3);
}

#[tokio::test]
async fn stock_is_not_lost_while_inventory_is_down() {
    let db = shop_testkit::fresh_mysql_database("inventory").await;
    let inv_port = free_port();
    // Inventory is NOT running yet.
    let p = Product::start(Some(inv_port)).await;
    let sku = fresh_name("sku-");
    let created = p
        .create(
            &json!({"name":"Pixel","description":"x","price":"499.00","skuCode":sku,"quantity":5}),
        )
        .await;
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
    assert_eq!(available(&inventory, &sku).await, 5);
    // Operators see the retries in /metrics.
    let metrics = shop_testkit::metrics(p.http(), &p.svc.base_url()).await;
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
    let created = p
        .create(&json!({"name":"Galaxy","price":"10","skuCode":sku,"quantity":9}))
        .await;
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
    assert_eq!(available(&inventory, &sku).await, 9);
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
    let created = p
        .create(&json!({"name":"v0","price":"1.00","skuCode":sku,"quantity":1}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    for round in 0..3 {
        let puts = (1..=12).map(|i| {
            let (api, id) = (p.api.clone(), id.clone());
            let q = round * 100 + i;
            async move {
                let (status, body) = api
                    .replace(
                        &id,
                        &json!({"name": format!("v{q}"), "price":"1.00", "quantity": q}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
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
    assert_eq!(available(&inventory, &sku).await, q, "{got}");
}

impl Product {
    /// The search once the index answers (it is built in the background after a start).
    async fn search_when_ready(&self, query: &str) -> (Vec<String>, u64) {
        let url = self.url(&format!("/api/product?{query}"));
        let ready = wait_until(Duration::from_secs(20), || async {
            let r = self.http().get(&url).send().await;
            r.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        assert!(ready, "search never became ready: {url}");
        self.search(query).await
    }

    /// Creates a product with a SKU (must answer 201); its id.
    async fn add(&self, name: &str, description: &str, price: &str, sku: &str) -> String {
        let body = self
            .create(
                &json!({"name": name, "description": description, "price": price, "skuCode": sku}),
            )
            .await;
        body["id"].as_str().unwrap().to_owned()
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn catalog_search_matches_words_prices_and_sku_with_the_total() {
    let p = Product::start(None).await;
    p.search_when_ready("q=anything").await;
    p.add(
        "iPhone 15",
        "Apple's phone; titanium frame",
        "1199.00",
        "iphone-15",
    )
    .await;
    let galaxy = p
        .add("Galaxy S24", "Samsung PHONE, 256 GB", "899", "galaxy-s24")
        .await;
    p.add(
        "Pixel Buds",
        "Wireless earbuds by Google",
        "99.50",
        "pixel-buds",
    )
    .await;
    let case = p
        .add(
            "Phone case",
            "Silicone case for iPhone 15",
            "19.99",
            "case-15",
        )
        .await;

    // Words of name or description, any case, each query word a word's start, all required; in
    // creation order, with the total of every page.
    assert_eq!(
        p.search("q=phone").await,
        (strings(&["iPhone 15", "Galaxy S24", "Phone case"]), 3)
    );
    assert_eq!(
        p.search("q=Phone%20IPHONE").await,
        (strings(&["iPhone 15", "Phone case"]), 2)
    );
    assert_eq!(p.search("q=ear").await, (strings(&["Pixel Buds"]), 1));
    assert_eq!(p.search("q=hone").await, (vec![], 0));
    assert_eq!(
        p.search("q=phone&size=1&page=1").await,
        (strings(&["Galaxy S24"]), 3)
    );
    // Price range (inclusive) and SKU, alone or with words.
    assert_eq!(
        p.search("minPrice=99.5&maxPrice=899").await,
        (strings(&["Galaxy S24", "Pixel Buds"]), 2)
    );
    assert_eq!(
        p.search("q=phone&maxPrice=20").await,
        (strings(&["Phone case"]), 1)
    );
    assert_eq!(
        p.search("sku=pixel-buds").await,
        (strings(&["Pixel Buds"]), 1)
    );
    assert_eq!(p.search("sku=pixel-buds&q=phone").await, (vec![], 0));
    // The original's listing is unchanged.
    assert_eq!(p.total().await, 4);

    // A rename moves the product to its new words at once; a deletion takes it out.
    let (status, _) = p
        .replace(
            &galaxy,
            &json!({"name": "Galaxy Tab", "description": "Samsung tablet", "price": "499"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.search("q=tablet").await, (strings(&["Galaxy Tab"]), 1));
    assert_eq!(
        p.search("q=phone").await,
        (strings(&["iPhone 15", "Phone case"]), 2)
    );
    assert_eq!(p.delete(&case).await, StatusCode::NO_CONTENT);
    assert_eq!(p.search("q=silicone").await, (vec![], 0));
    assert_eq!(p.search("sku=case-15").await, (vec![], 0));
}

#[tokio::test]
async fn bad_search_parameters_name_the_field() {
    let p = Product::start(None).await;
    for (query, field) in [
        ("minPrice=cheap", "minPrice"),
        ("maxPrice=-1", "maxPrice"),
        ("minPrice=10&maxPrice=5", "minPrice"),
        ("q=a%20b%20c%20d%20e%20f%20g%20h%20i", "q"),
    ] {
        assert_problem(&p.list(query).await, StatusCode::BAD_REQUEST, field);
    }
}

#[tokio::test]
async fn another_replica_finds_what_this_one_wrote_and_a_restart_rebuilds() {
    let a = Product::start(None).await;
    let b = Product::restart_on(&a, None).await;
    b.search_when_ready("q=lamp").await;
    let id = a.add("Desk lamp", "LED, dimmable", "45.00", "lamp-1").await;

    // b learns of a's writes from product_changes (polled every second by default).
    let b_api = &b.api;
    let seen = |query: &'static str, want: u64| async move {
        wait_until(Duration::from_secs(10), || async {
            b_api.list(query).await.header("x-total-count") == Some(want.to_string().as_str())
        })
        .await
    };
    assert!(
        seen("q=dimm", 1).await,
        "replica b never found a's new product"
    );
    let (status, _) = a
        .replace(
            &id,
            &json!({"name": "Floor lamp", "description": "halogen", "price": "80"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen("q=halogen", 1).await, "replica b never saw the rename");
    assert_eq!(b.search("q=dimmable").await, (vec![], 0));
    assert_eq!(b.search("q=floor").await, (strings(&["Floor lamp"]), 1));

    // A new process builds its index from the collection.
    let c = Product::restart_on(&a, None).await;
    assert_eq!(
        c.search_when_ready("q=floor").await,
        (strings(&["Floor lamp"]), 1)
    );
    assert_eq!(a.delete(&id).await, StatusCode::NO_CONTENT);
    assert!(
        seen("q=floor", 0).await,
        "replica b still finds a deleted product"
    );
}

/// Every documented operation, with good and bad input, answers as the document the service serves
/// at `/openapi.json` says (status, media type, body schema); and the checker refuses a body that
/// leaves the schema, so the conformance is not vacuous.
#[tokio::test]
async fn every_operation_answers_as_the_openapi_document_says() {
    use shop_testkit::openapi::Spec;
    let p = Product::start(None).await;
    let spec = Spec::fetch(&p.svc.base_url()).await;
    let h = p.http();
    let list = "/api/product";
    let one = "/api/product/{id}";

    // POST /api/product: the original's body, a string price with stock, and each error.
    let r = h
        .post(p.url(list))
        .json(&json!({"name": "OAS phone", "description": "OAS phone", "price": 1200}))
        .send()
        .await
        .unwrap();
    let created = spec.conform("POST", list, r).await;
    assert_eq!(created.status, 201);
    let id = created.json["id"].as_str().unwrap().to_owned();
    let r = h
        .post(p.url(list))
        .json(&json!({"name": "OAS cable", "price": "9.99", "skuCode": "oas-cable", "quantity": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("POST", list, r).await.status, 201);
    for (body, status) in [
        (json!({"name": "x", "price": "abc"}), 400),
        (json!({"name": "", "price": 1}), 422),
        (
            json!({"name": "dup", "price": 1, "skuCode": "oas-cable"}),
            409,
        ),
        (json!({"name": "x".repeat(70_000), "price": 1}), 413),
    ] {
        let r = h.post(p.url(list)).json(&body).send().await.unwrap();
        assert_eq!(spec.conform("POST", list, r).await.status, status, "{body}");
    }
    let r = h.post(p.url(list)).body("name=x").send().await.unwrap();
    assert_eq!(spec.conform("POST", list, r).await.status, 415);

    // GET /api/product: listing, exact name, search, and bad parameters.
    for query in [
        "",
        "?name=OAS%20phone",
        "?q=oas%20pho&minPrice=100",
        "?sku=oas-cable",
    ] {
        let r = h
            .get(p.url(&format!("{list}{query}")))
            .send()
            .await
            .unwrap();
        let c = spec.conform("GET", list, r).await;
        assert_eq!(c.status, 200, "{query}");
        assert!(!c.json.as_array().unwrap().is_empty(), "{query}");
    }
    for query in [
        "?size=0",
        "?page=x",
        "?minPrice=cheap",
        "?minPrice=9&maxPrice=1",
    ] {
        let r = h
            .get(p.url(&format!("{list}{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(spec.conform("GET", list, r).await.status, 400, "{query}");
    }

    // GET, PUT, DELETE /api/product/{id}.
    let r = h.get(p.url(&format!("{list}/{id}"))).send().await.unwrap();
    assert_eq!(spec.conform("GET", one, r).await.status, 200);
    let r = h.get(p.url(&format!("{list}/nope"))).send().await.unwrap();
    assert_eq!(spec.conform("GET", one, r).await.status, 404);
    let r = h
        .put(p.url(&format!("{list}/{id}")))
        .json(&json!({"name": "OAS phone 2", "price": 1100}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", one, r).await.status, 200);
    for (body, status) in [
        (json!({"name": "x", "price": true}), 400),
        (
            json!({"name": "x", "price": 1, "skuCode": "other-sku"}),
            422,
        ),
        (json!({"name": "x".repeat(70_000), "price": 1}), 413),
    ] {
        let r = h
            .put(p.url(&format!("{list}/{id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(spec.conform("PUT", one, r).await.status, status, "{body}");
    }
    let r = h
        .put(p.url(&format!("{list}/{id}")))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", one, r).await.status, 415);
    let r = h
        .put(p.url(&format!("{list}/000000000000000000000000")))
        .json(&json!({"name": "x", "price": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("PUT", one, r).await.status, 404);
    let r = h
        .delete(p.url(&format!("{list}/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("DELETE", one, r).await.status, 204);
    let r = h
        .delete(p.url(&format!("{list}/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.conform("DELETE", one, r).await.status, 404);

    spec.assert_every_operation_exercised();

    // The checker is not vacuous: a product with a float price, or a list of strings, is refused.
    let bad = json!({"id": "0123456789abcdef01234567", "name": "x", "description": "",
        "price": 12.5, "skuCode": "s", "stockSync": "SYNCED"});
    assert!(spec.check_component("Product", &bad).is_err());
    assert!(
        spec.check("GET", list, 200, Some("application/json"), br#"["a"]"#)
            .is_err()
    );
    assert!(
        spec.check("GET", one, 418, Some("application/json"), b"{}")
            .is_err()
    );
}
