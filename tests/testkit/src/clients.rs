//! Typed clients of our services' HTTP APIs, for the calls several tests make, so each call and its
//! check ("must succeed", what the answer means) is written once. A call whose status is the point
//! of a test stays in that test.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::get_json;

/// shop-inventory's stock and reservation API at `base` (`http://host:port`).
#[derive(Clone, Debug)]
pub struct Inventory {
    base: String,
    http: Client,
}

impl Inventory {
    /// A client of the inventory at `base`.
    pub fn new(base: impl Into<String>) -> Inventory {
        Inventory {
            base: base.into(),
            http: Client::new(),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

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
