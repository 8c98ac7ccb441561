//! The shop-inventory process every inventory integration test drives: a fresh MariaDB database, the
//! real binary on a free port, and the few calls the tests make through its HTTP API.
#![allow(dead_code, clippy::unwrap_used)]

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_testkit::get_json;
use shop_testkit::{Service, fresh_mysql_database};

pub struct Inv {
    pub svc: Service,
    pub http: Client,
}

impl Inv {
    pub async fn start() -> Inv {
        let db = fresh_mysql_database("inv").await;
        let svc = Service::spawn("shop-inventory", &[], &[("DATABASE_URL", db.as_str())], 0).await;
        Inv {
            svc,
            http: Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.svc.base_url())
    }

    /// Sets a SKU's stock (must succeed).
    pub async fn set(&self, sku: &str, q: i64) {
        let r = self
            .http
            .put(self.url(&format!("/api/inventory/{sku}")))
            .json(&json!({"quantity": q}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }

    /// Available quantity of a SKU, as the stock query reports it.
    pub async fn stock(&self, sku: &str) -> i64 {
        let v: Value = get_json(
            &self.http,
            self.url(&format!("/api/inventory?skuCode={sku}")),
        )
        .await;
        v[0]["availableQuantity"].as_i64().unwrap()
    }

    /// Asks for a reservation; returns the status and the JSON body.
    pub async fn reserve(&self, order: &str, lines: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/api/inventory/reservations"))
            .json(&json!({"orderNumber": order, "lines": lines}))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Releases a reservation (must succeed; releasing is idempotent).
    pub async fn release(&self, order: &str) {
        let r = self
            .http
            .delete(self.url(&format!("/api/inventory/reservations/{order}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
