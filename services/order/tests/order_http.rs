//! shop-order against the real MariaDB and Kafka, with a real shop-inventory process: orders
//! reserve stock and publish OrderPlaced through the outbox exactly as placed; concurrent orders
//! never oversell; Idempotency-Key replays, refuses and detects in-flight duplicates; a dead
//! inventory gives a fast 503 and opens the breaker; a Kafka outage delays events but loses none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Opts, Shop, order_env, spawn_order};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_testkit::Signal;
use shop_testkit::kafka::consume;
use shop_testkit::{Service, free_port, fresh_mysql_database, fresh_name, kafka_bootstrap};

#[tokio::test]
async fn an_order_reserves_stock_and_publishes_one_order_placed_event() {
    let shop = Shop::start(Opts::default()).await;
    shop.set_stock("iphone_13", 5).await;
    shop.set_stock("case", 10).await;
    // The original's body: number and string prices, an ignored id.
    let (s, h, body) = shop
        .order(
            json!([
                {"id": 1, "skuCode": "iphone_13", "price": 1200.5, "quantity": 2},
                {"skuCode": "case", "price": "9.99", "quantity": 1}
            ]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let number = body["orderNumber"].as_str().unwrap().to_owned();
    assert_eq!(h["location"], format!("/api/order/{number}").as_str());
    assert_eq!(body["status"], "PLACED");
    assert_eq!(body["total"], "2410.99");
    assert_eq!(
        body["lines"][0],
        json!({"skuCode": "iphone_13", "price": "1200.50", "quantity": 2})
    );
    assert_eq!(shop.stock("iphone_13").await, 3);
    assert_eq!(shop.stock("case").await, 9);

    let got: Value = shop.orders().get(&number).await;
    assert_eq!(got, body, "GET returns what POST answered");
    let page: Value = shop.orders().list("page=0&size=10").await;
    assert_eq!(page["totalElements"], 1);
    assert_eq!(page["content"][0]["orderNumber"], number.as_str());

    let records = consume(
        &shop.topic,
        1,
        Duration::from_secs(2),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(records.len(), 1, "exactly one event: {records:?}");
    let r = &records[0];
    assert_eq!(r.key, number);
    assert_eq!(
        r.headers.get("__TypeId__").map(String::as_str),
        Some("event")
    );
    assert_eq!(r.value["eventType"], "OrderPlaced");
    assert_eq!(r.value["orderNumber"], number.as_str());
    assert_eq!(r.value["total"], "2410.99");
    assert_eq!(r.value["lines"], body["lines"]);
    assert_eq!(
        r.headers.get("eventId"),
        r.value["eventId"].as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        0,
        "marked sent"
    );
}

#[tokio::test]
async fn concurrent_orders_for_the_last_units_never_oversell() {
    let shop = Shop::start(Opts::default()).await;
    shop.set_stock("last", 5).await;
    let futs = (0..30).map(|_| {
        shop.order(
            json!([{"skuCode": "last", "price": 10, "quantity": 1}]),
            None,
        )
    });
    let results = futures::future::join_all(futs).await;
    let placed: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .map(|r| &r.2)
        .collect();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == StatusCode::CONFLICT)
        .map(|r| &r.2)
        .collect();
    assert_eq!(
        (placed.len(), refused.len()),
        (5, 25),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for p in &refused {
        assert_eq!(
            p["skuCodes"],
            json!(["last"]),
            "the problem names the SKU: {p}"
        );
        assert_eq!(p["type"], "urn:shopkeeper:problem:out-of-stock");
    }
    assert_eq!(shop.stock("last").await, 0);
    assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 5);
    assert_eq!(shop.count("SELECT COUNT(*) FROM outbox").await, 5);
}

#[tokio::test]
async fn idempotency_key_replays_refuses_a_different_body_and_detects_in_flight() {
    let shop = Shop::start(Opts {
        inventory_timeout_ms: 4000,
        ..Opts::default()
    })
    .await;
    shop.set_stock("a", 10).await;
    let lines = json!([{"skuCode": "a", "price": 5, "quantity": 2}]);

    // Same key and body: the same order, taken once.
    let (s1, _, b1) = shop.order(lines.clone(), Some("key-1")).await;
    assert_eq!(s1, StatusCode::CREATED);
    let (s2, h2, b2) = shop
        .order(
            json!([{"skuCode": "a", "price": "5.00", "quantity": 2}]),
            Some("key-1"),
        )
        .await;
    assert_eq!(s2, StatusCode::CREATED);
    assert_eq!(b1, b2, "replayed");
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(shop.stock("a").await, 8);
    assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 1);

    // Same key, different body: 422 naming the header.
    let (s3, h3, b3) = shop
        .order(
            json!([{"skuCode": "a", "price": 5, "quantity": 3}]),
            Some("key-1"),
        )
        .await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h3["content-type"], "application/problem+json");
    assert_eq!(b3["field"], "Idempotency-Key");

    // Same key while the first is in flight: freeze inventory so the first request waits.
    shop.inventory.signal(Signal::SIGSTOP);
    let first = {
        let (orders, lines) = (shop.orders(), lines.clone());
        tokio::spawn(async move {
            let a = orders.place(&lines, Some("key-2")).await;
            (a.status, a.json)
        })
    };
    // Until the first request holds the key (a fixed wait lost the race on a loaded machine: the
    // second request claimed the key first and the first one got its replay).
    let claimed = shop_testkit::wait_until(Duration::from_secs(10), || async {
        shop.count("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = 'key-2' AND state = 'IN_FLIGHT'")
            .await
            == 1
    })
    .await;
    assert!(claimed, "the first request never claimed key-2");
    let (s4, h4, b4) = shop.order(lines.clone(), Some("key-2")).await;
    shop.inventory.signal(Signal::SIGCONT);
    assert_eq!(s4, StatusCode::CONFLICT, "{b4}");
    assert!(h4.contains_key("retry-after"));
    assert_eq!(
        b4["type"],
        "urn:shopkeeper:problem:idempotency-key-in-flight"
    );
    let (s5, b5) = first.await.unwrap();
    assert_eq!(
        s5,
        StatusCode::CREATED,
        "the first request completes once inventory resumes: {b5}"
    );
    let (s6, _, b6) = shop.order(lines.clone(), Some("key-2")).await;
    assert_eq!((s6, &b6), (StatusCode::CREATED, &b5));

    // A refused attempt does not burn the key: out of stock, restock, retry with the same key.
    let big = json!([{"skuCode": "a", "price": 5, "quantity": 50}]);
    let (s7, _, _) = shop.order(big.clone(), Some("key-3")).await;
    assert_eq!(s7, StatusCode::CONFLICT);
    shop.set_stock("a", 60).await;
    let (s8, _, _) = shop.order(big, Some("key-3")).await;
    assert_eq!(s8, StatusCode::CREATED);
    assert_eq!(shop.stock("a").await, 10);

    // Requests without a key still work.
    let (s9, _, _) = shop.order(lines, None).await;
    assert_eq!(s9, StatusCode::CREATED);
    assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 4);
}

#[tokio::test]
async fn unreachable_inventory_gives_503_within_the_timeout_then_fast_once_the_breaker_opens() {
    let timeout_ms = 800;
    let mut shop = Shop::start(Opts {
        inventory_timeout_ms: timeout_ms,
        breaker_open_secs: 60,
        ..Opts::default()
    })
    .await;
    shop.set_stock("a", 10).await;
    assert!(
        shop.metrics()
            .await
            .contains(r#"circuit_breaker_state{service="inventory"} 0"#)
    );
    let lines = json!([{"skuCode": "a", "price": 1, "quantity": 1}]);

    // Hung inventory: every call ends at the deadline with 503 + Retry-After.
    shop.inventory.signal(Signal::SIGSTOP);
    let mut opened = false;
    for i in 0..8 {
        let t = Instant::now();
        let (s, h, b) = shop.order(lines.clone(), None).await;
        let took = t.elapsed();
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(h["content-type"], "application/problem+json");
        assert!(
            took < Duration::from_millis(timeout_ms) * 3,
            "call {i} took {took:?}, far past the deadline"
        );
        if b["detail"]
            .as_str()
            .unwrap()
            .contains("circuit breaker open")
        {
            assert!(
                took < Duration::from_millis(timeout_ms),
                "an open breaker answers without waiting: {took:?}"
            );
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker opened after repeated timeouts");
    assert!(
        shop.metrics()
            .await
            .contains(r#"circuit_breaker_state{service="inventory"} 1"#)
    );
    shop.inventory.signal(Signal::SIGCONT);

    // Killed inventory: still a fast 503 (breaker open), and nothing was ordered.
    shop.inventory.kill();
    let (s, h, _) = shop.order(lines, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    // (The numbers of the timed-out attempts are tombstoned ABANDONED before their possible
    // reservations are released; those rows are not orders.)
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM orders WHERE status <> 'ABANDONED'")
            .await,
        0
    );
    assert_eq!(shop.count("SELECT COUNT(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn orders_are_accepted_while_kafka_is_unreachable_and_each_is_published_once_after() {
    // The shared broker must keep serving other tests, so this order process is first pointed at
    // a port where no broker listens, then restarted against the real broker on the same database.
    // (A port that was free a moment ago: nothing of ours is started on it.)
    let dead_kafka = format!("127.0.0.1:{}", free_port());
    let mut shop = Shop::start(Opts {
        kafka: dead_kafka,
        ..Opts::default()
    })
    .await;
    shop.set_stock("a", 100).await;
    let mut numbers = Vec::new();
    for _ in 0..6 {
        let (s, _, b) = shop
            .order(json!([{"skuCode": "a", "price": 3, "quantity": 1}]), None)
            .await;
        assert_eq!(
            s,
            StatusCode::CREATED,
            "orders are accepted while Kafka is down: {b}"
        );
        numbers.push(b["orderNumber"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        6,
        "held in the outbox"
    );
    assert!(
        shop.metrics()
            .await
            .contains("order_outbox_publish_failures_total")
    );
    assert!(
        shop.order.terminate(),
        "order service stops cleanly even with Kafka down"
    );

    let order = spawn_order(
        &shop.order_db,
        shop.inventory.port(),
        &shop.topic,
        &Opts::default(),
    )
    .await;
    let records = consume(
        &shop.topic,
        6,
        Duration::from_secs(3),
        Duration::from_secs(25),
    )
    .await;
    let mut got: Vec<String> = records
        .iter()
        .map(|r| r.value["orderNumber"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    numbers.sort();
    assert_eq!(got, numbers, "every order notified exactly once");
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        0
    );
    drop(order);
}

#[tokio::test]
async fn malformed_and_invalid_orders_are_problems_and_write_nothing() {
    let shop = Shop::start(Opts::default()).await;
    shop.set_stock("a", 5).await;
    let cases: Vec<(&str, &str, Option<&str>, StatusCode, &str)> = vec![
        (
            "application/json",
            "{not json",
            None,
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            "text/plain",
            r#"{"orderLineItemsDtoList":[]}"#,
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            "application/json",
            r#"{}"#,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "orderLineItemsDtoList",
        ),
        (
            "application/json",
            r#"{"orderLineItemsDtoList":[]}"#,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "orderLineItemsDtoList",
        ),
        (
            "application/json",
            r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":1.999,"quantity":1}]}"#,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "orderLineItemsDtoList[0].price",
        ),
        (
            "application/json",
            r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":1,"quantity":1},{"skuCode":"a","price":1,"quantity":-2}]}"#,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "orderLineItemsDtoList[1].quantity",
        ),
        (
            "application/json",
            r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":"ten","quantity":1}]}"#,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "orderLineItemsDtoList[0].price",
        ),
        (
            "application/json",
            r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":1,"quantity":1}]}"#,
            Some("bad key with spaces"),
            StatusCode::BAD_REQUEST,
            "Idempotency-Key",
        ),
    ];
    for (ct, body, key, status, field) in cases {
        let mut req = shop
            .http
            .post(shop.order_url("/api/order"))
            .header("content-type", ct)
            .body(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let huge = format!(
        r#"{{"orderLineItemsDtoList":[{{"skuCode":"a","price":1,"quantity":1}}],"pad":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    let r = shop
        .http
        .post(shop.order_url("/api/order"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(shop.stock("a").await, 5, "no stock reserved");
    for table in ["orders", "order_line_items", "outbox", "idempotency_keys"] {
        assert_eq!(
            shop.count(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table} is empty"
        );
    }
    let r = shop
        .http
        .get(shop.order_url("/api/order/does-not-exist"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

/// Orders that arrive together are written in one transaction (store::write_orders); each must still
/// be stored whole with its own lines, exactly one event, and its Idempotency-Key completed.
#[tokio::test]
async fn orders_arriving_together_are_each_stored_whole_with_one_event() {
    let shop = Shop::start(Opts::default()).await;
    shop.set_stock("a", 1000).await;
    shop.set_stock("b", 1000).await;
    let futs = (0..40u32).map(|i| {
        let lines = json!([
            {"skuCode": "a", "price": format!("{i}.50"), "quantity": 1 + i % 3},
            {"skuCode": "b", "price": "1.00", "quantity": 1}
        ]);
        let key = (i % 2 == 0).then(|| format!("together-{i}"));
        let shop = &shop;
        async move {
            let (s, _, body) = shop.order(lines.clone(), key.as_deref()).await;
            (i, key, lines, s, body)
        }
    });
    let results = futures::future::join_all(futs).await;
    let mut want_a = 0;
    for (i, _, _, s, body) in &results {
        assert_eq!(*s, StatusCode::CREATED, "order {i}: {body}");
        want_a += 1 + i % 3;
        let number = body["orderNumber"].as_str().unwrap();
        let got: Value = shop.orders().get(number).await;
        assert_eq!(&got, body, "order {i} is stored as answered");
        assert_eq!(got["lines"][0]["price"], format!("{i}.50"));
    }
    assert_eq!(shop.stock("a").await, 1000 - i64::from(want_a));
    assert_eq!(shop.stock("b").await, 1000 - 40);
    assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 40);
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM order_line_items").await,
        80
    );
    assert_eq!(
        shop.count("SELECT COUNT(*) FROM idempotency_keys WHERE state = 'DONE'")
            .await,
        20
    );
    // Keyed orders replay the stored answer.
    for (_, key, lines, _, body) in results.iter().filter(|r| r.1.is_some()).take(3) {
        let (s, h, replay) = shop.order(lines.clone(), key.as_deref()).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(h["idempotent-replayed"], "true");
        assert_eq!(&replay, body);
    }
    let records = consume(
        &shop.topic,
        40,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    let mut numbers: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(
        (records.len(), numbers.len()),
        (40, 40),
        "one event per order"
    );
    // The writes really shared transactions.
    let metrics = shop.metrics().await;
    let value = |name: &str| shop_testkit::metric_value(&metrics, name);
    let (sum, calls) = (
        value("order_write_batch_size_sum"),
        value("order_write_batch_size_count"),
    );
    assert_eq!(sum, 40.0, "every order went through the writer");
    assert!(
        calls < sum,
        "40 orders in {calls} transactions: no batch formed"
    );
    // Their reservations went to inventory in shared calls too.
    let inv_metrics = shop_testkit::metrics(&shop.http, &shop.inventory.base_url()).await;
    assert!(
        inv_metrics
            .lines()
            .any(|l| l.starts_with("http_server_requests_total")
                && l.contains("/api/inventory/reservations/batch")
                && l.contains("status=\"200\"")),
        "no batch reservation call reached inventory:\n{inv_metrics}"
    );
}

/// order creates its OrderPlaced topic at start with the partitions it is given
/// (`SHOP_KAFKA_PARTITIONS`, from the Shop's `backing.kafka.partitions`), before any order, instead
/// of the broker's auto-created single partition on the first event.
#[tokio::test]
async fn order_creates_its_topic_with_the_configured_partitions_at_start() {
    let order_db = fresh_mysql_database("ordtest_topic").await;
    let topic = fresh_name("orders-parts-");
    // No inventory is called in this test: its address is a port that was free a moment ago.
    let mut envs = order_env(&order_db, free_port(), &topic, &Opts::default());
    envs.push(("SHOP_KAFKA_PARTITIONS".to_owned(), "4".to_owned()));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _order = Service::spawn("shop-order", &[], &envs, 0).await;
    let bootstrap = kafka_bootstrap();
    let partitions = || {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()
                    .unwrap();
                rdkafka::consumer::Consumer::fetch_metadata(
                    &consumer,
                    Some(&topic),
                    Duration::from_secs(5),
                )
                .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
                .unwrap_or(0)
            })
            .await
            .unwrap()
        }
    };
    let mut seen = 0;
    for _ in 0..40 {
        seen = partitions().await;
        if seen == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(seen, 4, "topic {topic} has {seen} partitions, not 4");
}
