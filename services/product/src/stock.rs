//! Seeding a product's stock into inventory without ever losing it.
//!
//! Exists because the original had no stock at all on the product side and because a naive
//! "save product, then call inventory" loses the stock whenever inventory is down at that moment.
//! Here the quantity is first recorded as a pending marker inside the product document (see
//! `store`), then pushed with the idempotent `PUT /api/inventory/{skuCode}` and cleared only after
//! inventory answered 2xx. A background task retries every marker until it is confirmed.
//! Pushes for one SKU are serialised by a per-SKU lock and always re-read the current marker, so a
//! slow, stale push can never overwrite a newer quantity within this process. The API's updates of
//! a product take the same lock (`write_lock`), because FerretDB's updates are not atomic.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use crate::store::{PendingStock, ProductStore, StoreError};

/// Why one push to inventory did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Inventory could not be reached, timed out, its breaker is open, or it answered 5xx.
    #[error("inventory unavailable: {0}")]
    Unavailable(String),
    /// Inventory refused the request (4xx); retried too, since it may be a rolling upgrade.
    #[error("inventory rejected the stock: {0}")]
    Rejected(String),
}

/// Something that can set the stock of a SKU (the inventory service).
pub trait StockTarget: Send + Sync + 'static {
    /// Set the stock of `sku` to `quantity` (idempotent).
    fn set_stock(
        &self,
        sku: &str,
        quantity: i64,
    ) -> impl Future<Output = Result<(), PushError>> + Send;
}

/// Outcome of trying to sync one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Inventory confirmed, marker cleared (or a newer marker remains to be pushed).
    Synced,
    /// The product has no marker (already synced or deleted).
    NothingPending,
    /// The push failed; the marker stays and will be retried.
    Failed,
}

/// Pushes pending stock to inventory: inline right after a write, and from a retry loop.
pub struct StockSyncer<T: StockTarget> {
    store: ProductStore,
    target: T,
    locks: Mutex<HashMap<ObjectId, Arc<Mutex<()>>>>,
    wake: Notify,
    /// Products whose stock inventory has not confirmed yet (after the last retry pass).
    pub pending_gauge: Gauge,
    /// Failed pushes to inventory.
    pub failures: Counter,
    /// Pushes confirmed by inventory.
    pub confirmed: Counter,
}

impl<T: StockTarget> StockSyncer<T> {
    /// New syncer over `store` pushing to `target`.
    pub fn new(store: ProductStore, target: T) -> Self {
        Self {
            store,
            target,
            locks: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            pending_gauge: Gauge::default(),
            failures: Counter::default(),
            confirmed: Counter::default(),
        }
    }

    /// Register the stock metrics in the runtime's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "product_stock_pending",
            "Products whose stock inventory has not confirmed yet",
            self.pending_gauge.clone(),
        );
        registry.register(
            "product_stock_push_failures",
            "Stock pushes to inventory that failed and will be retried",
            self.failures.clone(),
        );
        registry.register(
            "product_stock_push_confirmed",
            "Stock pushes confirmed by inventory",
            self.confirmed.clone(),
        );
    }

    async fn lock_for(&self, id: ObjectId) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().await;
        // Drop locks nobody holds any more so the map stays small.
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id).or_default().clone()
    }

    /// Hold this around every update of product `id` made outside this syncer (the API's PUT), so
    /// it never interleaves with a push's marker update. FerretDB v1 (the local stack's MongoDB
    /// server) runs an update as read, modify, write the whole document back, not atomically as
    /// MongoDB does: a PUT landing between the read and the write of `clear_pending` would be
    /// undone, new pending-stock marker included. This makes updates of one product whole within
    /// one process; it does not order writes from several replicas.
    pub async fn write_lock(&self, id: ObjectId) -> OwnedMutexGuard<()> {
        self.lock_for(id).await.lock_owned().await
    }

    /// Push the current marker of product `id`, if any.
    pub async fn sync_one(&self, id: ObjectId) -> Result<SyncOutcome, StoreError> {
        let _guard = self.write_lock(id).await;
        let Some(p) = self.store.pending_of(id).await? else {
            return Ok(SyncOutcome::NothingPending);
        };
        self.push(&p).await
    }

    async fn push(&self, p: &PendingStock) -> Result<SyncOutcome, StoreError> {
        match self.target.set_stock(&p.sku_code, p.quantity).await {
            Ok(()) => {
                self.confirmed.inc();
                let cleared = self.store.clear_pending(p.id, &p.token).await?;
                tracing::info!(sku = %p.sku_code, quantity = p.quantity, cleared, "stock confirmed by inventory");
                Ok(SyncOutcome::Synced)
            }
            Err(e) => {
                self.failures.inc();
                tracing::warn!(sku = %p.sku_code, quantity = p.quantity, error = %e, "stock not yet in inventory; will retry");
                self.store
                    .note_failure(p.id, &p.token, &e.to_string())
                    .await?;
                Ok(SyncOutcome::Failed)
            }
        }
    }

    /// Ask the retry loop to run now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One pass over every pending marker. Returns how many were found and how many are still
    /// pending afterwards.
    pub async fn pass(&self) -> Result<(usize, usize), StoreError> {
        let pending = self.store.pending(200).await?;
        let found = pending.len();
        let mut left = 0;
        for p in pending {
            if self.sync_one(p.id).await? == SyncOutcome::Failed {
                left += 1;
            }
        }
        self.pending_gauge
            .set(i64::try_from(left).unwrap_or(i64::MAX));
        Ok((found, left))
    }

    /// Retry loop: runs a pass every `interval` while markers are being synced, backing off up to
    /// `max_interval` while inventory stays down, and every `max_interval` when nothing is pending,
    /// until `shutdown` is cancelled. A write that leaves a marker wakes it at once ([`Self::wake`]).
    ///
    /// The idle pass is slow on purpose: on FerretDB 1.24 the `pendingStock` query scans the whole
    /// collection (only `_id` equality is pushed down to SQLite), so an idle pass every second over
    /// a 100,000-product catalog was a full collection scan every second. The idle pass only picks
    /// up markers another replica left when it stopped mid-retry.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        max_interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut delay = interval;
        let mut backoff = interval;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
                () = self.wake.notified() => backoff = interval,
            }
            delay = match self.pass().await {
                Ok((0, _)) => {
                    backoff = interval;
                    max_interval
                }
                Ok((_, 0)) => {
                    backoff = interval;
                    interval
                }
                Ok(_) => {
                    backoff = (backoff * 2).min(max_interval);
                    backoff
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stock retry pass failed (database)");
                    backoff = (backoff * 2).min(max_interval);
                    backoff
                }
            };
        }
    }
}
