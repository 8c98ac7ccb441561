//! The reconciler: runs validate → build → apply → status for one Shop as a pipeline of named
//! steps (see `reconcile_steps`), each failing with its own [`ReconcileError`] variant, publishes
//! Events through one shared `Recorder`, and implements the per-object exponential backoff that
//! kube's `error_policy` alone does not give (it is not told about successes).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use serde_json::json;
use tracing::{info, warn};

use crate::apply::{self, Applied, Applier, Children, Owner};
use crate::build::{self, Prepared, Resources};
use crate::component::Component;
use crate::crd::{FaultsSpec, Shop, ShopStatus};
use crate::error::{Error, ReconcileError};
use crate::exposure::{self, Apis, ExposureState};
use crate::metrics::Metrics;
use crate::monitoring::{self, MonitoringState};
use crate::status::{self, Observed, ObservedStore, Outcome, SecretCheck, StoreState};
use crate::stores::{self, ManagedStore, Store, StoreCredentials};
use crate::validate::{ExternalStore, ValidatedShop, validate};

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
    /// Child writes in flight at once, over all Shops (see [`Applier::with_write_limit`]).
    pub writes_in_flight: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            requeue: Duration::from_secs(3600),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            writes_in_flight: crate::apply::WRITES_IN_FLIGHT,
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
    /// Every write to a Shop's children and status, and the fingerprints of what it applied.
    pub applier: Applier,
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
            applier: Applier::new(client.clone(), metrics.clone())
                .with_write_limit(settings.writes_in_flight),
            client,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            apis: Mutex::new(None),
            settings,
        }
    }

    /// The same, its applier reading the children from the owned watches' stores first.
    pub fn with_watched(mut self, watched: Arc<crate::watched::Watched>) -> Self {
        self.applier = self.applier.with_watched(watched);
        self
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
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

    async fn event_on(
        &self,
        shop: &Shop,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.event(&shop.object_ref(&()), type_, reason, action, note)
            .await;
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
pub fn error_policy(
    obj: Arc<DeserializeGuard<Shop>>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
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
) -> Result<Action, ReconcileError> {
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

/// Runs the steps; when one fails before the status was written (discovery, listing children,
/// reading a Secret), the status still says which step failed (best effort: that write may fail
/// for the same reason), so a Shop never sits without a status while the operator retries. A
/// refused apply has already written `Degraded: ApplyFailed` with what it observed.
async fn reconcile_shop(shop: &Shop, ctx: &Context) -> Result<Action, ReconcileError> {
    let error = match reconcile_steps(shop, ctx).await {
        Ok(action) => return Ok(action),
        Err(e @ (ReconcileError::Apply(_) | ReconcileError::Status(_))) => return Err(e),
        Err(e) => e,
    };
    let owner = Owner::of(shop);
    let status = status::reconcile_failed(
        shop.metadata.generation,
        error.to_string(),
        shop.status.as_ref(),
        &now(),
    );
    if shop.status.as_ref() != Some(&status)
        && let Err(e) = ctx.applier.write_status(&owner, &status).await
    {
        warn!(shop = %owner.name, namespace = %owner.namespace, error = %e, "could not report the failed step in the status");
    }
    Err(error)
}

/// The reconcile as a pipeline of named steps: validate → converge (hold, or credentials,
/// render, plan, apply, prune) → check Secrets → compute the status → publish it → when to look
/// again. Each step's failure is its own [`ReconcileError`] variant.
async fn reconcile_steps(shop: &Shop, ctx: &Context) -> Result<Action, ReconcileError> {
    let owner = Owner::of(shop);
    let validated = validate(shop);
    let wants = Wants::of(validated.as_ref().ok());
    let converged = converge(shop, &owner, validated, ctx).await?;
    let secrets = check_secrets(&owner, &wants, ctx)
        .await
        .map_err(ReconcileError::Secrets)?;
    let new_status = compute_status(shop, &wants, &converged, &secrets);
    publish_status(shop, &owner, new_status, ctx).await?;
    if let Some(error) = converged.failed {
        return Err(error);
    }
    Ok(match converged.outcome {
        Outcome::Invalid(_) => Action::await_change(),
        _ if secrets.waiting() => Action::requeue(ctx.settings.requeue.min(SECRET_RECHECK)),
        _ if converged.plans.waits_for_api() => {
            Action::requeue(ctx.settings.requeue.min(API_RECHECK))
        }
        _ => Action::requeue(ctx.settings.requeue),
    })
}

/// Where the children stand after the converge step.
struct Converged {
    /// As the applier returned or read them.
    children: Children,
    outcome: Outcome,
    plans: Plans,
    /// A refused apply: returned (for the retry) once the status says so.
    failed: Option<ReconcileError>,
}

/// An invalid or paused Shop is held (read, nothing written); a valid one is prepared and
/// applied. A refused apply is not an error here: the status reports it first.
async fn converge(
    shop: &Shop,
    owner: &Owner,
    validated: Result<ValidatedShop, crate::validate::ValidationError>,
    ctx: &Context,
) -> Result<Converged, ReconcileError> {
    let (outcome, plans) = match validated {
        Err(e) => {
            let message = e.to_string();
            ctx.event_on(
                shop,
                EventType::Warning,
                "InvalidSpec",
                "Validating",
                message.clone(),
            )
            .await;
            (Outcome::Invalid(message), Plans::default())
        }
        Ok(v) if v.paused => (Outcome::Paused, Plans::default()),
        Ok(v) => {
            let (resources, plans) = prepare(&v, owner, ctx).await?;
            let (children, outcome, failed) =
                match apply(shop, owner, resources, plans.apis, ctx).await {
                    Ok(applied) => (applied.into_state().into_children(), Outcome::Applied, None),
                    Err(ReconcileError::Apply(e)) => (
                        ctx.applier.after_failure(owner).await,
                        Outcome::Failed(e.to_string()),
                        Some(ReconcileError::Apply(e)),
                    ),
                    Err(e) => return Err(e),
                };
            return Ok(Converged {
                children,
                outcome,
                plans,
                failed,
            });
        }
    };
    let children = ctx
        .applier
        .hold(owner)
        .await
        .map_err(ReconcileError::Observe)?;
    Ok(Converged {
        children,
        outcome,
        plans,
        failed: None,
    })
}

/// What a valid spec asks for that the status reports on (nothing for an invalid one).
#[derive(Default)]
struct Wants {
    /// (component, pods asked for, whether an HPA owns the count: then the Deployment's own
    /// count, as the autoscaler last set it, is what the status waits for).
    components: Vec<(Component, i32, bool)>,
    managed_stores: Vec<ManagedStore>,
    external_stores: Vec<ExternalStore>,
    tls_secret: Option<String>,
    faults: Option<FaultsSpec>,
}

impl Wants {
    fn of(v: Option<&ValidatedShop>) -> Self {
        let Some(v) = v else {
            return Self::default();
        };
        Self {
            components: v
                .enabled
                .iter()
                .map(|r| (r.component, r.min_replicas(), r.autoscaling.is_some()))
                .collect(),
            managed_stores: v.managed_stores.clone(),
            external_stores: v.external_stores.clone(),
            tls_secret: v.gateway.tls_secret.clone(),
            faults: v.faults.clone(),
        }
    }
}

/// How the optional objects (Ingress/HTTPRoute, ServiceMonitor) were planned against the APIs
/// the cluster serves.
#[derive(Default)]
struct Plans {
    apis: Apis,
    exposure: Option<ExposureState>,
    monitoring: Option<MonitoringState>,
}

impl Plans {
    /// A Shop asking for an object whose API is missing looks again after [`API_RECHECK`].
    fn waits_for_api(&self) -> bool {
        matches!(self.exposure, Some(ExposureState::ApiMissing(_)))
            || self.monitoring == Some(MonitoringState::ApiMissing)
    }
}

/// Credentials, render, and the plan against the served APIs: an Ingress/HTTPRoute or
/// ServiceMonitor whose API the cluster does not serve is left out (the rest is applied as
/// usual) and reported in its condition.
async fn prepare(
    v: &ValidatedShop,
    owner: &Owner,
    ctx: &Context,
) -> Result<(Resources<Prepared>, Plans), ReconcileError> {
    // Read back (or generate once) before rendering: the pure build never invents a password,
    // so a reconcile cannot rotate one.
    let creds = if stores::needs_secret(&v.managed_stores) {
        apply::store_credentials(&ctx.client, &owner.namespace, &owner.name)
            .await
            .map_err(ReconcileError::Credentials)?
    } else {
        StoreCredentials::default()
    };
    let mut resources = build::build_with_credentials(v, &creds);
    let apis = ctx.apis().await.map_err(ReconcileError::Discovery)?;
    let plans = Plans {
        apis,
        exposure: exposure::plan(&mut resources.exposure, apis),
        monitoring: monitoring::plan(&mut resources.service_monitor, apis.service_monitor),
    };
    Ok((resources, plans))
}

/// Applies through the [`Applier`], with an Event for what it pruned or why it failed.
async fn apply(
    shop: &Shop,
    owner: &Owner,
    resources: Resources<Prepared>,
    apis: Apis,
    ctx: &Context,
) -> Result<Resources<Applied>, ReconcileError> {
    match ctx.applier.apply(owner, resources, apis).await {
        Ok(applied) => {
            let deleted = applied.state().deleted();
            if !deleted.is_empty() {
                info!(shop = %owner.name, namespace = %owner.namespace, ?deleted, "deleted objects no longer in the spec");
                let note = format!("deleted {}", deleted.join(", "));
                ctx.event_on(shop, EventType::Normal, "Deleted", "Pruning", note)
                    .await;
            }
            Ok(applied)
        }
        Err(ReconcileError::Apply(e)) => {
            ctx.event_on(
                shop,
                EventType::Warning,
                "ApplyFailed",
                "Applying",
                e.to_string(),
            )
            .await;
            Err(ReconcileError::Apply(e))
        }
        Err(e) => Err(e),
    }
}

/// What was found for the Secrets the Shop points at. Secrets are not watched (the operator may
/// only read them by name), so a missing one is looked at again after a short requeue: a Shop
/// recovers on its own when it appears.
struct Secrets {
    external: BTreeMap<Store, SecretCheck>,
    tls: Option<(String, SecretCheck)>,
}

impl Secrets {
    fn waiting(&self) -> bool {
        self.external.values().any(|c| *c != SecretCheck::Present)
            || self
                .tls
                .as_ref()
                .is_some_and(|(_, c)| *c != SecretCheck::Present)
    }
}

async fn check_secrets(owner: &Owner, wants: &Wants, ctx: &Context) -> Result<Secrets, Error> {
    let ns = &owner.namespace;
    let external = apply::check_external_secrets(&ctx.client, ns, &wants.external_stores).await?;
    let tls = match &wants.tls_secret {
        Some(secret) => Some((
            secret.clone(),
            apply::check_tls_secret(&ctx.client, ns, secret).await?,
        )),
        None => None,
    };
    Ok(Secrets { external, tls })
}

/// The status, from the children the applier returned (or read, when it held): the only place
/// [`status::compute`] is called, and [`Children`] can only come from the applier.
fn compute_status(
    shop: &Shop,
    wants: &Wants,
    converged: &Converged,
    secrets: &Secrets,
) -> ShopStatus {
    let Converged {
        children,
        outcome,
        plans,
        failed,
    } = converged;
    let applied = failed.is_none();
    let generation = shop.metadata.generation;
    let previous = shop.status.as_ref();
    let observed: Vec<Observed<'_>> = wants
        .components
        .iter()
        .map(|(c, n, autoscaled)| {
            let deployment = children.deployment(*c);
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
    let observed_stores: Vec<ObservedStore<'_>> = wants
        .managed_stores
        .iter()
        .map(|m| ObservedStore {
            store: m.store,
            state: StoreState::Managed(children.statefulset(m.store)),
        })
        .chain(wants.external_stores.iter().map(|e| {
            ObservedStore {
                store: e.store,
                state: match (&e.secret, &e.address) {
                    (Some(secret), _) => StoreState::ExternalSecret {
                        secret: secret.clone(),
                        check: secrets
                            .external
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
    let mut status = status::compute(
        generation,
        &observed,
        &observed_stores,
        outcome,
        previous,
        &now,
    );
    if let Some(state) = &plans.exposure {
        let c = status::exposure_condition(state, applied, generation, previous, &now);
        status.conditions.push(c);
    }
    if let Some((secret, check)) = &secrets.tls {
        let c = status::gateway_tls_condition(secret, *check, generation, previous, &now);
        status.conditions.push(c);
    }
    if let Some(faults) = &wants.faults {
        let c = status::faults_condition(faults, generation, previous, &now);
        status.conditions.push(c);
    }
    if let Some(state) = &plans.monitoring {
        let c = status::monitoring_condition(state, applied, generation, previous, &now);
        status.conditions.push(c);
    }
    status
}

/// Writes the status when it changed, its copy for the gateway's admin page, and an Event when
/// the phase changed.
async fn publish_status(
    shop: &Shop,
    owner: &Owner,
    new_status: ShopStatus,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    if shop.status.as_ref() == Some(&new_status) {
        return Ok(());
    }
    let (ns, name) = (&owner.namespace, &owner.name);
    ctx.applier
        .write_status(owner, &new_status)
        .await
        .map_err(ReconcileError::Status)?;
    // The same status for the gateway's admin page (`/admin/status.json`), which reads it from a
    // mounted ConfigMap: the gateway pods have no API credentials.
    if let Some(controller) = shop.controller_owner_ref(&()) {
        let body = json!({
            "name": name,
            "namespace": ns,
            "generation": shop.metadata.generation,
            "status": new_status,
        });
        let cm = build::status_config_map(name, ns, controller, &body);
        if let Err(e) = ctx.applier.publish_status(ns, &cm).await {
            // The Shop's own status is written; the copy catches up on the next change.
            warn!(shop = %name, namespace = %ns, error = %e, "could not publish the status for the gateway");
        }
    }
    let old_phase = shop.status.as_ref().and_then(|s| s.phase);
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
        ctx.event_on(shop, type_, phase.as_str(), "Reconciling", note)
            .await;
    }
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
