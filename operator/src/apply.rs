//! Step 3 of the pipeline (client): server-side applies every rendered object with the operator's
//! field manager (forced, so a hand edit of a field we own is reverted), component by component in
//! start order — registry first, gateway last — and deletes this Shop's objects that are no longer
//! rendered (a component disabled, replicas down to one so no PDB).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{ComponentResources, Resources, shop_selector};
use crate::component::Component;
use crate::error::Error;
use crate::metrics::Metrics;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "shop-operator";

/// What the apply step returns: the Deployments as the API server has them now (with status).
#[derive(Debug, Default)]
pub struct Applied {
    /// By component.
    pub deployments: BTreeMap<Component, Deployment>,
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
) -> Result<K, Error> {
    let kind = kind_of::<K>();
    let name = obj.meta().name.clone().ok_or(Error::Unnamed(kind))?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    metrics.write(kind, "apply");
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })
}

fn kind_of<K: Child>() -> &'static str {
    // The six kinds we manage; a static str keeps metric labels and errors allocation-free.
    match K::kind(&()).as_ref() {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "ConfigMap" => "ConfigMap",
        "ServiceAccount" => "ServiceAccount",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        "NetworkPolicy" => "NetworkPolicy",
        _ => "Object",
    }
}

/// Applies every object, in order. Stops at the first failure (later components depend on
/// earlier ones; the error policy retries with backoff).
pub async fn apply_all(
    client: &Client,
    ns: &str,
    res: &Resources,
    metrics: &Metrics,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    for cr in &res.components {
        // Destructured without `..`: a new kind of child that is not applied fails to compile.
        let ComponentResources {
            component,
            service_account,
            config_map,
            service,
            peer_service,
            network_policy,
            pdb,
            deployment,
        } = cr;
        apply_one(client, ns, service_account, metrics).await?;
        apply_one(client, ns, config_map, metrics).await?;
        apply_one(client, ns, service, metrics).await?;
        if let Some(peers) = peer_service {
            apply_one(client, ns, peers, metrics).await?;
        }
        apply_one(client, ns, network_policy, metrics).await?;
        if let Some(pdb) = pdb {
            apply_one(client, ns, pdb, metrics).await?;
        }
        let d = apply_one(client, ns, deployment, metrics).await?;
        applied.deployments.insert(*component, d);
    }
    Ok(applied)
}

fn names<'a, K: Resource + 'a>(objs: impl IntoIterator<Item = &'a K>) -> BTreeSet<String> {
    objs.into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

async fn delete_orphans_of<K: Child>(
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let kind = kind_of::<K>();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&shop_selector(shop)))
        .await
        .map_err(|source| Error::List { kind, source })?;
    let mut deleted = Vec::new();
    for obj in list.items {
        let name = obj.name_any();
        // Only objects this Shop (this uid) controls: a same-named Shop re-created, or an object
        // someone labelled by hand, is never touched.
        let ours = obj
            .owner_references()
            .iter()
            .any(|o| o.uid == owner_uid && o.controller == Some(true));
        if !ours || keep.contains(&name) || obj.meta().deletion_timestamp.is_some() {
            continue;
        }
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
/// what was deleted.
pub async fn delete_orphans(
    client: &Client,
    ns: &str,
    shop: &str,
    owner_uid: &str,
    res: &Resources,
    metrics: &Metrics,
) -> Result<Vec<String>, Error> {
    let c = &res.components;
    let mut deleted = Vec::new();
    // Workloads first so pods stop before their config and identity go.
    deleted.extend(
        delete_orphans_of::<Deployment>(
            client,
            ns,
            shop,
            owner_uid,
            &names(c.iter().map(|r| &r.deployment)),
            metrics,
        )
        .await?,
    );
    deleted.extend(
        delete_orphans_of::<PodDisruptionBudget>(
            client,
            ns,
            shop,
            owner_uid,
            &names(c.iter().filter_map(|r| r.pdb.as_ref())),
            metrics,
        )
        .await?,
    );
    let services = names(
        c.iter()
            .flat_map(|r| std::iter::once(&r.service).chain(r.peer_service.as_ref())),
    );
    deleted.extend(
        delete_orphans_of::<Service>(client, ns, shop, owner_uid, &services, metrics).await?,
    );
    deleted.extend(
        delete_orphans_of::<NetworkPolicy>(
            client,
            ns,
            shop,
            owner_uid,
            &names(c.iter().map(|r| &r.network_policy)),
            metrics,
        )
        .await?,
    );
    deleted.extend(
        delete_orphans_of::<ConfigMap>(
            client,
            ns,
            shop,
            owner_uid,
            &names(c.iter().map(|r| &r.config_map)),
            metrics,
        )
        .await?,
    );
    deleted.extend(
        delete_orphans_of::<ServiceAccount>(
            client,
            ns,
            shop,
            owner_uid,
            &names(c.iter().map(|r| &r.service_account)),
            metrics,
        )
        .await?,
    );
    Ok(deleted)
}

/// The Shop's Deployments as they are (used when paused or when the spec is invalid).
pub async fn observe_deployments(
    client: &Client,
    ns: &str,
    shop: &str,
) -> Result<BTreeMap<Component, Deployment>, Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&shop_selector(shop)))
        .await
        .map_err(|source| Error::List {
            kind: "Deployment",
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|d| {
            let c = d
                .labels()
                .get(crate::build::labels::COMPONENT)
                .and_then(|c| Component::from_name(c))?;
            Some((c, d))
        })
        .collect())
}
