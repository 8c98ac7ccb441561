//! Step 3 of the pipeline (client), in the shape of operator-rs's `ClusterResources`: one
//! [`Applier`] owns every write the operator makes for a Shop — the field manager (forced
//! server-side apply, so a hand edit of a field we own is reverted), the stage order, the set of
//! what one reconcile applied, the fingerprint cache that lets a steady state write nothing, and
//! the pause strategy ([`Applier::hold`]: read, never write) — and deletes the complement of what
//! it applied over one list of kinds (a component disabled, replicas down to one so no PDB, the
//! gateway's Ingress or HTTPRoute dropped from the spec).
//!
//! Order: the fault flags and the managed stores first (their credentials Secret, then each
//! store's Service and StatefulSet: the components connect to them), then the components in start
//! order — registry first, gateway last — then the Ingress/HTTPRoute and the ServiceMonitor.
//! PersistentVolumeClaims and the credentials Secret are never deleted here: they hold data.
//!
//! It is also the typestate's only door: [`Applier::apply`] turns `Resources<Prepared>` into
//! `Resources<Applied>`, and [`Children`] — what the status is computed from — can only be made
//! here, from what the API server returned.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::info;

use crate::build::{self, ComponentResources, Prepared, Resources, shop_selector};
use crate::component::Component;
use crate::crd::{Shop, ShopStatus};
use crate::error::{Error, ReconcileError};
use crate::exposure::{Apis, ExposureObject, HttpRoute};
use crate::metrics::Metrics;
use crate::monitoring::ServiceMonitor;
use crate::status::SecretCheck;
use crate::stores::{self, Store, StoreCredentials, StoreResources};
use crate::validate::ExternalStore;
use crate::watched::{self, Versions, Watched};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "shop-operator";

/// A Shop's Deployments and StatefulSets as the API server returned them: what the status is
/// computed from. Only this module makes one — from an apply ([`Applied::into_children`]) or, when
/// nothing may be written, from reading ([`Applier::hold`]) — so a status cannot be computed from
/// rendered objects.
///
/// ```compile_fail
/// // Not constructible outside the applier:
/// let children = shop_operator::apply::Children {
///     deployments: Default::default(),
///     statefulsets: Default::default(),
/// };
/// ```
///
/// ```compile_fail
/// // Rendered resources have no children to compute a status from; only applied ones do.
/// fn children(r: shop_operator::build::Resources) -> shop_operator::apply::Children {
///     r.into_state().into_children()
/// }
/// ```
///
/// ```
/// // ...while applied ones do.
/// use shop_operator::apply::{Applied, Children};
/// fn children(r: shop_operator::build::Resources<Applied>) -> Children {
///     r.into_state().into_children()
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    deployments: BTreeMap<Component, Deployment>,
    statefulsets: BTreeMap<Store, StatefulSet>,
}

impl Children {
    fn none() -> Self {
        Self {
            deployments: BTreeMap::new(),
            statefulsets: BTreeMap::new(),
        }
    }

    /// A component's Deployment, if it exists.
    pub fn deployment(&self, c: Component) -> Option<&Deployment> {
        self.deployments.get(&c)
    }

    /// A managed store's StatefulSet, if it exists.
    pub fn statefulset(&self, s: Store) -> Option<&StatefulSet> {
        self.statefulsets.get(&s)
    }
}

/// Typestate of [`Resources`] once the applier has run (see [`crate::build::Prepared`]): the
/// children as the API server returned them, and what it pruned. Private fields: only
/// [`Applier::apply`] makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    children: Children,
    deleted: Vec<String>,
    written: bool,
}

impl Applied {
    /// The Deployments and StatefulSets, for the status.
    pub fn children(&self) -> &Children {
        &self.children
    }

    /// The same, consumed.
    pub fn into_children(self) -> Children {
        self.children
    }

    /// `Kind/name` of every child deleted because the spec no longer renders it.
    pub fn deleted(&self) -> &[String] {
        &self.deleted
    }

    /// Whether anything was written: false when the desired state and the children's
    /// fingerprints were those of the last apply.
    pub fn written(&self) -> bool {
        self.written
    }
}

/// Whose children: the Shop's namespace, its name (labels select by it) and its uid (only objects
/// it controls are ever deleted; the fingerprint cache is keyed by it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Namespace of the Shop and of every child.
    pub namespace: String,
    /// Shop name.
    pub name: String,
    /// Shop uid.
    pub uid: String,
}

impl Owner {
    /// The owner of a Shop's children.
    pub fn of(shop: &Shop) -> Self {
        Self {
            namespace: shop.namespace().unwrap_or_default(),
            name: shop.name_any(),
            uid: shop.uid().unwrap_or_default(),
        }
    }
}
/// `Kind/name` -> fingerprint (see [`fingerprint`]) of a Shop's children.
pub type Fingerprints = BTreeMap<String, String>;

/// What an apply wrote, and what a look at the children finds: per `Kind/name` its
/// [`fingerprint`] (compared with what the API server lists) and its [`watched::version`]
/// (compared with what the watches' stores show, without a request).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marks {
    fingerprints: Fingerprints,
    versions: Versions,
}

impl Marks {
    fn insert<K: Child>(&mut self, obj: &K) {
        let key = key_of(obj);
        self.versions.insert(
            key.clone(),
            watched::version(obj.meta(), watched::by_generation(kind_of::<K>())),
        );
        self.fingerprints.insert(key, fingerprint(obj));
    }

    fn contains(&self, key: &str) -> bool {
        self.fingerprints.contains_key(key)
    }
}

/// Per Shop uid: the hash of the desired state last applied and the marks of what the API server
/// returned.
type Cache = HashMap<String, (String, Marks)>;

/// What identifies a version of a child for "has anyone changed it since we applied it": a hash
/// of the object without `metadata` and `status` (so status updates and the Deployment
/// controller's revision annotation do not count), plus its labels and controller owner.
pub fn fingerprint<K: Resource + Serialize>(obj: &K) -> String {
    let m = obj.meta();
    let mut body = serde_json::to_value(obj).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        // An HPA owns this count: its changes are not ours to notice (nor to revert).
        let autoscaled = m
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::build::AUTOSCALED_ANNOTATION));
        if autoscaled && let Some(spec) = o.get_mut("spec").and_then(|s| s.as_object_mut()) {
            spec.remove("replicas");
        }
    }
    let owner = m
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
        .unwrap_or("");
    let labels = serde_json::to_string(&m.labels).unwrap_or_default();
    crate::build::stable_hash(&[
        body.to_string().as_bytes(),
        owner.as_bytes(),
        labels.as_bytes(),
    ])
}

fn key_of<K: Child>(obj: &K) -> String {
    format!(
        "{}/{}",
        kind_of::<K>(),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
}
impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

fn kind_of<K: Child>() -> &'static str {
    // The kinds we manage; a static str keeps metric labels and errors allocation-free.
    match K::kind(&()).as_ref() {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "ServiceAccount" => "ServiceAccount",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        "NetworkPolicy" => "NetworkPolicy",
        "StatefulSet" => "StatefulSet",
        "Secret" => "Secret",
        "Ingress" => "Ingress",
        "HTTPRoute" => "HTTPRoute",
        "HorizontalPodAutoscaler" => "HorizontalPodAutoscaler",
        "ServiceMonitor" => "ServiceMonitor",
        _ => "Object",
    }
}

/// A Service refused because of its node port becomes an error naming the Shop's field
/// (`spec.components.<c>.nodePort`): only the API server knows the cluster's node port range and
/// which ports are taken. Any other error is returned as it is.
fn blame_node_port(e: Error, component: Component, service: &Service) -> Error {
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find_map(|p| p.node_port));
    match (e, port) {
        (
            Error::Apply {
                source: kube::Error::Api(status),
                ..
            },
            Some(port),
        ) if status.code == 422 && mentions_node_port(&status) => Error::NodePort {
            component,
            port,
            source: kube::Error::Api(status),
        },
        (e, _) => e,
    }
}

fn mentions_node_port(status: &kube::core::Status) -> bool {
    status.message.contains("nodePort")
        || status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .any(|c| c.field.ends_with(".nodePort"))
}

/// Start stage of a component: the registry first (everyone registers with it), the four
/// services together, the gateway last (it routes to the others).
fn stage(c: Component) -> u8 {
    match c {
        Component::Registry => 0,
        Component::Gateway => 2,
        _ => 1,
    }
}

/// Writes a Shop's children and status, and remembers what it applied (see the module doc).
pub struct Applier {
    client: Client,
    field_manager: &'static str,
    metrics: Arc<Metrics>,
    /// Per Shop uid: hash of the last desired state applied and the marks of the objects the API
    /// server returned. When both still match, a reconcile only reads.
    cache: Mutex<Cache>,
    /// The owned watches' stores: when they show what was applied, a reconcile makes no request.
    watched: Option<Arc<Watched>>,
    /// Permits for writes in flight, over all Shops (see [`WRITES_IN_FLIGHT`]).
    writes: Arc<Semaphore>,
}

/// Default bound on the applier's writes in flight. A Shop's apply fans out (a stage's components
/// at once, a component's objects at once) and several Shops reconcile together: unbounded, 100
/// new Shops opened ~70 connections to the API server, each with its own TLS state and buffers,
/// and a server already busy on every core answers no sooner for being asked more at once
/// (docs/benchmarks.md, operator).
pub const WRITES_IN_FLIGHT: usize = 32;

impl Applier {
    /// An applier writing as [`FIELD_MANAGER`], counting its writes in `metrics`.
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            field_manager: FIELD_MANAGER,
            metrics,
            cache: Mutex::new(HashMap::new()),
            watched: None,
            writes: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
        }
    }

    /// At most `n` (at least 1) writes in flight at once; the others wait their turn.
    pub fn with_write_limit(mut self, n: usize) -> Self {
        self.writes = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// The same, reading the children from the owned watches' stores first (see [`watched`]).
    pub fn with_watched(mut self, watched: Arc<Watched>) -> Self {
        self.watched = Some(watched);
        self
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what was applied for a Shop, so its next apply writes everything.
    pub fn forget(&self, uid: &str) {
        self.cache().remove(uid);
    }

    /// The one write path: a forced server-side apply as the field manager, counted as a write
    /// of `verb` (`apply` for a child, `status` for the gateway's copy of the status).
    async fn patch<K: Child>(&self, ns: &str, obj: &K, verb: &'static str) -> Result<K, Error> {
        let kind = kind_of::<K>();
        let name = obj.meta().name.clone().ok_or(Error::Unnamed(kind))?;
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        // The semaphore is never closed, so a permit always comes; held until the answer is in.
        let _permit = self.writes.acquire().await.ok();
        self.metrics.write(kind, verb);
        api.patch(
            &name,
            &PatchParams::apply(self.field_manager).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| Error::Apply { kind, name, source })
    }

    /// The default strategy: applies every rendered object stage by stage, then deletes this
    /// Shop's children that were not applied. When the desired state and the children's
    /// fingerprints are those of the last apply, nothing is written (one read per kind instead).
    /// A failed apply forgets the fingerprints (the next reconcile writes everything again).
    pub async fn apply(
        &self,
        owner: &Owner,
        res: Resources<Prepared>,
        apis: Apis,
    ) -> Result<Resources<Applied>, ReconcileError> {
        let hash = build::desired_hash(&res);
        let cached = self.cache().get(&owner.uid).cloned();
        if let Some((last_hash, last)) = cached
            && last_hash == hash
        {
            let secret = res
                .store_secret
                .as_ref()
                .and_then(|s| s.0.metadata.name.as_deref());
            if let Some(children) = self
                .unchanged_in_stores(owner, &last, secret)
                .await
                .map_err(ReconcileError::Observe)?
            {
                // The watches show exactly what was applied: nothing to write, nothing listed.
                self.metrics.observed("store");
                return Ok(res.into_applied(Applied {
                    children,
                    deleted: Vec::new(),
                    written: false,
                }));
            }
            self.metrics.observed("list");
            let (now, children) = self
                .observe(owner, secret, apis)
                .await
                .map_err(ReconcileError::Observe)?;
            if now.fingerprints == last.fingerprints {
                // Same desired state and nobody touched the children: nothing to write. The
                // versions are taken from this look (a status-only or autoscaler change moved
                // them), so the next reconcile can trust the stores again.
                self.cache().insert(owner.uid.clone(), (hash, now));
                let applied = Applied {
                    children,
                    deleted: Vec::new(),
                    written: false,
                };
                return Ok(res.into_applied(applied));
            }
            let (last, now) = (&last.fingerprints, &now.fingerprints);
            let changed: Vec<&String> = last
                .iter()
                .filter(|(k, v)| now.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .chain(now.keys().filter(|k| !last.contains_key(*k)))
                .collect();
            info!(shop = %owner.name, namespace = %owner.namespace, ?changed, "children changed since the last apply; re-applying");
        }
        let run = Run {
            applier: self,
            ns: &owner.namespace,
            applied: Mutex::new(Marks::default()),
        };
        let children = match run.all(&res).await {
            Ok(children) => children,
            Err(e) => {
                self.forget(&owner.uid);
                return Err(ReconcileError::Apply(e));
            }
        };
        let applied = run.applied.into_inner().unwrap_or_else(|p| p.into_inner());
        let deleted = self
            .prune(owner, &applied, apis)
            .await
            .map_err(ReconcileError::Prune)?;
        self.cache().insert(owner.uid.clone(), (hash, applied));
        Ok(res.into_applied(Applied {
            children,
            deleted,
            written: true,
        }))
    }

    /// The pause strategy (a paused Shop, and an invalid one): nothing is written and nothing
    /// deleted; the Deployments and StatefulSets are read as they are, and the fingerprints are
    /// forgotten, so the apply after it writes everything.
    pub async fn hold(&self, owner: &Owner) -> Result<Children, Error> {
        self.forget(&owner.uid);
        self.workloads(owner).await
    }

    /// After a failed apply: the Deployments and StatefulSets as they are, or none when they
    /// cannot be read either (the status then reports the apply error alone).
    pub async fn after_failure(&self, owner: &Owner) -> Children {
        self.workloads(owner)
            .await
            .unwrap_or_else(|_| Children::none())
    }

    /// Writes the Shop's status subresource (counted as `Shop`/`status`).
    pub async fn write_status(&self, owner: &Owner, status: &ShopStatus) -> Result<(), Error> {
        let api: Api<Shop> = Api::namespaced(self.client.clone(), &owner.namespace);
        let patch = json!({
            "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            "kind": "Shop",
            "status": status,
        });
        self.metrics.write("Shop", "status");
        api.patch_status(
            &owner.name,
            &PatchParams::apply(self.field_manager).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Status)?;
        Ok(())
    }

    /// Writes the Shop's status ConfigMap (see [`crate::build::status_config_map`]) for its
    /// gateway through the one apply path, counted as a status write (`verb="status"`): it is not
    /// a child, so it is neither fingerprinted nor pruned.
    pub async fn publish_status(&self, ns: &str, config_map: &ConfigMap) -> Result<(), Error> {
        self.patch(ns, config_map, "status").await.map(|_| ())
    }

    /// Deletes this Shop's children that were not applied (`applied`: `Kind/name`). Returns
    /// `Kind/name` of what was deleted. Every kind is listed at once (metadata only; one round
    /// trip, not eleven in a row: this runs after every apply), then the orphans are deleted in
    /// the order of [`pruned_kinds`]. Kinds whose API the cluster does not serve are skipped.
    async fn prune(
        &self,
        owner: &Owner,
        applied: &Marks,
        apis: Apis,
    ) -> Result<Vec<String>, Error> {
        let kinds: Vec<Pruned> = pruned_kinds(apis)
            .into_iter()
            .filter(|k| k.served)
            .collect();
        let orphans =
            futures::future::try_join_all(kinds.iter().map(|k| self.orphans(owner, k, applied)))
                .await?;
        let mut deleted = Vec::new();
        for (k, names) in kinds.iter().zip(orphans) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &owner.namespace, &k.resource);
            for name in names {
                self.metrics.write(k.kind, "delete");
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => deleted.push(format!("{}/{name}", k.kind)),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(Error::Delete {
                            kind: k.kind,
                            name,
                            source,
                        });
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// The names of this Shop's objects of one kind that were not applied: from the kind's watch
    /// store when it has one (an orphan it has not seen yet is deleted on the reconcile its own
    /// watch event causes), else one metadata LIST.
    async fn orphans(
        &self,
        owner: &Owner,
        k: &Pruned,
        applied: &Marks,
    ) -> Result<Vec<String>, Error> {
        if let Some(names) = self
            .watched
            .as_ref()
            .and_then(|w| w.orphans(owner, k.kind, &|key| applied.contains(key)))
        {
            return Ok(names);
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &owner.namespace, &k.resource);
        let list = api
            .list_metadata(&ListParams::default().labels(&shop_selector(&owner.name)))
            .await
            .map_err(|source| Error::List {
                kind: k.kind,
                source,
            })?;
        Ok(list
            .items
            .into_iter()
            // Only objects this Shop (this uid) controls: a same-named Shop re-created, or an
            // object someone labelled by hand, is never touched.
            .filter(|o| controlled_by(o, &owner.uid) && o.metadata.deletion_timestamp.is_none())
            .map(|o| o.name_any())
            .filter(|name| !applied.contains(&format!("{}/{name}", k.kind)))
            .collect())
    }

    async fn list_owned<K: Child>(&self, owner: &Owner) -> Result<Vec<K>, Error> {
        Ok(self
            .list_labelled::<K>(owner)
            .await?
            .into_iter()
            .filter(|o| controlled_by(o, &owner.uid))
            .collect())
    }

    async fn list_labelled<K: Child>(&self, owner: &Owner) -> Result<Vec<K>, Error> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &owner.namespace);
        Ok(api
            .list(&ListParams::default().labels(&shop_selector(&owner.name)))
            .await
            .map_err(|source| Error::List {
                kind: kind_of::<K>(),
                source,
            })?
            .items)
    }

    /// Every child of a Shop as it is now: fingerprints, Deployments and StatefulSets. Eight
    /// lists (and a get of the stores' Secret when one is rendered: the operator may not list
    /// Secrets; Ingresses, HTTPRoutes and ServiceMonitors when the cluster serves them), used to
    /// skip re-applying when nothing changed since the last apply (the steady state makes no
    /// writes).
    async fn observe(
        &self,
        owner: &Owner,
        store_secret: Option<&str>,
        apis: Apis,
    ) -> Result<(Marks, Children), Error> {
        let (deps, svcs, cms, sas, nps, pdbs, sets, hpas) = futures::try_join!(
            self.list_owned::<Deployment>(owner),
            self.list_owned::<Service>(owner),
            self.list_owned::<ConfigMap>(owner),
            self.list_owned::<ServiceAccount>(owner),
            self.list_owned::<NetworkPolicy>(owner),
            self.list_owned::<PodDisruptionBudget>(owner),
            self.list_owned::<StatefulSet>(owner),
            self.list_owned::<HorizontalPodAutoscaler>(owner),
        )?;
        let mut marks = Marks::default();
        if let Some(name) = store_secret
            && let Some(secret) = get_secret(&self.client, &owner.namespace, name).await?
        {
            marks.insert(&secret);
        }
        svcs.iter().for_each(|o| marks.insert(o));
        cms.iter().for_each(|o| marks.insert(o));
        sas.iter().for_each(|o| marks.insert(o));
        nps.iter().for_each(|o| marks.insert(o));
        pdbs.iter().for_each(|o| marks.insert(o));
        deps.iter().for_each(|o| marks.insert(o));
        sets.iter().for_each(|o| marks.insert(o));
        hpas.iter().for_each(|o| marks.insert(o));
        if apis.ingress {
            let ingresses = self.list_owned::<Ingress>(owner).await?;
            ingresses.iter().for_each(|o| marks.insert(o));
        }
        if apis.http_route {
            let routes = self.list_owned::<HttpRoute>(owner).await?;
            routes.iter().for_each(|o| marks.insert(o));
        }
        if apis.service_monitor {
            let monitors = self.list_owned::<ServiceMonitor>(owner).await?;
            monitors.iter().for_each(|o| marks.insert(o));
        }
        Ok((
            marks,
            Children {
                deployments: by_component(deps),
                statefulsets: by_store(sets),
            },
        ))
    }

    /// The children as the watches' stores show them, when those are exactly the versions `last`
    /// recorded (the stores' kinds; the stores' credentials Secret, which is not watched, by its
    /// fingerprint on one GET). `None` — look with the API server — when anything differs, a
    /// store has not synced, a kind `last` holds is not watched, or there are no stores.
    async fn unchanged_in_stores(
        &self,
        owner: &Owner,
        last: &Marks,
        store_secret: Option<&str>,
    ) -> Result<Option<Children>, Error> {
        let Some(watched) = &self.watched else {
            return Ok(None);
        };
        let Some(now) = watched.versions(owner) else {
            return Ok(None);
        };
        let secret_key = |k: &String| k.starts_with("Secret/");
        let expected = last.versions.iter().filter(|(k, _)| !secret_key(k));
        if !expected.eq(now.iter()) {
            return Ok(None);
        }
        let secret_expected = last.fingerprints.iter().find(|(k, _)| secret_key(k));
        match (store_secret, secret_expected) {
            (None, None) => {}
            (Some(name), Some((key, fp))) => {
                let secret = get_secret(&self.client, &owner.namespace, name).await?;
                if secret.is_none_or(|s| key_of(&s) != *key || fingerprint(&s) != *fp) {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }
        let (deps, sets) = watched.workloads(owner);
        Ok(Some(Children {
            deployments: by_component(deps),
            statefulsets: by_store(sets),
        }))
    }

    /// The Shop's Deployments and StatefulSets as they are (by label, whoever controls them).
    async fn workloads(&self, owner: &Owner) -> Result<Children, Error> {
        let (deps, sets) = futures::try_join!(
            self.list_labelled::<Deployment>(owner),
            self.list_labelled::<StatefulSet>(owner),
        )?;
        Ok(Children {
            deployments: by_component(deps),
            statefulsets: by_store(sets),
        })
    }
}

fn controlled_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// A kind the applier prunes.
struct Pruned {
    kind: &'static str,
    resource: ApiResource,
    served: bool,
}

/// Every kind of child the applier deletes when it was not applied, in deletion order: the
/// routes first (they point at the gateway's Service); the autoscaler before its Deployment's
/// count is applied again (the two never both own it); workloads before their config and
/// identity, so pods stop first. A store's StatefulSet goes when the store is no longer managed;
/// its PVC stays unless `keepData: false` (then the StatefulSet's retention policy has the garbage
/// collector remove it). Secrets are not here: the operator may not list them, and the only one it
/// writes holds the stores' passwords.
fn pruned_kinds(apis: Apis) -> [Pruned; 11] {
    fn of<K: Child>(served: bool) -> Pruned {
        Pruned {
            kind: kind_of::<K>(),
            resource: ApiResource::erase::<K>(&()),
            served,
        }
    }
    [
        of::<HttpRoute>(apis.http_route),
        of::<Ingress>(apis.ingress),
        of::<ServiceMonitor>(apis.service_monitor),
        of::<HorizontalPodAutoscaler>(true),
        of::<StatefulSet>(true),
        of::<Deployment>(true),
        of::<PodDisruptionBudget>(true),
        of::<Service>(true),
        of::<NetworkPolicy>(true),
        of::<ConfigMap>(true),
        of::<ServiceAccount>(true),
    ]
}

/// One apply of one Shop: the objects written so far (`Kind/name` -> fingerprint), which is
/// what the prune keeps.
struct Run<'a> {
    applier: &'a Applier,
    ns: &'a str,
    applied: Mutex<Marks>,
}

impl Run<'_> {
    async fn one<K: Child>(&self, obj: &K) -> Result<K, Error> {
        let mut applied = self.applier.patch(self.ns, obj, "apply").await?;
        // Never read, and the largest part of an answer once parsed (every manager's field
        // set as JSON maps): not carried through the rest of the reconcile.
        applied.meta_mut().managed_fields = None;
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&applied);
        Ok(applied)
    }

    async fn optional<K: Child>(&self, obj: Option<&K>) -> Result<Option<K>, Error> {
        match obj {
            Some(o) => self.one(o).await.map(Some),
            None => Ok(None),
        }
    }

    /// Applies one component: its identity, config, Services, NetworkPolicy and PDB
    /// concurrently, then its Deployment, so a pod never starts without its ConfigMap or
    /// ServiceAccount, then its HPA (which scales that Deployment).
    async fn component(&self, cr: &ComponentResources) -> Result<(Component, Deployment), Error> {
        // Destructured without `..`: a new kind of child that is not applied fails to compile.
        let ComponentResources {
            component,
            service_account,
            config_map,
            service,
            peer_service,
            network_policy,
            pdb,
            hpa,
            deployment,
        } = cr;
        futures::try_join!(
            self.one(service_account),
            self.one(config_map),
            async {
                self.one(service)
                    .await
                    .map_err(|e| blame_node_port(e, *component, service))
            },
            self.one(network_policy),
            self.optional(peer_service.as_ref()),
            self.optional(pdb.as_ref()),
        )?;
        let d = self.one(deployment).await?;
        self.optional(hpa.as_ref()).await?;
        Ok((*component, d))
    }

    /// Applies one managed store: its init ConfigMap and Service, then its StatefulSet.
    async fn store(&self, sr: &StoreResources) -> Result<(Store, StatefulSet), Error> {
        // Destructured without `..`: a new kind of child that is not applied fails to compile.
        let StoreResources {
            store,
            config_map,
            service,
            statefulset,
        } = sr;
        futures::try_join!(self.one(service), self.optional(config_map.as_ref()))?;
        Ok((*store, self.one(statefulset).await?))
    }

    /// Applies every object stage by stage (components of one stage concurrently), the managed
    /// stores before every component. Stops at the first failing stage: later stages depend on
    /// earlier ones; the error policy retries with backoff.
    async fn all(&self, res: &Resources<Prepared>) -> Result<Children, Error> {
        let mut children = Children::none();
        // The fault flags before any pod that mounts them.
        self.one(&res.faults).await?;
        if let Some(secret) = &res.store_secret {
            self.one(&secret.0).await?;
        }
        let stores = res.stores.iter().map(|sr| self.store(sr));
        children
            .statefulsets
            .extend(futures::future::try_join_all(stores).await?);
        for s in 0..=2u8 {
            let batch = res
                .components
                .iter()
                .filter(|cr| stage(cr.component) == s)
                .map(|cr| self.component(cr));
            children
                .deployments
                .extend(futures::future::try_join_all(batch).await?);
        }
        // After the gateway: the route points at its Service.
        match &res.exposure {
            Some(ExposureObject::Ingress(i)) => {
                self.one(i).await?;
            }
            Some(ExposureObject::HttpRoute(r)) => {
                self.one(r).await?;
            }
            None => {}
        }
        self.optional(res.service_monitor.as_ref()).await?;
        Ok(children)
    }
}

/// Which of the exposure APIs the cluster serves: one discovery request per API group
/// (`/apis/networking.k8s.io/v1`, `/apis/gateway.networking.k8s.io/v1`); a group the API server
/// does not know (404) is simply not served.
pub async fn discover_apis(client: &Client) -> Result<Apis, Error> {
    async fn serves(client: &Client, group_version: &str, plural: &str) -> Result<bool, Error> {
        match client.list_api_group_resources(group_version).await {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(source) => Err(Error::Discovery {
                group_version: group_version.to_string(),
                source,
            }),
        }
    }
    let (ingress, http_route, service_monitor) = futures::try_join!(
        serves(client, crate::exposure::INGRESS_API_VERSION, "ingresses"),
        serves(client, crate::exposure::GATEWAY_API_VERSION, "httproutes"),
        serves(
            client,
            crate::monitoring::MONITORING_API_VERSION,
            "servicemonitors"
        ),
    )?;
    Ok(Apis {
        ingress,
        http_route,
        service_monitor,
    })
}

fn by_component(deps: Vec<Deployment>) -> BTreeMap<Component, Deployment> {
    deps.into_iter()
        .filter_map(|d| {
            let c = d
                .labels()
                .get(crate::build::labels::COMPONENT)
                .and_then(|c| Component::from_name(c))?;
            Some((c, d))
        })
        .collect()
}

fn by_store(sets: Vec<StatefulSet>) -> BTreeMap<Store, StatefulSet> {
    sets.into_iter()
        .filter_map(|s| {
            let store = s
                .labels()
                .get(crate::build::labels::COMPONENT)
                .and_then(|c| Store::from_name(c))?;
            Some((store, s))
        })
        .collect()
}

async fn get_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Error::Get {
            kind: "Secret",
            name: name.to_string(),
            source,
        })
}

/// The managed stores' credentials: read from the Shop's `<shop>-stores` Secret, and generated
/// (CSPRNG) only for what it does not hold yet, so a reconcile never rotates a password. Nothing
/// read here is logged.
pub async fn store_credentials(
    client: &Client,
    ns: &str,
    shop: &str,
) -> Result<StoreCredentials, Error> {
    let existing = get_secret(client, ns, &stores::secret_name(shop)).await?;
    let creds = existing
        .and_then(|s| s.data)
        .map(|d| StoreCredentials::from_secret_data(&d))
        .unwrap_or_default();
    Ok(creds.fill_missing())
}

/// Whether the gateway's TLS Secret exists with both keys the gateway reads (`tls.crt`,
/// `tls.key`; values dropped unread).
pub async fn check_tls_secret(client: &Client, ns: &str, name: &str) -> Result<SecretCheck, Error> {
    Ok(match get_secret(client, ns, name).await? {
        None => SecretCheck::Missing,
        Some(s) => {
            let has = |k: &str| {
                s.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(k))
            };
            if has("tls.crt") && has("tls.key") {
                SecretCheck::Present
            } else {
                SecretCheck::KeyMissing
            }
        }
    })
}

/// Whether the Secret keys external stores point at exist (read by name; values are dropped
/// unread).
pub async fn check_external_secrets(
    client: &Client,
    ns: &str,
    external: &[ExternalStore],
) -> Result<BTreeMap<Store, SecretCheck>, Error> {
    let mut out = BTreeMap::new();
    for e in external {
        let Some(r) = &e.secret else { continue };
        let check = match get_secret(client, ns, &r.name).await? {
            None => SecretCheck::Missing,
            Some(s) => {
                let has = s.data.as_ref().is_some_and(|d| d.contains_key(&r.key))
                    || s.string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&r.key));
                if has {
                    SecretCheck::Present
                } else {
                    SecretCheck::KeyMissing
                }
            }
        };
        out.insert(e.store, check);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::core::Status;

    fn service(node_port: Option<i32>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port: 8080,
                    node_port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The API server's response body, as it sends it.
    fn refused(code: u16, message: &str, field: &str) -> Error {
        let status: Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid",
            "code": code, "message": message,
            "details": {"name": "mall-gateway", "kind": "Service", "causes": [
                {"reason": "FieldValueInvalid", "message": message, "field": field}
            ]}
        }))
        .unwrap();
        Error::Apply {
            kind: "Service",
            name: "mall-gateway".into(),
            source: kube::Error::Api(status.boxed()),
        }
    }

    fn deployment(replicas: i32, autoscaled: bool) -> Deployment {
        let mut d = Deployment {
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        };
        if autoscaled {
            d.metadata.annotations = Some(
                [(
                    crate::build::AUTOSCALED_ANNOTATION.to_string(),
                    "true".to_string(),
                )]
                .into(),
            );
        }
        d
    }

    #[test]
    fn an_autoscalers_count_is_not_a_change_but_a_hand_edited_count_is() {
        // Under an HPA the count moves without us: re-applying would be a write per scaling.
        assert_eq!(
            fingerprint(&deployment(2, true)),
            fingerprint(&deployment(5, true))
        );
        // Without one, a changed count is a hand edit the operator reverts.
        assert_ne!(
            fingerprint(&deployment(2, false)),
            fingerprint(&deployment(5, false))
        );
    }

    const OUT_OF_RANGE: &str = "Service \"mall-gateway\" is invalid: spec.ports[0].nodePort: Invalid value: 1: provided port is not in the valid range. The range of valid ports is 8000-32767";

    #[test]
    fn a_refused_node_port_is_blamed_on_the_shop_field_with_the_api_servers_reason() {
        let e = blame_node_port(
            refused(422, OUT_OF_RANGE, "spec.ports[0].nodePort"),
            Component::Gateway,
            &service(Some(1)),
        );
        assert_eq!(
            e.to_string(),
            format!(
                "spec.components.gateway.nodePort 1 was refused by the API server: {OUT_OF_RANGE}"
            )
        );
        assert_eq!(e.metric_label(), "apply");
    }

    #[test]
    fn other_apply_errors_keep_the_object_name_and_only_the_api_message() {
        // No node port asked for: nothing to blame on the Shop's field.
        let e = blame_node_port(
            refused(422, OUT_OF_RANGE, "spec.ports[0].nodePort"),
            Component::Gateway,
            &service(None),
        );
        assert_eq!(
            e.to_string(),
            format!("applying Service mall-gateway: {OUT_OF_RANGE}")
        );
        // A refusal about something else.
        let other = "Service \"mall-gateway\" is invalid: spec.ports[0].port: Invalid value: 0";
        let e = blame_node_port(
            refused(422, other, "spec.ports[0].port"),
            Component::Gateway,
            &service(Some(30080)),
        );
        assert_eq!(
            e.to_string(),
            format!("applying Service mall-gateway: {other}")
        );
        assert!(!e.to_string().contains("Status {"), "no debug dump");
    }
}
