//! The reconciler: glues validate → build → apply → status together for one Shop, publishes
//! Events through one shared `Recorder`, and implements the per-object exponential backoff that
//! kube's `error_policy` alone does not give (it is not told about successes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::apply::{self, FIELD_MANAGER, Fingerprints};
use crate::build::{self, Resources};
use crate::component::Component;
use crate::crd::{Shop, ShopStatus};
use crate::error::Error;
use crate::exposure::{self, Apis, ExposureState};
use crate::metrics::Metrics;
use crate::monitoring::{self, MonitoringState};
use crate::status::{self, Observed, ObservedStore, Outcome, SecretCheck, StoreState};
use crate::stores::{self, StoreCredentials};
use crate::validate::validate;

/// How soon a Shop whose external store's Secret is missing looks again (Secrets are not watched).
pub const SECRET_RECHECK: Duration = Duration::from_secs(10);
/// How long a discovery of the optional APIs (Ingress, Gateway API) is reused: CRDs come and go
/// rarely, and a fresh look per reconcile would cost two requests each time.
pub const API_DISCOVERY_TTL: Duration = Duration::from_secs(30);
/// How soon a Shop asking for an Ingress or HTTPRoute whose API is missing looks again, so it is
/// exposed soon after someone installs the API (nothing watches CRDs being installed).
pub const API_RECHECK: Duration = Duration::from_secs(60);

/// Tunables of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    /// Safety-net resync of a healthy Shop (watches do the real work).
    pub requeue: Duration,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            requeue: Duration::from_secs(3600),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Shared state of every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// The one Recorder (events aggregate only when it is shared).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per Shop uid.
    failures: Mutex<HashMap<String, u32>>,
    /// Per Shop uid: hash of the last desired state applied and the fingerprints of the objects
    /// the API server returned. When both still match, a reconcile only reads.
    applied: Mutex<HashMap<String, (String, Fingerprints)>>,
    /// The last discovery of the optional APIs, and when it was made.
    apis: Mutex<Option<(Instant, Apis)>>,
    /// Tunables.
    pub settings: ReconcileSettings,
}

impl Context {
    /// Creates the context.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        settings: ReconcileSettings,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            apis: Mutex::new(None),
            settings,
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Fingerprints)>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Which optional APIs the cluster serves, rediscovered at most every [`API_DISCOVERY_TTL`].
    async fn apis(&self) -> Result<Apis, Error> {
        let cached = *self.apis.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, apis)) = cached
            && at.elapsed() < API_DISCOVERY_TTL
        {
            return Ok(apis);
        }
        let apis = apply::discover_apis(&self.client).await?;
        *self.apis.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), apis));
        Ok(apis)
    }

    async fn event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }
}

/// Delay before retry number `failures` (1-based): `base·2^(n-1)` capped at `max`, plus up to
/// 10 % jitter so many failing Shops do not retry in lockstep.
pub fn backoff_delay(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    raw + raw.mul_f64(jitter.clamp(0.0, 1.0) * 0.1)
}

fn key(obj: &DeserializeGuard<Shop>) -> String {
    let m = obj.meta();
    m.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default()
        )
    })
}

/// The controller's error policy: count, then retry this object with exponential backoff.
pub fn error_policy(obj: Arc<DeserializeGuard<Shop>>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(err.metric_label());
    let n = {
        let mut f = ctx.failures();
        let e = f.entry(key(&obj)).or_insert(0);
        *e = e.saturating_add(1);
        *e
    };
    let delay = backoff_delay(
        n,
        ctx.settings.backoff_base,
        ctx.settings.backoff_max,
        rand::random::<f64>(),
    );
    let m = obj.meta();
    warn!(shop = m.name.as_deref().unwrap_or(""), namespace = m.namespace.as_deref().unwrap_or(""), error = %err, failures = n, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one Shop (entry point for the kube Controller).
pub async fn reconcile(
    obj: Arc<DeserializeGuard<Shop>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let started = Instant::now();
    let result = match &obj.0 {
        Err(invalid) => {
            // Undeserializable (e.g. stored before a schema change): report it and wait for an
            // edit; the watch itself keeps working for every other Shop.
            ctx.metrics.failure("invalid_object");
            let m = &invalid.metadata;
            warn!(shop = m.name.as_deref().unwrap_or(""), namespace = m.namespace.as_deref().unwrap_or(""), error = %invalid.error, "Shop cannot be read");
            let reference = ObjectReference {
                api_version: Some(format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION)),
                kind: Some("Shop".into()),
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                field_path: None,
            };
            ctx.event(
                &reference,
                EventType::Warning,
                "InvalidObject",
                "Reading",
                format!("cannot read this Shop: {}", invalid.error),
            )
            .await;
            Ok(Action::await_change())
        }
        Ok(shop) if shop.meta().deletion_timestamp.is_some() => Ok(Action::await_change()),
        Ok(shop) => reconcile_shop(shop, &ctx).await,
    };
    if result.is_ok() {
        ctx.failures().remove(&key(&obj));
    }
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

fn now() -> Time {
    // Whole seconds: that is what the API server stores, so a re-read status compares equal.
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A reconcile that failed, and whether its status already says so (a refused apply writes
/// `Degraded: ApplyFailed` with what it observed).
struct Failed {
    error: Error,
    status_written: bool,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Self {
            error,
            status_written: false,
        }
    }
}

/// Runs the steps; when one fails before the status was written (discovery, listing children,
/// reading a Secret), the status still says which step failed (best effort: that write may fail
/// for the same reason), so a Shop never sits without a status while the operator retries.
async fn reconcile_shop(shop: &Shop, ctx: &Context) -> Result<Action, Error> {
    match reconcile_steps(shop, ctx).await {
        Ok(action) => Ok(action),
        Err(Failed {
            error,
            status_written: true,
        }) => Err(error),
        Err(Failed { error, .. }) => {
            let ns = shop.namespace().unwrap_or_default();
            let name = shop.name_any();
            let status = status::reconcile_failed(
                shop.metadata.generation,
                error.to_string(),
                shop.status.as_ref(),
                &now(),
            );
            if matches!(error, Error::Status(_)) || shop.status.as_ref() == Some(&status) {
                return Err(error);
            }
            if let Err(e) = write_status(&ctx.client, &ns, &name, &status, &ctx.metrics).await {
                warn!(shop = %name, namespace = %ns, error = %e, "could not report the failed step in the status");
            }
            Err(error)
        }
    }
}

async fn reconcile_steps(shop: &Shop, ctx: &Context) -> Result<Action, Failed> {
    let ns = shop.namespace().unwrap_or_default();
    let name = shop.name_any();
    let reference = shop.object_ref(&());
    let generation = shop.metadata.generation;
    let client = &ctx.client;

    let validated = validate(shop);
    // (component, pods asked for, whether an HPA owns the count: then the Deployment's own
    // count, as the autoscaler last set it, is what the status waits for).
    let desired: Vec<(Component, i32, bool)> = match &validated {
        Ok(v) => v
            .enabled
            .iter()
            .map(|r| (r.component, r.min_replicas(), r.autoscaling.is_some()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let (managed_stores, external_stores) = match &validated {
        Ok(v) => (v.managed_stores.clone(), v.external_stores.clone()),
        Err(_) => (Vec::new(), Vec::new()),
    };
    let tls_secret = validated
        .as_ref()
        .ok()
        .and_then(|v| v.gateway.tls_secret.clone());
    let faults = validated.as_ref().ok().and_then(|v| v.faults.clone());
    let (resources, outcome): (Option<Resources>, Outcome) = match validated {
        Err(e) => {
            ctx.event(
                &reference,
                EventType::Warning,
                "InvalidSpec",
                "Validating",
                e.to_string(),
            )
            .await;
            (None, Outcome::Invalid(e.to_string()))
        }
        Ok(v) if v.paused => (None, Outcome::Paused),
        Ok(v) => {
            // Read back (or generate once) before rendering: the pure build never invents a
            // password, so a reconcile cannot rotate one.
            let creds = if stores::needs_secret(&v.managed_stores) {
                apply::store_credentials(client, &ns, &name).await?
            } else {
                StoreCredentials::default()
            };
            (
                Some(build::build_with_credentials(&v, &creds)),
                Outcome::Applied,
            )
        }
    };

    let uid = shop.uid().unwrap_or_default();
    let mut exposure_state: Option<ExposureState> = None;
    let mut monitoring_state: Option<MonitoringState> = None;
    let (workloads, outcome, apply_error) = match resources {
        Some(mut resources) => {
            // An Ingress/HTTPRoute whose API the cluster does not serve is left out (the rest is
            // applied as usual) and reported in the `Exposed` condition.
            let apis = ctx.apis().await?;
            exposure_state = exposure::plan(&mut resources.exposure, apis);
            monitoring_state =
                monitoring::plan(&mut resources.service_monitor, apis.service_monitor);
            let desired_hash = build::desired_hash(&resources);
            let secret_name = resources
                .store_secret
                .as_ref()
                .and_then(|s| s.0.metadata.name.clone());
            let cached = ctx.applied().get(&uid).cloned();
            let mut unchanged = None;
            if let Some((hash, fps)) = cached
                && hash == desired_hash
            {
                let now =
                    apply::observe(client, &ns, &name, &uid, secret_name.as_deref(), apis).await?;
                if now.fingerprints == fps {
                    unchanged = Some(now);
                } else {
                    let changed: Vec<&String> = fps
                        .iter()
                        .filter(|(k, v)| now.fingerprints.get(*k) != Some(*v))
                        .map(|(k, _)| k)
                        .chain(now.fingerprints.keys().filter(|k| !fps.contains_key(*k)))
                        .collect();
                    info!(shop = %name, namespace = %ns, ?changed, "children changed since the last apply; re-applying");
                }
            }
            match unchanged {
                // Same desired state and nobody touched the children: nothing to write.
                Some(observation) => (observation, outcome, None),
                None => match apply::apply_all(client, &ns, &resources, &ctx.metrics).await {
                    Ok(applied) => {
                        let deleted = apply::delete_orphans(
                            client,
                            &ns,
                            &name,
                            &uid,
                            &resources,
                            apis,
                            &ctx.metrics,
                        )
                        .await?;
                        if !deleted.is_empty() {
                            info!(shop = %name, namespace = %ns, ?deleted, "deleted objects no longer in the spec");
                            ctx.event(
                                &reference,
                                EventType::Normal,
                                "Deleted",
                                "Pruning",
                                format!("deleted {}", deleted.join(", ")),
                            )
                            .await;
                        }
                        ctx.applied()
                            .insert(uid.clone(), (desired_hash, applied.fingerprints));
                        let observation = apply::Observation {
                            fingerprints: Fingerprints::new(),
                            deployments: applied.deployments,
                            statefulsets: applied.statefulsets,
                        };
                        (observation, outcome, None)
                    }
                    Err(e) => {
                        ctx.applied().remove(&uid);
                        ctx.event(
                            &reference,
                            EventType::Warning,
                            "ApplyFailed",
                            "Applying",
                            e.to_string(),
                        )
                        .await;
                        let observed = apply::observe_workloads(client, &ns, &name)
                            .await
                            .unwrap_or_default();
                        (observed, Outcome::Failed(e.to_string()), Some(e))
                    }
                },
            }
        }
        None => {
            ctx.applied().remove(&uid);
            (
                apply::observe_workloads(client, &ns, &name).await?,
                outcome,
                None,
            )
        }
    };

    let observed: Vec<Observed<'_>> = desired
        .iter()
        .map(|(c, n, autoscaled)| {
            let deployment = workloads.deployments.get(c);
            let scaled = deployment
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.replicas)
                .filter(|_| *autoscaled);
            Observed {
                component: *c,
                desired: scaled.unwrap_or(*n),
                deployment,
            }
        })
        .collect();
    // Secrets are not watched (the operator may only read them by name), so a missing one is
    // looked at again after a short requeue: a Shop recovers on its own when it appears.
    let checks = apply::check_external_secrets(client, &ns, &external_stores).await?;
    let tls_check = match &tls_secret {
        Some(secret) => Some((secret, apply::check_tls_secret(client, &ns, secret).await?)),
        None => None,
    };
    let waits_for_secret = checks.values().any(|c| *c != SecretCheck::Present)
        || tls_check.is_some_and(|(_, c)| c != SecretCheck::Present);
    let observed_stores: Vec<ObservedStore<'_>> = managed_stores
        .iter()
        .map(|m| ObservedStore {
            store: m.store,
            state: StoreState::Managed(workloads.statefulsets.get(&m.store)),
        })
        .chain(external_stores.iter().map(|e| {
            ObservedStore {
                store: e.store,
                state: match (&e.secret, &e.address) {
                    (Some(secret), _) => StoreState::ExternalSecret {
                        secret: secret.clone(),
                        check: checks
                            .get(&e.store)
                            .copied()
                            .unwrap_or(SecretCheck::Missing),
                    },
                    (None, address) => {
                        StoreState::ExternalAddress(address.clone().unwrap_or_default())
                    }
                },
            }
        }))
        .collect();
    let now = now();
    let mut new_status = status::compute(
        generation,
        &observed,
        &observed_stores,
        &outcome,
        shop.status.as_ref(),
        &now,
    );
    if let Some(state) = &exposure_state {
        new_status.conditions.push(status::exposure_condition(
            state,
            apply_error.is_none(),
            generation,
            shop.status.as_ref(),
            &now,
        ));
    }
    if let Some((secret, check)) = tls_check {
        new_status.conditions.push(status::gateway_tls_condition(
            secret,
            check,
            generation,
            shop.status.as_ref(),
            &now,
        ));
    }
    if let Some(faults) = &faults {
        new_status.conditions.push(status::faults_condition(
            faults,
            generation,
            shop.status.as_ref(),
            &now,
        ));
    }
    if let Some(state) = &monitoring_state {
        new_status.conditions.push(status::monitoring_condition(
            state,
            apply_error.is_none(),
            generation,
            shop.status.as_ref(),
            &now,
        ));
    }
    let waits_for_api = matches!(exposure_state, Some(ExposureState::ApiMissing(_)))
        || monitoring_state == Some(MonitoringState::ApiMissing);
    let old_phase = shop.status.as_ref().and_then(|s| s.phase);
    if shop.status.as_ref() != Some(&new_status) {
        write_status(client, &ns, &name, &new_status, &ctx.metrics).await?;
        // The same status for the gateway's admin page (`/admin/status.json`), which reads it
        // from a mounted ConfigMap: the gateway pods have no API credentials.
        if let Some(owner) = shop.controller_owner_ref(&()) {
            let body = json!({
                "name": name,
                "namespace": ns,
                "generation": generation,
                "status": new_status,
            });
            let cm = build::status_config_map(&name, &ns, owner, &body);
            if let Err(e) = apply::publish_status(client, &ns, &cm, &ctx.metrics).await {
                // The Shop's own status is written; the copy catches up on the next change.
                warn!(shop = %name, namespace = %ns, error = %e, "could not publish the status for the gateway");
            }
        }
        if let Some(phase) = new_status.phase.filter(|p| old_phase != Some(*p)) {
            info!(shop = %name, namespace = %ns, %phase, "phase changed");
            let type_ = if phase.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let note = new_status
                .conditions
                .iter()
                .map(|c| format!("{}={}: {}", c.type_, c.status, c.message))
                .collect::<Vec<_>>()
                .join("; ");
            ctx.event(&reference, type_, phase.as_str(), "Reconciling", note)
                .await;
        }
    }
    if let Some(error) = apply_error {
        return Err(Failed {
            error,
            status_written: true,
        });
    }
    Ok(match outcome {
        Outcome::Invalid(_) => Action::await_change(),
        _ if waits_for_secret => Action::requeue(ctx.settings.requeue.min(SECRET_RECHECK)),
        _ if waits_for_api => Action::requeue(ctx.settings.requeue.min(API_RECHECK)),
        _ => Action::requeue(ctx.settings.requeue),
    })
}

async fn write_status(
    client: &Client,
    ns: &str,
    name: &str,
    status: &ShopStatus,
    metrics: &Metrics,
) -> Result<(), Error> {
    let api: Api<Shop> = Api::namespaced(client.clone(), ns);
    let patch = json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": "Shop",
        "status": status,
    });
    metrics.write("Shop", "status");
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_and_caps() {
        let b = Duration::from_millis(500);
        let m = Duration::from_secs(300);
        assert_eq!(backoff_delay(1, b, m, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(2, b, m, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(4, b, m, 0.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(50, b, m, 0.0), m);
        assert_eq!(backoff_delay(3, b, m, 1.0), Duration::from_millis(2200));
    }
}
