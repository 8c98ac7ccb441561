//! The shop-inventory process every inventory integration test drives: a fresh MariaDB database, the
//! real binary on a port the OS picks, and the few calls the tests make through its HTTP API (the
//! typed `shop_testkit::clients::Inventory`).
#![allow(dead_code, clippy::unwrap_used)]

use reqwest::{Client, StatusCode};
use serde_json::Value;
use shop_testkit::clients::Inventory;
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

    /// The typed client of this inventory (`shop_testkit::clients`).
    pub fn api(&self) -> Inventory {
        Inventory::new(self.svc.base_url())
    }

    /// Sets a SKU's stock (must succeed).
    pub async fn set(&self, sku: &str, q: i64) {
        self.api().set_stock(sku, q).await;
    }

    /// Available quantity of a SKU, as the stock query reports it.
    pub async fn stock(&self, sku: &str) -> i64 {
        self.api().available(sku).await
    }

    /// Asks for a reservation; returns the status and the JSON body.
    pub async fn reserve(&self, order: &str, lines: Value) -> (StatusCode, Value) {
        self.api().reserve(order, lines).await
    }

    /// Releases a reservation (must succeed; releasing is idempotent).
    pub async fn release(&self, order: &str) {
        self.api().release(order).await;
    }
}
