//! Helpers shared by shop-order's integration tests: start inventory + order as real processes
//! on fresh databases and a fresh topic (the topic is read with `shop_testkit::kafka`), stop/resume
//! a process to make it unresponsive.
#![allow(dead_code)]

use reqwest::{Client, StatusCode};
use serde_json::Value;
use shop_testkit::clients::{Inventory, Order};
use shop_testkit::{Service, fresh_mysql_database, fresh_name, kafka_bootstrap};
use sqlx::{Connection, MySqlConnection};

/// inventory + order processes on fresh databases and a fresh topic.
pub struct Shop {
    pub inventory: Service,
    pub order: Service,
    pub http: Client,
    pub order_db: String,
    pub topic: String,
}

/// Knobs of [`Shop::start`].
pub struct Opts {
    pub inventory_timeout_ms: u64,
    pub breaker_open_secs: u64,
    pub kafka: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            inventory_timeout_ms: 1500,
            breaker_open_secs: 30,
            kafka: kafka_bootstrap(),
        }
    }
}

/// The environment of a shop-order process for these tests (it listens on a port the OS picks).
pub fn order_env(
    order_db: &str,
    inventory_port: u16,
    topic: &str,
    opts: &Opts,
) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".to_owned(), order_db.to_owned()),
        (
            "SHOP_DNS_PATTERN".to_owned(),
            format!("http://127.0.0.1:{inventory_port}"),
        ),
        ("SHOP_KAFKA_BOOTSTRAP".to_owned(), opts.kafka.clone()),
        ("ORDER_TOPIC".to_owned(), topic.to_owned()),
        (
            "INVENTORY_TIMEOUT_MS".to_owned(),
            opts.inventory_timeout_ms.to_string(),
        ),
        (
            "INVENTORY_BREAKER_OPEN_SECS".to_owned(),
            opts.breaker_open_secs.to_string(),
        ),
        ("KAFKA_MESSAGE_TIMEOUT_MS".to_owned(), "1500".to_owned()),
        ("OUTBOX_POLL_MS".to_owned(), "100".to_owned()),
        // Rows the fast lane could not deliver are swept after 2.5 s instead of 6.5 s.
        ("OUTBOX_SWEEP_AFTER_MS".to_owned(), "2500".to_owned()),
    ]
}

pub async fn spawn_order(order_db: &str, inventory_port: u16, topic: &str, opts: &Opts) -> Service {
    let envs = order_env(order_db, inventory_port, topic, opts);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::spawn("shop-order", &[], &envs, 0).await
}

impl Shop {
    pub async fn start(opts: Opts) -> Shop {
        let inv_db = fresh_mysql_database("ordtest_inv").await;
        let order_db = fresh_mysql_database("ordtest_ord").await;
        let topic = fresh_name("orders-test-");
        let inventory = Service::spawn(
            "shop-inventory",
            &[],
            &[("DATABASE_URL", inv_db.as_str())],
            0,
        )
        .await;
        let order = spawn_order(&order_db, inventory.port(), &topic, &opts).await;
        Shop {
            inventory,
            order,
            http: Client::new(),
            order_db,
            topic,
        }
    }

    pub fn order_url(&self, path: &str) -> String {
        format!("{}{path}", self.order.base_url())
    }

    pub async fn set_stock(&self, sku: &str, q: i64) {
        Inventory::new(self.inventory.base_url())
            .set_stock(sku, q)
            .await;
    }

    pub async fn stock(&self, sku: &str) -> i64 {
        Inventory::new(self.inventory.base_url())
            .available(sku)
            .await
    }

    /// POSTs an order with the original's body; returns status, headers and JSON body.
    pub async fn order(
        &self,
        lines: Value,
        key: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let a = self.orders().place(&lines, key).await;
        (a.status, a.headers, a.json)
    }

    /// A typed client of the order process.
    pub fn orders(&self) -> Order {
        Order::new(self.order.base_url())
    }

    pub async fn count(&self, sql: &str) -> i64 {
        count(&self.order_db, sql).await
    }

    pub async fn metrics(&self) -> String {
        shop_testkit::metrics(&self.http, &self.order_url("")).await
    }
}

pub async fn count(db: &str, sql: &str) -> i64 {
    let mut c = MySqlConnection::connect(db).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut c)
        .await
        .unwrap()
}
