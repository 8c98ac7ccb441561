//! Step 3 of the pipeline (client): server-side applies every rendered object with the operator's
//! field manager (forced, so a hand edit of a field we own is reverted), component by component in
//! start order — registry first, gateway last — and deletes this Shop's objects that are no longer
//! rendered (a component disabled, replicas down to one so no PDB, the gateway's Ingress or
//! HTTPRoute dropped from the spec). Managed stores go first (their
//! credentials Secret, then each store's Service and StatefulSet): the components connect to
//! them. PersistentVolumeClaims and the credentials Secret are never deleted here: they hold data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{ComponentResources, Resources, shop_selector};
use crate::component::Component;
use crate::error::Error;
use crate::exposure::{Apis, ExposureObject, HttpRoute};
use crate::metrics::Metrics;
use crate::monitoring::ServiceMonitor;
use crate::status::SecretCheck;
use crate::stores::{self, Store, StoreCredentials, StoreResources};
use crate::validate::ExternalStore;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "shop-operator";

/// What the apply step returns: the Deployments as the API server has them now (with status),
/// and a fingerprint of every object it applied.
#[derive(Debug, Default)]
pub struct Applied {
    /// By component.
    pub deployments: BTreeMap<Component, Deployment>,
    /// Managed stores' StatefulSets, by store.
    pub statefulsets: BTreeMap<Store, StatefulSet>,
    /// `Kind/name` -> fingerprint of every applied object.
    pub fingerprints: Fingerprints,
}

/// `Kind/name` -> fingerprint (see [`fingerprint`]) of a Shop's children.
pub type Fingerprints = BTreeMap<String, String>;

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

async fn apply_one<K: Child>(
    client: &Client,
    ns: &str,
    obj: &K,
    metrics: &Metrics,
) -> Result<(String, String, K), Error> {
    let kind = kind_of::<K>();
    let name = obj.meta().name.clone().ok_or(Error::Unnamed(kind))?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    metrics.write(kind, "apply");
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| Error::Apply { kind, name, source })?;
    Ok((key_of(&applied), fingerprint(&applied), applied))
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

/// Applies one component: its identity, config, Services, NetworkPolicy and PDB concurrently,
/// then its Deployment, so a pod never starts without its ConfigMap or ServiceAccount, then its
/// HPA (which scales that Deployment).
async fn apply_component(
    client: &Client,
    ns: &str,
    cr: &ComponentResources,
    metrics: &Metrics,
) -> Result<(Component, Deployment, Fingerprints), Error> {
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
    let (sa, cm, svc, np, peers, pdb) = futures::try_join!(
        apply_one(client, ns, service_account, metrics),
        apply_one(client, ns, config_map, metrics),
        async {
            apply_one(client, ns, service, metrics)
                .await
                .map_err(|e| blame_node_port(e, *component, service))
        },
        apply_one(client, ns, network_policy, metrics),
        async {
            match peer_service {
                Some(p) => apply_one(client, ns, p, metrics).await.map(Some),
                None => Ok(None),
            }
        },
        async {
            match pdb {
                Some(p) => apply_one(client, ns, p, metrics).await.map(Some),
                None => Ok(None),
            }
        },
    )?;
    let (dk, df, d) = apply_one(client, ns, deployment, metrics).await?;
    let hpa = match hpa {
        Some(h) => Some(apply_one(client, ns, h, metrics).await?),
        None => None,
    };
    let mut fps: Fingerprints = [
        (sa.0, sa.1),
        (cm.0, cm.1),
        (svc.0, svc.1),
        (np.0, np.1),
        (dk, df),
    ]
    .into();
    fps.extend(peers.map(|p| (p.0, p.1)));
    fps.extend(pdb.map(|p| (p.0, p.1)));
    fps.extend(hpa.map(|h| (h.0, h.1)));
    Ok((*component, d, fps))
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

/// Applies one managed store: its init ConfigMap and Service, then its StatefulSet.
async fn apply_store(
    client: &Client,
    ns: &str,
    sr: &StoreResources,
    metrics: &Metrics,
) -> Result<(Store, StatefulSet, Fingerprints), Error> {
    // Destructured without `..`: a new kind of child that is not applied fails to compile.
    let StoreResources {
        store,
        config_map,
        service,
        statefulset,
    } = sr;
    let (svc, cm) = futures::try_join!(apply_one(client, ns, service, metrics), async {
        match config_map {
            Some(c) => apply_one(client, ns, c, metrics).await.map(Some),
            None => Ok(None),
        }
    })?;
    let (sk, sf, sts) = apply_one(client, ns, statefulset, metrics).await?;
    let mut fps: Fingerprints = [(svc.0, svc.1), (sk, sf)].into();
    fps.extend(cm.map(|c| (c.0, c.1)));
    Ok((*store, sts, fps))
}

/// Applies every object stage by stage (components of one stage concurrently), the managed
/// stores before every component. Stops at the first failing stage: later stages depend on
/// earlier ones; the error policy retries with backoff.
pub async fn apply_all(
    client: &Client,
    ns: &str,
    res: &Resources,
    metrics: &Metrics,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    // The fault flags before any pod that mounts them.
    let (k, f, _) = apply_one(client, ns, &res.faults, metrics).await?;
    applied.fingerprints.insert(k, f);
    if let Some(secret) = &res.store_secret {
        let (k, f, _) = apply_one(client, ns, &secret.0, metrics).await?;
        applied.fingerprints.insert(k, f);
    }
    let stores = res
        .stores
        .iter()
        .map(|sr| apply_store(client, ns, sr, metrics));
    for (store, sts, fps) in futures::future::try_join_all(stores).await? {
        applied.statefulsets.insert(store, sts);
        applied.fingerprints.extend(fps);
    }
    for s in 0..=2u8 {
        let batch = res
            .components
            .iter()
            .filter(|cr| stage(cr.component) == s)
            .map(|cr| apply_component(client, ns, cr, metrics));
        for (c, d, fps) in futures::future::try_join_all(batch).await? {
            applied.deployments.insert(c, d);
            applied.fingerprints.extend(fps);
        }
    }
    // After the gateway: the route points at its Service.
    let exposure = match &res.exposure {
        Some(ExposureObject::Ingress(i)) => {
            let (k, f, _) = apply_one(client, ns, i, metrics).await?;
            Some((k, f))
        }
        Some(ExposureObject::HttpRoute(r)) => {
            let (k, f, _) = apply_one(client, ns, r, metrics).await?;
            Some((k, f))
        }
        None => None,
    };
    applied.fingerprints.extend(exposure);
    if let Some(sm) = &res.service_monitor {
        let (k, f, _) = apply_one(client, ns, sm, metrics).await?;
        applied.fingerprints.insert(k, f);
    }
    Ok(applied)
}

/// Writes the Shop's status ConfigMap (see [`crate::build::status_config_map`]) for its gateway.
/// Counted as a status write (`verb="status"`), not an apply: it is not a child.
pub async fn publish_status(
    client: &Client,
    ns: &str,
    config_map: &ConfigMap,
    metrics: &Metrics,
) -> Result<(), Error> {
    let name = config_map
        .metadata
        .name
        .clone()
        .ok_or(Error::Unnamed("ConfigMap"))?;
    metrics.write("ConfigMap", "status");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(config_map),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: "ConfigMap",
            name,
            source,
        })?;
    Ok(())
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

fn names<'a, K: Resource + 'a>(objs: impl IntoIterator<Item = &'a K>) -> BTreeSet<String> {
    objs.into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

/// The names of this Shop's objects of kind `K` that are not in `keep`: one LIST.
async fn orphans_of<K: Child>(
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let kind = kind_of::<K>();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&shop_selector(shop)))
        .await
        .map_err(|source| Error::List { kind, source })?;
    Ok(list
        .items
        .into_iter()
        .filter(|obj| {
            // Only objects this Shop (this uid) controls: a same-named Shop re-created, or an
            // object someone labelled by hand, is never touched.
            let ours = obj
                .owner_references()
                .iter()
                .any(|o| o.uid == owner_uid && o.controller == Some(true));
            ours && obj.meta().deletion_timestamp.is_none()
        })
        .map(|obj| obj.name_any())
        .filter(|name| !keep.contains(name))
        .collect())
}

/// [`orphans_of`] when the cluster serves the kind's API, else nothing (nothing the operator
/// could have made, and nothing to list).
async fn orphans_if<K: Child>(
    served: bool,
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    if served {
        orphans_of::<K>(client, ns, shop, owner_uid, keep).await
    } else {
        Ok(Vec::new())
    }
}

/// Deletes the named objects of kind `K`; returns `Kind/name` of each one deleted.
async fn delete_named<K: Child>(
    client: &Client,
    ns: &str,
    names: Vec<String>,
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let kind = kind_of::<K>();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut deleted = Vec::new();
    for name in names {
        metrics.write(kind, "delete");
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Delete { kind, name, source }),
        }
    }
    Ok(deleted)
}

/// Deletes this Shop's children that the current spec no longer renders. Returns `Kind/name` of
/// what was deleted. Every kind is listed at once (one round trip, not eleven in a row: this runs
/// after every apply), then the orphans are deleted in dependency order. Ingresses, HTTPRoutes
/// and ServiceMonitors are looked at only when the cluster serves their API (`apis`).
pub async fn delete_orphans(
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
    res: &Resources,
    apis: Apis,
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let c = &res.components;
    let exposed: BTreeSet<String> = res.exposure.iter().map(|e| e.name().to_string()).collect();
    let no_keep = BTreeSet::new();
    let keep_of = |kind| match &res.exposure {
        Some(e) if e.kind() == kind => &exposed,
        _ => &no_keep,
    };
    let keep_routes = keep_of(crate::exposure::ExposureKind::HttpRoute);
    let keep_ingresses = keep_of(crate::exposure::ExposureKind::Ingress);
    let keep_monitors = names(res.service_monitor.iter());
    let keep_hpas = names(c.iter().filter_map(|r| r.hpa.as_ref()));
    let keep_sets = names(res.stores.iter().map(|s| &s.statefulset));
    let keep_deployments = names(c.iter().map(|r| &r.deployment));
    let keep_pdbs = names(c.iter().filter_map(|r| r.pdb.as_ref()));
    let keep_services = names(
        c.iter()
            .flat_map(|r| std::iter::once(&r.service).chain(r.peer_service.as_ref()))
            .chain(res.stores.iter().map(|s| &s.service)),
    );
    let keep_policies = names(c.iter().map(|r| &r.network_policy));
    let keep_config_maps = names(
        c.iter()
            .map(|r| &r.config_map)
            .chain(res.stores.iter().filter_map(|s| s.config_map.as_ref()))
            .chain(std::iter::once(&res.faults)),
    );
    let keep_accounts = names(c.iter().map(|r| &r.service_account));
    let (routes, ingresses, monitors, hpas, sets, deployments, pdbs, services, policies, cms, sas) =
        futures::try_join!(
            orphans_if::<HttpRoute>(apis.http_route, client, ns, shop, owner_uid, keep_routes),
            orphans_if::<Ingress>(apis.ingress, client, ns, shop, owner_uid, keep_ingresses),
            orphans_if::<ServiceMonitor>(
                apis.service_monitor,
                client,
                ns,
                shop,
                owner_uid,
                &keep_monitors
            ),
            orphans_of::<HorizontalPodAutoscaler>(client, ns, shop, owner_uid, &keep_hpas),
            orphans_of::<StatefulSet>(client, ns, shop, owner_uid, &keep_sets),
            orphans_of::<Deployment>(client, ns, shop, owner_uid, &keep_deployments),
            orphans_of::<PodDisruptionBudget>(client, ns, shop, owner_uid, &keep_pdbs),
            orphans_of::<Service>(client, ns, shop, owner_uid, &keep_services),
            orphans_of::<NetworkPolicy>(client, ns, shop, owner_uid, &keep_policies),
            orphans_of::<ConfigMap>(client, ns, shop, owner_uid, &keep_config_maps),
            orphans_of::<ServiceAccount>(client, ns, shop, owner_uid, &keep_accounts),
        )?;
    let mut deleted = Vec::new();
    // The routes first: they point at the gateway's Service. The autoscaler before its
    // Deployment's count is applied again: the two never both own it. Workloads before their
    // config and identity, so pods stop first. A store's StatefulSet goes when the store is no
    // longer managed; its PVC stays unless `keepData: false` (then the StatefulSet's retention
    // policy has the garbage collector remove it).
    deleted.extend(delete_named::<HttpRoute>(client, ns, routes, metrics).await?);
    deleted.extend(delete_named::<Ingress>(client, ns, ingresses, metrics).await?);
    deleted.extend(delete_named::<ServiceMonitor>(client, ns, monitors, metrics).await?);
    deleted.extend(delete_named::<HorizontalPodAutoscaler>(client, ns, hpas, metrics).await?);
    deleted.extend(delete_named::<StatefulSet>(client, ns, sets, metrics).await?);
    deleted.extend(delete_named::<Deployment>(client, ns, deployments, metrics).await?);
    deleted.extend(delete_named::<PodDisruptionBudget>(client, ns, pdbs, metrics).await?);
    deleted.extend(delete_named::<Service>(client, ns, services, metrics).await?);
    deleted.extend(delete_named::<NetworkPolicy>(client, ns, policies, metrics).await?);
    deleted.extend(delete_named::<ConfigMap>(client, ns, cms, metrics).await?);
    deleted.extend(delete_named::<ServiceAccount>(client, ns, sas, metrics).await?);
    Ok(deleted)
}

async fn list_owned<K: Child>(
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
) -> Result<Vec<K>, Error> {
    let kind = kind_of::<K>();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&shop_selector(shop)))
        .await
        .map_err(|source| Error::List { kind, source })?;
    Ok(list
        .items
        .into_iter()
        .filter(|o| {
            o.owner_references()
                .iter()
                .any(|r| r.uid == owner_uid && r.controller == Some(true))
        })
        .collect())
}

/// Every child of a Shop as it is now.
#[derive(Debug, Default)]
pub struct Observation {
    /// `Kind/name` -> fingerprint.
    pub fingerprints: Fingerprints,
    /// By component.
    pub deployments: BTreeMap<Component, Deployment>,
    /// Managed stores' StatefulSets, by store.
    pub statefulsets: BTreeMap<Store, StatefulSet>,
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

/// Every child of a Shop as it is now: fingerprints, Deployments and StatefulSets. Eight lists
/// (and a get of the stores' Secret when one is rendered: the operator may not list Secrets;
/// Ingresses and HTTPRoutes when the cluster serves them), used to skip re-applying when
/// nothing changed since the last apply (the steady state makes no writes).
pub async fn observe(
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
    store_secret: Option<&str>,
    apis: Apis,
) -> Result<Observation, Error> {
    let (deps, svcs, cms, sas, nps, pdbs, sets, hpas) = futures::try_join!(
        list_owned::<Deployment>(client, ns, shop, owner_uid),
        list_owned::<Service>(client, ns, shop, owner_uid),
        list_owned::<ConfigMap>(client, ns, shop, owner_uid),
        list_owned::<ServiceAccount>(client, ns, shop, owner_uid),
        list_owned::<NetworkPolicy>(client, ns, shop, owner_uid),
        list_owned::<PodDisruptionBudget>(client, ns, shop, owner_uid),
        list_owned::<StatefulSet>(client, ns, shop, owner_uid),
        list_owned::<HorizontalPodAutoscaler>(client, ns, shop, owner_uid),
    )?;
    let mut fps = Fingerprints::new();
    if let Some(name) = store_secret
        && let Some(secret) = get_secret(client, ns, name).await?
    {
        fps.insert(key_of(&secret), fingerprint(&secret));
    }
    fps.extend(svcs.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(cms.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(sas.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(nps.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(pdbs.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(deps.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(sets.iter().map(|o| (key_of(o), fingerprint(o))));
    fps.extend(hpas.iter().map(|o| (key_of(o), fingerprint(o))));
    if apis.ingress {
        let ingresses = list_owned::<Ingress>(client, ns, shop, owner_uid).await?;
        fps.extend(ingresses.iter().map(|o| (key_of(o), fingerprint(o))));
    }
    if apis.http_route {
        let routes = list_owned::<HttpRoute>(client, ns, shop, owner_uid).await?;
        fps.extend(routes.iter().map(|o| (key_of(o), fingerprint(o))));
    }
    if apis.service_monitor {
        let monitors = list_owned::<ServiceMonitor>(client, ns, shop, owner_uid).await?;
        fps.extend(monitors.iter().map(|o| (key_of(o), fingerprint(o))));
    }
    Ok(Observation {
        fingerprints: fps,
        deployments: by_component(deps),
        statefulsets: by_store(sets),
    })
}

async fn list_labelled<K: Child>(client: &Client, ns: &str, shop: &str) -> Result<Vec<K>, Error> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(&shop_selector(shop)))
        .await
        .map_err(|source| Error::List {
            kind: kind_of::<K>(),
            source,
        })?
        .items)
}

/// The Shop's Deployments and StatefulSets as they are (used when paused or when the spec is
/// invalid).
pub async fn observe_workloads(
    client: &Client,
    ns: &str,
    shop: &str,
) -> Result<Observation, Error> {
    let (deps, sets) = futures::try_join!(
        list_labelled::<Deployment>(client, ns, shop),
        list_labelled::<StatefulSet>(client, ns, shop),
    )?;
    Ok(Observation {
        fingerprints: Fingerprints::new(),
        deployments: by_component(deps),
        statefulsets: by_store(sets),
    })
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
