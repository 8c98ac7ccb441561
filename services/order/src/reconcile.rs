//! The reservation reconciler: the durable backstop that gives back stock reserved in
//! shop-inventory for an order that was never stored.
//!
//! Placing an order reserves stock in inventory first and stores the order second. When the
//! second step fails the handler settles the reservation ([`settle_in_background`]), but only
//! in memory: if the process dies (crash, `kill -9`, OOM) between the two steps, or while it
//! retries, nothing would ever give that stock back. The reconciler closes that hole without adding a write to
//! the order path: every round it lists inventory's RESERVED reservations older than a grace
//! period, asks this service's own database which of them have an order, and releases the
//! rest through inventory's idempotent release (which leaves a tombstone, so a late retry of
//! the same order number is refused instead of leaking again).
//!
//! Safety rests on the grace period: it must be longer than any order can be in flight (the
//! inventory deadline, the database timeouts and the Idempotency-Key stale window), so a
//! reservation that old without an order belongs to a request that is gone. Ages are judged on
//! inventory's clock (its `createdAt` against its `Date` header), so clock skew between the two
//! services does not shorten the grace. An Idempotency-Key that could still take over the
//! order number is handled explicitly: an abandoned IN_FLIGHT key (older than the grace) is
//! deleted before the release, so a client retrying it gets a fresh order instead of a dead
//! number; a key claimed or taken over within the grace keeps its reservation until it settles.
//!
//! Several replicas may run it at once: releases are idempotent, the listing is read-only.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use shop_runtime::Metrics;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row};
use tokio_util::sync::CancellationToken;

use crate::inventory::{InventoryClient, ListError, ListedReservation, ReleaseError};

/// How the reconciler paces itself.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Pause between rounds.
    pub interval: Duration,
    /// A reservation younger than this (on inventory's clock) is never touched.
    pub grace: Duration,
    /// At start, reservations created longer ago than this are not examined (a previous
    /// process already did); after that the reconciler follows its own position.
    pub lookback: Duration,
    /// Reservations asked for per listing call.
    pub page_size: u32,
    /// Listing calls per round at most.
    pub max_pages: usize,
    /// Releases per round at most.
    pub max_releases: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            grace: Duration::from_secs(120),
            lookback: Duration::from_secs(24 * 3600),
            page_size: 500,
            // 50 000 reservations a round: a fresh process catches up on a busy day quickly,
            // and a quiet one costs a single listing call.
            max_pages: 100,
            max_releases: 200,
        }
    }
}

/// Counters the reconciler exposes on /metrics.
#[derive(Debug, Default, Clone)]
pub struct ReconcileStats {
    /// Orphaned reservations released.
    pub released: Counter,
    /// Rounds that stopped on an error (retried next round).
    pub failed_rounds: Counter,
}

impl ReconcileStats {
    /// Registers the counters (`order_reconcile_released_total`,
    /// `order_reconcile_failed_rounds_total`).
    pub fn register(&self, metrics: &Metrics) {
        let mut reg = metrics.registry();
        reg.register(
            "order_reconcile_released",
            "Inventory reservations released because no order was stored for them",
            self.released.clone(),
        );
        reg.register(
            "order_reconcile_failed_rounds",
            "Reconciler rounds stopped by an error (inventory or database unavailable); retried",
            self.failed_rounds.clone(),
        );
    }
}

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Inventory could not list its reservations.
    #[error(transparent)]
    List(#[from] ListError),
    /// Inventory could not release one.
    #[error("releasing the reservation of order {order_number}: {source}")]
    Release {
        /// The order number.
        order_number: String,
        /// Why.
        source: ReleaseError,
    },
    /// The order database could not be asked.
    #[error("order database: {0}")]
    Db(#[from] sqlx::Error),
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Reservations examined.
    pub examined: usize,
    /// Reservations released.
    pub released: usize,
    /// Reservations kept because an Idempotency-Key request may still complete them.
    pub deferred: usize,
    /// The round reached the end of the listing (nothing older than the grace left).
    pub caught_up: bool,
}

/// The reconciler of one process.
pub struct Reconciler {
    pool: MySqlPool,
    inventory: Arc<InventoryClient>,
    cfg: ReconcileConfig,
    stats: Arc<ReconcileStats>,
    /// Everything up to this order number (in inventory's listing order) is settled.
    after: Option<String>,
    /// Lower bound of the listing while there is no position yet.
    created_from: DateTime<Utc>,
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Reconciler {
    /// A reconciler over this service's pool and inventory client.
    pub fn new(
        pool: MySqlPool,
        inventory: Arc<InventoryClient>,
        cfg: ReconcileConfig,
        stats: Arc<ReconcileStats>,
    ) -> Self {
        let created_from = Utc::now()
            .checked_sub_signed(chrono_duration(cfg.lookback))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Self {
            pool,
            inventory,
            cfg,
            stats,
            after: None,
            created_from,
        }
    }

    /// Runs rounds every `interval` until `stop` is cancelled. Failures are logged and retried
    /// next round; a round in progress is abandoned at `stop` (every step is idempotent).
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(
            interval_secs = self.cfg.interval.as_secs(),
            grace_secs = self.cfg.grace.as_secs(),
            "reservation reconciler started"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.cfg.interval) => {}
            }
            let round = tokio::select! {
                () = stop.cancelled() => break,
                r = self.round() => r,
            };
            match round {
                Ok(r) if r.released > 0 || !r.caught_up => {
                    tracing::info!(
                        examined = r.examined,
                        released = r.released,
                        deferred = r.deferred,
                        caught_up = r.caught_up,
                        "reconciler round"
                    );
                }
                Ok(r) => tracing::debug!(examined = r.examined, "reconciler round"),
                Err(e) => {
                    self.stats.failed_rounds.inc();
                    tracing::warn!(error = %e, "reconciler round stopped; retrying next round");
                }
            }
        }
        tracing::info!("reservation reconciler stopped");
    }

    /// One round: walks inventory's RESERVED reservations older than the grace from the last
    /// settled position, releasing those without an order (bounded by the config).
    pub async fn round(&mut self) -> Result<RoundReport, ReconcileError> {
        let grace = chrono_duration(self.cfg.grace);
        let mut report = RoundReport::default();
        // The position of the next page; `self.after` only moves past settled reservations.
        let mut cursor = self.after.clone();
        let mut settled = true;
        for _ in 0..self.cfg.max_pages {
            let local_cutoff = Utc::now() - grace;
            let page = match self
                .inventory
                .list_reserved(
                    local_cutoff,
                    Some(self.created_from),
                    cursor.as_deref(),
                    self.cfg.page_size,
                )
                .await
            {
                Ok(p) => p,
                Err(e) if e.status == Some(400) && cursor.is_some() => {
                    // Our position names no reservation (inventory's data was reset): start over.
                    tracing::warn!(error = %e, "reconciler position unknown to inventory; restarting from the lookback window");
                    self.after = None;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            // Judge age on inventory's clock when it told us; never later than ours.
            let cutoff = page
                .inventory_now
                .map_or(local_cutoff, |now| (now - grace).min(local_cutoff));
            let full = page.reservations.len() >= self.cfg.page_size as usize;
            let old: Vec<&ListedReservation> = page
                .reservations
                .iter()
                .take_while(|r| r.created_at < cutoff)
                .collect();
            let reached_young = old.len() < page.reservations.len();
            let verdicts = self.judge(&old).await?;
            for r in old {
                report.examined += 1;
                cursor = Some(r.order_number.clone());
                match verdicts.get(r.order_number.as_str()) {
                    Some(Verdict::Stored) => {}
                    Some(Verdict::InFlight) => {
                        report.deferred += 1;
                        settled = false;
                        tracing::info!(order_number = %r.order_number, "reservation past the grace has an Idempotency-Key request that may still store it; checking again next round");
                    }
                    None => {
                        if report.released >= self.cfg.max_releases {
                            return Ok(report);
                        }
                        // Take the order number first: the orders table's unique key decides
                        // between us and a request that was merely frozen (SIGSTOP, a paused VM)
                        // and now stores its order. Whoever inserts first wins; the loser gets a
                        // duplicate key, so the stock is never released under a stored order.
                        if crate::store::abandon_order(&self.pool, &r.order_number).await? {
                            self.inventory
                                .release(&r.order_number)
                                .await
                                .map_err(|source| ReconcileError::Release {
                                    order_number: r.order_number.clone(),
                                    source,
                                })?;
                            report.released += 1;
                            self.stats.released.inc();
                            tracing::warn!(
                                order_number = %r.order_number,
                                created_at = %r.created_at,
                                lines = %serde_json::Value::from(r.lines.clone()),
                                "orphaned reservation released"
                            );
                        } else {
                            tracing::info!(order_number = %r.order_number, "order stored at the last moment; reservation kept");
                        }
                    }
                }
                if settled {
                    self.after = Some(r.order_number.clone());
                }
            }
            if reached_young || !full {
                report.caught_up = true;
                break;
            }
        }
        Ok(report)
    }

    /// Which of `candidates` must keep their stock: those with a stored order, and those whose
    /// Idempotency-Key request may still store one. Abandoned IN_FLIGHT keys of the others are
    /// deleted first, so they can neither be taken over after the release nor block a retry.
    async fn judge(
        &self,
        candidates: &[&ListedReservation],
    ) -> Result<BTreeMap<String, Verdict>, ReconcileError> {
        let mut verdicts = BTreeMap::new();
        if candidates.is_empty() {
            return Ok(verdicts);
        }
        let numbers: Vec<&str> = candidates.iter().map(|r| r.order_number.as_str()).collect();
        for n in stored_orders(&self.pool, &numbers).await? {
            verdicts.insert(n, Verdict::Stored);
        }
        let missing: Vec<&str> = numbers
            .into_iter()
            .filter(|n| !verdicts.contains_key(*n))
            .collect();
        if missing.is_empty() {
            return Ok(verdicts);
        }
        // An IN_FLIGHT key older than the grace belongs to a request that is gone; deleting it
        // conditionally races safely with a takeover (which refreshes `updated_at` first).
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
            "DELETE FROM idempotency_keys WHERE state = 'IN_FLIGHT' AND updated_at < NOW(6) - INTERVAL ",
        );
        qb.push_bind(i64::try_from(self.cfg.grace.as_micros()).unwrap_or(i64::MAX))
            .push(" MICROSECOND AND order_number IN (");
        push_list(&mut qb, &missing);
        let dropped = qb.build().execute(&self.pool).await?.rows_affected();
        if dropped > 0 {
            tracing::warn!(
                keys = dropped,
                "abandoned in-flight Idempotency-Keys dropped with their reservations"
            );
        }
        // One statement, one snapshot: an order committed meanwhile shows up either as its
        // row or, before its commit, as its still IN_FLIGHT key.
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
            "SELECT order_number, 1 AS stored FROM orders WHERE status <> 'ABANDONED' AND order_number IN (",
        );
        push_list(&mut qb, &missing);
        qb.push(
            " UNION ALL SELECT order_number, 0 AS stored FROM idempotency_keys \
             WHERE state = 'IN_FLIGHT' AND order_number IN (",
        );
        push_list(&mut qb, &missing);
        for row in qb.build().fetch_all(&self.pool).await? {
            let n: String = row.try_get("order_number")?;
            let stored: i64 = row.try_get("stored")?;
            let v = if stored == 1 {
                Verdict::Stored
            } else {
                Verdict::InFlight
            };
            verdicts
                .entry(n)
                .and_modify(|e| {
                    if v == Verdict::Stored {
                        *e = Verdict::Stored;
                    }
                })
                .or_insert(v);
        }
        Ok(verdicts)
    }
}

/// Settles the stock of one order whose write failed, at once instead of after the grace: the
/// decision a round makes (take the number with an ABANDONED row; give the stock back only when
/// that succeeded), in the background so the client's answer does not wait for it.
///
/// A failed write does not mean a missing order: when the connection breaks after the COMMIT
/// reached the database (its host fails, a network path drops, the answer times out), the order
/// is stored and its Idempotency-Key answers the client's retry with it. Giving the stock back
/// blindly would leave that order without its stock. The ABANDONED row decides: its insert
/// fails on a stored order (and waits on the lock of one still committing).
///
/// Retried with backoff while the database or inventory is away (about ten minutes); after
/// that, or when this process dies, a round of the reconciler settles the reservation.
pub fn settle_in_background(
    pool: MySqlPool,
    inventory: Arc<InventoryClient>,
    order_number: String,
) {
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(500);
        let mut abandoned = false;
        for attempt in 1..=40 {
            if !abandoned {
                match crate::store::abandon_order(&pool, &order_number).await {
                    Ok(true) => abandoned = true,
                    Ok(false) => {
                        tracing::info!(%order_number, "the failed write had committed: the order is stored and keeps its stock");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%order_number, attempt, error = %e, "cannot settle the order's number yet; retrying");
                    }
                }
            }
            if abandoned {
                match inventory.release(&order_number).await {
                    Ok(()) => {
                        tracing::info!(%order_number, attempt, "stock of an order never stored given back");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%order_number, attempt, error = %e, "release failed; retrying");
                    }
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(15));
        }
        tracing::warn!(%order_number, "could not settle the stock of a failed order write; the reconciler will after its grace");
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The order is stored: the reservation is its stock.
    Stored,
    /// An Idempotency-Key request may still store the order.
    InFlight,
}

fn push_list(qb: &mut QueryBuilder<MySql>, items: &[&str]) {
    let mut sep = qb.separated(", ");
    for n in items {
        sep.push_bind(n.to_string());
    }
    sep.push_unseparated(")");
}

/// The order numbers among `numbers` that have an order row.
async fn stored_orders(
    pool: &MySqlPool,
    numbers: &[&str],
) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT order_number FROM orders WHERE status <> 'ABANDONED' AND order_number IN (",
    );
    push_list(&mut qb, numbers);
    qb.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("order_number"))
        .collect()
}

/// The shortest grace that is safe: an order can be in flight for the Idempotency-Key stale
/// window (after which it may be taken over and run again), plus one inventory call, plus the
/// database's bounded waits (3 s pool acquire, 5 s lock waits per statement), with a margin.
pub fn min_safe_grace(inventory_timeout: Duration, idempotency_stale: Duration) -> Duration {
    idempotency_stale + inventory_timeout + Duration::from_secs(30)
}

/// Starts the reconciler on its own task once `migrated` is cancelled (disabled when
/// `cfg.interval` is zero), warning when the grace is shorter than `min_grace` (see
/// [`min_safe_grace`]).
pub fn spawn(
    pool: MySqlPool,
    inventory: Arc<InventoryClient>,
    cfg: ReconcileConfig,
    min_grace: Duration,
    metrics: &Metrics,
    migrated: CancellationToken,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.interval.is_zero() {
        tracing::warn!("reservation reconciler disabled (RECONCILE_INTERVAL_SECS=0)");
        return None;
    }
    if cfg.grace < min_grace {
        tracing::warn!(
            grace_secs = cfg.grace.as_secs(),
            min_safe_secs = min_grace.as_secs(),
            "RECONCILE_GRACE_SECS is shorter than an order can be in flight; a slow order may lose its stock"
        );
    }
    let stats = Arc::new(ReconcileStats::default());
    stats.register(metrics);
    let reconciler = Reconciler::new(pool, inventory, cfg, stats);
    // Its first round needs the orders table.
    Some(tokio::spawn(async move {
        tokio::select! {
            () = migrated.cancelled() => reconciler.run(stop).await,
            () = stop.cancelled() => {}
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_the_grace_well_past_the_idempotency_window() {
        let cfg = ReconcileConfig::default();
        assert!(cfg.grace >= Duration::from_secs(120));
        assert!(cfg.interval < cfg.grace);
        assert!(cfg.page_size as usize <= 1000, "inventory's page limit");
    }

    #[test]
    fn an_http_date_is_read_as_utc() {
        let t = chrono::DateTime::parse_from_rfc2822("Tue, 15 Nov 1994 08:12:31 GMT")
            .map(|t| t.with_timezone(&Utc));
        assert_eq!(
            t.map(|t| t.to_rfc3339()).ok().as_deref(),
            Some("1994-11-15T08:12:31+00:00")
        );
    }
}
