//! Liveness of the Idempotency-Keys this process is working on: a heartbeat that keeps their
//! IN_FLIGHT rows fresh, so a retry can tell a request still running from one whose process died.
//!
//! A client retrying with the key of a request in flight gets `409 idempotency-key-in-flight`
//! until the key is stale (`IDEMPOTENCY_STALE_SECS`); then the retry takes the request over
//! under its order number. Without a heartbeat the stale window had to outlast the slowest live
//! request, so it was 30 s, and every order caught on a killed pod kept its client waiting that
//! long (the chaos soak measured 32-35 s). With one, a key held by a live process never goes
//! stale, and the window only has to outlast a few missed beats: the process refreshes every key
//! it holds every quarter of the window, in one UPDATE.
//!
//! Staleness remains a guess about liveness (a frozen or partitioned process looks dead), and a
//! wrong guess stays safe: both attempts use the same order number, the orders table's unique
//! key lets only one store it, and the loser settles its stock without releasing it
//! ([`crate::reconcile::settle_in_background`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use sqlx::{MySql, MySqlPool, QueryBuilder};
use tokio_util::sync::CancellationToken;

/// Most keys refreshed by one statement.
const KEYS_PER_STATEMENT: usize = 500;

/// The keys this process holds IN_FLIGHT (with how many of its requests hold each).
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<String, usize>>,
}

/// One request's hold on its key; dropping it (the request is over) stops the refreshes.
#[derive(Debug)]
pub struct Held {
    leases: Arc<Leases>,
    key: String,
}

impl Leases {
    /// Refreshes `key` from now until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, key: &str) -> Held {
        *self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default() += 1;
        Held {
            leases: self.clone(),
            key: key.to_owned(),
        }
    }

    /// The keys held right now.
    pub fn keys(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Refreshes the held keys every `every` until `stop`.
    pub async fn run(self: Arc<Self>, pool: MySqlPool, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let keys = self.keys();
            for chunk in keys.chunks(KEYS_PER_STATEMENT) {
                if let Err(e) = refresh(&pool, chunk).await {
                    tracing::warn!(error = %e, keys = chunk.len(), "cannot refresh in-flight Idempotency-Keys; a retry may take them over");
                }
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .leases
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Marks `keys` alive; a key that is DONE (or gone) is left alone.
async fn refresh(pool: &MySqlPool, keys: &[String]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "UPDATE idempotency_keys SET updated_at = NOW(6) WHERE state = 'IN_FLIGHT' AND idem_key IN (",
    );
    let mut sep = qb.separated(", ");
    for k in keys {
        sep.push_bind(k.as_str());
    }
    sep.push_unseparated(")");
    qb.build().execute(pool).await.map(|_| ())
}

/// How often keys are refreshed for a stale window of `stale`: four beats per window, so three
/// can be missed (a busy database, a paused process) before a live request looks dead.
pub fn heartbeat_every(stale: Duration) -> Duration {
    (stale / 4).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_until_every_request_holding_it_is_over() {
        let leases = Arc::new(Leases::default());
        let first = leases.hold("k");
        let second = leases.hold("k");
        let other = leases.hold("j");
        let mut keys = leases.keys();
        keys.sort();
        assert_eq!(keys, ["j", "k"]);
        drop(first);
        assert!(
            leases.keys().contains(&"k".to_owned()),
            "still held by the second"
        );
        drop(second);
        assert_eq!(leases.keys(), ["j"]);
        drop(other);
        assert!(leases.keys().is_empty());
    }

    #[test]
    fn four_beats_per_stale_window() {
        assert_eq!(
            heartbeat_every(Duration::from_secs(10)),
            Duration::from_millis(2500)
        );
        assert_eq!(
            heartbeat_every(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            heartbeat_every(Duration::from_millis(1)),
            Duration::from_millis(100)
        );
    }
}
