//! The reconcile against a mock API (tower-test's `mock::pair` behind a kube `Client`), no API
//! server: what a user notices in the Shop's status, and which writes reach the API, for an
//! invalid Shop, a paused one, an unchanged one and one whose apply the API server refuses. The
//! mock keeps the objects it is sent in memory (apply stores, get and list return them), so the
//! operator reads back exactly what it wrote, as from a real API server; the real one is in
//! `cluster.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PartialObjectMeta;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher::Event;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use shop_operator::Shop;
use shop_operator::controller::{Context, ReconcileSettings, reconcile};
use shop_operator::crd::Phase;
use shop_operator::error::ReconcileError;
use shop_operator::metrics::Metrics;
use shop_operator::watched::{Feed, Kept, Watched};

const NS: &str = "mock";
const UID: &str = "0b5e9d7c-1d7e-4f53-9c43-6a3c5e1f0001";

/// One request as the mock saw it: `METHOD path` (without the query).
type Seen = Vec<String>;

/// The in-memory API: objects by collection path (`/apis/apps/v1/namespaces/mock/deployments`)
/// then name, every request seen, and optionally a collection whose applies are refused.
#[derive(Default)]
struct FakeApi {
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    seen: Seen,
    refuse_apply: Option<(&'static str, u16, &'static str)>,
    /// The last resourceVersion handed out.
    version: u64,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "code": code, "message": message,
    })
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

impl FakeApi {
    /// Answers one request like the API server would, for the requests the operator makes.
    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        accept: &str,
        body: &[u8],
    ) -> (u16, Value) {
        self.seen.push(format!("{method} {path}"));
        // Namespaced paths: `<prefix>/namespaces/<ns>/<resource>[/<name>[/<sub>]]`. Anything
        // else the operator asks is API discovery: no optional API is served here.
        let Some((prefix, rest)) = path.split_once("/namespaces/") else {
            return (404, status_body(404, "NotFound", "not served"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (resource, name, sub) = match parts.as_slice() {
            [_ns, resource] => (*resource, None, None),
            [_ns, resource, name] => (*resource, Some(*name), None),
            [_ns, resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return (404, status_body(404, "NotFound", "no such path")),
        };
        let collection = format!("{prefix}/namespaces/{NS}/{resource}");
        let not_found = |name: &str| {
            (
                404,
                status_body(404, "NotFound", &format!("{resource} \"{name}\" not found")),
            )
        };
        let sent: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap()
        };
        match (method.as_str(), name, sub) {
            ("GET", None, _) => {
                let items: Vec<Value> = self
                    .objects
                    .get(&collection)
                    .map(|m| m.values().filter(|o| selects(query, o)).cloned().collect())
                    .unwrap_or_default();
                let items = if accept.contains("PartialObjectMetadataList") {
                    items
                        .into_iter()
                        .map(|o| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]}))
                        .collect()
                } else {
                    items
                };
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", Some(name), None) => {
                match self.objects.get(&collection).and_then(|m| m.get(name)) {
                    Some(o) => (200, o.clone()),
                    None => not_found(name),
                }
            }
            ("PATCH", Some(name), None) => {
                if let Some((refused, code, message)) = self.refuse_apply
                    && refused == resource
                {
                    return (code, status_body(code, "Invalid", message));
                }
                // As the API server: every write a new resourceVersion, a spec change a new
                // generation.
                self.version += 1;
                let objects = self.objects.entry(collection).or_default();
                let generation = match objects.get(name) {
                    Some(old) if old["spec"] == sent["spec"] => {
                        old["metadata"]["generation"].as_i64().unwrap_or(1)
                    }
                    Some(old) => old["metadata"]["generation"].as_i64().unwrap_or(0) + 1,
                    None => 1,
                };
                let mut stored = sent;
                stored["metadata"]["resourceVersion"] = json!(self.version.to_string());
                stored["metadata"]["generation"] = json!(generation);
                objects.insert(name.to_string(), stored.clone());
                (200, stored)
            }
            ("PATCH", Some(name), Some("status")) => {
                match self
                    .objects
                    .get_mut(&collection)
                    .and_then(|m| m.get_mut(name))
                {
                    Some(o) => {
                        o["status"] = sent["status"].clone();
                        (200, o.clone())
                    }
                    None => not_found(name),
                }
            }
            ("DELETE", Some(name), None) => match self
                .objects
                .get_mut(&collection)
                .and_then(|m| m.remove(name))
            {
                Some(o) => (200, o),
                None => not_found(name),
            },
            // Events.
            ("POST", None, _) => (201, sent),
            _ => (405, status_body(405, "MethodNotAllowed", "not in the mock")),
        }
    }

    /// The writes seen, events left out (they are not the Shop's objects).
    fn writes(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|r| !r.starts_with("GET ") && !r.contains("/events"))
            .cloned()
            .collect()
    }

    /// Someone scales Deployment `name` to `replicas` by hand (a new generation and
    /// resourceVersion, as the API server would give it); returns the replicas it had.
    fn scale_by_hand(&mut self, name: &str, replicas: i64) -> Value {
        self.version += 1;
        let path = format!("/apis/apps/v1/namespaces/{NS}/deployments");
        let d = self.objects.get_mut(&path).unwrap().get_mut(name).unwrap();
        let before = d["spec"]["replicas"].clone();
        d["spec"]["replicas"] = json!(replicas);
        d["metadata"]["generation"] = json!(d["metadata"]["generation"].as_i64().unwrap() + 1);
        d["metadata"]["resourceVersion"] = json!(self.version.to_string());
        before
    }

    fn shop(&self, name: &str) -> Shop {
        let path = format!("/apis/shopkeeper.dev/v1alpha1/namespaces/{NS}/shops");
        serde_json::from_value(self.objects[&path][name].clone()).unwrap()
    }
}

/// Whether the list's `labelSelector` (equality terms only, as the operator sends) matches.
fn selects(query: &str, obj: &Value) -> bool {
    let Some(selector) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
    else {
        return true;
    };
    let selector = selector
        .replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%2F", "/");
    selector.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// A Client whose every request the fake answers (on its own task, until the test ends).
fn client(fake: Arc<Mutex<FakeApi>>) -> Client {
    slow_client(fake, Duration::ZERO, Arc::default())
}

/// Child writes (`PATCH`es but the statuses) being answered, and the most at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// The same API answering every request `delay` after it arrives, each on its own task (as a
/// server answers connections in parallel), counting the child writes in flight in `in_flight`.
fn slow_client(fake: Arc<Mutex<FakeApi>>, delay: Duration, in_flight: Arc<InFlight>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (fake, in_flight) = (fake.clone(), in_flight.clone());
            tokio::spawn(async move {
                let write =
                    request.method() == Method::PATCH && !request.uri().path().ends_with("/status");
                if write {
                    let now = in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
                    in_flight.most.fetch_max(now, Ordering::SeqCst);
                }
                tokio::time::sleep(delay).await;
                let response = answer(&fake, request).await;
                if write {
                    in_flight.now.fetch_sub(1, Ordering::SeqCst);
                }
                send.send_response(response);
            });
        }
    });
    Client::new(service, NS)
}

/// The fake's answer to one request.
async fn answer(fake: &Mutex<FakeApi>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body.collect_bytes().await.unwrap();
    let accept = parts
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (code, value) = fake.lock().unwrap().handle(
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &accept,
        &body,
    );
    respond(code, &value)
}

fn context(client: Client) -> Arc<Context> {
    context_with(client, ReconcileSettings::default())
}

fn context_with(client: Client, settings: ReconcileSettings) -> Arc<Context> {
    let reporter = Reporter {
        controller: "shop-operator".into(),
        instance: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    Arc::new(Context::new(
        client,
        recorder,
        Arc::new(Metrics::default()),
        settings,
    ))
}

/// The owned watches' indexes, fed by hand from the fake as the watch events would feed them.
struct Stores {
    deployments: Feed<Deployment>,
    statefulsets: Feed<StatefulSet>,
    /// (collection, feed) of the kinds kept as metadata (read through `ConfigMap`'s type: only
    /// the metadata is kept).
    meta: Vec<(&'static str, Feed<PartialObjectMeta<ConfigMap>>)>,
}

/// The collections of the kinds kept as metadata, with their kinds.
const META_KINDS: [(&str, &str); 6] = [
    ("Service", "/api/v1/namespaces/mock/services"),
    ("ConfigMap", "/api/v1/namespaces/mock/configmaps"),
    ("ServiceAccount", "/api/v1/namespaces/mock/serviceaccounts"),
    (
        "PodDisruptionBudget",
        "/apis/policy/v1/namespaces/mock/poddisruptionbudgets",
    ),
    (
        "NetworkPolicy",
        "/apis/networking.k8s.io/v1/namespaces/mock/networkpolicies",
    ),
    (
        "HorizontalPodAutoscaler",
        "/apis/autoscaling/v2/namespaces/mock/horizontalpodautoscalers",
    ),
];

impl Stores {
    /// Every index re-listed from the fake (the watch events of everything written so far).
    fn sync(&self, fake: &Mutex<FakeApi>) {
        fn relist<K: Kept + serde::de::DeserializeOwned>(
            feed: &Feed<K>,
            objects: Option<&BTreeMap<String, Value>>,
        ) {
            feed.apply(&Event::Init);
            for o in objects.into_iter().flat_map(|m| m.values()) {
                let obj: K = serde_json::from_value(o.clone()).unwrap();
                feed.apply(&Event::InitApply(obj));
            }
            feed.apply(&Event::InitDone);
        }
        let f = fake.lock().unwrap();
        relist(
            &self.deployments,
            f.objects.get("/apis/apps/v1/namespaces/mock/deployments"),
        );
        relist(
            &self.statefulsets,
            f.objects.get("/apis/apps/v1/namespaces/mock/statefulsets"),
        );
        for (collection, feed) in &self.meta {
            relist(feed, f.objects.get(*collection));
        }
    }
}

/// A context whose applier reads the children from indexes first, and the indexes' feeds.
fn context_with_stores(client: Client) -> (Arc<Context>, Stores) {
    let mut watched = Watched::default();
    let deployments = watched.feed("Deployment");
    let statefulsets = watched.feed("StatefulSet");
    let meta = META_KINDS
        .iter()
        .map(|(kind, collection)| (*collection, watched.feed(kind)))
        .collect();
    let reporter = Reporter {
        controller: "shop-operator".into(),
        instance: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Context::new(
        client,
        recorder,
        Arc::new(Metrics::default()),
        ReconcileSettings::default(),
    )
    .with_watched(Arc::new(watched));
    (
        Arc::new(ctx),
        Stores {
            deployments,
            statefulsets,
            meta,
        },
    )
}

/// A Shop with external stores (their Secrets exist in the fake), as the API server would hand
/// it to the operator (uid, generation), stored in the fake.
fn shop(fake: &Mutex<FakeApi>, name: &str, extra_spec: &str) -> Shop {
    // The cluster tests' sample Shop, placed in the mock's namespace with the identity the API
    // server would have given it.
    let mut shop = common::sample_shop(name, extra_spec);
    shop.metadata.namespace = Some(NS.into());
    shop.metadata.uid = Some(UID.into());
    shop.metadata.generation = Some(1);
    let mut f = fake.lock().unwrap();
    for secret in ["db", "mongo"] {
        f.objects
            .entry(format!("/api/v1/namespaces/{NS}/secrets"))
            .or_default()
            .insert(
                secret.into(),
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": NS}, "data": {"url": "bXlzcWw6Ly94"}}),
            );
    }
    f.objects
        .entry(format!(
            "/apis/shopkeeper.dev/v1alpha1/namespaces/{NS}/shops"
        ))
        .or_default()
        .insert(name.into(), serde_json::to_value(&shop).unwrap());
    shop
}

async fn run(shop: Shop, ctx: &Arc<Context>) -> Result<Action, ReconcileError> {
    reconcile(Arc::new(DeserializeGuard(Ok(shop))), ctx.clone()).await
}

fn condition(shop: &Shop, type_: &str) -> (String, String, String) {
    let c = shop
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", shop.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Writes that touch the Shop's children (anything but the Shop's status and its copy for the
/// gateway, `<shop>-status`).
fn child_writes(writes: &[String], shop: &str) -> Vec<String> {
    writes
        .iter()
        .filter(|w| !w.ends_with("/status") && !w.ends_with(&format!("/{shop}-status")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_invalid_shop_gets_its_reason_in_the_status_and_nothing_is_applied() {
    let fake = Arc::new(Mutex::new(FakeApi::default()));
    let ctx = context(client(fake.clone()));
    let s = shop(
        &fake,
        "broken",
        "  components:\n    order:\n      env: [{name: A, value: '1'}, {name: A, value: '2'}]\n",
    );
    let action = run(s, &ctx)
        .await
        .expect("an invalid spec is not a failure to retry");
    assert_eq!(action, Action::await_change(), "waits for an edit");
    let f = fake.lock().unwrap();
    let stored = f.shop("broken");
    assert_eq!(
        stored.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Invalid)
    );
    let (status, reason, message) = condition(&stored, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.contains("spec.components.order.env has \"A\" more than once"),
        "{message}"
    );
    assert_eq!(
        child_writes(&f.writes(), "broken"),
        Vec::<String>::new(),
        "nothing applied"
    );
}

#[tokio::test]
async fn a_paused_shop_writes_no_child_and_then_nothing_at_all() {
    let fake = Arc::new(Mutex::new(FakeApi::default()));
    let ctx = context(client(fake.clone()));
    let s = shop(&fake, "still", "  paused: true\n");
    run(s, &ctx).await.unwrap();
    let (stored, first) = {
        let f = fake.lock().unwrap();
        (f.shop("still"), f.writes())
    };
    assert_eq!(
        stored.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Paused)
    );
    assert_eq!(
        child_writes(&first, "still"),
        Vec::<String>::new(),
        "nothing applied while paused"
    );
    let (_, reason, _) = condition(&stored, "Progressing");
    assert_eq!(reason, "Paused");
    // Reconciled again with the status it wrote: not a single write.
    run(stored, &ctx).await.unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(
        f.writes()[first.len()..],
        [] as [String; 0],
        "a paused Shop at rest writes nothing"
    );
}

#[tokio::test]
async fn an_unchanged_shop_is_reconciled_with_zero_writes() {
    let fake = Arc::new(Mutex::new(FakeApi::default()));
    let ctx = context(client(fake.clone()));
    let s = shop(&fake, "mall", "");
    run(s, &ctx).await.unwrap();
    let (stored, first) = {
        let f = fake.lock().unwrap();
        (f.shop("mall"), f.writes())
    };
    let applied = child_writes(&first, "mall");
    assert!(
        applied
            .iter()
            .any(|w| w == &format!("PATCH /apis/apps/v1/namespaces/{NS}/deployments/mall-gateway")),
        "the first reconcile applies the children: {applied:?}"
    );
    assert_eq!(
        stored.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Progressing)
    );
    // Same spec, same children (the fingerprints match), same status: only reads.
    run(stored.clone(), &ctx).await.unwrap();
    let after = fake.lock().unwrap().writes();
    assert_eq!(
        after[first.len()..],
        [] as [String; 0],
        "steady state makes no write"
    );
    // Someone edits a child: the next reconcile puts it back.
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    let replicas = fake.lock().unwrap().scale_by_hand("mall-order", 7);
    run(stored, &ctx).await.unwrap();
    let f = fake.lock().unwrap();
    let reapplied = f.writes()[after.len()..].to_vec();
    assert!(
        reapplied.contains(&format!(
            "PATCH /apis/apps/v1/namespaces/{NS}/deployments/mall-order"
        )),
        "a hand edit is reverted: {reapplied:?}"
    );
    assert_eq!(f.objects[&path]["mall-order"]["spec"]["replicas"], replicas);
    assert_ne!(replicas, json!(7));
}

#[tokio::test]
async fn a_new_shops_writes_fan_out_but_never_past_the_write_limit() {
    // A slow server (20 ms a request): every write the apply has started is still in flight
    // when the next one is sent, so the count shows how far the fan-out goes.
    let delay = Duration::from_millis(20);
    let most_in_flight = async |limit: usize| {
        let fake = Arc::new(Mutex::new(FakeApi::default()));
        let in_flight = Arc::new(InFlight::default());
        let settings = ReconcileSettings {
            writes_in_flight: limit,
            ..Default::default()
        };
        let ctx = context_with(
            slow_client(fake.clone(), delay, in_flight.clone()),
            settings,
        );
        run(shop(&fake, "mall", ""), &ctx).await.unwrap();
        let writes = child_writes(&fake.lock().unwrap().writes(), "mall");
        assert!(writes.len() > 20, "the children were applied: {writes:?}");
        in_flight.most.load(Ordering::SeqCst)
    };
    let unbounded = most_in_flight(1000).await;
    assert!(
        unbounded > 3,
        "a component's objects go out together (most at once: {unbounded})"
    );
    assert_eq!(
        most_in_flight(3).await,
        3,
        "with a limit of 3, three writes at most are in flight"
    );
}

#[tokio::test]
async fn a_refused_apply_fails_the_apply_step_and_the_status_says_so() {
    let fake = Arc::new(Mutex::new(FakeApi {
        refuse_apply: Some((
            "networkpolicies",
            422,
            "NetworkPolicy \"mall-registry\" is invalid: spec.podSelector: Invalid value",
        )),
        ..Default::default()
    }));
    let ctx = context(client(fake.clone()));
    let s = shop(&fake, "mall", "");
    let err = run(s, &ctx).await.expect_err("a refused apply is retried");
    assert_eq!(err.step(), "apply");
    assert!(matches!(err, ReconcileError::Apply(_)), "{err:?}");
    assert_eq!(err.metric_label(), "apply");
    let f = fake.lock().unwrap();
    let stored = f.shop("mall");
    assert_eq!(
        stored.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Degraded)
    );
    let (status, reason, message) = condition(&stored, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ApplyFailed"));
    assert!(
        message.starts_with(
            "applying NetworkPolicy mall-registry: NetworkPolicy \"mall-registry\" is invalid"
        ),
        "the API server's message, naming the object: {message}"
    );
    // Stopped at the first stage: the later components' Deployments were not applied.
    let writes = f.writes();
    assert!(
        !writes
            .iter()
            .any(|w| w.ends_with("/deployments/mall-gateway")),
        "{writes:?}"
    );
    assert!(
        f.seen.iter().all(|r| !r.starts_with("DELETE")),
        "nothing pruned after a failure"
    );
}

#[tokio::test]
async fn a_step_failing_before_the_status_is_named_in_the_status() {
    // The API refuses to list Deployments: a paused Shop cannot be observed.
    let fake = Arc::new(Mutex::new(FakeApi::default()));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let inner = fake.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap();
            let path = parts.uri.path().to_string();
            if parts.method == Method::GET && path.ends_with("/deployments") {
                inner.lock().unwrap().seen.push(format!("GET {path}"));
                send.send_response(respond(
                    403,
                    &status_body(403, "Forbidden", "deployments.apps is forbidden"),
                ));
                continue;
            }
            let query = parts.uri.query().unwrap_or("").to_string();
            let (code, value) =
                inner
                    .lock()
                    .unwrap()
                    .handle(&parts.method, &path, &query, "", &body);
            send.send_response(respond(code, &value));
        }
    });
    let ctx = context(Client::new(service, NS));
    let s = shop(&fake, "still", "  paused: true\n");
    let err = run(s, &ctx).await.expect_err("retried");
    assert_eq!(err.step(), "observe");
    assert_eq!(err.metric_label(), "list");
    let stored = fake.lock().unwrap().shop("still");
    assert_eq!(
        stored.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Degraded)
    );
    let (_, reason, message) = condition(&stored, "Degraded");
    assert_eq!(reason, "ReconcileFailed");
    assert!(
        message.starts_with("observe step: listing Deployment"),
        "{message}"
    );
    assert_eq!(stored.name_any(), "still");
}

#[tokio::test]
async fn with_the_watches_caught_up_an_unchanged_shop_lists_nothing_and_a_reported_edit_is_reverted()
 {
    let fake = Arc::new(Mutex::new(FakeApi::default()));
    let (ctx, stores) = context_with_stores(client(fake.clone()));
    let s = shop(&fake, "mall", "");
    stores.sync(&fake);
    run(s, &ctx).await.unwrap();
    let stored = fake.lock().unwrap().shop("mall");
    // The watch events of what the first reconcile applied arrive.
    stores.sync(&fake);
    let before = fake.lock().unwrap().seen.len();
    run(stored.clone(), &ctx).await.unwrap();
    let requests = fake.lock().unwrap().seen[before..].to_vec();
    // Only the external stores' Secrets are read (Secrets are not watched); no child is listed
    // and nothing is written.
    assert_eq!(
        requests,
        [
            format!("GET /api/v1/namespaces/{NS}/secrets/db"),
            format!("GET /api/v1/namespaces/{NS}/secrets/mongo"),
        ],
        "an unchanged Shop is reconciled from the stores"
    );
    // Someone scales a Deployment by hand.
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments");
    let replicas = fake.lock().unwrap().scale_by_hand("mall-order", 7);
    // Its watch event arrives, and with it the reconcile: the applier sees another generation,
    // asks the API server, and puts the Deployment back.
    stores.sync(&fake);
    let before = fake.lock().unwrap().seen.len();
    run(stored.clone(), &ctx).await.unwrap();
    let f = fake.lock().unwrap();
    let requests = f.seen[before..].to_vec();
    assert!(
        requests.contains(&format!("GET {path}")),
        "the stores differ from what was applied: the API server is asked: {requests:?}"
    );
    assert!(
        requests.contains(&format!("PATCH {path}/mall-order")),
        "a hand edit is reverted: {requests:?}"
    );
    assert_eq!(f.objects[&path]["mall-order"]["spec"]["replicas"], replicas);
    assert_ne!(replicas, json!(7));
}
