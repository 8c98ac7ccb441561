//! Step 4 of the pipeline (pure): computes the Shop's status from the Deployments the apply step
//! got back. Deterministic by construction: components in a fixed order, conditions in a fixed
//! order, and a condition's `lastTransitionTime` kept from the previous status unless its
//! `status` flips, so an unchanged world yields a byte-identical status and no write at all.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::component::Component;
use crate::crd::{ComponentStatus, ShopStatus};

/// Condition type: every enabled component has all its replicas ready on the current template.
pub const AVAILABLE: &str = "Available";
/// Condition type: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something is wrong that will not fix itself (bad spec, failed apply, stuck rollout).
pub const DEGRADED: &str = "Degraded";

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
    outcome: &Outcome,
    previous: Option<&ShopStatus>,
    now: &Time,
) -> ShopStatus {
    let components: Vec<ComponentStatus> = observed.iter().map(counts).collect();
    let not_ready: Vec<String> = observed
        .iter()
        .zip(&components)
        .filter(|(o, _)| !rolled_out(o))
        .map(|(_, c)| format!("{} {}/{}", c.name, c.ready, c.desired))
        .collect();
    let ready_count = observed.len() - not_ready.len();
    let stuck: Vec<String> = observed.iter().filter_map(stuck).collect();
    let all_ready = not_ready.is_empty();

    let (degraded, degraded_reason, degraded_msg) = match outcome {
        Outcome::Invalid(m) => (true, "InvalidSpec", m.clone()),
        Outcome::Failed(m) => (true, "ApplyFailed", m.clone()),
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
        _ if all_ready => (
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
    } else {
        (
            "ComponentsNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        )
    };
    let phase = match outcome {
        Outcome::Invalid(_) => "Invalid",
        Outcome::Paused => "Paused",
        _ if degraded => "Degraded",
        _ if all_ready => "Available",
        _ => "Progressing",
    };
    ShopStatus {
        observed_generation: generation,
        phase: Some(phase.to_string()),
        ready_components: Some(format!("{ready_count}/{}", observed.len())),
        components,
        conditions: vec![
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
        ],
    }
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
        let first = compute(Some(3), &obs, &Outcome::Applied, None, &t(100));
        assert_eq!(first.phase.as_deref(), Some("Available"));
        assert_eq!(first.ready_components.as_deref(), Some("1/1"));
        assert_eq!(first.conditions[0].status, "True");
        assert_eq!(first.conditions[0].observed_generation, Some(3));
        let again = compute(Some(3), &obs, &Outcome::Applied, Some(&first), &t(999));
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
            &Outcome::Applied,
            None,
            &t(10),
        );
        let s = compute(Some(2), &obs, &Outcome::Applied, Some(&ok), &t(20));
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
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
        let s = compute(Some(2), &missing, &Outcome::Applied, None, &t(20));
        assert_eq!(s.ready_components.as_deref(), Some("0/1"));
        assert_eq!(s.components[0].desired, 2);
    }

    #[test]
    fn failures_and_pause_have_their_own_phase_and_reason() {
        let s = compute(
            Some(1),
            &[],
            &Outcome::Invalid("spec.backing.mysql is required".into()),
            None,
            &t(1),
        );
        assert_eq!(s.phase.as_deref(), Some("Invalid"));
        assert_eq!(s.conditions[2].status, "True");
        assert_eq!(s.conditions[2].reason, "InvalidSpec");
        let s = compute(Some(1), &[], &Outcome::Paused, None, &t(1));
        assert_eq!(s.phase.as_deref(), Some("Paused"));
        assert_eq!(s.conditions[1].reason, "Paused");
        let s = compute(
            Some(1),
            &[],
            &Outcome::Failed("forbidden".into()),
            None,
            &t(1),
        );
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
    }
}
