//! Typed clients of our services' HTTP APIs, for the calls several tests make, so each call and its
//! check ("must succeed", what the answer means) is written once. A call whose status is the point
//! of a test stays in that test.

use std::marker::PhantomData;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::{Answer, get_json, send, send_json};

/// One service's HTTP API at a base URL (`http://host:port`, or the registry's `…/eureka`): the
/// address and the HTTP client every typed client below is made of. `S` says which service, and
/// its calls are in that client's `impl` block.
#[derive(Clone, Debug)]
pub struct ServiceApi<S> {
    base: String,
    http: Client,
    service: PhantomData<S>,
}

impl<S> ServiceApi<S> {
    /// A client of the API at `base`.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: Client::new(),
            service: PhantomData,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The HTTP client, for a raw call whose exact wire shape is the point of a test.
    pub fn http(&self) -> &Client {
        &self.http
    }
}

/// shop-inventory's stock and reservation API at `base` (`http://host:port`).
pub type Inventory = ServiceApi<InventoryApi>;

/// Marks a [`ServiceApi`] as [`Inventory`].
#[derive(Clone, Copy, Debug)]
pub struct InventoryApi;

impl Inventory {
    /// Sets a SKU's stock (must answer 200; the body is shown when not).
    pub async fn set_stock(&self, sku: &str, quantity: i64) {
        let r = self
            .http
            .put(self.url(&format!("/api/inventory/{sku}")))
            .json(&json!({"quantity": quantity}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT stock of {sku}: {e}"));
        let status = r.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "PUT stock of {sku}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Available quantity of a SKU, as the stock query reports it (panics when it has none).
    pub async fn available(&self, sku: &str) -> i64 {
        let v: Value = get_json(
            &self.http,
            self.url(&format!("/api/inventory?skuCode={sku}")),
        )
        .await;
        v[0]["availableQuantity"]
            .as_i64()
            .unwrap_or_else(|| panic!("no availableQuantity for {sku} in {v}"))
    }

    /// Asks for a reservation of `lines` for `order`; returns the status and the JSON body
    /// (`Null` when it is not JSON).
    pub async fn reserve(&self, order: &str, lines: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/api/inventory/reservations"))
            .json(&json!({"orderNumber": order, "lines": lines}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST reservation {order}: {e}"));
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The status of `order`'s reservation (`RESERVED`, `RELEASED`, ...), `None` when inventory
    /// has none (404).
    pub async fn reservation_status(&self, order: &str) -> Option<String> {
        let a = send(
            self.http
                .get(self.url(&format!("/api/inventory/reservations/{order}"))),
        )
        .await;
        if a.status == StatusCode::NOT_FOUND {
            return None;
        }
        assert_eq!(
            a.status,
            StatusCode::OK,
            "GET reservation {order}: {}",
            a.json
        );
        a.json["status"].as_str().map(str::to_owned)
    }

    /// Releases `order`'s reservation (must answer 200; releasing is idempotent).
    pub async fn release(&self, order: &str) {
        let r = self
            .http
            .delete(self.url(&format!("/api/inventory/reservations/{order}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE reservation {order}: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "DELETE reservation {order}");
    }
}

/// shop-product's catalogue API at `base` (`http://host:port`): the calls the product, gateway and
/// end-to-end tests make again and again, with their checks written once.
pub type Product = ServiceApi<ProductApi>;

/// Marks a [`ServiceApi`] as [`Product`].
#[derive(Clone, Copy, Debug)]
pub struct ProductApi;

impl Product {
    /// `POST /api/product` with `body`, whatever it answers (status, content type, JSON).
    pub async fn post(&self, body: &Value) -> Answer {
        send(self.http.post(self.url("/api/product")).json(body)).await
    }

    /// Creates a product from `body` (must answer 201; the body is shown when not); the product
    /// as the service answered it.
    pub async fn create(&self, body: &Value) -> Value {
        let a = self.post(body).await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "POST /api/product {body}: {}",
            a.json
        );
        a.json
    }

    /// `GET /api/product/{id}`: the status and the product (or the problem) as JSON.
    pub async fn get(&self, id: &str) -> (StatusCode, Value) {
        send_json(self.http.get(self.url(&format!("/api/product/{id}")))).await
    }

    /// `PUT /api/product/{id}` with `body`, whatever it answers.
    pub async fn replace(&self, id: &str, body: &Value) -> (StatusCode, Value) {
        send_json(
            self.http
                .put(self.url(&format!("/api/product/{id}")))
                .json(body),
        )
        .await
    }

    /// `DELETE /api/product/{id}`: the status it answers.
    pub async fn delete(&self, id: &str) -> StatusCode {
        send(self.http.delete(self.url(&format!("/api/product/{id}"))))
            .await
            .status
    }

    /// `GET /api/product?<query>` (no `?` when `query` is empty), whatever it answers (status,
    /// headers, JSON).
    pub async fn list(&self, query: &str) -> Answer {
        let url = match query {
            "" => self.url("/api/product"),
            q => self.url(&format!("/api/product?{q}")),
        };
        send(self.http.get(url)).await
    }

    /// `GET /api/product?<query>` (must answer 200): the names in order, and `X-Total-Count`.
    pub async fn search(&self, query: &str) -> (Vec<String>, u64) {
        let a = self.list(query).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "GET /api/product?{query}: {}",
            a.json
        );
        let names = a
            .json
            .as_array()
            .unwrap_or_else(|| panic!("GET /api/product?{query} is not a list: {}", a.json))
            .iter()
            .map(|p| {
                p["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a product without a name: {p}"))
                    .to_owned()
            })
            .collect();
        (names, total_count(&a, query))
    }

    /// The number of products, as `X-Total-Count` of the listing says (must answer 200).
    pub async fn total(&self) -> u64 {
        let a = self.list("").await;
        assert_eq!(a.status, StatusCode::OK, "GET /api/product: {}", a.json);
        total_count(&a, "")
    }
}

/// `X-Total-Count` of a product listing; panics naming the query when absent or not a number.
fn total_count(a: &Answer, query: &str) -> u64 {
    a.header("x-total-count")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "GET /api/product?{query}: no X-Total-Count in {:?}",
                a.headers
            )
        })
}

/// shop-registry's Eureka API at `eureka` (`http://host:port/eureka`), as the Java client calls
/// it: register, renew, cancel, status and metadata, and the fetches. Every call returns what the
/// registry answered; [`Eureka::register`] is the one that must succeed.
pub type Eureka = ServiceApi<EurekaApi>;

/// Marks a [`ServiceApi`] as [`Eureka`].
#[derive(Clone, Copy, Debug)]
pub struct EurekaApi;

impl Eureka {
    /// `POST /apps/{app}` with the registration `body`, whatever it answers.
    pub async fn post_instance(&self, app: &str, body: &Value) -> Answer {
        send(self.http.post(self.url(&format!("/apps/{app}"))).json(body)).await
    }

    /// Registers `body` under `app` (must answer 204, as Eureka does; the problem is shown when
    /// not).
    pub async fn register(&self, app: &str, body: &Value) {
        let a = self.post_instance(app, body).await;
        assert_eq!(
            a.status,
            StatusCode::NO_CONTENT,
            "register {app}: {}",
            a.json
        );
    }

    /// `PUT /apps/{app}/{id}?<query>` (a heartbeat; `query` as the Java client sends it, e.g.
    /// `status=UP`): the status, 200 when known and 404 when not.
    pub async fn renew(&self, app: &str, id: &str, query: &str) -> StatusCode {
        self.put(&format!("/apps/{app}/{id}?{query}")).await.status
    }

    /// `DELETE /apps/{app}/{id}` (cancel): the status, 200 when known and 404 when not.
    pub async fn cancel(&self, app: &str, id: &str) -> StatusCode {
        self.delete(&format!("/apps/{app}/{id}")).await.status
    }

    /// `GET` a path of the API (e.g. `/apps/`, `/apps/delta`, `/vips/order`), whatever it answers.
    pub async fn get(&self, path: &str) -> Answer {
        send(self.http.get(self.url(path))).await
    }

    /// `GET` a path of the API as JSON (panics naming the URL when it is not JSON).
    pub async fn get_json(&self, path: &str) -> Value {
        get_json(&self.http, self.url(path)).await
    }

    /// `PUT` a path of the API without a body (renew, status, metadata), whatever it answers.
    pub async fn put(&self, path: &str) -> Answer {
        send(self.http.put(self.url(path))).await
    }

    /// `DELETE` a path of the API (cancel, status override removal), whatever it answers.
    pub async fn delete(&self, path: &str) -> Answer {
        send(self.http.delete(self.url(path))).await
    }
}

/// shop-order's order API at `base` (`http://host:port`): placing orders with the original's body
/// and reading them back.
pub type Order = ServiceApi<OrderApi>;

/// Marks a [`ServiceApi`] as [`Order`].
#[derive(Clone, Copy, Debug)]
pub struct OrderApi;

impl Order {
    /// `POST /api/order` with the original's body (`{"orderLineItemsDtoList": lines}`) and, when
    /// given, an `Idempotency-Key`; whatever it answers (status, headers, JSON).
    pub async fn place(&self, lines: &Value, key: Option<&str>) -> Answer {
        let mut req = self
            .http
            .post(self.url("/api/order"))
            .json(&json!({"orderLineItemsDtoList": lines}));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        send(req).await
    }

    /// `GET /api/order/{number}` as JSON (panics naming the URL when it is not JSON).
    pub async fn get(&self, number: &str) -> Value {
        get_json(&self.http, self.url(&format!("/api/order/{number}"))).await
    }

    /// `GET /api/order?<query>` as JSON (a page of orders).
    pub async fn list(&self, query: &str) -> Value {
        get_json(&self.http, self.url(&format!("/api/order?{query}"))).await
    }
}

/// shop-notification's API at `base` (`http://host:port`): the stored notifications and the
/// address of their live stream.
pub type Notification = ServiceApi<NotificationApi>;

/// Marks a [`ServiceApi`] as [`Notification`].
#[derive(Clone, Copy, Debug)]
pub struct NotificationApi;

impl Notification {
    /// The URL of the server-sent event stream (`/api/notifications/stream`).
    pub fn stream_url(&self) -> String {
        self.url("/api/notifications/stream")
    }

    /// `GET /api/notifications?<query>` (must answer 200): the notifications of the page and
    /// `X-Total-Count`.
    pub async fn list(&self, query: &str) -> (Vec<Value>, u64) {
        let call = format!("GET /api/notifications?{query}");
        let a = send(
            self.http
                .get(self.url(&format!("/api/notifications?{query}"))),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{call}: {}", a.json);
        let total = a
            .header("x-total-count")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{call}: no X-Total-Count in {:?}", a.headers));
        let page = match a.json {
            Value::Array(items) => items,
            other => panic!("{call}: not a list: {other}"),
        };
        (page, total)
    }

    /// The notifications stored for `order` (the first page, as the original lists them).
    pub async fn for_order(&self, order: &str) -> Vec<Value> {
        self.list(&format!("orderNumber={order}")).await.0
    }

    /// How many notifications are stored for `order` (`X-Total-Count` of a one-item page).
    pub async fn count_for(&self, order: &str) -> u64 {
        self.list(&format!("orderNumber={order}&size=1")).await.1
    }
}
