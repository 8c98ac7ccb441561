//! Fault flags (issue 20) on the real shop: the six services as host processes on the local stack
//! (MariaDB, FerretDB, Kafka), each service reading one fault flags file that the test rewrites
//! as the kubelet does (a new file renamed over the old one), with no process restarted.
//!
//! One shop, four phases in sequence (each ends with the flags removed):
//! * `inventoryLatencyMs`: a direct inventory call takes at least the latency;
//! * `inventoryErrorRatio` 1.0: orders through the gateway fail, order's breaker to inventory
//!   opens (its gauge, and fast 503 "circuit breaker open" answers); without the flag it closes
//!   again and orders succeed;
//! * `kafkaPublishFailureRatio` 1.0: orders are accepted but nobody is notified; back to 0, each
//!   is notified exactly once;
//! * `notificationConsumerPaused`: orders placed while paused are not notified; after the pause
//!   each is, once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shop_testkit::clients::Notification;
use shop_testkit::host_shop::{HostShop, HostShopOptions};
use shop_testkit::{metric_sample, wait_until};

const SKU: &str = "fault_flag_sku";

/// Writes the flags file as the kubelet swaps a ConfigMap's file: a new inode renamed in place.
fn write_flags(path: &Path, flags: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, flags.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Test {
    shop: HostShop,
    http: reqwest::Client,
    flags: PathBuf,
    token: String,
}

impl Test {
    async fn metrics(&self, component: &str) -> String {
        shop_testkit::get_text(&self.http, format!("{}/metrics", self.shop.url(component))).await
    }

    /// Rewrites the flags file and waits until every service that reads it shows `expect` (the
    /// value of `fault` on its `shop_fault_active` gauge): the change was taken, without restart.
    async fn set_flags(&self, flags: Value, fault: &str, expect: f64) {
        write_flags(&self.flags, &flags);
        let series = format!("shop_fault_active{{fault=\"{fault}\"}}");
        for component in ["inventory", "order", "notification"] {
            let took = wait_until(Duration::from_secs(10), || async {
                metric_sample(&self.metrics(component).await, &series) == Some(expect)
            })
            .await;
            assert!(
                took,
                "{component} did not take the flags {flags} within 10 s ({series} should be {expect}):\n{}",
                self.metrics(component).await
            );
        }
    }

    async fn breaker(&self) -> f64 {
        metric_sample(
            &self.metrics("order").await,
            "circuit_breaker_state{service=\"inventory\"}",
        )
        .expect("order's /metrics shows its breaker to inventory")
    }

    /// Places a one-unit order; the status and the body.
    async fn order_at(&self, base: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{base}/api/order"))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", shop_testkit::fresh_name("fault-"))
            .json(&json!({"orderLineItemsDtoList": [{"skuCode": SKU, "price": "2.50", "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Places an order through the gateway that must be accepted; its number.
    async fn accepted_order(&self) -> String {
        let (status, body) = self.order_at(&self.shop.gateway_url()).await;
        assert_eq!(status, 201, "the order is accepted: {body}");
        body["orderNumber"]
            .as_str()
            .unwrap_or_else(|| panic!("no orderNumber in {body}"))
            .to_owned()
    }

    /// How many notifications notification has stored for `order`.
    async fn notified(&self, order: &str) -> u64 {
        Notification::new(self.shop.url("notification"))
            .for_order(order)
            .await
            .len() as u64
    }

    /// Waits until each of `orders` is notified, then checks, a moment later, that each was
    /// notified exactly once.
    async fn each_notified_once(&self, orders: &[String], within: Duration) {
        for o in orders {
            assert!(
                wait_until(within, || async { self.notified(o).await >= 1 }).await,
                "order {o} was not notified within {within:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for o in orders {
            assert_eq!(
                self.notified(o).await,
                1,
                "order {o} is notified exactly once"
            );
        }
    }

    /// Checks for `quiet` that none of `orders` is notified.
    async fn none_notified(&self, orders: &[String], quiet: Duration, why: &str) {
        let until = Instant::now() + quiet;
        while Instant::now() < until {
            for o in orders {
                assert_eq!(self.notified(o).await, 0, "order {o} was notified {why}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn pids(&self) -> Vec<(&'static str, Option<u32>)> {
        self.shop
            .components
            .iter()
            .map(|c| (c.name, c.service.pid()))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_flags_reach_the_services_without_a_restart() {
    let dir = tempfile_dir();
    let flags = dir.join("faults.json");
    // No file yet: no faults (the ConfigMap may be absent).
    let env = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let shop = HostShop::start_with(HostShopOptions {
        service_env: vec![
            env("SHOP_FAULTS_FILE", flags.to_str().unwrap()),
            env("SHOP_FAULTS_POLL_MS", "200"),
            // Failed publishes are retried by the outbox sweeper: make it look soon.
            env("KAFKA_MESSAGE_TIMEOUT_MS", "2000"),
            env("OUTBOX_SWEEP_AFTER_MS", "3000"),
            env("INVENTORY_BREAKER_OPEN_SECS", "2"),
            env("RECONCILE_INTERVAL_SECS", "0"),
        ],
        ..HostShopOptions::default()
    })
    .await;
    let t = Test {
        token: shop.token("fault-flags"),
        shop,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap(),
        flags,
    };
    let pids = t.pids();
    let inventory = t.shop.url("inventory");
    let stock = t
        .http
        .put(format!("{inventory}/api/inventory/{SKU}"))
        .json(&json!({"quantity": 100_000}))
        .send()
        .await
        .unwrap();
    assert!(stock.status().is_success(), "stock set: {}", stock.status());

    // Baseline: the flags file is absent, an order goes all the way to a notification.
    for component in ["inventory", "order", "notification"] {
        let text = t.metrics(component).await;
        assert_eq!(
            metric_sample(&text, "shop_fault_active{fault=\"inventory_error_ratio\"}"),
            Some(0.0),
            "{component} reads the fault flags and shows them off:\n{text}"
        );
    }
    let first = t.accepted_order().await;
    t.each_notified_once(std::slice::from_ref(&first), Duration::from_secs(30))
        .await;

    // 1. Inventory latency: a direct call takes at least the latency; health does not.
    t.set_flags(
        json!({"inventoryLatencyMs": 700}),
        "inventory_latency_ms",
        700.0,
    )
    .await;
    let started = Instant::now();
    let resp = t
        .http
        .get(format!("{inventory}/api/inventory/{SKU}"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert!(took >= Duration::from_millis(700), "the call took {took:?}");
    let started = Instant::now();
    let health = t
        .http
        .get(format!("{inventory}/health/ready"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "health is not delayed by the latency flag ({:?})",
        started.elapsed()
    );
    t.set_flags(json!({}), "inventory_latency_ms", 0.0).await;

    // 2. Inventory errors at 1.0: inventory answers 503 itself, orders fail, order's breaker opens.
    t.set_flags(
        json!({"inventoryErrorRatio": 1.0}),
        "inventory_error_ratio",
        1.0,
    )
    .await;
    let resp = t
        .http
        .get(format!("{inventory}/api/inventory/{SKU}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(
        problem["detail"], "fault injected: inventoryErrorRatio",
        "{problem}"
    );
    let refused = std::cell::Cell::new(0);
    let opened = wait_until(Duration::from_secs(20), || async {
        let (status, body) = t.order_at(&t.shop.gateway_url()).await;
        assert_ne!(
            status, 201,
            "an order is accepted while inventory fails: {body}"
        );
        refused.set(refused.get() + 1);
        t.breaker().await == 1.0
    })
    .await;
    assert!(
        opened,
        "order's breaker to inventory did not open after {} refused orders",
        refused.get()
    );
    // Open: order answers at once, without calling inventory.
    let started = Instant::now();
    let (status, body) = t.order_at(&t.shop.url("order")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("circuit breaker open"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a short-circuited order took {:?}",
        started.elapsed()
    );
    let injected = metric_sample(
        &t.metrics("inventory").await,
        "shop_faults_injected_total{fault=\"inventory_error_ratio\"}",
    );
    assert!(
        injected.is_some_and(|n| n >= 1.0),
        "inventory counts the injected errors: {injected:?}"
    );

    // The flag removed: the breaker closes again through its trial calls, orders succeed.
    t.set_flags(json!({}), "inventory_error_ratio", 0.0).await;
    let closed = wait_until(Duration::from_secs(30), || async {
        let _ = t.order_at(&t.shop.gateway_url()).await;
        t.breaker().await == 0.0
    })
    .await;
    assert!(
        closed,
        "order's breaker to inventory did not close after the flag was removed"
    );
    // The gateway's own breaker to order (opened by order's 503s) closes after its wait too.
    let recovered = wait_until(Duration::from_secs(15), || async {
        t.order_at(&t.shop.gateway_url()).await.0 == 201
    })
    .await;
    assert!(recovered, "orders through the gateway do not succeed again");
    assert_eq!(t.breaker().await, 0.0, "order's breaker stays closed");

    // 3. Kafka publishes fail: orders are accepted and wait in the outbox; nobody is notified.
    t.set_flags(
        json!({"kafkaPublishFailureRatio": 1.0}),
        "kafka_publish_failure_ratio",
        1.0,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(t.accepted_order().await);
    }
    t.none_notified(
        &held,
        Duration::from_secs(5),
        "while every Kafka publish fails",
    )
    .await;
    let failed = metric_sample(
        &t.metrics("order").await,
        "shop_faults_injected_total{fault=\"kafka_publish_failure_ratio\"}",
    );
    assert!(
        failed.is_some_and(|n| n >= 3.0),
        "order counts the failed publishes: {failed:?}"
    );
    t.set_flags(
        json!({"kafkaPublishFailureRatio": 0}),
        "kafka_publish_failure_ratio",
        0.0,
    )
    .await;
    t.each_notified_once(&held, Duration::from_secs(30)).await;

    // 4. The consumer paused: orders are published but not notified until it resumes.
    t.set_flags(
        json!({"notificationConsumerPaused": true}),
        "notification_consumer_paused",
        1.0,
    )
    .await;
    let published = || async {
        shop_testkit::metric_value(&t.metrics("order").await, "order_outbox_published_total")
    };
    let before = published().await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(t.accepted_order().await);
    }
    // They are in Kafka: only the consumer holds them back.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            published().await >= before + 3.0
        })
        .await,
        "the orders placed while the consumer is paused are published"
    );
    t.none_notified(
        &waiting,
        Duration::from_secs(4),
        "while the consumer is paused",
    )
    .await;
    let ready = t
        .http
        .get(format!("{}/health/ready", t.shop.url("notification")))
        .send()
        .await
        .unwrap();
    assert!(
        ready.status().is_success(),
        "a paused consumer keeps notification ready"
    );
    t.set_flags(json!({}), "notification_consumer_paused", 0.0)
        .await;
    t.each_notified_once(&waiting, Duration::from_secs(30))
        .await;
    // Nothing older came twice either.
    t.each_notified_once(&held, Duration::from_secs(1)).await;
    assert_eq!(t.notified(&first).await, 1);

    // No process was restarted: the same pids, all still running.
    assert_eq!(t.pids(), pids, "the same processes");
    let mut shop = t.shop;
    for c in &mut shop.components {
        assert!(c.service.exit_status().is_none(), "{} exited", c.name);
    }
    drop(shop);
    std::fs::remove_dir_all(&dir).ok();
}

/// A fresh folder for the flags file (removed at the end).
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(shop_testkit::fresh_name("shop-faults-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
