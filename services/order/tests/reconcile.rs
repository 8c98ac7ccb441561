//! The reservation reconciler against the real MariaDB, Kafka and a real shop-inventory: stock
//! reserved for an order that shop-order never stored comes back (also when shop-order was
//! killed between reserving and storing, and after inventory was unreachable for a while),
//! stock of stored orders and of young reservations is never touched, and a client retrying
//! with the Idempotency-Key of the dead request ends with an order, not a stuck key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Opts, count, order_env};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_testkit::clients::{Inventory, Order};
use shop_testkit::{
    Service, fresh_mysql_database, fresh_name,
    lossy_link::{Loss, LossyLink},
    mysql_url, wait_until,
};
use shop_testkit::{Signal, get_json};
use sqlx::{Connection, MySqlConnection};

/// Reconciler knobs for a test: rounds every second, a grace of a few seconds.
const GRACE_SECS: u64 = 4;

struct Rig {
    inventory: Service,
    order: Service,
    order_db: String,
    topic: String,
    http: Client,
}

async fn spawn_order_with(
    order_db: &str,
    inventory_port: u16,
    topic: &str,
    extra: &[(&str, &str)],
) -> Service {
    let opts = Opts {
        inventory_timeout_ms: 1500,
        breaker_open_secs: 1,
        ..Opts::default()
    };
    let mut envs = order_env(order_db, inventory_port, topic, &opts);
    for (k, v) in extra {
        envs.push(((*k).to_owned(), (*v).to_owned()));
    }
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::spawn("shop-order", &[], &envs, 0).await
}

fn reconciling(grace: &str) -> [(&'static str, String); 3] {
    [
        ("RECONCILE_INTERVAL_SECS", "1".to_owned()),
        ("RECONCILE_GRACE_SECS", grace.to_owned()),
        ("IDEMPOTENCY_STALE_SECS", "1".to_owned()),
    ]
}

impl Rig {
    async fn start(order_env: &[(&str, &str)]) -> Rig {
        Rig::start_via(order_env, None).await
    }

    /// Like [`Rig::start`]; with a link, shop-order reaches its database through it.
    async fn start_via(order_env: &[(&str, &str)], link: Option<&LossyLink>) -> Rig {
        let inv_db = fresh_mysql_database("recinv").await;
        let order_db = fresh_mysql_database("record").await;
        let topic = fresh_name("reconcile-test-");
        let inventory = Service::spawn(
            "shop-inventory",
            &[],
            &[("DATABASE_URL", inv_db.as_str())],
            0,
        )
        .await;
        let order_db_url = match link {
            // Plain text, so the link sees the statements.
            Some(l) => format!(
                "{}?ssl-mode=disabled",
                order_db.replacen(&mysql_host_port(), &format!("127.0.0.1:{}", l.port()), 1)
            ),
            None => order_db.clone(),
        };
        let order = spawn_order_with(&order_db_url, inventory.port(), &topic, order_env).await;
        Rig {
            inventory,
            order,
            order_db,
            topic,
            http: Client::new(),
        }
    }

    /// A typed client of the inventory process.
    fn inventory(&self) -> Inventory {
        Inventory::new(self.inventory.base_url())
    }

    async fn set_stock(&self, sku: &str, q: i64) {
        self.inventory().set_stock(sku, q).await;
    }

    async fn stock(&self, sku: &str) -> i64 {
        self.inventory().available(sku).await
    }

    /// Reserves straight in inventory, as a shop-order that died before storing the order did.
    async fn reserve_directly(&self, order_number: &str, sku: &str, q: i64) {
        let (status, body) = self
            .inventory()
            .reserve(order_number, json!([{"skuCode": sku, "quantity": q}]))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// The reservation's status in inventory (None when inventory has none).
    async fn reservation(&self, order_number: &str) -> Option<String> {
        self.inventory().reservation_status(order_number).await
    }

    async fn order(&self, order: &Service, sku: &str, q: i64, key: &str) -> (StatusCode, Value) {
        let lines = json!([{"skuCode": sku, "price": "10.00", "quantity": q}]);
        let a = Order::new(order.base_url()).place(&lines, Some(key)).await;
        (a.status, a.json)
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = shop_testkit::metrics(&self.http, &self.order.base_url()).await;
        shop_testkit::metric_value(&text, name)
    }

    async fn wait_released(&self, order_number: &str, within: Duration) -> bool {
        wait_until(within, || async move {
            self.reservation(order_number).await.as_deref() == Some("RELEASED")
        })
        .await
    }
}

/// `host:port` of the test MariaDB (from its URL).
fn mysql_host_port() -> String {
    let url = mysql_url();
    let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// The write a stalled request would make for `number` once it wakes up.
fn late_order(number: &str) -> shop_order::store::OrderWrite {
    use shop_order::model::{Order, OrderLine, OrderPlacedEvent};
    let line = OrderLine {
        sku_code: "widget".into(),
        price: rust_decimal::Decimal::new(1000, 2),
        quantity: 5,
    };
    let now = chrono::Utc::now();
    let event = OrderPlacedEvent {
        event_id: format!("late-{number}"),
        event_type: "OrderPlaced",
        order_number: number.into(),
        occurred_at: now,
        lines: vec![line.clone()],
        total: rust_decimal::Decimal::new(5000, 2),
    };
    shop_order::store::OrderWrite {
        order: Order {
            order_number: number.into(),
            status: "PLACED".into(),
            lines: vec![line],
            total: rust_decimal::Decimal::new(5000, 2),
            created_at: now,
        },
        idempotency_key: None,
        event_id: event.event_id.clone(),
        payload: serde_json::to_string(&event).unwrap(),
        topic: "late".into(),
        headers: Default::default(),
        response_body: String::new(),
    }
}

#[tokio::test]
async fn stock_of_an_order_never_stored_comes_back_and_stored_orders_keep_theirs() {
    let env = reconciling(&GRACE_SECS.to_string());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rig = Rig::start(&env).await;
    rig.set_stock("widget", 20).await;

    let (s, placed) = rig.order(&rig.order, "widget", 2, "stored-1").await;
    assert_eq!(s, StatusCode::CREATED, "{placed}");
    let stored = placed["orderNumber"].as_str().unwrap().to_owned();
    rig.reserve_directly("ghost-1", "widget", 5).await;
    assert_eq!(rig.stock("widget").await, 13);

    // Rounds run every second, but a reservation younger than the grace is left alone: its
    // order could still be being placed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rig.reservation("ghost-1").await.as_deref(),
        Some("RESERVED")
    );
    assert_eq!(rig.stock("widget").await, 13);

    // Inventory unreachable for a while: rounds fail, the reconciler carries on afterwards.
    rig.inventory.signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    rig.inventory.signal(Signal::SIGCONT);

    assert!(
        rig.wait_released("ghost-1", Duration::from_secs(20)).await,
        "the orphaned reservation was not released"
    );
    assert_eq!(
        rig.stock("widget").await,
        18,
        "the 5 units are back on the shelf"
    );
    assert!(rig.metric("order_reconcile_failed_rounds_total").await >= 1.0);
    assert_eq!(rig.metric("order_reconcile_released_total").await, 1.0);

    // A few more rounds: the stored order's stock stays reserved, nothing is released twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rig.reservation(&stored).await.as_deref(), Some("RESERVED"));
    assert_eq!(rig.stock("widget").await, 18);
    assert_eq!(rig.metric("order_reconcile_released_total").await, 1.0);
    assert_eq!(
        count(
            &rig.order_db,
            "SELECT COUNT(*) FROM orders WHERE status = 'PLACED'"
        )
        .await,
        1,
        "the reconciler stores and deletes no orders"
    );
    // It holds the dead number with an ABANDONED row the API never shows...
    assert_eq!(
        count(
            &rig.order_db,
            "SELECT COUNT(*) FROM orders WHERE order_number = 'ghost-1' AND status = 'ABANDONED'"
        )
        .await,
        1
    );
    let page: Value = get_json(&rig.http, format!("{}/api/order", rig.order.base_url())).await;
    assert_eq!(page["totalElements"], 1, "{page}");
    let ghost = shop_testkit::send(
        rig.http
            .get(format!("{}/api/order/ghost-1", rig.order.base_url())),
    )
    .await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND);
    // ...so a request for it that was only frozen (SIGSTOP, a paused VM) and now tries to store
    // its order is refused: its stock is already back on the shelf.
    let pool = sqlx::MySqlPool::connect(&rig.order_db).await.unwrap();
    let late = shop_order::store::write_orders(&pool, vec![late_order("ghost-1")]).await;
    assert_eq!(late.len(), 1);
    let err = late.into_iter().next().unwrap().unwrap_err();
    assert!(shop_order::store::is_number_taken(&err), "{err}");
    assert_eq!(
        count(
            &rig.order_db,
            "SELECT COUNT(*) FROM orders WHERE status = 'PLACED'"
        )
        .await,
        1
    );
    // The dead order number stays dead: a late reservation for it is refused.
    let (late, _) = rig
        .inventory()
        .reserve("ghost-1", json!([{"skuCode": "widget", "quantity": 5}]))
        .await;
    assert_eq!(late, StatusCode::CONFLICT);
    assert_eq!(rig.stock("widget").await, 18);
}

#[tokio::test]
async fn an_order_process_killed_between_reserving_and_storing_loses_no_stock() {
    // The first order process has no reconciler: it only places the order and dies. It reaches
    // its database through a link that holds the order's write, so it dies exactly between
    // reserving (done) and storing (never).
    let mut link = LossyLink::start(&mysql_host_port()).await;
    let mut rig = Rig::start_via(&[("RECONCILE_INTERVAL_SECS", "0")], Some(&link)).await;
    rig.set_stock("widget", 10).await;

    link.arm(ORDER_WRITE, Loss::Stall);
    let url = format!("{}/api/order", rig.order.base_url());
    let pending = tokio::spawn(async move {
        Client::new()
            .post(url)
            .header("Idempotency-Key", "crash-key")
            .json(&json!({"orderLineItemsDtoList": [{"skuCode": "widget", "price": "10.00", "quantity": 4}]}))
            .timeout(Duration::from_secs(20))
            .send()
            .await
    });
    assert!(
        link.wait_fired(Duration::from_secs(10)).await,
        "the order's write never reached the link"
    );
    rig.order.kill();
    assert!(
        pending.await.unwrap().is_err(),
        "the killed process answered"
    );

    let number: String = {
        let mut c = MySqlConnection::connect(&rig.order_db).await.unwrap();
        sqlx::query_scalar("SELECT order_number FROM idempotency_keys WHERE idem_key = 'crash-key'")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(
        rig.reservation(&number).await.as_deref(),
        Some("RESERVED"),
        "the order reserved before its write"
    );
    assert_eq!(
        rig.stock("widget").await,
        6,
        "4 units held for an order that does not exist"
    );
    assert_eq!(count(&rig.order_db, "SELECT COUNT(*) FROM orders").await, 0);

    // A new order process (a restart, or another replica) gives the stock back.
    let env = reconciling("3");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    rig.order = spawn_order_with(&rig.order_db, rig.inventory.port(), &rig.topic, &env).await;
    assert!(
        rig.wait_released(&number, Duration::from_secs(30)).await,
        "the reservation of the dead order was not released"
    );
    assert_eq!(rig.stock("widget").await, 10);
    assert_eq!(
        count(
            &rig.order_db,
            "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = 'crash-key'",
        )
        .await,
        0,
        "the dead request's key is dropped with its reservation"
    );

    // The client retries with its key: a fresh order, with the stock taken once.
    let (s, body) = rig.order(&rig.order, "widget", 4, "crash-key").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_ne!(body["orderNumber"].as_str().unwrap(), number);
    assert_eq!(rig.stock("widget").await, 6);
    assert_eq!(
        count(
            &rig.order_db,
            "SELECT COUNT(*) FROM orders WHERE status = 'PLACED'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_takeover_that_finds_its_reservation_released_is_placed_under_a_new_number() {
    let rig = Rig::start(&[
        ("RECONCILE_INTERVAL_SECS", "0"),
        ("IDEMPOTENCY_STALE_SECS", "1"),
    ])
    .await;
    rig.set_stock("widget", 10).await;
    // A request claimed the key for order number "dead-1", reserved, and died; its stock was
    // then released (by the handler's background settlement, an operator, or the reconciler).
    let lines = shop_order::model::validate(
        serde_json::from_value(json!({"orderLineItemsDtoList": [{"skuCode": "widget", "price": "10.00", "quantity": 3}]}))
            .unwrap(),
    )
    .unwrap();
    {
        let mut c = MySqlConnection::connect(&rig.order_db).await.unwrap();
        sqlx::query(
            "INSERT INTO idempotency_keys (idem_key, fingerprint, order_number, state, updated_at) \
             VALUES ('dead-key', ?, 'dead-1', 'IN_FLIGHT', NOW(6) - INTERVAL 1 HOUR)",
        )
        .bind(shop_order::model::fingerprint(&lines))
        .execute(&mut c)
        .await
        .unwrap();
    }
    rig.reserve_directly("dead-1", "widget", 3).await;
    // Releasing must answer 200 (checked by `release`).
    rig.inventory().release("dead-1").await;
    assert_eq!(rig.stock("widget").await, 10);

    // Nothing was ordered under "dead-1": the retry is placed at once under a new number (it
    // used to get a 409 "use a new order number" the client could do nothing about).
    let (s, body) = rig.order(&rig.order, "widget", 3, "dead-key").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_ne!(body["orderNumber"], "dead-1");
    // And the key answers with that order from now on.
    let (s, again) = rig.order(&rig.order, "widget", 3, "dead-key").await;
    assert_eq!((s, &again), (StatusCode::CREATED, &body));
    assert_eq!(rig.stock("widget").await, 7);
}

/// The order script's head (not the reconciler's ABANDONED insert, which names no key).
const ORDER_WRITE: &[u8] = b"idempotency_key, created_at) VALUES";

#[tokio::test]
async fn an_order_whose_commit_answer_was_lost_keeps_its_stock_and_one_never_written_gives_it_back()
{
    // The reconciler's grace is far away: whatever settles the stock here is the order path.
    let mut link = LossyLink::start(&mysql_host_port()).await;
    let rig = Rig::start_via(
        &[
            ("RECONCILE_INTERVAL_SECS", "1"),
            ("RECONCILE_GRACE_SECS", "600"),
        ],
        Some(&link),
    )
    .await;
    rig.set_stock("widget", 10).await;
    let mut db = MySqlConnection::connect(&rig.order_db).await.unwrap();

    // 1. The COMMIT reaches MariaDB, its answer never reaches shop-order.
    link.arm(ORDER_WRITE, Loss::Answer);
    let (s, body) = rig.order(&rig.order, "widget", 2, "answer-lost").await;
    assert!(
        link.wait_fired(Duration::from_secs(10)).await,
        "the order write never passed the link"
    );
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT order_number, status FROM orders WHERE idempotency_key = 'answer-lost'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(stored.len(), 1, "the order is stored: {stored:?}");
    let (number, status) = stored[0].clone();
    assert_eq!(status, "PLACED");
    // The order is stored, so its stock stays taken (a blind release gave it back at once).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rig.reservation(&number).await.as_deref(), Some("RESERVED"));
    assert_eq!(
        rig.stock("widget").await,
        8,
        "a stored order lost its stock"
    );
    // The client's retry is told about the order it has.
    let (s, body) = rig.order(&rig.order, "widget", 2, "answer-lost").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["orderNumber"], number.as_str());
    assert_eq!(rig.stock("widget").await, 8);

    // 2. The write never reaches MariaDB: its stock comes back at once, not after the grace.
    link.arm(ORDER_WRITE, Loss::Request);
    let (s, body) = rig.order(&rig.order, "widget", 3, "request-lost").await;
    assert!(
        link.wait_fired(Duration::from_secs(10)).await,
        "the order write never passed the link"
    );
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let back = wait_until(Duration::from_secs(10), || async {
        rig.stock("widget").await == 8
    })
    .await;
    assert!(
        back,
        "stock of an order never stored did not come back: {}",
        rig.stock("widget").await
    );
    let abandoned: Vec<String> =
        sqlx::query_scalar("SELECT order_number FROM orders WHERE status = 'ABANDONED'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(
        rig.reservation(&abandoned[0]).await.as_deref(),
        Some("RELEASED")
    );
    // The retry is a fresh order.
    let (s, body) = rig.order(&rig.order, "widget", 3, "request-lost").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_ne!(body["orderNumber"], abandoned[0].as_str());
    assert_eq!(rig.stock("widget").await, 5);
}

#[tokio::test]
async fn a_killed_order_process_frees_its_in_flight_key_within_the_stale_window_and_a_slow_live_one_keeps_it()
 {
    const STALE: Duration = Duration::from_secs(2);
    let env = [
        ("RECONCILE_INTERVAL_SECS", "0"),
        ("INVENTORY_TIMEOUT_MS", "8000"),
        ("IDEMPOTENCY_STALE_SECS", "2"),
    ];
    let mut rig = Rig::start(&env).await;
    rig.set_stock("widget", 10).await;
    let place = |key: &'static str| {
        let url = format!("{}/api/order", rig.order.base_url());
        tokio::spawn(async move {
            Client::new()
                .post(url)
                .header("Idempotency-Key", key)
                .json(&json!({"orderLineItemsDtoList": [{"skuCode": "widget", "price": "10.00", "quantity": 1}]}))
                .timeout(Duration::from_secs(20))
                .send()
                .await
        })
    };
    let claimed = |key: &'static str| {
        let db = rig.order_db.clone();
        async move {
            wait_until(Duration::from_secs(10), || {
                let db = db.clone();
                async move {
                    count(
                        &db,
                        &format!("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = '{key}'"),
                    )
                    .await
                        == 1
                }
            })
            .await
        }
    };

    // 1. A live request slower than the stale window (inventory frozen for 5 s): its process
    //    keeps the key fresh, so the client's retry is told it is in flight, not taken over.
    rig.inventory.signal(Signal::SIGSTOP);
    let slow = place("slow-key");
    assert!(
        claimed("slow-key").await,
        "the slow request never claimed its key"
    );
    tokio::time::sleep(STALE * 2 + Duration::from_secs(1)).await;
    let t = std::time::Instant::now();
    let (s, body) = rig.order(&rig.order, "widget", 1, "slow-key").await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a live request's key was taken over after {:?}: {body}",
        STALE * 2
    );
    assert_eq!(
        body["type"]
            .as_str()
            .map(|t| t.ends_with("idempotency-key-in-flight")),
        Some(true),
        "{body}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the retry waited {:?}",
        t.elapsed()
    );
    rig.inventory.signal(Signal::SIGCONT);
    let first = slow.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let (s, again) = rig.order(&rig.order, "widget", 1, "slow-key").await;
    assert_eq!(
        (s, &again["orderNumber"]),
        (StatusCode::CREATED, &first["orderNumber"])
    );

    // 2. The process dies with a request in flight: nobody refreshes the key, and the client's
    //    retry (to another process) takes it over within the window instead of waiting.
    rig.inventory.signal(Signal::SIGSTOP);
    let doomed = place("dead-key");
    assert!(
        claimed("dead-key").await,
        "the doomed request never claimed its key"
    );
    rig.order.kill();
    let killed_at = std::time::Instant::now();
    rig.inventory.signal(Signal::SIGCONT);
    assert!(
        doomed.await.unwrap().is_err(),
        "the killed process answered"
    );
    rig.order = spawn_order_with(&rig.order_db, rig.inventory.port(), &rig.topic, &env).await;
    let mut placed = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        let (s, body) = rig.order(&rig.order, "widget", 1, "dead-key").await;
        if s == StatusCode::CREATED {
            placed = Some(killed_at.elapsed());
            break;
        }
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let placed = placed.expect("the dead request's key was never taken over");
    assert!(
        placed <= STALE + Duration::from_secs(3),
        "taken over only {placed:?} after the kill (stale window {STALE:?})"
    );
    // One unit for each key: the taken-over order reused the dead one's reservation.
    assert_eq!(rig.stock("widget").await, 8);
}
