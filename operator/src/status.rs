//! Step 4 of the pipeline (pure): computes the Shop's status from the Deployments the apply step
//! got back. Deterministic by construction: components in a fixed order, conditions in a fixed
//! order, and a condition's `lastTransitionTime` kept from the previous status unless its
//! `status` flips, so an unchanged world yields a byte-identical status and no write at all.
//! Each backing store in use has its own condition (`MysqlReady`, `MongodbReady`, `KafkaReady`,
//! `ZipkinReady`, after the three Shop conditions, in that order); the Shop is `Available` only
//! when its stores are ready too. A Shop asking for an Ingress or an HTTPRoute also gets
//! `Exposed`, which only informs (see [`exposure_condition`]); one whose gateway serves TLS gets
//! `GatewayTlsReady`, naming a missing Secret (see [`gateway_tls_condition`]); one with fault flags
//! gets `FaultsActive` (see [`faults_condition`]); one asking for a
//! ServiceMonitor gets `Monitored` last, which only informs (see [`monitoring_condition`]).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::component::Component;
use crate::crd::{ComponentStatus, FaultsSpec, Phase, SecretKeyRef, ShopStatus};
use crate::exposure::{ExposureKind, ExposureState};
use crate::monitoring::MonitoringState;
use crate::stores::Store;

/// Condition type: every enabled component has all its replicas ready on the current template.
pub const AVAILABLE: &str = "Available";
/// Condition type: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something is wrong that will not fix itself (bad spec, failed apply, stuck rollout).
pub const DEGRADED: &str = "Degraded";

/// Condition type: the gateway's Ingress or HTTPRoute exists (only when the Shop asks for one).
/// It never makes the Shop Degraded or unavailable: the Shop works inside the cluster either way.
pub const EXPOSED: &str = "Exposed";

/// Condition type: the ServiceMonitor exists (only when the Shop asks for one). Like `Exposed`
/// it never makes the Shop Degraded: the shop works unscraped.
pub const MONITORED: &str = "Monitored";

/// Condition type: fault flags are injected (only when the Shop has `spec.faults`). It only
/// informs: a drill is not a degraded Shop.
pub const FAULTS_ACTIVE: &str = "FaultsActive";

/// Condition type: the Secret the gateway serves TLS from (`spec.components.gateway.tls`) exists
/// with both keys (only when the Shop asks for TLS).
pub const GATEWAY_TLS_READY: &str = "GatewayTlsReady";

/// The `GatewayTlsReady` condition: without the Secret the gateway pods cannot start (they wait
/// in `ContainerCreating`, which says nothing of why), so the Shop names the Secret and what is
/// missing. The gateway's own readiness still decides `Available`.
pub fn gateway_tls_condition(
    secret: &str,
    check: SecretCheck,
    generation: Option<i64>,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> Condition {
    let (ok, reason, message) = match check {
        SecretCheck::Present => (
            true,
            "SecretFound",
            format!("the gateway serves the certificate of Secret {secret:?}"),
        ),
        SecretCheck::Missing => (
            false,
            "SecretMissing",
            format!(
                "Secret {secret:?} named by spec.components.gateway.tls.secretName does not exist in the Shop's namespace; the gateway pods wait for it"
            ),
        ),
        SecretCheck::KeyMissing => (
            false,
            "SecretKeyMissing",
            format!(
                "Secret {secret:?} named by spec.components.gateway.tls.secretName lacks tls.crt or tls.key; the gateway pods wait for them"
            ),
        ),
    };
    condition(
        GATEWAY_TLS_READY,
        ok,
        reason,
        message,
        generation,
        previous,
        now,
    )
}

/// The `Exposed` condition, appended after the others when the Shop asks for an Ingress or an
/// HTTPRoute: True naming the object once applied, False with what to install when the cluster
/// does not serve the API, False `NotApplied` when the apply step failed before it (the
/// `Degraded` condition quotes the error).
pub fn exposure_condition(
    state: &ExposureState,
    applied: bool,
    generation: Option<i64>,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> Condition {
    let (ok, reason, message) = match state {
        ExposureState::ApiMissing(kind) => (false, kind.missing_reason(), kind.missing_message()),
        ExposureState::Planned { kind, name, detail } if applied => (
            true,
            match kind {
                ExposureKind::Ingress => "IngressReady",
                ExposureKind::HttpRoute => "HTTPRouteReady",
            },
            format!("{} {name} routes {detail} to the gateway", kind.kind()),
        ),
        ExposureState::Planned { kind, name, .. } => (
            false,
            "NotApplied",
            format!("{} {name} is not applied yet", kind.kind()),
        ),
    };
    condition(EXPOSED, ok, reason, message, generation, previous, now)
}

/// The `FaultsActive` condition: which fault flags the components are told to inject.
pub fn faults_condition(
    faults: &FaultsSpec,
    generation: Option<i64>,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> Condition {
    let on = faults.active();
    let (ok, reason, message) = if on.is_empty() {
        (false, "NoFaults", "spec.faults sets no flag".to_string())
    } else {
        (
            true,
            "FaultsInjected",
            format!(
                "injecting {} (the pods pick them up when the kubelet refreshes <shop>-faults)",
                on.join(", ")
            ),
        )
    };
    condition(
        FAULTS_ACTIVE,
        ok,
        reason,
        message,
        generation,
        previous,
        now,
    )
}

/// The `Monitored` condition: whether the ServiceMonitor the Shop asks for was created.
pub fn monitoring_condition(
    state: &MonitoringState,
    applied: bool,
    generation: Option<i64>,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> Condition {
    let (ok, reason, message) = match state {
        MonitoringState::ApiMissing => (
            false,
            "ServiceMonitorApiMissing",
            "spec.monitoring.serviceMonitor: the cluster does not serve monitoring.coreos.com/v1 \
             ServiceMonitors (install the Prometheus Operator's CRDs); nothing was created"
                .to_string(),
        ),
        MonitoringState::Planned(name) if applied => (
            true,
            "ServiceMonitorReady",
            format!(
                "ServiceMonitor {name} selects every component's Service (/metrics on port http)"
            ),
        ),
        MonitoringState::Planned(name) => (
            false,
            "NotApplied",
            format!("ServiceMonitor {name} is not applied yet"),
        ),
    };
    condition(MONITORED, ok, reason, message, generation, previous, now)
}

/// What the reconcile achieved, besides the Deployments it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every object was applied.
    Applied,
    /// `spec.paused`: nothing was applied.
    Paused,
    /// The spec was refused by validation (message names the field).
    Invalid(String),
    /// Applying failed (message from the API server).
    Failed(String),
}

/// One enabled component as observed.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Which component.
    pub component: Component,
    /// Replicas asked for.
    pub desired: i32,
    /// The Deployment as returned by the API server, if it exists.
    pub deployment: Option<&'a Deployment>,
}

/// What the operator found for the Secret key an external store points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretCheck {
    /// The Secret exists and has the key.
    Present,
    /// No Secret of that name in the Shop's namespace.
    Missing,
    /// The Secret exists without the key.
    KeyMissing,
}

/// How a store in use was found.
#[derive(Clone, Debug)]
pub enum StoreState<'a> {
    /// Managed: its StatefulSet as returned by the API server, if it exists.
    Managed(Option<&'a StatefulSet>),
    /// External through a Secret key (MySQL, MongoDB).
    ExternalSecret {
        /// `urlSecretRef`.
        secret: SecretKeyRef,
        /// What the operator found.
        check: SecretCheck,
    },
    /// External address (Kafka bootstrap servers, Zipkin endpoint): not checked.
    ExternalAddress(String),
}

/// One backing store in use, as observed.
#[derive(Clone, Debug)]
pub struct ObservedStore<'a> {
    /// Which store.
    pub store: Store,
    /// What was found.
    pub state: StoreState<'a>,
}

/// A store's condition: (ready, reason, message).
fn store_condition(o: &ObservedStore<'_>) -> (bool, &'static str, String) {
    let s = o.store;
    match &o.state {
        StoreState::Managed(None) => (
            false,
            "Provisioning",
            format!("managed {s}: its StatefulSet does not exist yet"),
        ),
        StoreState::Managed(Some(sts)) => {
            let name = sts.metadata.name.as_deref().unwrap_or_default();
            let st = sts.status.as_ref();
            let seen = match (
                sts.metadata.generation,
                st.and_then(|s| s.observed_generation),
            ) {
                (Some(g), Some(og)) => og >= g,
                _ => false,
            };
            let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = st.and_then(|s| s.ready_replicas).unwrap_or(0);
            let rolled = st.is_some_and(|s| {
                s.update_revision.is_none() || s.current_revision == s.update_revision
            });
            if seen && ready >= want && rolled {
                (
                    true,
                    "Ready",
                    format!("managed {s}: StatefulSet {name} is ready"),
                )
            } else {
                (
                    false,
                    "Provisioning",
                    format!("managed {s}: waiting for StatefulSet {name} ({ready}/{want} ready)"),
                )
            }
        }
        StoreState::ExternalSecret { secret, check } => match check {
            SecretCheck::Present => (
                true,
                "SecretFound",
                format!(
                    "external {s}: the URL is in Secret {:?} key {:?}",
                    secret.name, secret.key
                ),
            ),
            SecretCheck::Missing => (
                false,
                "SecretMissing",
                format!(
                    "Secret {:?} named by spec.backing.{s}.urlSecretRef does not exist in the Shop's namespace",
                    secret.name
                ),
            ),
            SecretCheck::KeyMissing => (
                false,
                "SecretKeyMissing",
                format!(
                    "Secret {:?} named by spec.backing.{s}.urlSecretRef has no key {:?}",
                    secret.name, secret.key
                ),
            ),
        },
        StoreState::ExternalAddress(a) => (true, "External", format!("external {s}: {a}")),
    }
}

fn counts(o: &Observed<'_>) -> ComponentStatus {
    let st = o.deployment.and_then(|d| d.status.as_ref());
    let image = o
        .deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    ComponentStatus {
        name: o.component.name().to_string(),
        desired: o.desired,
        ready: st.and_then(|s| s.ready_replicas).unwrap_or(0),
        updated: st.and_then(|s| s.updated_replicas).unwrap_or(0),
        image,
    }
}

/// The Deployment controller has seen the latest spec and the rollout is complete.
fn rolled_out(o: &Observed<'_>) -> bool {
    let Some(d) = o.deployment else { return false };
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    let seen = match (d.metadata.generation, st.observed_generation) {
        (Some(g), Some(og)) => og >= g,
        _ => false,
    };
    let n = o.desired;
    seen && st.updated_replicas.unwrap_or(0) >= n
        && st.ready_replicas.unwrap_or(0) >= n
        && st.available_replicas.unwrap_or(0) >= n
        && st.replicas.unwrap_or(0) <= n
}

/// A rollout that the Deployment controller itself declared stuck.
fn stuck(o: &Observed<'_>) -> Option<String> {
    let conds = o.deployment?.status.as_ref()?.conditions.as_ref()?;
    conds.iter().find_map(|c| {
        let bad = (c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            || (c.type_ == "ReplicaFailure" && c.status == "True");
        bad.then(|| {
            format!(
                "{}: {}",
                o.component,
                c.message.clone().unwrap_or_else(|| c.type_.clone())
            )
        })
    })
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Computes the status. `now` is only used for conditions whose status flips.
pub fn compute(
    generation: Option<i64>,
    observed: &[Observed<'_>],
    stores: &[ObservedStore<'_>],
    outcome: &Outcome,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> ShopStatus {
    let components: Vec<ComponentStatus> = observed.iter().map(counts).collect();
    let components_not_ready: Vec<String> = observed
        .iter()
        .zip(&components)
        .filter(|(o, _)| !rolled_out(o))
        .map(|(_, c)| format!("{} {}/{}", c.name, c.ready, c.desired))
        .collect();
    let ready_count = observed.len() - components_not_ready.len();
    let stuck: Vec<String> = observed.iter().filter_map(stuck).collect();
    let mut ordered: Vec<&ObservedStore<'_>> = stores.iter().collect();
    ordered.sort_by_key(|o| o.store);
    let store_conditions: Vec<(Store, (bool, &'static str, String))> = ordered
        .iter()
        .map(|o| (o.store, store_condition(o)))
        .collect();
    let stores_provisioning: Vec<String> = store_conditions
        .iter()
        .filter(|(_, (ready, reason, _))| !ready && *reason == "Provisioning")
        .map(|(s, _)| s.name().to_string())
        .collect();
    let store_problems: Vec<(&'static str, &String)> = store_conditions
        .iter()
        .filter(|(_, (ready, reason, _))| !ready && *reason != "Provisioning")
        .map(|(_, (_, reason, msg))| (*reason, msg))
        .collect();
    let mut not_ready = components_not_ready.clone();
    not_ready.extend(stores_provisioning.iter().cloned());
    let all_ready = not_ready.is_empty() && store_problems.is_empty();

    let (degraded, degraded_reason, degraded_msg) = match outcome {
        Outcome::Invalid(m) => (true, "InvalidSpec", m.clone()),
        Outcome::Failed(m) => (true, "ApplyFailed", m.clone()),
        _ if !store_problems.is_empty() => (
            true,
            store_problems[0].0,
            store_problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ if !stuck.is_empty() => (true, "RolloutStuck", stuck.join("; ")),
        _ => (false, "AsExpected", "no problem found".to_string()),
    };
    let (progressing, progressing_reason, progressing_msg) = match outcome {
        Outcome::Paused => (
            false,
            "Paused",
            "spec.paused is true: the operator changes nothing".to_string(),
        ),
        Outcome::Invalid(_) => (false, "InvalidSpec", "fix the spec to continue".to_string()),
        _ if not_ready.is_empty() => (
            false,
            "RolloutComplete",
            "every component runs its desired replicas".to_string(),
        ),
        _ => (
            true,
            "RollingOut",
            format!("waiting for {}", not_ready.join(", ")),
        ),
    };
    let (available_reason, available_msg) = if all_ready {
        (
            "AllComponentsReady",
            format!("{ready_count}/{} components ready", observed.len()),
        )
    } else if components_not_ready.is_empty() {
        let mut waiting = stores_provisioning.clone();
        waiting.extend(store_problems.iter().map(|(_, m)| m.to_string()));
        (
            "StoresNotReady",
            format!("stores not ready: {}", waiting.join(", ")),
        )
    } else {
        (
            "ComponentsNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        )
    };
    let phase = match outcome {
        Outcome::Invalid(_) => Phase::Invalid,
        Outcome::Paused => Phase::Paused,
        _ if degraded => Phase::Degraded,
        _ if all_ready => Phase::Available,
        _ => Phase::Progressing,
    };
    ShopStatus {
        observed_generation: generation,
        phase: Some(phase),
        ready_components: Some(format!("{ready_count}/{}", observed.len())),
        components,
        conditions: [
            condition(
                AVAILABLE,
                all_ready,
                available_reason,
                available_msg,
                generation,
                previous,
                now,
            ),
            condition(
                PROGRESSING,
                progressing,
                progressing_reason,
                progressing_msg,
                generation,
                previous,
                now,
            ),
            condition(
                DEGRADED,
                degraded,
                degraded_reason,
                degraded_msg,
                generation,
                previous,
                now,
            ),
        ]
        .into_iter()
        .chain(
            store_conditions
                .into_iter()
                .map(|(store, (ready, reason, msg))| {
                    condition(
                        store.condition_type(),
                        ready,
                        reason,
                        msg,
                        generation,
                        previous,
                        now,
                    )
                }),
        )
        .collect(),
    }
}

/// The status after a reconcile that failed before it could observe the children (listing them,
/// reading a Secret, discovery): what was known before is kept, and `Degraded` says which step
/// failed and why, so a Shop never sits without a status while the operator retries. The three
/// Shop conditions are always present (a first reconcile has nothing to keep).
pub fn reconcile_failed(
    generation: Option<i64>,
    message: String,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> ShopStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.phase = Some(Phase::Degraded);
    let kept = |type_: &str| {
        previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .cloned()
    };
    let available = kept(AVAILABLE).unwrap_or_else(|| {
        condition(
            AVAILABLE,
            false,
            "NotReconciled",
            "the operator has not reconciled this Shop yet".to_string(),
            generation,
            previous,
            now,
        )
    });
    let progressing = kept(PROGRESSING).unwrap_or_else(|| {
        condition(
            PROGRESSING,
            true,
            "Reconciling",
            "the operator retries the failed step".to_string(),
            generation,
            previous,
            now,
        )
    });
    let degraded = condition(
        DEGRADED,
        true,
        "ReconcileFailed",
        message,
        generation,
        previous,
        now,
    );
    let others: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| ![AVAILABLE, PROGRESSING, DEGRADED].contains(&c.type_.as_str()))
        .cloned()
        .collect();
    status.conditions = [available, progressing, degraded]
        .into_iter()
        .chain(others)
        .collect();
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::jiff::Timestamp;

    fn dep(generation: i64, observed: i64, ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(ready.max(1)),
            ready_replicas: Some(ready),
            updated_replicas: Some(ready),
            available_replicas: Some(ready),
            ..Default::default()
        });
        d
    }

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn all_ready_is_available_and_recomputing_keeps_transition_times() {
        let d = dep(1, 1, 1);
        let obs = [Observed {
            component: Component::Registry,
            desired: 1,
            deployment: Some(&d),
        }];
        let first = compute(Some(3), &obs, &[], &Outcome::Applied, None, &t(100));
        assert_eq!(first.phase, Some(Phase::Available));
        assert_eq!(first.ready_components.as_deref(), Some("1/1"));
        assert_eq!(first.conditions[0].status, "True");
        assert_eq!(first.conditions[0].observed_generation, Some(3));
        let again = compute(Some(3), &obs, &[], &Outcome::Applied, Some(&first), &t(999));
        assert_eq!(
            again, first,
            "same world must give an identical status (no write, no loop)"
        );
    }

    #[test]
    fn unobserved_generation_or_missing_pods_is_progressing_and_flip_moves_the_time() {
        let stale = dep(2, 1, 1);
        let obs = [Observed {
            component: Component::Product,
            desired: 1,
            deployment: Some(&stale),
        }];
        let ok = compute(
            Some(1),
            &[Observed {
                component: Component::Product,
                desired: 1,
                deployment: Some(&dep(1, 1, 1)),
            }],
            &[],
            &Outcome::Applied,
            None,
            &t(10),
        );
        let s = compute(Some(2), &obs, &[], &Outcome::Applied, Some(&ok), &t(20));
        assert_eq!(s.phase, Some(Phase::Progressing));
        let avail = &s.conditions[0];
        assert_eq!(
            (avail.status.as_str(), avail.last_transition_time.clone()),
            ("False", t(20))
        );
        assert!(
            s.conditions[1].message.contains("product 1/1"),
            "{}",
            s.conditions[1].message
        );
        let missing = [Observed {
            component: Component::Order,
            desired: 2,
            deployment: None,
        }];
        let s = compute(Some(2), &missing, &[], &Outcome::Applied, None, &t(20));
        assert_eq!(s.ready_components.as_deref(), Some("0/1"));
        assert_eq!(s.components[0].desired, 2);
    }

    #[test]
    fn failures_and_pause_have_their_own_phase_and_reason() {
        let s = compute(
            Some(1),
            &[],
            &[],
            &Outcome::Invalid("spec.backing.mysql is required".into()),
            None,
            &t(1),
        );
        assert_eq!(s.phase, Some(Phase::Invalid));
        assert_eq!(s.conditions[2].status, "True");
        assert_eq!(s.conditions[2].reason, "InvalidSpec");
        let s = compute(Some(1), &[], &[], &Outcome::Paused, None, &t(1));
        assert_eq!(s.phase, Some(Phase::Paused));
        assert_eq!(s.conditions[1].reason, "Paused");
        let s = compute(
            Some(1),
            &[],
            &[],
            &Outcome::Failed("forbidden".into()),
            None,
            &t(1),
        );
        assert_eq!(s.phase, Some(Phase::Degraded));
    }
    fn sts(generation: i64, observed: i64, ready: i32) -> StatefulSet {
        use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
        let mut s = StatefulSet::default();
        s.metadata.name = Some("corner-mysql".into());
        s.metadata.generation = Some(generation);
        s.spec = Some(StatefulSetSpec {
            replicas: Some(1),
            ..Default::default()
        });
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(observed),
            replicas: 1,
            ready_replicas: Some(ready),
            current_revision: Some("r1".into()),
            update_revision: Some("r1".into()),
            ..Default::default()
        });
        s
    }

    fn cond<'s>(s: &'s ShopStatus, type_: &str) -> &'s Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_shop_is_available_only_once_its_managed_stores_are_ready() {
        let d = dep(1, 1, 1);
        let obs = [Observed {
            component: Component::Inventory,
            desired: 1,
            deployment: Some(&d),
        }];
        let starting = sts(1, 1, 0);
        let stores = [ObservedStore {
            store: Store::Mysql,
            state: StoreState::Managed(Some(&starting)),
        }];
        let s = compute(Some(1), &obs, &stores, &Outcome::Applied, None, &t(10));
        assert_eq!(s.phase, Some(Phase::Progressing));
        assert_eq!(s.ready_components.as_deref(), Some("1/1"));
        let avail = cond(&s, AVAILABLE);
        assert_eq!(
            (avail.status.as_str(), avail.reason.as_str()),
            ("False", "StoresNotReady")
        );
        let mysql = cond(&s, "MysqlReady");
        assert_eq!(
            (mysql.status.as_str(), mysql.reason.as_str()),
            ("False", "Provisioning")
        );
        assert!(
            mysql.message.contains("corner-mysql (0/1 ready)"),
            "{}",
            mysql.message
        );
        assert_eq!(cond(&s, PROGRESSING).status, "True");

        let ready = sts(1, 1, 1);
        let stores = [ObservedStore {
            store: Store::Mysql,
            state: StoreState::Managed(Some(&ready)),
        }];
        let s2 = compute(Some(1), &obs, &stores, &Outcome::Applied, Some(&s), &t(20));
        assert_eq!(s2.phase, Some(Phase::Available));
        let mysql = cond(&s2, "MysqlReady");
        assert_eq!(
            (mysql.status.as_str(), mysql.reason.as_str()),
            ("True", "Ready")
        );
        assert_eq!(mysql.last_transition_time, t(20));
        let again = compute(Some(1), &obs, &stores, &Outcome::Applied, Some(&s2), &t(99));
        assert_eq!(again, s2, "same world, identical status");

        // A StatefulSet the controller has not seen yet is not ready, whatever its pods say.
        let stale = sts(2, 1, 1);
        let stores = [ObservedStore {
            store: Store::Mysql,
            state: StoreState::Managed(Some(&stale)),
        }];
        let s3 = compute(Some(2), &obs, &stores, &Outcome::Applied, Some(&s2), &t(30));
        assert_eq!(cond(&s3, "MysqlReady").status, "False");
        let missing = [ObservedStore {
            store: Store::Mysql,
            state: StoreState::Managed(None),
        }];
        let s4 = compute(Some(2), &obs, &missing, &Outcome::Applied, None, &t(30));
        assert_eq!(cond(&s4, "MysqlReady").reason, "Provisioning");
    }

    #[test]
    fn a_missing_external_secret_degrades_the_shop_naming_the_secret_and_field() {
        let d = dep(1, 1, 1);
        let obs = [Observed {
            component: Component::Product,
            desired: 1,
            deployment: Some(&d),
        }];
        let secret = SecretKeyRef {
            name: "mongo-creds".into(),
            key: "url".into(),
        };
        // Given out of order: conditions come in a fixed order anyway.
        let stores = |check| {
            [
                ObservedStore {
                    store: Store::Kafka,
                    state: StoreState::ExternalAddress("kafka:9092".into()),
                },
                ObservedStore {
                    store: Store::Mongodb,
                    state: StoreState::ExternalSecret {
                        secret: secret.clone(),
                        check,
                    },
                },
            ]
        };
        let s = compute(
            Some(1),
            &obs,
            &stores(SecretCheck::Missing),
            &Outcome::Applied,
            None,
            &t(1),
        );
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            vec![
                AVAILABLE,
                PROGRESSING,
                DEGRADED,
                "MongodbReady",
                "KafkaReady"
            ]
        );
        assert_eq!(s.phase, Some(Phase::Degraded));
        let degraded = cond(&s, DEGRADED);
        assert_eq!(degraded.reason, "SecretMissing");
        assert_eq!(
            degraded.message,
            "Secret \"mongo-creds\" named by spec.backing.mongodb.urlSecretRef does not exist in the Shop's namespace"
        );
        assert_eq!(cond(&s, "MongodbReady").reason, "SecretMissing");
        assert_eq!(cond(&s, "KafkaReady").status, "True");
        assert_eq!(
            cond(&s, PROGRESSING).status,
            "False",
            "nothing to wait for but the user"
        );

        let s = compute(
            Some(1),
            &obs,
            &stores(SecretCheck::KeyMissing),
            &Outcome::Applied,
            Some(&s),
            &t(2),
        );
        assert_eq!(cond(&s, DEGRADED).reason, "SecretKeyMissing");
        assert!(cond(&s, DEGRADED).message.contains("has no key \"url\""));

        // The Secret appears: Available again.
        let s = compute(
            Some(1),
            &obs,
            &stores(SecretCheck::Present),
            &Outcome::Applied,
            Some(&s),
            &t(3),
        );
        assert_eq!(s.phase, Some(Phase::Available));
        assert_eq!(cond(&s, "MongodbReady").reason, "SecretFound");
        assert_eq!(cond(&s, DEGRADED).status, "False");
    }

    #[test]
    fn the_exposed_condition_names_the_object_or_what_to_install_and_keeps_its_time() {
        use crate::exposure::{ExposureKind, ExposureState};
        let missing = ExposureState::ApiMissing(ExposureKind::HttpRoute);
        let c = exposure_condition(&missing, true, Some(2), None, &t(10));
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (EXPOSED, "False", "GatewayApiMissing")
        );
        assert!(
            c.message.contains("spec.components.gateway.httpRoute"),
            "{}",
            c.message
        );
        assert!(c.message.contains("Gateway API CRDs"), "{}", c.message);
        let c = exposure_condition(
            &ExposureState::ApiMissing(ExposureKind::Ingress),
            true,
            Some(2),
            None,
            &t(10),
        );
        assert_eq!(c.reason, "IngressApiMissing");

        let planned = ExposureState::Planned {
            kind: ExposureKind::Ingress,
            name: "mall-gateway".into(),
            detail: "https://shop.example/".into(),
        };
        let before = ShopStatus {
            conditions: vec![exposure_condition(&missing, true, Some(2), None, &t(10))],
            ..Default::default()
        };
        let c = exposure_condition(&planned, true, Some(3), Some(&before), &t(20));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            (
                "True",
                "IngressReady",
                "Ingress mall-gateway routes https://shop.example/ to the gateway"
            )
        );
        assert_eq!(c.last_transition_time, t(20), "flipped: new time");
        let after = ShopStatus {
            conditions: vec![c.clone()],
            ..Default::default()
        };
        let again = exposure_condition(&planned, true, Some(3), Some(&after), &t(99));
        assert_eq!(again, c, "same world, same condition");
        let failed = exposure_condition(&planned, false, Some(3), Some(&after), &t(30));
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("False", "NotApplied")
        );
    }

    #[test]
    fn a_failed_step_keeps_what_was_known_and_says_which_step_failed() {
        // A first reconcile that fails: the Shop still gets a status naming the step.
        let first = reconcile_failed(
            Some(1),
            "listing Deployment: timed out".into(),
            None,
            &t(10),
        );
        assert_eq!(first.phase, Some(Phase::Degraded));
        assert_eq!(first.observed_generation, Some(1));
        let types: Vec<&str> = first.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [AVAILABLE, PROGRESSING, DEGRADED]);
        assert_eq!(first.conditions[0].status, "False");
        assert_eq!(first.conditions[2].reason, "ReconcileFailed");
        assert_eq!(first.conditions[2].message, "listing Deployment: timed out");

        // A later failure keeps the components, Available and the store conditions as they were.
        let d = dep(1, 1, 1);
        let observed = [Observed {
            component: Component::Registry,
            desired: 1,
            deployment: Some(&d),
        }];
        let ok = compute(Some(1), &observed, &[], &Outcome::Applied, None, &t(0));
        let failed = reconcile_failed(
            Some(2),
            "reading Secret x: forbidden".into(),
            Some(&ok),
            &t(20),
        );
        assert_eq!(failed.components, ok.components);
        assert_eq!(failed.conditions[0], ok.conditions[0]);
        assert_eq!(failed.conditions[2].status, "True");
        assert_eq!(failed.conditions[2].last_transition_time, t(20));
        assert_eq!(failed.observed_generation, Some(2));
    }
}
