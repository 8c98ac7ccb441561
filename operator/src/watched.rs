//! The children as the owned watches last saw them, so that a reconcile which changes nothing
//! makes no request at all.
//!
//! Why: every watch event on a child (a Deployment's status moving as its pods start, a hand
//! edit) reconciles its Shop. Before this module, each such reconcile listed eight kinds to see
//! whether anything had changed since the last apply, and each apply listed eleven more to find
//! orphans. With 100 Shops starting, those lists were most of the API server's load and queued
//! behind them the first applies of the Shops still waiting (docs/benchmarks.md, "Operator").
//! The controller watches these kinds anyway, to know whom to reconcile; here the same watch
//! streams (not a second set of watches) also feed an index per kind, before they trigger the
//! reconcile, so the index already holds the event a reconcile was woken for.
//!
//! Why not kube's reflector `Store`: it keeps every object whole, and even as metadata (with its
//! labels, annotations, owner references) 3,200 children cost the operator 7.6 MiB more RSS
//! (33.5 → 41.1 MiB with 101 Shops, docs/benchmarks.md). An [`Entry`] keeps what the applier
//! asks: the Shop and controller it belongs to, its [`version`], whether it is being deleted; and
//! for Deployments and StatefulSets — whose status the Shop's status is computed from — the
//! fields [`crate::status`] reads ([`Slim`]).
//! Events are applied as kube's reflector applies them (a relist replaces the whole set when it
//! ends).
//!
//! An index is a cache, possibly behind the API server, so it is only trusted one way: when it
//! shows exactly the [`version`]s of what the last apply wrote, nothing changed (a later change is
//! an event still on its way, and that event reconciles again). Anything else — an object
//! missing, an extra one, another version, an index not yet synced — sends the applier back to
//! listing from the API server ([`crate::apply`]). The orphans an apply deletes are also read
//! here; an orphan an index has not seen yet is deleted on the reconcile its own watch event
//! causes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use kube::Resource;
use kube::api::{Api, ObjectMeta, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher::watcher};
use serde::de::DeserializeOwned;

use crate::apply::Owner;
use crate::build::{MANAGED_BY, labels};

/// `Kind/name` → [`version`] of a Shop's children.
pub type Versions = BTreeMap<String, String>;

/// What identifies a version of a child in an index: for kinds whose `metadata.generation` moves
/// with every change of the object outside `metadata` and `status` (`by_generation`), the
/// generation with the labels and the controller (the same parts [`crate::apply::fingerprint`]
/// hashes, so a status update is not a change); for the others (ConfigMaps, Services,
/// ServiceAccounts, which have no generation), the resourceVersion, which moves with any change.
pub fn version(meta: &ObjectMeta, by_generation: bool) -> String {
    match meta.generation {
        Some(generation) if by_generation => {
            let labels = serde_json::to_string(&meta.labels).unwrap_or_default();
            format!(
                "g{generation}/{}",
                crate::build::stable_hash(&[controller(meta).as_bytes(), labels.as_bytes()])
            )
        }
        _ => format!("rv{}", meta.resource_version.as_deref().unwrap_or("")),
    }
}

/// Whether a kind's `metadata.generation` moves with every change outside `metadata` and
/// `status` (workloads, policies, autoscalers, routes and custom resources do; ConfigMaps,
/// Services, ServiceAccounts and Secrets have none): see [`version`].
pub fn by_generation(kind: &str) -> bool {
    !matches!(kind, "ConfigMap" | "Service" | "ServiceAccount" | "Secret")
}

fn controller(meta: &ObjectMeta) -> &str {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
        .unwrap_or("")
}

/// What an index keeps of one child.
#[derive(Clone, Debug)]
struct Entry {
    namespace: String,
    name: String,
    /// Its Shop (the `app.kubernetes.io/instance` label).
    shop: String,
    /// Its controller's uid.
    controller: String,
    version: String,
    deleting: bool,
    workload: Workload,
}

/// The object itself, for the kinds the status reads.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Metadata only.
    None,
    /// What the status reads of a Deployment ([`Slim`]). Boxed, as is the other: an
    /// index's table holds every entry inline at up to twice its count, and most entries are
    /// metadata only (heaptrack: five 410 KB tables at 101 Shops with the `Slim` inline).
    Deployment(Box<Slim<DeploymentStatus>>),
    /// What the status reads of a StatefulSet.
    StatefulSet(Box<Slim<StatefulSetStatus>>),
}

/// The fields of a Deployment or StatefulSet that [`crate::status`] reads, kept as plain fields:
/// even cut down, a k8s-openapi object costs ~5 KB (a `Deployment` is 2,448 bytes before any of
/// its strings, each `Container` 2,144, a one-label map a 544-byte node), so 900 workloads
/// held 4–5 MB of the operator's 14 MB heap peak at 101 Shops (heaptrack, docs/benchmarks.md).
/// The reconcile gets the object back ([`Slim::deployment`], [`Slim::statefulset`]) when it reads.
#[derive(Clone, Debug)]
pub struct Slim<S> {
    name: Option<String>,
    namespace: Option<String>,
    generation: Option<i64>,
    /// The `app.kubernetes.io/component` label.
    component: Option<String>,
    replicas: Option<i32>,
    /// Each container's name and image, in order.
    containers: Box<[(String, Option<String>)]>,
    status: Option<S>,
}

impl<S: Clone> Slim<S> {
    fn of(
        meta: &ObjectMeta,
        replicas: Option<i32>,
        pod: Option<&PodSpec>,
        status: Option<&S>,
    ) -> Self {
        Self {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            generation: meta.generation,
            component: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::COMPONENT))
                .cloned(),
            replicas,
            containers: pod
                .map(|p| {
                    p.containers
                        .iter()
                        .map(|c| (c.name.clone(), c.image.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            status: status.cloned(),
        }
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            generation: self.generation,
            labels: self
                .component
                .clone()
                .map(|c| [(labels::COMPONENT.to_string(), c)].into()),
            ..ObjectMeta::default()
        }
    }

    fn template(&self) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: self
                    .containers
                    .iter()
                    .map(|(name, image)| Container {
                        name: name.clone(),
                        image: image.clone(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
        }
    }
}

impl Slim<DeploymentStatus> {
    /// The Deployment as the status sees it: the kept fields, nothing else.
    pub fn deployment(&self) -> Deployment {
        Deployment {
            metadata: self.metadata(),
            spec: Some(DeploymentSpec {
                replicas: self.replicas,
                template: self.template(),
                ..DeploymentSpec::default()
            }),
            status: self.status.clone(),
        }
    }
}

impl Slim<StatefulSetStatus> {
    /// The StatefulSet as the status sees it: the kept fields, nothing else.
    pub fn statefulset(&self) -> StatefulSet {
        StatefulSet {
            metadata: self.metadata(),
            spec: Some(StatefulSetSpec {
                replicas: self.replicas,
                template: self.template(),
                ..StatefulSetSpec::default()
            }),
            status: self.status.clone(),
        }
    }
}

/// A kind an index can keep: its metadata, and the object when the status reads it.
pub trait Kept: Resource + Clone + Send + Sync + 'static {
    /// What is kept of the object besides its entry.
    fn workload(&self) -> Workload;
}

impl<K: Resource + Clone + Send + Sync + 'static> Kept for PartialObjectMeta<K>
where
    K::DynamicType: Send + Sync,
{
    fn workload(&self) -> Workload {
        Workload::None
    }
}

impl Kept for Deployment {
    fn workload(&self) -> Workload {
        let spec = self.spec.as_ref();
        Workload::Deployment(Box::new(Slim::of(
            &self.metadata,
            spec.and_then(|s| s.replicas),
            spec.and_then(|s| s.template.spec.as_ref()),
            self.status.as_ref(),
        )))
    }
}

impl Kept for StatefulSet {
    fn workload(&self) -> Workload {
        let spec = self.spec.as_ref();
        Workload::StatefulSet(Box::new(Slim::of(
            &self.metadata,
            spec.and_then(|s| s.replicas),
            spec.and_then(|s| s.template.spec.as_ref()),
            self.status.as_ref(),
        )))
    }
}

/// One kind's children, kept from its watch's events.
#[derive(Default)]
struct KindIndex {
    /// The first relist has ended.
    synced: bool,
    /// `namespace/name` → entry.
    objects: HashMap<String, Entry>,
    /// A relist under way: it replaces `objects` when it ends.
    relist: Option<HashMap<String, Entry>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl KindIndex {
    fn apply<K: Kept>(&mut self, event: &Event<K>, by_generation: bool) {
        match event {
            Event::Apply(o) => match entry(o, by_generation) {
                Some(e) => {
                    self.objects.insert(key(&e.namespace, &e.name), e);
                }
                None => {
                    let m = o.meta();
                    self.objects.remove(&key(
                        m.namespace.as_deref().unwrap_or(""),
                        m.name.as_deref().unwrap_or(""),
                    ));
                }
            },
            Event::Delete(o) => {
                let m = o.meta();
                self.objects.remove(&key(
                    m.namespace.as_deref().unwrap_or(""),
                    m.name.as_deref().unwrap_or(""),
                ));
            }
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                if let (Some(relist), Some(e)) = (self.relist.as_mut(), entry(o, by_generation)) {
                    relist.insert(key(&e.namespace, &e.name), e);
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.objects = relist;
                }
                self.synced = true;
            }
        }
    }

    fn owned<'a>(&'a self, owner: &'a Owner) -> impl Iterator<Item = &'a Entry> + 'a {
        self.objects.values().filter(|e| {
            e.namespace == owner.namespace && e.shop == owner.name && e.controller == owner.uid
        })
    }
}

/// The entry of an object labelled as managed by the operator for a Shop; `None` for any other.
fn entry<K: Kept>(obj: &K, by_generation: bool) -> Option<Entry> {
    let m = obj.meta();
    let label = |k: &str| m.labels.as_ref().and_then(|l| l.get(k));
    if label(labels::MANAGED_BY).is_none_or(|v| v != MANAGED_BY) {
        return None;
    }
    Some(Entry {
        namespace: m.namespace.clone()?,
        name: m.name.clone()?,
        shop: label(labels::INSTANCE)?.clone(),
        controller: controller(m).to_string(),
        version: version(m, by_generation),
        deleting: m.deletion_timestamp.is_some(),
        workload: obj.workload(),
    })
}

/// The writing end of one kind's index: every watch event of that kind goes through
/// [`Feed::apply`] (the `watch_*` methods do it on the controller's trigger streams; tests
/// call it by hand).
pub struct Feed<K> {
    index: Arc<Mutex<KindIndex>>,
    by_generation: bool,
    kind: PhantomData<fn(K)>,
}

impl<K: Kept> Feed<K> {
    /// Applies one watch event.
    pub fn apply(&self, event: &Event<K>) {
        lock(&self.index).apply(event, self.by_generation);
    }
}

fn lock(index: &Mutex<KindIndex>) -> MutexGuard<'_, KindIndex> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

/// The indexes of every owned kind the controller watches.
#[derive(Default)]
pub struct Watched {
    kinds: Vec<(&'static str, Arc<Mutex<KindIndex>>)>,
}

/// A trigger stream for the controller's `owns_stream`.
pub type Trigger<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

impl Watched {
    /// A new, empty index of `kind` and its writing end.
    pub fn feed<K: Kept>(&mut self, kind: &'static str) -> Feed<K> {
        let index = Arc::new(Mutex::new(KindIndex::default()));
        self.kinds.push((kind, index.clone()));
        Feed {
            index,
            by_generation: by_generation(kind),
            kind: PhantomData,
        }
    }

    /// Indexes `kind` from a watch stream; returns the objects it touched, for the controller.
    pub fn watch<K, S>(&mut self, kind: &'static str, events: S) -> Trigger<K>
    where
        K: Kept,
        S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    {
        let feed = self.feed::<K>(kind);
        Box::pin(
            events
                .inspect_ok(move |event| feed.apply(event))
                .touched_objects(),
        )
    }

    /// Watches the metadata of `K`'s objects (as kube's `Controller::owns` does) and indexes it.
    pub fn watch_meta<K>(
        &mut self,
        kind: &'static str,
        api: Api<PartialObjectMeta<K>>,
        config: watcher::Config,
    ) -> Trigger<PartialObjectMeta<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        self.watch(kind, watcher(api, config).default_backoff())
    }

    /// Watches a kind whose status is read (Deployments, StatefulSets) whole, and indexes it
    /// slimmed ([`Kept::workload`]).
    pub fn watch_whole<K>(
        &mut self,
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
    ) -> Trigger<K>
    where
        K: Kept + Resource<DynamicType = ()> + DeserializeOwned + Debug,
    {
        self.watch(kind, watcher(api, config).default_backoff())
    }

    /// `Kind/name` → version of every child of `owner` in the indexes, or `None` while one has
    /// not synced (nothing can be concluded from it yet).
    pub fn versions(&self, owner: &Owner) -> Option<Versions> {
        let mut out = Versions::new();
        for (kind, index) in &self.kinds {
            let index = lock(index);
            if !index.synced {
                return None;
            }
            out.extend(
                index
                    .owned(owner)
                    .map(|e| (format!("{kind}/{}", e.name), e.version.clone())),
            );
        }
        Some(out)
    }

    /// The names of `owner`'s objects of `kind` that are not being deleted and are not in
    /// `keep` (`Kind/name`), or `None` when `kind` is not indexed or not synced.
    pub fn orphans(
        &self,
        owner: &Owner,
        kind: &str,
        keep: &dyn Fn(&str) -> bool,
    ) -> Option<Vec<String>> {
        let (_, index) = self.kinds.iter().find(|(k, _)| *k == kind)?;
        let index = lock(index);
        if !index.synced {
            return None;
        }
        Some(
            index
                .owned(owner)
                .filter(|e| !e.deleting && !keep(&format!("{kind}/{}", e.name)))
                .map(|e| e.name.clone())
                .collect(),
        )
    }

    /// `owner`'s Deployments and StatefulSets as the indexes hold them (slimmed).
    pub fn workloads(&self, owner: &Owner) -> (Vec<Deployment>, Vec<StatefulSet>) {
        let (mut deployments, mut statefulsets) = (Vec::new(), Vec::new());
        for (_, index) in &self.kinds {
            for e in lock(index).owned(owner) {
                match &e.workload {
                    Workload::Deployment(d) => deployments.push(d.deployment()),
                    Workload::StatefulSet(s) => statefulsets.push(s.statefulset()),
                    Workload::None => {}
                }
            }
        }
        (deployments, statefulsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt as _;

    /// A Deployment as an index keeps it, rebuilt.
    fn slim_deployment(d: &Deployment) -> Deployment {
        match d.workload() {
            Workload::Deployment(slim) => slim.deployment(),
            other => panic!("a Deployment kept as {other:?}"),
        }
    }

    /// A StatefulSet as an index keeps it, rebuilt.
    fn slim_statefulset(s: &StatefulSet) -> StatefulSet {
        match s.workload() {
            Workload::StatefulSet(slim) => slim.statefulset(),
            other => panic!("a StatefulSet kept as {other:?}"),
        }
    }
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(generation: Option<i64>, rv: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("demo-registry".into()),
            namespace: Some("shop".into()),
            generation,
            resource_version: Some(rv.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: Some(vec![OwnerReference {
                uid: "uid-1".into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_status_update_keeps_the_version_of_a_generation_kind_and_a_spec_edit_moves_it() {
        let applied = meta(Some(3), "100", &[("a", "1")]);
        // The Deployment controller writes status: new resourceVersion, same generation.
        let status_update = meta(Some(3), "107", &[("a", "1")]);
        assert_eq!(version(&applied, true), version(&status_update, true));
        // Someone edits the spec: the generation moves.
        let edited = meta(Some(4), "110", &[("a", "1")]);
        assert_ne!(version(&applied, true), version(&edited, true));
        // Someone relabels: the generation stays, the labels are part of the version.
        let relabelled = meta(Some(3), "111", &[("a", "2")]);
        assert_ne!(version(&applied, true), version(&relabelled, true));
    }

    #[test]
    fn kinds_without_a_generation_compare_by_resource_version() {
        let applied = meta(None, "100", &[]);
        assert_eq!(
            version(&applied, false),
            version(&meta(None, "100", &[]), false)
        );
        assert_ne!(
            version(&applied, false),
            version(&meta(None, "101", &[]), false)
        );
        // A kind not trusted by generation ignores one that is there.
        assert_ne!(
            version(&meta(Some(1), "100", &[]), false),
            version(&meta(Some(1), "101", &[]), false)
        );
    }

    type Meta = PartialObjectMeta<ConfigMap>;

    fn child(name: &str, shop: &str, uid: &str, managed: bool) -> Meta {
        let mut labels = vec![(labels::INSTANCE, shop)];
        if managed {
            labels.push((labels::MANAGED_BY, MANAGED_BY));
        }
        let mut m = meta(None, "5", &labels);
        m.name = Some(name.into());
        m.owner_references.as_mut().unwrap()[0].uid = uid.into();
        PartialObjectMeta {
            types: None,
            metadata: m,
            _phantom: PhantomData,
        }
    }

    fn names(index: &KindIndex, owner: &Owner) -> Vec<String> {
        let mut n: Vec<String> = index.owned(owner).map(|e| e.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn an_index_holds_only_a_shops_own_children_and_a_relist_replaces_it_when_it_ends() {
        let owner = Owner {
            namespace: "shop".into(),
            name: "demo".into(),
            uid: "uid-1".into(),
        };
        let mut index = KindIndex::default();
        index.apply::<Meta>(&Event::Init, false);
        index.apply(
            &Event::InitApply(child("demo-a", "demo", "uid-1", true)),
            false,
        );
        // Another Shop's, a re-created same-named Shop's, and the status copy (not managed-by).
        index.apply(
            &Event::InitApply(child("other-a", "other", "uid-2", true)),
            false,
        );
        index.apply(
            &Event::InitApply(child("demo-old", "demo", "uid-0", true)),
            false,
        );
        index.apply(
            &Event::InitApply(child("demo-status", "demo", "uid-1", false)),
            false,
        );
        assert!(!index.synced, "not before the relist ends");
        index.apply::<Meta>(&Event::InitDone, false);
        assert!(index.synced);
        assert_eq!(names(&index, &owner), ["demo-a"]);
        index.apply(&Event::Apply(child("demo-b", "demo", "uid-1", true)), false);
        assert_eq!(names(&index, &owner), ["demo-a", "demo-b"]);
        index.apply(
            &Event::Delete(child("demo-a", "demo", "uid-1", true)),
            false,
        );
        assert_eq!(names(&index, &owner), ["demo-b"]);
        // A relist (the watch lost its place): the old set stands until it ends, then only
        // what it listed.
        index.apply::<Meta>(&Event::Init, false);
        index.apply(
            &Event::InitApply(child("demo-c", "demo", "uid-1", true)),
            false,
        );
        assert_eq!(names(&index, &owner), ["demo-b"]);
        index.apply::<Meta>(&Event::InitDone, false);
        assert_eq!(names(&index, &owner), ["demo-c"]);
    }

    #[test]
    fn a_slimmed_deployment_keeps_what_the_status_reads() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        use k8s_openapi::api::core::v1::EnvVar;
        let mut d = Deployment {
            metadata: meta(
                Some(4),
                "9",
                &[(labels::COMPONENT, "order"), (labels::INSTANCE, "demo")],
            ),
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta::default()),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "order".into(),
                            image: Some("shop/order:1.2.3".into()),
                            env: Some(vec![EnvVar {
                                name: "A".into(),
                                value: Some("1".into()),
                                ..EnvVar::default()
                            }]),
                            ..Container::default()
                        }],
                        service_account_name: Some("demo-order".into()),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(4),
                ready_replicas: Some(2),
                updated_replicas: Some(3),
                ..DeploymentStatus::default()
            }),
        };
        d.metadata.annotations = Some([("big".to_string(), "x".repeat(1000))].into());
        let before = d.clone();
        let d = slim_deployment(&before);
        assert_eq!(d.metadata.name, before.metadata.name);
        assert_eq!(d.metadata.generation, Some(4));
        assert_eq!(
            d.labels().get(labels::COMPONENT).map(String::as_str),
            Some("order")
        );
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("shop/order:1.2.3"));
        assert_eq!(d.status, before.status);
        // And nothing else.
        assert_eq!(d.metadata.annotations, None);
        assert_eq!(d.metadata.owner_references, None);
        assert_eq!(pod.containers[0].env, None);
        assert_eq!(pod.service_account_name, None);
    }

    #[test]
    fn a_slimmed_statefulset_keeps_what_the_status_reads() {
        use k8s_openapi::api::core::v1::PersistentVolumeClaim;
        let before = StatefulSet {
            metadata: meta(Some(2), "7", &[(labels::COMPONENT, "mysql")]),
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta::default()),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "mariadb".into(),
                            image: Some("shop/mariadb:11".into()),
                            args: Some(vec!["--big".into()]),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                volume_claim_templates: Some(vec![PersistentVolumeClaim::default()]),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(2),
                ready_replicas: Some(1),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..StatefulSetStatus::default()
            }),
        };
        let s = slim_statefulset(&before);
        assert_eq!(s.metadata.name, before.metadata.name);
        assert_eq!(s.metadata.generation, Some(2));
        assert_eq!(
            s.labels().get(labels::COMPONENT).map(String::as_str),
            Some("mysql")
        );
        assert_eq!(s.status, before.status);
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("shop/mariadb:11"));
        // And nothing else.
        assert_eq!(spec.volume_claim_templates, None);
        assert_eq!(pod.containers[0].args, None);
        assert_eq!(s.metadata.resource_version, None);
    }
}
