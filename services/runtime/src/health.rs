//! Liveness and readiness: services register named dependency checks (database, broker...) and
//! `/health/ready` answers 200 only while all of them pass and the process is not shutting down.
//! [`Readiness::prepare`] lets a service start before its store answers: unready, not exiting.

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Readiness checks of this process; cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<Vec<(String, Check)>>>,
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.checks.read().iter().map(|(n, _)| n.clone()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// Outcome of running every check.
#[derive(Debug, Clone)]
pub struct ReadinessReport {
    /// True when every check passed and the process is not draining.
    pub ready: bool,
    /// JSON body: `{"status":"UP|DOWN","checks":{name:{"status":..,"error"?:..}}}`.
    pub body: Value,
}

/// Bound on a single check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    /// Adds (or replaces) a named check; `Err(reason)` means not ready.
    pub fn add<F, Fut>(&self, name: impl Into<String>, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let name = name.into();
        let check: Check = Arc::new(move || Box::pin(check()));
        let mut checks = self.checks.write();
        checks.retain(|(n, _)| *n != name);
        checks.push((name, check));
    }

    /// Prepares a store in the background and gates readiness on it.
    ///
    /// Why: on Kubernetes a pod often starts before its store (the Shop's own database pod, a
    /// restarted server). Exiting made the pod crash-loop with the reason in an old log. Here
    /// `prepare` (create the database, migrate, create indexes) runs until it succeeds, retried
    /// with backoff (0.5 s doubling to 10 s) and each failure logged with `store`, `target` (an
    /// address, never credentials) and the error; until then the check `store` fails with that
    /// reason, afterwards it runs `check` (a ping). Stops retrying on `stop`.
    ///
    /// Returns a token cancelled once `prepare` succeeded: background work that needs the schema
    /// (an outbox relay, a purge, a reconciler) waits on it instead of failing, and logging, until
    /// the migrations have run.
    pub fn prepare<P, PF, C, CF>(
        &self,
        store: &'static str,
        target: String,
        prepare: P,
        check: C,
        stop: CancellationToken,
    ) -> CancellationToken
    where
        P: Fn() -> PF + Send + 'static,
        PF: Future<Output = Result<(), String>> + Send,
        C: Fn() -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<(), String>> + Send + 'static,
    {
        let pending = Arc::new(Mutex::new(Some(format!("{target}: not prepared yet"))));
        let state = pending.clone();
        let prepared = CancellationToken::new();
        let done = prepared.clone();
        tokio::spawn(async move {
            let ready = crate::retry::until_ok(&stop, prepare, |e: &String, wait| {
                tracing::warn!(store, %target, error = %e, retry_in = ?wait, "store not ready; the service stays unready");
                *state.lock() = Some(format!("{target}: {e}"));
            })
            .await;
            if ready.is_some() {
                *state.lock() = None;
                tracing::info!(store, %target, "store ready");
                done.cancel();
            }
        });
        let check = Arc::new(check);
        self.add(store, move || {
            let reason = pending.lock().clone();
            let check = check.clone();
            async move {
                match reason {
                    Some(r) => Err(format!("{store}: {r}")),
                    None => check().await.map_err(|e| format!("{store}: {e}")),
                }
            }
        });
        prepared
    }

    /// Marks the process as draining: readiness fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Runs all checks concurrently, each bounded to 2 s.
    pub async fn check(&self) -> ReadinessReport {
        let checks: Vec<(String, Check)> = self.checks.read().clone();
        let results = futures::future::join_all(checks.into_iter().map(|(name, c)| async move {
            let r = match tokio::time::timeout(CHECK_TIMEOUT, c()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (name, r)
        }))
        .await;
        let mut ready = !self.is_draining();
        let mut detail = Map::new();
        for (name, r) in results {
            match r {
                Ok(()) => {
                    detail.insert(name, json!({"status": "UP"}));
                }
                Err(e) => {
                    ready = false;
                    detail.insert(name, json!({"status": "DOWN", "error": e}));
                }
            }
        }
        if self.is_draining() {
            detail.insert(
                "shutdown".into(),
                json!({"status": "DOWN", "error": "draining"}),
            );
        }
        ReadinessReport {
            ready,
            body: json!({"status": if ready { "UP" } else { "DOWN" }, "checks": detail}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn ready_only_when_all_checks_pass() {
        let r = Readiness::default();
        assert!(r.check().await.ready);
        let up = Arc::new(AtomicBool::new(false));
        let u = up.clone();
        r.add("mysql", move || {
            let u = u.clone();
            async move {
                if u.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("connection refused".into())
                }
            }
        });
        let rep = r.check().await;
        assert!(!rep.ready);
        assert_eq!(rep.body["checks"]["mysql"]["error"], "connection refused");
        up.store(true, Ordering::SeqCst);
        assert!(r.check().await.ready);
        r.set_draining();
        assert!(!r.check().await.ready);
    }
}
