//! Faults and changes on real pods, each test with a Shop of its own beside the example Shop of
//! `make up` (which is left alone): the registry gone (lookups fall back to cluster DNS), a pod killed
//! (replaced, its instance leaves the registry within one lease, no accepted order lost), and a
//! rolling update of replicas and image tag under a steady client (no failed request), a managed
//! MariaDB killed mid-traffic (back on its volume, no order lost or doubled, stock exact), and an
//! external store whose Secret is missing (reported by name, recovered when it appears).
//!
//! Test Shops run without notification: every Shop of the cluster shares the host's Kafka topic,
//! and a second consumer group member would take partitions from the example Shop's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_testkit::cluster::{self, TestShop, is_ready, require_real_node};
use shop_testkit::get_json;
use shop_testkit::shop::ShopClient;
use shop_testkit::{fresh_name, wait_until};

/// How long a test Shop may take to become Available (eight pods of debug images on 2 cores).
const SHOP_UP: Duration = Duration::from_secs(240);
/// The lease the services ask the registry for (runtime default `SHOP_LEASE_DURATION_SECS`).
const LEASE: Duration = Duration::from_secs(15);

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Creates a product with `quantity` in stock through the gateway; returns its SKU.
async fn stocked_product(gw: &str, token: &str, quantity: u32) -> String {
    let sku = fresh_name("fault-sku-");
    ShopClient::new(gw, token)
        .unwrap()
        .stocked_product(&sku, quantity.into())
        .await
        .unwrap();
    sku
}

/// Places one order like a real client: one Idempotency-Key, retried on transport errors, 5xx
/// and "still in progress" for up to `patience`. Returns the order number, or the last failure.
async fn place_order(
    http: &Client,
    gw: &str,
    token: &str,
    sku: &str,
    patience: Duration,
) -> Result<String, String> {
    let key = fresh_name("key-");
    let deadline = Instant::now() + patience;
    loop {
        let r = http
            .post(format!("{gw}/api/order"))
            .bearer_auth(token)
            .header("Idempotency-Key", &key)
            .json(&json!({"orderLineItemsDtoList": [{"skuCode": sku, "price": "10.00", "quantity": 1}]}))
            .send()
            .await;
        let failure = match r {
            Ok(r) if r.status() == StatusCode::CREATED || r.status() == StatusCode::OK => {
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                return Ok(v["orderNumber"].as_str().unwrap_or_default().to_owned());
            }
            Ok(r) if r.status().is_server_error() => format!("{}", r.status()),
            // The first try with this key is still being processed (e.g. it waits for a database
            // that went away): the answer says to retry shortly, as a real client does.
            Ok(r) if r.status() == StatusCode::CONFLICT => {
                let body = r.text().await.unwrap_or_default();
                if !body.contains("idempotency-key-in-flight") {
                    return Err(format!("409 Conflict: {body}"));
                }
                format!("409 Conflict: {body}")
            }
            Ok(r) => {
                return Err(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ));
            }
            Err(e) => error_chain(&e),
        };
        if Instant::now() >= deadline {
            return Err(failure);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn order_exists(http: &Client, gw: &str, token: &str, number: &str) -> bool {
    let r = http
        .get(format!("{gw}/api/order/{number}"))
        .bearer_auth(token)
        .send()
        .await;
    matches!(r, Ok(r) if r.status() == StatusCode::OK)
}

/// A client placing orders one after the other (each with its own Idempotency-Key, retried for up
/// to `patience`) until stopped: what a shop's users do while something breaks.
struct SteadyOrders {
    stop: Arc<AtomicBool>,
    placed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(Vec<String>, Vec<String>)>,
}

impl SteadyOrders {
    fn start(http: &Client, gw: &str, token: &str, sku: &str, patience: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let placed = Arc::new(AtomicU64::new(0));
        let (http, gw, token, sku) = (
            http.clone(),
            gw.to_owned(),
            token.to_owned(),
            sku.to_owned(),
        );
        let task = tokio::spawn({
            let (stop, placed) = (stop.clone(), placed.clone());
            async move {
                let (mut accepted, mut failed) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match place_order(&http, &gw, &token, &sku, patience).await {
                        Ok(n) => {
                            accepted.push(n);
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (accepted, failed)
            }
        });
        Self { stop, placed, task }
    }

    /// Orders accepted so far.
    fn placed(&self) -> u64 {
        self.placed.load(Ordering::Relaxed)
    }

    /// Waits until `more` further orders were accepted (false after `timeout`).
    async fn wait_for_more(&self, more: u64, timeout: Duration) -> bool {
        let target = self.placed() + more;
        wait_until(timeout, || async { self.placed() >= target }).await
    }

    /// Stops the client; the order numbers it was given and the failures it saw.
    async fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Ready, not terminating pods of one component of `shop`, by name.
async fn ready_pods(shop: &TestShop, component: &str) -> Vec<String> {
    shop.pods(Some(component))
        .await
        .iter()
        .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Instance ids the registry lists for `app` (Eureka JSON).
async fn registry_instances(http: &Client, registry: &str, app: &str) -> Vec<String> {
    let Ok(r) = http
        .get(format!("{registry}/eureka/apps/{app}"))
        .header("accept", "application/json")
        .send()
        .await
    else {
        return Vec::new();
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let list = &v["application"]["instance"];
    let items: Vec<Value> = match list {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![list.clone()],
        _ => Vec::new(),
    };
    items
        .iter()
        .filter_map(|i| i["instanceId"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn with_the_registry_gone_lookups_fall_back_to_cluster_dns_and_orders_succeed() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let shop = TestShop::new(&client, "dns-").await;
    let components = |registry_replicas: i32| json!({"registry": {"replicas": registry_replicas}, "notification": {"enabled": false}});
    shop.apply("dev", components(1)).await;
    shop.wait_available(SHOP_UP).await;
    let gw = shop.url("gateway").await;
    let (http, token) = (http(), cluster::dev_token());
    let sku = stocked_product(&gw, &token, 50).await;
    place_order(&http, &gw, &token, &sku, Duration::from_secs(30))
        .await
        .expect("an order with the registry up");

    // The registry goes away; then inventory is replaced by a pod whose address no registry
    // ever saw, so order can only find it through DNS.
    shop.apply("dev", components(0)).await;
    let gone = wait_until(Duration::from_secs(60), || async {
        shop.pods(Some("registry")).await.is_empty()
    })
    .await;
    assert!(gone, "the registry pod did not go away");
    let old = ready_pods(&shop, "inventory").await;
    cluster::kill_pod(&client, &shop.namespace, &old[0]).await;
    let replaced = wait_until(Duration::from_secs(90), || async {
        let now = ready_pods(&shop, "inventory").await;
        now.len() == 1 && now[0] != old[0]
    })
    .await;
    assert!(
        replaced,
        "inventory was not replaced (Ready) without a registry: {:#?}",
        shop.summary().await
    );
    for _ in 0..3 {
        place_order(&http, &gw, &token, &sku, Duration::from_secs(30))
            .await
            .expect("an order with the registry gone (order -> inventory through DNS)");
    }
    shop.delete().await;
}

#[tokio::test]
async fn a_killed_pod_is_replaced_leaves_the_registry_within_one_lease_and_no_order_is_lost() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let shop = TestShop::new(&client, "kill-").await;
    shop.apply(
        "dev",
        json!({"order": {"replicas": 2}, "notification": {"enabled": false}}),
    )
    .await;
    shop.wait_available(SHOP_UP).await;
    let gw = shop.url("gateway").await;
    let registry = shop.url("registry").await;
    let (http, token) = (http(), cluster::dev_token());
    let sku = stocked_product(&gw, &token, 10_000).await;

    let registered = wait_until(Duration::from_secs(30), || async {
        registry_instances(&http, &registry, "ORDER").await.len() == 2
    })
    .await;
    assert!(registered, "both order pods registered");

    // A steady client places orders the whole time. An order in flight on the killed pod keeps
    // its Idempotency-Key busy until the key is stale (IDEMPOTENCY_STALE_SECS, 10 s without the
    // dead process's refresh): patience well beyond that.
    let orders = SteadyOrders::start(&http, &gw, &token, &sku, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victims = ready_pods(&shop, "order").await;
    let victim = victims[0].clone();
    let victim_ip = shop
        .pods(Some("order"))
        .await
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(&victim))
        .and_then(|p| p.status.and_then(|s| s.pod_ip))
        .unwrap();
    let before = registry_instances(&http, &registry, "ORDER").await;
    let dead_id = before
        .iter()
        .find(|id| id.contains(&victim) || id.contains(&victim_ip))
        .cloned()
        .unwrap_or_else(|| panic!("no registry instance for {victim} ({victim_ip}) in {before:?}"));
    let killed_at = Instant::now();
    cluster::kill_pod(&client, &shop.namespace, &victim).await;

    let left = wait_until(LEASE + Duration::from_secs(15), || async {
        !registry_instances(&http, &registry, "ORDER")
            .await
            .contains(&dead_id)
    })
    .await;
    let left_after = killed_at.elapsed();
    let replaced = wait_until(Duration::from_secs(90), || async {
        let now = ready_pods(&shop, "order").await;
        now.len() == 2 && !now.contains(&victim)
    })
    .await;
    let resumed = orders.wait_for_more(5, Duration::from_secs(90)).await;
    let (accepted, failed) = orders.finish().await;

    assert!(
        left,
        "the killed instance {dead_id} was still registered {left_after:?} after the kill"
    );
    assert!(
        left_after <= LEASE + Duration::from_secs(10),
        "the killed instance left the registry only after {left_after:?} (lease {LEASE:?})"
    );
    assert!(
        replaced,
        "order pod not replaced: {:#?}",
        shop.summary().await
    );
    assert!(
        failed.is_empty(),
        "orders the client could not place: {failed:?}"
    );
    assert!(
        resumed,
        "orders did not resume after the kill: {} placed in all",
        accepted.len()
    );
    for n in &accepted {
        assert!(
            order_exists(&http, &gw, &token, n).await,
            "accepted order {n} is lost"
        );
    }
    eprintln!(
        "killed {victim}: left the registry after {left_after:?}; {} orders accepted, all stored",
        accepted.len()
    );
    shop.delete().await;
}

#[tokio::test]
async fn a_rolling_update_of_replicas_and_image_tag_fails_no_request_of_a_steady_client() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let shop = TestShop::new(&client, "roll-").await;
    let components = |gateways: i32, products: i32| {
        json!({"gateway": {"replicas": gateways}, "product": {"replicas": products},
               "notification": {"enabled": false}})
    };
    shop.apply("dev", components(2, 1)).await;
    shop.wait_available(SHOP_UP).await;
    let gw = shop.url("gateway").await;
    let (http, token) = (http(), cluster::dev_token());
    let sku = stocked_product(&gw, &token, 10).await;

    // A steady reader of the catalogue through the gateway's Service.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let reader = {
        let (http, url, stop, ok, errors) = (
            http.clone(),
            format!("{gw}/api/product?skuCode={sku}"),
            stop.clone(),
            ok.clone(),
            errors.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        // The body says which 503 it was (no instance, breaker, the service's own).
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        let detail: String = body.chars().take(240).collect();
                        errors.lock().unwrap().push(format!("{status} {detail}"));
                    }
                    Err(e) => errors.lock().unwrap().push(error_chain(&e)),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    shop.apply("dev2", components(3, 2)).await;
    shop.wait_available(SHOP_UP).await;
    let rolled = wait_until(Duration::from_secs(120), || async {
        let pods = shop.pods(None).await;
        let running: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        running.iter().all(|p| {
            is_ready(p)
                && p.spec.as_ref().unwrap().containers[0]
                    .image
                    .as_deref()
                    .is_some_and(|i| i.ends_with(":dev2"))
        }) && running.len() == 8
            && pods.len() == running.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(
        rolled,
        "not every pod runs :dev2 (3 gateways, 2 products): {:#?}",
        shop.summary().await
    );
    let errors = errors.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    // Each distinct failure once, with how often it came.
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in &errors {
        *kinds.entry(e.as_str()).or_default() += 1;
    }
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during the rolling update: {kinds:#?}",
        errors.len(),
        ok + errors.len() as u64
    );
    assert!(ok > 100, "only {ok} requests during the update");
    eprintln!("rolling update: {ok} requests, none failed");
    shop.delete().await;
}

/// The local image of the managed MariaDB (hack/images.sh builds it; examples/shop.yaml names it).
const MARIADB_IMAGE: &str = "shopkeeper.local/store-mariadb:dev";

/// Name of the PersistentVolume bound to a claim, if bound.
async fn bound_volume(client: &kube::Client, ns: &str, claim: &str) -> Option<String> {
    let pvc = kube::Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .ok()??;
    let bound = pvc.status.as_ref()?.phase.as_deref() == Some("Bound");
    bound.then(|| pvc.spec?.volume_name).flatten()
}

#[tokio::test]
async fn a_managed_mariadb_killed_mid_traffic_comes_back_on_its_volume_and_no_order_is_lost() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let shop = TestShop::new(&client, "mdb-").await;
    // MariaDB managed (its volume dropped with the test Shop), the other stores the host's.
    shop.apply_with_backing(
        "dev",
        json!({"notification": {"enabled": false}}),
        json!({"mysql": {"mode": "managed", "image": MARIADB_IMAGE, "keepData": false}}),
    )
    .await;
    shop.wait_available(SHOP_UP).await;
    let conditions = shop.conditions().await;
    assert_eq!(
        conditions["MysqlReady"]["status"],
        "True",
        "MysqlReady: {:?}",
        conditions.get("MysqlReady")
    );
    let claim = format!("data-{}-mysql-0", shop.name);
    let volume = bound_volume(&client, &shop.namespace, &claim)
        .await
        .unwrap_or_else(|| panic!("claim {claim} of the managed MariaDB is not Bound"));

    let gw = shop.url("gateway").await;
    let (http, token) = (http(), cluster::dev_token());
    const STOCK: u64 = 100_000;
    let sku = stocked_product(&gw, &token, STOCK as u32).await;
    let orders = SteadyOrders::start(&http, &gw, &token, &sku, Duration::from_secs(120));
    assert!(
        orders.wait_for_more(10, Duration::from_secs(60)).await,
        "the steady client placed fewer than 10 orders before the kill"
    );

    // MariaDB dies at once, as on a node failure, with orders in flight.
    // The StatefulSet recreates it under the same name: the uid tells the new pod apart.
    let victim = shop.pods(Some("mysql")).await;
    assert!(
        victim.len() == 1 && is_ready(&victim[0]),
        "{:#?}",
        shop.summary().await
    );
    let (victim_name, victim_uid) = (
        victim[0].metadata.name.clone().unwrap(),
        victim[0].metadata.uid.clone(),
    );
    let killed_at = Instant::now();
    cluster::kill_pod(&client, &shop.namespace, &victim_name).await;
    let back = wait_until(Duration::from_secs(180), || async {
        let pods = shop.pods(Some("mysql")).await;
        pods.iter().any(|p| {
            is_ready(p) && p.metadata.deletion_timestamp.is_none() && p.metadata.uid != victim_uid
        })
    })
    .await;
    let back_after = killed_at.elapsed();
    assert!(
        back,
        "MariaDB did not come back: {:#?}",
        shop.summary().await
    );
    // The same claim, on the same volume: the data survived the pod.
    assert_eq!(
        bound_volume(&client, &shop.namespace, &claim)
            .await
            .as_deref(),
        Some(volume.as_str()),
        "the new MariaDB pod is not on the volume the old one used"
    );
    assert!(
        orders.wait_for_more(10, Duration::from_secs(120)).await,
        "orders did not resume after MariaDB came back"
    );
    let (accepted, failed) = orders.finish().await;

    assert!(
        failed.is_empty(),
        "orders the client could not place (each retried with its key for 120 s): {failed:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "an order number was given twice"
    );
    for n in &accepted {
        assert!(
            order_exists(&http, &gw, &token, n).await,
            "accepted order {n} is lost"
        );
    }
    // Every accepted order took exactly one unit: none lost, none reserved twice.
    let stock: Value = get_json(&http, format!("{gw}/api/inventory?skuCode={sku}")).await;
    assert_eq!(
        stock[0]["availableQuantity"].as_u64(),
        Some(STOCK - accepted.len() as u64),
        "stock after {} accepted orders",
        accepted.len()
    );
    eprintln!(
        "MariaDB killed: back on {volume} after {back_after:?}; {} orders accepted, all stored, stock exact",
        accepted.len()
    );
    shop.delete().await;
}

#[tokio::test]
async fn an_external_store_whose_secret_is_missing_is_reported_and_recovers_when_it_appears() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let shop = TestShop::new(&client, "ext-").await;
    let late = format!("{}-late", shop.name);
    shop.apply_with_backing(
        "dev",
        json!({"notification": {"enabled": false}}),
        json!({"mysql": {"mode": "external", "urlSecretRef": {"name": late, "key": "url"}}}),
    )
    .await;

    // The Shop says which store lacks what, and nothing that needs it is started.
    let reported = wait_until(Duration::from_secs(60), || async {
        let c = shop.conditions().await;
        c.get("MysqlReady").is_some_and(|m| {
            m["status"] == "False"
                && m["reason"] == "SecretMissing"
                && m["message"].as_str().is_some_and(|t| t.contains(&late))
        })
    })
    .await;
    let conditions = shop.conditions().await;
    assert!(
        reported,
        "no MysqlReady=False/SecretMissing naming {late}: {conditions:#?}"
    );
    assert_ne!(conditions["Available"]["status"], "True");

    // The Secret appears: the Shop recovers without being touched.
    shop.create_secret("late", json!({"url": "mysql://shop:shop@10.244.0.1:3306"}))
        .await;
    shop.wait_available(SHOP_UP).await;
    assert_eq!(shop.conditions().await["MysqlReady"]["status"], "True");
    let gw = shop.url("gateway").await;
    let (http, token) = (http(), cluster::dev_token());
    let sku = stocked_product(&gw, &token, 5).await;
    place_order(&http, &gw, &token, &sku, Duration::from_secs(30))
        .await
        .expect("an order once the Secret exists");
    shop.delete().await;
}

/// An error with its causes (`error sending request` alone does not say refused, reset or timed out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
