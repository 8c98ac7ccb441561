//! Running the operator: the start-up checks (CRD installed, RBAC for every watched kind), optional
//! leader election, and the kube `Controller` wired with a `DeserializeGuard` root, label-scoped
//! owned watches, bounded concurrency and graceful shutdown. Used by the binary and, in-process,
//! by the integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::monitoring::ServiceMonitor;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::build::{MANAGED_BY, labels};
use crate::controller::{Context, ReconcileSettings, error_policy, reconcile};
use crate::crd::{CRD_NAME, Shop};
use crate::exposure::{Apis, HttpRoute};
use crate::lease::{self, LeaseError, LeaseSettings};
use crate::metrics::Metrics;
use crate::watched::Watched;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (None: all namespaces).
    pub namespace: Option<String>,
    /// Shops reconciled at the same time.
    pub concurrency: u16,
    /// Coalesce bursts of watch events per Shop.
    pub debounce: Duration,
    /// Reconciler tunables.
    pub reconcile: ReconcileSettings,
    /// Reporting controller name and instance in Events.
    pub reporter: String,
    /// Instance (pod name) in Events.
    pub instance: Option<String>,
    /// Leader election, when more than one replica may run.
    pub lease: Option<LeaseSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 8,
            debounce: Duration::from_millis(250),
            reconcile: ReconcileSettings::default(),
            reporter: "shop-operator".to_string(),
            instance: None,
            lease: None,
        }
    }
}

/// Why the operator could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Shop CRD is not installed (or not this version).
    #[error(
        "the CustomResourceDefinition {CRD_NAME} (version v1alpha1) is not installed: install it with `shop-operator crd | kubectl apply --server-side -f -`, `kubectl apply --server-side -f crds/shop.yaml` or `helm install shopkeeper charts/shopkeeper` ({0})"
    )]
    CrdMissing(#[source] kube::Error),
    /// RBAC refuses a list/watch the operator needs.
    #[error(
        "not allowed to list {kind}{scope}: grant get/list/watch on it (the chart's ClusterRole does) ({source})"
    )]
    Forbidden {
        /// Kind.
        kind: String,
        /// " in namespace X" or "".
        scope: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// The API server cannot be reached.
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(#[source] kube::Error),
    /// Leader election failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// kubectl's annotation holding the whole spec it last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Shop as the controller's store keeps it: the reconcile reads its spec, status, labels and
/// owner identity, never its managedFields or kubectl's last-applied copy.
fn slim_shop(shop: &mut DeserializeGuard<Shop>) {
    shop.managed_fields_mut().clear();
    if let Some(a) = shop.meta_mut().annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn can_list<K>(
    client: &Client,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<(), RunError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut lp = ListParams::default().limit(1);
    if let Some(sel) = selector {
        lp = lp.labels(sel);
    }
    match api::<K>(client, namespace).list(&lp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 403 => Err(RunError::Forbidden {
            kind: K::kind(&()).to_string(),
            scope: namespace
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default(),
            source: kube::Error::Api(e),
        }),
        Err(e) => Err(RunError::Unreachable(e)),
    }
}

/// Start-up checks: the CRD answers, and every kind the operator watches can be listed (a missing
/// `list` would otherwise only show as silent backoff). Ingresses and HTTPRoutes only when the
/// cluster serves them (`apis`, from discovery): a cluster without the Gateway API is fine.
pub async fn preflight(
    client: &Client,
    namespace: Option<&str>,
    apis: Apis,
) -> Result<(), RunError> {
    let shops = api::<Shop>(client, namespace);
    match shops.list(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Err(RunError::CrdMissing(kube::Error::Api(e)));
        }
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Err(RunError::Forbidden {
                kind: "Shop".into(),
                scope: namespace
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default(),
                source: kube::Error::Api(e),
            });
        }
        Err(e) => return Err(RunError::Unreachable(e)),
    }
    let sel = managed_selector();
    can_list::<Deployment>(client, namespace, Some(&sel)).await?;
    can_list::<Service>(client, namespace, Some(&sel)).await?;
    can_list::<ConfigMap>(client, namespace, Some(&sel)).await?;
    can_list::<ServiceAccount>(client, namespace, Some(&sel)).await?;
    can_list::<PodDisruptionBudget>(client, namespace, Some(&sel)).await?;
    can_list::<NetworkPolicy>(client, namespace, Some(&sel)).await?;
    can_list::<StatefulSet>(client, namespace, Some(&sel)).await?;
    if apis.ingress {
        can_list::<Ingress>(client, namespace, Some(&sel)).await?;
    }
    if apis.http_route {
        can_list::<HttpRoute>(client, namespace, Some(&sel)).await?;
    }
    // No Secret list: the operator reads Secrets only by name (its `<shop>-stores` and the
    // Secrets external stores point at) and its RBAC does not let it list them.
    Ok(())
}

/// `app.kubernetes.io/managed-by=shop-operator`: owned watches only see our children.
pub fn managed_selector() -> String {
    format!("{}={MANAGED_BY}", labels::MANAGED_BY)
}

/// Runs the operator until `shutdown` is cancelled. `ready` turns true once this instance
/// reconciles (after the checks and, if configured, after winning the Lease).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let ns = settings.namespace.as_deref();
    // Which optional kinds can be watched: watching HTTPRoutes on a cluster without the Gateway
    // API would only fail over and over. The reconciler rediscovers on its own (a Gateway API
    // installed later is used within a minute; its HTTPRoutes are then restored by the periodic
    // resync rather than by a watch until the operator restarts).
    let apis = match crate::apply::discover_apis(&client).await {
        Ok(apis) => apis,
        Err(crate::error::Error::Discovery { source, .. }) => {
            return Err(RunError::Unreachable(source));
        }
        Err(_) => Apis::default(),
    };
    preflight(&client, ns, apis).await?;

    // Leader election: wait for the Lease, then renew it in the background; losing it stops the
    // controller and makes `run` fail, so the process exits and Kubernetes restarts it.
    let stop = shutdown.child_token();
    let lease_task = match &settings.lease {
        Some(ls) => {
            if !lease::acquire(&client, ls, &shutdown).await? {
                return Ok(());
            }
            let (c, l, s) = (client.clone(), ls.clone(), stop.clone());
            Some(tokio::spawn(async move {
                let r = lease::hold(c, l, s.clone()).await;
                s.cancel();
                r
            }))
        }
        None => None,
    };
    metrics.leader.set(1);
    ready.store(true, Ordering::Relaxed);
    info!(
        namespace = ns.unwrap_or("<all>"),
        concurrency = settings.concurrency,
        "shop-operator reconciling"
    );

    let reporter = Reporter {
        controller: settings.reporter.clone(),
        instance: settings.instance.clone(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    // The owned watches trigger reconciles and, on the way, fill the stores the applier reads
    // the children from (crate::watched): one watch per kind, as `Controller::owns` would make.
    let owned = watcher::Config::default().labels(&managed_selector());
    let mut watched = Watched::default();
    // The Shops' own store, as `Controller::new` keeps it but without what the reconcile never
    // reads: managedFields (a status write adds an entry; ~23 KB per Shop as parsed JSON maps,
    // measured with heaptrack at 101 Shops) and kubectl's copy of the whole last-applied spec.
    let (shop_store, shop_writer) = reflector::store();
    let shops = watcher(
        api::<DeserializeGuard<Shop>>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .modify(slim_shop)
    .reflect(shop_writer)
    .applied_objects();
    let mut controller = Controller::for_stream(shops, shop_store)
        .owns_stream(watched.watch_whole::<Deployment>(
            "Deployment",
            api(&client, ns),
            owned.clone(),
        ))
        .owns_stream(watched.watch_meta::<Service>("Service", api(&client, ns), owned.clone()))
        .owns_stream(watched.watch_meta::<ConfigMap>("ConfigMap", api(&client, ns), owned.clone()))
        .owns_stream(watched.watch_meta::<ServiceAccount>(
            "ServiceAccount",
            api(&client, ns),
            owned.clone(),
        ))
        .owns_stream(watched.watch_meta::<PodDisruptionBudget>(
            "PodDisruptionBudget",
            api(&client, ns),
            owned.clone(),
        ))
        .owns_stream(watched.watch_meta::<NetworkPolicy>(
            "NetworkPolicy",
            api(&client, ns),
            owned.clone(),
        ))
        .owns_stream(watched.watch_whole::<StatefulSet>(
            "StatefulSet",
            api(&client, ns),
            owned.clone(),
        ))
        .owns_stream(watched.watch_meta::<HorizontalPodAutoscaler>(
            "HorizontalPodAutoscaler",
            api(&client, ns),
            owned.clone(),
        ));
    if apis.ingress {
        controller = controller.owns_stream(watched.watch_meta::<Ingress>(
            "Ingress",
            api(&client, ns),
            owned.clone(),
        ));
    }
    if apis.http_route {
        controller = controller.owns_stream(watched.watch_meta::<HttpRoute>(
            "HTTPRoute",
            api(&client, ns),
            owned.clone(),
        ));
    }
    if apis.service_monitor {
        controller = controller.owns_stream(watched.watch_meta::<ServiceMonitor>(
            "ServiceMonitor",
            api(&client, ns),
            owned,
        ));
    }
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            recorder,
            metrics.clone(),
            settings.reconcile.clone(),
        )
        .with_watched(Arc::new(watched)),
    );
    let stop_fut = stop.clone();
    info!(
        ingress = apis.ingress,
        http_route = apis.http_route,
        "optional APIs served (owned watches)"
    );
    controller
        .with_config(
            controller::Config::default()
                .concurrency(settings.concurrency)
                .debounce(settings.debounce),
        )
        .graceful_shutdown_on(async move { stop_fut.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                // Object-level failures are already logged by the error policy; this is the
                // watch/queue level (e.g. a missing watch permission): visible, never fatal.
                match e {
                    controller::Error::ReconcilerFailed(..) => {}
                    other => warn!(error = %other, "controller stream error"),
                }
            }
        })
        .await;
    ready.store(false, Ordering::Relaxed);
    metrics.leader.set(0);
    stop.cancel();
    if let Some(task) = lease_task {
        match task.await {
            Ok(Err(e)) if !shutdown.is_cancelled() => return Err(RunError::Lease(e)),
            _ => {}
        }
        if let Some(ls) = &settings.lease {
            lease::release(&client, ls).await;
        }
    }
    info!("shop-operator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shop_store_keeps_no_managed_fields_nor_kubectls_copy() {
        let mut shop: DeserializeGuard<Shop> = serde_json::from_value(serde_json::json!({
            "apiVersion": "shopkeeper.dev/v1alpha1",
            "kind": "Shop",
            "metadata": {
                "name": "demo",
                "namespace": "shop",
                "annotations": { LAST_APPLIED: "{\"spec\":{}}", "team": "web" },
                "managedFields": [{
                    "manager": "kubectl", "operation": "Apply", "apiVersion": "shopkeeper.dev/v1alpha1",
                    "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": {} }
                }],
            },
            "spec": {},
        }))
        .unwrap();
        slim_shop(&mut shop);
        assert!(shop.managed_fields().is_empty());
        let annotations = shop.annotations();
        assert_eq!(annotations.get("team").map(String::as_str), Some("web"));
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(shop.name_any(), "demo");
    }
}
