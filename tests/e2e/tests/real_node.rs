//! The platform as its users run it, on the real node: the operator installed by Helm runs as a
//! pod, the example Shop of `make up` (examples/shop.yaml, applied as it is to a new namespace) is
//! Available with every pod Ready through its real readiness probe, its four stores run as pods on
//! volumes of their own, the namespaces enforce the restricted Pod Security Standard, and an order
//! placed through the gateway's Service reaches notification and the Shop's own Zipkin as one trace.
//!
//! These tests read the Shop `make up` (and `make test`) applies; they change nothing of it. Tests
//! that kill or roll pods use Shops of their own (real_node_faults.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use kube::Api;
use kube::api::{LogParams, PostParams};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_operator::stores::{Store, secret_name, store_name};
use shop_testkit::cluster::{
    self, DEMO_GATEWAY, DEMO_NAMESPACE, DEMO_SHOP, NODE, is_ready, require_real_node,
};
use shop_testkit::get_json;
use shop_testkit::sse::{SseReader, span_service};
use shop_testkit::stack::repo_root;
use shop_testkit::{fresh_name, wait_until};

const OPERATOR_NAMESPACE: &str = "shopkeeper-system";
const OPERATOR_DEPLOYMENT: &str = "shopkeeper-shopkeeper";
/// How long a pod of the running platform may be unready before a test fails: a readiness probe
/// that misses its timeout while the cores are busy with other tests makes a pod unready until
/// its next success.
const READY_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn helm_installed_operator_runs_as_a_pod_and_the_shop_is_available_with_real_pods() {
    let client = cluster::client().await;
    require_real_node(&client).await;

    // The chart's operator Deployment, from the locally built image, Ready on the real node.
    // Waited for (bounded) rather than read once: a readiness probe may miss its 2 s timeout while
    // the 2 cores run other test binaries, and a pod is unready for a few seconds after that.
    let deployments = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    deployments
        .get(OPERATOR_DEPLOYMENT)
        .await
        .expect("the operator Deployment of `helm install shopkeeper` (make up installs it)");
    let op_ready = wait_until(READY_WITHIN, || async {
        deployments
            .get(OPERATOR_DEPLOYMENT)
            .await
            .ok()
            .and_then(|d| d.status.and_then(|s| s.ready_replicas))
            == Some(1)
    })
    .await;
    let op = deployments.get(OPERATOR_DEPLOYMENT).await.unwrap();
    assert!(
        op_ready,
        "operator Deployment not ready within {READY_WITHIN:?}: {:?}",
        op.status
    );
    let op_pods = cluster::pods(&client, OPERATOR_NAMESPACE, "").await;
    let op_pod = op_pods
        .iter()
        .find(|p| is_ready(p))
        .expect("a Ready operator pod");
    let spec = op_pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE));
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("shopkeeper.local/shop-operator:dev")
    );

    // The example Shop: Available, 6/6, at its current generation.
    cluster::wait_shop_available(&client, DEMO_NAMESPACE, DEMO_SHOP, Duration::from_secs(60)).await;
    let shop = cluster::shops(&client, DEMO_NAMESPACE)
        .get(DEMO_SHOP)
        .await
        .unwrap();
    assert_eq!(shop.data["status"]["readyComponents"], "6/6");

    // Every pod really runs on the real node and passed its readiness probe: 1 registry,
    // 2 gateways, 1 product, 1 inventory, 2 orders, 1 notification (the stores: see below).
    let selector = "app.kubernetes.io/instance=demo,app.kubernetes.io/component in (registry,gateway,product,inventory,order,notification)";
    wait_until(READY_WITHIN, || async {
        let pods = cluster::pods(&client, DEMO_NAMESPACE, selector).await;
        pods.iter().filter(|p| is_ready(p)).count() == 8
    })
    .await;
    let pods = cluster::pods(&client, DEMO_NAMESPACE, selector).await;
    let ready: Vec<&Pod> = pods.iter().filter(|p| is_ready(p)).collect();
    assert_eq!(
        ready.len(),
        8,
        "pods: {:#?}",
        cluster::pod_summary(&client, DEMO_NAMESPACE).await
    );
    for p in &ready {
        let name = p.metadata.name.as_deref().unwrap();
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
        let st = p.status.as_ref().unwrap();
        let c = &st.container_statuses.as_ref().unwrap()[0];
        assert!(
            c.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
            "{name} is not running: {:?}",
            c.state
        );
        assert!(
            c.image.starts_with("shopkeeper.local/shop-"),
            "{name} runs {}",
            c.image
        );
        assert!(
            st.pod_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("10.244.0.")),
            "{name} has no pod IP on the node's bridge: {:?}",
            st.pod_ip
        );
    }

    // `kubectl logs` works: the kubelet serves the container's log (JSON lines of the service).
    let order = ready
        .iter()
        .find(|p| p.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"] == "order")
        .unwrap();
    let logs = Api::<Pod>::namespaced(client.clone(), DEMO_NAMESPACE)
        .logs(
            order.metadata.name.as_deref().unwrap(),
            &LogParams {
                tail_lines: Some(50),
                ..Default::default()
            },
        )
        .await
        .expect("kubectl logs of an order pod (apiserver -> kubelet)");
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("\"level\"")),
        "order pod log has no JSON log line:\n{logs}"
    );
}

#[tokio::test]
async fn the_shop_namespaces_enforce_the_restricted_pod_security_standard() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    for ns in [DEMO_NAMESPACE, OPERATOR_NAMESPACE] {
        let labels = Api::<Namespace>::all(client.clone())
            .get(ns)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted"),
            "namespace {ns}"
        );
    }
    // Enforcement is on: a pod that asks for root and privilege escalation is refused, so the
    // shop's running pods were all admitted as restricted.
    let bad: Pod = serde_json::from_value(json!({
        "metadata": {"name": fresh_name("pss-")},
        "spec": {"containers": [{"name": "c", "image": "shopkeeper.local/pause:3.10",
            "securityContext": {"privileged": true, "runAsUser": 0}}]}
    }))
    .unwrap();
    let err = Api::<Pod>::namespaced(client.clone(), DEMO_NAMESPACE)
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("a privileged root pod must be refused in a restricted namespace");
    assert!(
        err.to_string().contains("restricted"),
        "refused, but not by Pod Security: {err}"
    );
}

#[tokio::test]
async fn an_order_through_the_gateway_service_is_stocked_notified_and_traced() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = cluster::dev_token();
    let gw = DEMO_GATEWAY;
    let sku = fresh_name("pod-sku-");

    // A product created with its stock through the gateway's node port, in a trace the client
    // starts (W3C traceparent), so the product -> inventory hop can be found in Zipkin below.
    let product_trace = create_traced_product(&http, gw, &token, &sku).await;

    let stock_url = format!("{gw}/api/inventory?skuCode={sku}");
    let stocked = wait_until(Duration::from_secs(20), || {
        let (http, url) = (http.clone(), stock_url.clone());
        async move {
            let Ok(r) = http.get(&url).send().await else {
                return false;
            };
            let v: Value = r.json().await.unwrap_or(Value::Null);
            v[0]["availableQuantity"] == 7
        }
    })
    .await;
    assert!(stocked, "stock of {sku} never showed 7 through the gateway");

    // Listen on the SSE stream before ordering.
    let mut stream = SseReader::open(&http, &format!("{gw}/api/notifications/stream")).await;

    let r = http
        .post(format!("{gw}/api/order"))
        .bearer_auth(&token)
        .header("Idempotency-Key", fresh_name("key-"))
        .json(
            &json!({"orderLineItemsDtoList": [{"skuCode": sku, "price": "99.50", "quantity": 2}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let order: Value = r.json().await.unwrap();
    let number = order["orderNumber"].as_str().unwrap().to_owned();

    // The notification arrives on the stream; it carries the order's trace id.
    let event = stream
        .wait_for_data(&number, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "order {number} was not notified on the SSE stream; got: {}",
                stream.streamed
            )
        });
    let stock: Value = get_json(&http, &stock_url).await;
    assert_eq!(
        stock[0]["availableQuantity"], 5,
        "stock after ordering 2 of 7"
    );

    // One Zipkin trace: gateway -> order -> inventory, the Kafka hop (the Shop's own broker) into
    // notification.
    let trace_id = event["traceId"]
        .as_str()
        .expect("traceId in the notification");
    // The Shop's own Zipkin (managed), through its ClusterIP.
    let zipkin = cluster::service_url(
        &client,
        DEMO_NAMESPACE,
        &store_name(DEMO_SHOP, Store::Zipkin),
    )
    .await;
    // The client's trace of the product creation: gateway -> product -> inventory (stock).
    // Product pushes the stock within the request; when that push fails (inventory briefly out of
    // its discovery cache) its retry loop delivers the stock later, in a trace of its own. So up
    // to three creations are tried for one whose trace holds all three services.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut product_hops = false;
    let mut trace = product_trace;
    for attempt in 0..3 {
        if attempt > 0 {
            trace = create_traced_product(&http, gw, &token, &fresh_name("pod-sku-")).await;
        }
        let product_url = format!("{zipkin}/api/v2/trace/{trace}");
        product_hops = wait_until(Duration::from_secs(30), || {
            let (http, url, seen) = (http.clone(), product_url.clone(), seen.clone());
            async move {
                let Ok(r) = http.get(&url).send().await else {
                    return false;
                };
                let spans: Vec<Value> = r.json().await.unwrap_or_default();
                let services: Vec<String> = spans.iter().map(span_service).collect();
                let whole = ["gateway", "product", "inventory"]
                    .iter()
                    .all(|svc| services.iter().any(|s| s == svc));
                *seen.lock().unwrap() = services;
                whole
            }
        })
        .await;
        if product_hops {
            break;
        }
    }
    assert!(
        product_hops,
        "three client traces of product creations lacked gateway, product or inventory; the last ({trace}): {:?}",
        seen.lock().unwrap()
    );
    let url = format!("{zipkin}/api/v2/trace/{trace_id}");
    let last = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let whole = wait_until(Duration::from_secs(30), || {
        let (http, url, last) = (http.clone(), url.clone(), last.clone());
        async move {
            let Ok(r) = http.get(&url).send().await else {
                return false;
            };
            let spans: Vec<Value> = r.json().await.unwrap_or_default();
            let has = |svc: &str| spans.iter().any(|s| span_service(s) == svc);
            let kafka_hop = spans.iter().any(|s| {
                span_service(s) == "notification"
                    && s["kind"] == "CONSUMER"
                    && s["tags"]["messaging.system"] == "kafka"
            });
            *last.lock().unwrap() = spans
                .iter()
                .map(|s| format!("{}:{}:{}", span_service(s), s["kind"], s["name"]))
                .collect();
            has("gateway") && has("order") && has("inventory") && kafka_hop
        }
    })
    .await;
    assert!(
        whole,
        "trace {trace_id} lacks gateway, order, inventory or the Kafka consumer span: {:?}",
        last.lock().unwrap()
    );
}

/// Creates a product with 7 in stock through the gateway's node port, in a trace the client
/// starts (W3C traceparent); returns the trace id.
async fn create_traced_product(http: &Client, gw: &str, token: &str, sku: &str) -> String {
    let trace = format!("{:032x}", rand_u128());
    let r = http
        .post(format!("{gw}/api/product"))
        .bearer_auth(token)
        .header(
            "traceparent",
            format!("00-{trace}-{:016x}-01", rand_u128() as u64 | 1),
        )
        .json(
            &json!({"name": "Pod phone", "description": "sold from a pod", "price": "99.50",
                      "skuCode": sku, "quantity": 7}),
        )
        .send()
        .await
        .expect("the gateway at 127.0.0.1:8080 (node port of the demo Shop)");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    trace
}

/// `examples/shop.yaml` as documents (the JWT Secret, the Shop).
fn example_documents() -> Vec<Value> {
    let path = repo_root().join("examples/shop.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap())
        .collect()
}

/// Whether every field `want` sets has the same value in `got` (the API server adds defaults).
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| contains(gv, v))),
        _ => got == want,
    }
}

#[tokio::test]
async fn the_example_shop_runs_as_written_with_its_own_stores_on_volumes_of_their_own() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    cluster::wait_shop_available(&client, DEMO_NAMESPACE, DEMO_SHOP, Duration::from_secs(60)).await;

    // What runs is examples/shop.yaml as a user applies it: the file's Shop, its Secret, nothing else.
    let docs = example_documents();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Secret", "Shop"],
        "examples/shop.yaml must be self-contained"
    );
    let live = cluster::shops(&client, DEMO_NAMESPACE)
        .get(DEMO_SHOP)
        .await
        .unwrap();
    let spec = &docs[1]["spec"];
    assert!(
        contains(&live.data["spec"], spec),
        "the demo Shop differs from examples/shop.yaml: {:#}",
        live.data["spec"]
    );

    let conditions = live.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let sets = Api::<StatefulSet>::namespaced(client.clone(), DEMO_NAMESPACE);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), DEMO_NAMESPACE);
    let volumes = Api::<PersistentVolume>::all(client.clone());
    for store in Store::ALL {
        let cond = conditions
            .iter()
            .find(|c| c["type"] == store.condition_type())
            .unwrap_or_else(|| panic!("no {} condition", store.condition_type()));
        assert_eq!(cond["status"], "True", "{cond}");

        // The store is a pod of the Shop, from the image the file names, Ready on the node
        // (waited for, bounded: see READY_WITHIN).
        let name = store_name(DEMO_SHOP, store);
        let selector = cluster::component_selector(DEMO_SHOP, store.name());
        wait_until(READY_WITHIN, || async {
            let set_ready = sets
                .get(&name)
                .await
                .ok()
                .and_then(|s| s.status.and_then(|s| s.ready_replicas))
                == Some(1);
            let pods = cluster::pods(&client, DEMO_NAMESPACE, &selector).await;
            set_ready && pods.len() == 1 && is_ready(&pods[0])
        })
        .await;
        let set = sets.get(&name).await.unwrap();
        assert_eq!(
            set.status.as_ref().and_then(|s| s.ready_replicas),
            Some(1),
            "{name}"
        );
        let image = set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone();
        assert_eq!(
            image.as_ref(),
            spec["backing"][store.name()]["image"]
                .as_str()
                .map(str::to_owned)
                .as_ref()
        );
        let pods = cluster::pods(&client, DEMO_NAMESPACE, &selector).await;
        assert!(
            pods.len() == 1 && is_ready(&pods[0]),
            "{name}: {:#?}",
            cluster::pod_summary(&client, DEMO_NAMESPACE).await
        );
        assert_eq!(
            pods[0].spec.as_ref().unwrap().node_name.as_deref(),
            Some(NODE)
        );

        // Its data on a claim of its own, Bound to a local volume of the node's default class.
        if store.data_path().is_none() {
            continue;
        }
        let claim = claims.get(&format!("data-{name}-0")).await.unwrap();
        let status = claim.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(status.as_deref(), Some("Bound"), "claim of {name}");
        let claim_spec = claim.spec.unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("shop-local"));
        let pv = volumes
            .get(claim_spec.volume_name.as_deref().unwrap())
            .await
            .unwrap();
        let path = pv
            .spec
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .map(|l| l.path.clone());
        assert!(
            path.as_deref()
                .is_some_and(|p| std::path::Path::new(p).is_dir()),
            "volume of {name} is not a directory of the node: {path:?}"
        );
    }

    // Credentials were generated into the Shop's Secret; no pod carries one in plain text.
    let secret = Api::<Secret>::namespaced(client.clone(), DEMO_NAMESPACE)
        .get(&secret_name(DEMO_SHOP))
        .await
        .expect("the generated credentials Secret demo-stores");
    let data = secret.data.unwrap();
    let password = String::from_utf8(data["mysql-password"].0.clone()).unwrap();
    assert!(password.len() >= 32, "generated password too short");
    for p in cluster::pods(&client, DEMO_NAMESPACE, "app.kubernetes.io/instance=demo").await {
        let text = serde_json::to_string(&p.spec).unwrap();
        assert!(
            !text.contains(&password),
            "pod {:?} carries the MariaDB password in its spec",
            p.metadata.name
        );
    }
}

#[tokio::test]
async fn the_external_stores_example_is_accepted_as_written() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    // examples/shop-external.yaml with its Secret: what docs/operator.md tells a user to apply for
    // stores they run themselves. The API server (schema, CEL) takes both as they are.
    for file in [
        "examples/backing-secret.yaml",
        "examples/shop-external.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let (group_version, kind) = (
            doc["apiVersion"].as_str().unwrap(),
            doc["kind"].as_str().unwrap(),
        );
        let (group, version) = group_version.split_once('/').unwrap_or(("", group_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let api: Api<kube::core::DynamicObject> =
            Api::namespaced_with(client.clone(), DEMO_NAMESPACE, &resource);
        let obj: kube::core::DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let params = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let created = api.create(&params, &obj).await;
        assert!(
            created.is_ok(),
            "{file} refused by the API server: {created:?}"
        );
        if kind == "Shop" {
            assert_eq!(obj.data["spec"]["backing"]["mysql"]["mode"], "external");
        }
    }
}

/// A random number for trace and span ids (the test's own; std's hasher keys are random per process).
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    let hi = h.finish();
    h.write_u64(hi);
    (u128::from(hi) << 64) | u128::from(h.finish())
}

/// `make up`'s Shop serves its storefront through the gateway's node port, and the admin page's
/// status comes from the operator: the Shop's status published to `<shop>-status`, mounted into
/// the gateway pods (refreshed by the kubelet's sync, so allow it a while).
#[tokio::test]
async fn the_demo_gateway_serves_the_storefront_and_the_shops_status_from_the_operator() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let page = http.get(format!("{DEMO_GATEWAY}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("<main"));

    let shop = cluster::shops(&client, DEMO_NAMESPACE)
        .get(DEMO_SHOP)
        .await
        .unwrap();
    let phase = shop.data["status"]["phase"].clone();
    let url = format!("{DEMO_GATEWAY}/admin/status.json");
    let last = std::sync::Mutex::new(None);
    let seen = wait_until(Duration::from_secs(150), || {
        let (http, url, phase, last) = (http.clone(), url.clone(), phase.clone(), &last);
        async move {
            let Ok(r) = http.get(&url).send().await else {
                return false;
            };
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let ok = status == StatusCode::OK
                && body["name"] == DEMO_SHOP
                && body["status"]["phase"] == phase;
            *last.lock().unwrap() = Some((status, body));
            ok
        }
    })
    .await;
    assert!(
        seen,
        "the gateway never served the Shop's status (phase {phase}); last answer: {:?}",
        last.lock().unwrap()
    );
}

/// The value of `shop_fault_active{fault="<fault>"}` on a component's `/metrics`, if it answers.
async fn fault_gauge(http: &Client, metrics_url: &str, fault: &str) -> Option<f64> {
    let text = http.get(metrics_url).send().await.ok()?.text().await.ok()?;
    let name = format!("shop_fault_active{{fault=\"{fault}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name)?.trim().parse().ok())
}

/// A fault flag set on `make up`'s Shop reaches the inventory pod through the mounted
/// `<shop>-faults` file (the kubelet refreshes it on its pod sync, about a minute), without a
/// restart, and goes when the Shop drops it. The flag is a 1 ms latency: harmless to the tests
/// that use the demo Shop meanwhile.
#[tokio::test]
async fn a_fault_flag_on_the_demo_shop_reaches_the_inventory_pod_without_a_restart() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let http = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let selector = cluster::component_selector(DEMO_SHOP, "inventory");
    let identity = |pods: Vec<Pod>| -> Vec<(String, i32)> {
        pods.into_iter()
            .map(|p| {
                let restarts = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (p.metadata.uid.unwrap_or_default(), restarts)
            })
            .collect()
    };
    let before = identity(cluster::pods(&client, DEMO_NAMESPACE, &selector).await);
    let metrics = format!(
        "{}/metrics",
        cluster::service_url(&client, DEMO_NAMESPACE, &format!("{DEMO_SHOP}-inventory")).await
    );
    let shops = cluster::shops(&client, DEMO_NAMESPACE);
    let set = |faults: Value| {
        let shops = shops.clone();
        async move {
            shops
                .patch(
                    DEMO_SHOP,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"faults": faults}})),
                )
                .await
                .unwrap();
        }
    };

    set(json!({"inventoryLatencyMs": 1})).await;
    let on = wait_until(Duration::from_secs(180), || async {
        fault_gauge(&http, &metrics, "inventory_latency_ms").await == Some(1.0)
    })
    .await;
    // Taken off whatever happened, so the demo Shop is left as examples/shop.yaml has it.
    set(Value::Null).await;
    assert!(
        on,
        "the inventory pod never reported inventoryLatencyMs=1 within 180 s ({metrics})"
    );
    let off = wait_until(Duration::from_secs(180), || async {
        fault_gauge(&http, &metrics, "inventory_latency_ms").await == Some(0.0)
    })
    .await;
    assert!(off, "the flag stayed on after the Shop dropped it");
    assert_eq!(
        identity(cluster::pods(&client, DEMO_NAMESPACE, &selector).await),
        before,
        "a fault flag must not restart or replace the inventory pod"
    );
}
