//! The whole shop end to end, every part a real process on the real stack: shop-registry,
//! shop-product (MongoDB wire server), shop-inventory and shop-order (MariaDB), shop-notification
//! (Kafka + MongoDB), all tracing to Zipkin. A product created with stock lands in inventory, an
//! order decrements it, the OrderPlaced event reaches Kafka, the notification is stored and
//! pushed on the SSE stream, and Zipkin holds one trace spanning order, inventory and notification.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_testkit::clients::{Inventory, Notification, Order, Product};
use shop_testkit::kafka::record_keyed;
use shop_testkit::sse::{SseReader, span_service};
use shop_testkit::{
    Service, fresh_mysql_database, fresh_name, kafka_bootstrap, mongo_url,
    registry::{eureka_url, instance_ids, spawn_registry},
    wait_until, zipkin_url,
};

#[tokio::test]
async fn product_with_stock_then_order_then_event_notification_stream_and_one_trace() {
    let zipkin = zipkin_url();
    let spans_endpoint = format!("{zipkin}/api/v2/spans");
    let mongo = mongo_url();
    let bootstrap = kafka_bootstrap();
    let topic = fresh_name("e2e-orders-");
    let http = Client::new();

    let registry = spawn_registry(&[]).await;
    let eureka = eureka_url(&registry);
    let common: Vec<(&str, &str)> = vec![
        ("SHOP_REGISTRY_URL", eureka.as_str()),
        ("SHOP_ZIPKIN_ENDPOINT", spans_endpoint.as_str()),
        ("SHOP_LEASE_RENEWAL_SECS", "1"),
        ("SHOP_REGISTRY_FETCH_SECS", "1"),
    ];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(String, String)> {
        common
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    async fn spawn(bin: &str, envs: Vec<(String, String)>) -> Service {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Service::spawn(bin, &[], &envs, 0).await
    }

    let inv_db = fresh_mysql_database("e2e_inv").await;
    let order_db = fresh_mysql_database("e2e_ord").await;
    let product_db = fresh_name("e2e-product-");
    let notif_db = fresh_name("e2e-notification-");
    let group = fresh_name("e2e-notification-group-");

    let inventory = spawn("shop-inventory", with(&[("DATABASE_URL", inv_db.as_str())])).await;
    let product = spawn(
        "shop-product",
        with(&[
            ("SHOP_MONGO_URL", mongo.as_str()),
            ("SHOP_MONGO_DB", product_db.as_str()),
            ("SHOP_STOCK_RETRY_MS", "200"),
        ]),
    )
    .await;
    let order = spawn(
        "shop-order",
        with(&[
            ("DATABASE_URL", order_db.as_str()),
            ("SHOP_KAFKA_BOOTSTRAP", bootstrap.as_str()),
            ("ORDER_TOPIC", topic.as_str()),
            ("OUTBOX_POLL_MS", "100"),
        ]),
    )
    .await;
    let notification = spawn(
        "shop-notification",
        with(&[
            ("SHOP_MONGO_URL", mongo.as_str()),
            ("SHOP_MONGO_DB", notif_db.as_str()),
            ("SHOP_KAFKA_BOOTSTRAP", bootstrap.as_str()),
            ("SHOP_NOTIFICATION_TOPIC", topic.as_str()),
            ("SHOP_NOTIFICATION_GROUP", group.as_str()),
            ("SHOP_SSE_KEEP_ALIVE_SECS", "1"),
        ]),
    )
    .await;

    // Everyone found through the registry, as in the original.
    for app in ["INVENTORY", "PRODUCT", "ORDER", "NOTIFICATION"] {
        assert!(
            wait_until(Duration::from_secs(15), || async {
                !instance_ids(&eureka, app).await.is_empty()
            })
            .await,
            "{app} did not register with the registry"
        );
    }

    // 1. A product created with stock puts that stock into inventory.
    // (`create` checks the 201.)
    let created = Product::new(product.base_url())
        .create(&json!({"name": "iPhone 13", "description": "iPhone 13", "price": "1200.00", "quantity": 3}))
        .await;
    let sku = created["skuCode"].as_str().unwrap().to_owned();
    let inventory_api = Inventory::new(inventory.base_url());
    let stock = |sku: String| {
        let inventory_api = inventory_api.clone();
        async move { inventory_api.available(&sku).await }
    };
    assert!(
        wait_until(Duration::from_secs(15), || async {
            stock(sku.clone()).await == 3
        })
        .await,
        "the product's stock never reached inventory"
    );

    // 2. Listen on the notification stream before ordering.
    let notifications = Notification::new(notification.base_url());
    let mut stream = SseReader::open(&http, &notifications.stream_url()).await;

    // 3. Place an order with the original's body.
    let placed = Order::new(order.base_url())
        .place(
            &json!([{"skuCode": sku, "price": 1200, "quantity": 2}]),
            None,
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);
    let placed = placed.json;
    let number = placed["orderNumber"].as_str().unwrap().to_owned();
    assert_eq!(
        stock(sku.clone()).await,
        1,
        "stock decremented by the order"
    );

    // 4. The event is in Kafka.
    let event = record_keyed(&topic, &number, Duration::from_secs(20))
        .await
        .expect("OrderPlaced in Kafka")
        .value;
    assert_eq!(event["eventType"], "OrderPlaced");
    assert_eq!(event["total"], "2400.00");

    // 5. The notification is stored and was pushed on the stream.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            notifications.for_order(&number).await.len() == 1
        })
        .await,
        "notification not stored"
    );
    let stored = notifications.for_order(&number).await;
    assert_eq!(stored[0]["eventId"], event["eventId"]);
    assert!(
        stream
            .wait_for_data(&number, Duration::from_secs(10))
            .await
            .is_some(),
        "the notification was not pushed on the SSE stream; got: {}",
        stream.streamed
    );

    // 6. One Zipkin trace spans order, inventory and notification.
    let trace_id = stored[0]["traceId"]
        .as_str()
        .expect("the notification carries the order's trace id")
        .to_owned();
    let trace_url = format!("{zipkin}/api/v2/trace/{trace_id}");
    let mut seen: Vec<String> = Vec::new();
    let complete = wait_until(Duration::from_secs(25), || {
        let http = http.clone();
        let url = trace_url.clone();
        async move {
            let Ok(r) = http.get(&url).send().await else {
                return false;
            };
            let Ok(spans) = r.json::<Vec<Value>>().await else {
                return false;
            };
            let services: Vec<String> = spans.iter().map(span_service).collect();
            ["order", "inventory", "notification"]
                .iter()
                .all(|s| services.iter().any(|x| x == s))
        }
    })
    .await;
    if !complete {
        let spans: Value = http
            .get(&trace_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        seen = spans
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| format!("{}:{}", span_service(s), s["name"]))
                    .collect()
            })
            .unwrap_or_default();
    }
    assert!(
        complete,
        "trace {trace_id} does not span order, inventory and notification; spans: {seen:?}"
    );
    drop((notification, order, product, inventory, registry));
}
