//! Optional leader election through a `coordination.k8s.io/v1` Lease, so that more than one
//! operator replica (or a RollingUpdate surge) never has two instances writing the same objects.
//! Optimistic concurrency does the locking: every take-over or renewal is a `replace` carrying
//! the resourceVersion that was read, so of two racing candidates exactly one wins.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the Lease lives and how long it lasts.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace (the operator's own).
    pub namespace: String,
    /// This instance's identity (the pod name).
    pub identity: String,
    /// How long a holder that stops renewing keeps the Lease.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
}

/// Leader election failures.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another instance took the Lease, or renewals failed for longer than the lease duration.
    #[error("lost the leader lease {0}")]
    Lost(String),
    /// The API refused a Lease operation outright.
    #[error("lease {name}: {source}")]
    Api {
        /// Lease name.
        name: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
}

enum Attempt {
    Acquired,
    HeldByOther(String),
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    now.duration_since(renewed) > SignedDuration::from_secs(secs)
}

async fn try_acquire(api: &Api<Lease>, s: &LeaseSettings) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let secs = i32::try_from(s.duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    match api.get_opt(&s.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Acquired),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldByOther("(just created)".into()))
                }
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let mine = holder == s.identity;
            if !mine && !holder.is_empty() && !expired(spec, now) {
                return Ok(Attempt::HeldByOther(holder));
            }
            if !mine {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(s.identity.clone());
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(MicroTime(now));
            match api.replace(&s.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Acquired),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldByOther("(raced)".into()))
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this instance holds the Lease. Returns `Ok(false)` if shutdown came first.
pub async fn acquire(
    client: &Client,
    s: &LeaseSettings,
    shutdown: &CancellationToken,
) -> Result<bool, LeaseError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let mut logged = false;
    loop {
        match try_acquire(&api, s).await {
            Ok(Attempt::Acquired) => {
                info!(lease = %s.name, identity = %s.identity, "became leader");
                return Ok(true);
            }
            Ok(Attempt::HeldByOther(holder)) => {
                if !logged {
                    info!(lease = %s.name, %holder, "waiting for the leader lease");
                    logged = true;
                }
            }
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                return Err(LeaseError::Api {
                    name: s.name.clone(),
                    source: kube::Error::Api(e),
                });
            }
            Err(e) => warn!(error = %e, "lease attempt failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(s.renew_every) => {}
        }
    }
}

/// Renews the Lease until shutdown. Returns `Err(Lost)` when another instance holds it or when
/// renewals kept failing for a whole lease duration (then this instance must stop writing).
pub async fn hold(
    client: Client,
    s: LeaseSettings,
    shutdown: CancellationToken,
) -> Result<(), LeaseError> {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(s.renew_every) => {}
        }
        match try_acquire(&api, &s).await {
            Ok(Attempt::Acquired) => last_ok = tokio::time::Instant::now(),
            Ok(Attempt::HeldByOther(holder)) => {
                return Err(LeaseError::Lost(format!(
                    "{} (now held by {holder})",
                    s.name
                )));
            }
            Err(e) => {
                warn!(error = %e, "lease renewal failed");
                if last_ok.elapsed() >= s.duration {
                    return Err(LeaseError::Lost(s.name.clone()));
                }
            }
        }
    }
}

/// Gives the Lease up at shutdown (if still ours) so a standby takes over at once instead of
/// after the lease duration. Best effort: on failure the Lease simply expires.
pub async fn release(client: &Client, s: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&s.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => info!(lease = %s.name, "released the leader lease"),
        Err(e) => warn!(error = %e, "could not release the leader lease; it will expire"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_within_its_duration_is_expired() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = |renewed: i64| LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&spec(990), now));
        assert!(expired(&spec(980), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
