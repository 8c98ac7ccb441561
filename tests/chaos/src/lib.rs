//! The chaos soak: the platform's central promise, no order lost or doubled whatever fails, as a
//! figure under sustained faults.
//!
//! A run places orders through a Shop's gateway at a steady rate, as a shop's users would (each
//! with its own Idempotency-Key, retried on failures), while a fault schedule kills and pauses the
//! Shop's pods one after the other, stores included. When the schedule is done and enough orders
//! were placed, the load stops and the client's view is held against what the stores themselves
//! hold. Any loss, duplicate, broken stock equation or leftover reservation fails the run.
//!
//! Layout, in the order a run uses it:
//! - [`plan`]: the fault schedule (pure, parsed from the command line);
//! - [`client`] (the testkit's `shop`): the user: one order, one key, retried (what an answer means
//!   is pure);
//! - [`faults`]: each fault carried out on the real node, and the wait until the target is whole;
//! - [`stores`]: what MariaDB and FerretDB hold for the run, read around the services;
//! - [`verify`]: the verdict (pure: each kind of loss has a unit test);
//! - [`report`]: the table printed and written to docs/reliability.md.
//!
//! `make chaos` runs the full schedule with 10,000 orders against `make up`'s Shop (the
//! `shop-chaos` binary); `make test` runs the short schedule (tests/chaos.rs).

/// The shop's user (the testkit's typed client of a gateway).
pub use shop_testkit::shop as client;
pub mod faults;
pub mod plan;
pub mod report;
pub mod stores;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, Semaphore};

use crate::client::{Attempted, Outcome, ShopClient};
use crate::faults::{Injected, Pods};
use crate::plan::Fault;
use crate::report::{FaultRow, Report};

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Shop's namespace and name (its stores must be managed).
    pub namespace: String,
    /// The Shop's name.
    pub shop: String,
    /// Its gateway, as the client reaches it.
    pub gateway: String,
    /// A bearer token with `orders:write products:write`.
    pub token: String,
    /// Orders to place at least (the load also lasts until the schedule is done).
    pub orders: usize,
    /// Orders started per second.
    pub rate: u32,
    /// Orders waiting for an answer at once, at most.
    pub concurrency: usize,
    /// How long the client retries one order.
    pub patience: Duration,
    /// The faults, in order.
    pub plan: Vec<Fault>,
    /// Quiet time after a target is whole again, before the next fault.
    pub gap: Duration,
    /// How long to wait for the stores to settle after the load (the order service's
    /// reservation reconciler releases an orphan after its grace, 120 s by default).
    pub settle: Duration,
    /// The command line, for the report.
    pub command: String,
}

/// SKUs a run orders from, and their initial stock. The last one is scarce, so refusals for
/// lack of stock happen throughout the run and the stock equation is tested at zero too.
const SKUS: usize = 8;
const PLENTY: i64 = 1_000_000;
const SCARCE: i64 = 40;

/// How long the schedule waits, after a fault, for an order started after it to be accepted.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(120);

/// Prints one progress line.
fn progress(msg: &str) {
    eprintln!("[chaos] {msg}");
}

/// Runs the soak; the report says whether it passed.
pub async fn run(kube: &kube::Client, cfg: &Config) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let started = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let prefix = format!("chaos-{run_id}-");
    let client = ShopClient::new(&cfg.gateway, &cfg.token)?;
    let pods = Pods::new(kube, &cfg.namespace, &cfg.shop);
    let stores = stores::Stores::connect(kube, &cfg.namespace, &cfg.shop).await?;

    // Stock first, through the product API as a shop would stock it.
    let mut initial = BTreeMap::new();
    for i in 0..SKUS {
        let sku = format!("{prefix}sku-{i}");
        let quantity = if i + 1 == SKUS { SCARCE } else { PLENTY };
        client
            .stocked_product(&sku, quantity.unsigned_abs())
            .await?;
        initial.insert(sku, quantity);
    }
    let skus: Vec<String> = initial.keys().cloned().collect();
    progress(&format!(
        "run {run_id}: {SKUS} SKUs stocked; placing ≥ {} orders at {}/s while {} faults run",
        cfg.orders,
        cfg.rate,
        cfg.plan.len()
    ));

    // The load: one order started every 1/rate s, at most `concurrency` waiting at once.
    let done: Arc<Mutex<Vec<Attempted>>> = Arc::default();
    let faults_done = Arc::new(AtomicBool::new(false));
    let started_n = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let load = {
        let (done, faults_done, started_n, requests) = (
            done.clone(),
            faults_done.clone(),
            started_n.clone(),
            requests.clone(),
        );
        let (client, prefix, patience) = (client.clone(), prefix.clone(), cfg.patience);
        let (orders, rate, slots) = (cfg.orders, cfg.rate.max(1), cfg.concurrency.max(1));
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(slots));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut tasks = tokio::task::JoinSet::new();
            let mut i = 0usize;
            while i < orders || !faults_done.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (client, done, requests) = (client.clone(), done.clone(), requests.clone());
                let key = format!("{prefix}order-{i}");
                let sku = skus[i % skus.len()].clone();
                let quantity = 1 + (i % 3) as u32;
                tasks.spawn(async move {
                    let a = client.place(&key, &sku, quantity, patience).await;
                    requests.fetch_add(u64::from(a.requests), Ordering::Relaxed);
                    done.lock().await.push(a);
                    drop(slot);
                });
                i += 1;
                started_n.store(i, Ordering::Relaxed);
                // Finished tasks are reaped as we go (their results are in `done`).
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The progress line, every 10 s.
    let ticker = {
        let (done, started_n) = (done.clone(), started_n.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let d = done.lock().await;
                let accepted = d
                    .iter()
                    .filter(|a| matches!(a.outcome, Outcome::Accepted(_)))
                    .count();
                progress(&format!(
                    "{:>4} s: {} orders started, {} answered, {accepted} accepted",
                    t.elapsed().as_secs(),
                    started_n.load(Ordering::Relaxed),
                    d.len()
                ));
            }
        })
    };

    // The schedule: a warm-up, then each fault once the previous target is whole again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut injected: Vec<Injected> = Vec::new();
    let mut failure = None;
    for (n, fault) in cfg.plan.iter().enumerate() {
        progress(&format!("fault {}/{}: {fault}", n + 1, cfg.plan.len()));
        match pods.inject(fault, Duration::from_secs(300)).await {
            Ok(i) => {
                progress(&format!(
                    "fault {}/{}: {fault} on {}: whole again after {}",
                    n + 1,
                    cfg.plan.len(),
                    i.pod,
                    i.whole_after.map_or_else(
                        || "—(not within 300 s)".to_owned(),
                        |d| format!("{:.1} s", d.as_secs_f64())
                    )
                ));
                // Faults do not overlap: the next one waits until an order started after this
                // one was accepted (its window would otherwise start inside this recovery).
                let at = i.at;
                injected.push(i);
                let flowing = shop_testkit::wait_until(RECOVERY_PATIENCE, || async {
                    done.lock()
                        .await
                        .iter()
                        .any(|a| a.started >= at && matches!(a.outcome, Outcome::Accepted(_)))
                })
                .await;
                progress(&format!(
                    "fault {}/{}: orders accepted again {}",
                    n + 1,
                    cfg.plan.len(),
                    if flowing {
                        format!("{:.1} s after it", at.elapsed().as_secs_f64())
                    } else {
                        format!("— (not within {} s)", RECOVERY_PATIENCE.as_secs())
                    }
                ));
            }
            Err(e) => {
                failure = Some(e.context(format!("injecting {fault}")));
                break;
            }
        }
        tokio::time::sleep(cfg.gap).await;
    }
    faults_done.store(true, Ordering::Relaxed);
    load.await.context("the load task")?;
    ticker.abort();
    let load_for = t0.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    let attempted = std::mem::take(&mut *done.lock().await);

    // Until the stores agree with the client, or the settle time runs out.
    progress(&format!(
        "load stopped after {:.0} s ({} orders); checking the stores",
        load_for.as_secs_f64(),
        attempted.len()
    ));
    let settle_start = Instant::now();
    let (snapshot, findings) = loop {
        let snapshot = stores.snapshot(&prefix).await?;
        let findings = verify::check(&attempted, &initial, &snapshot);
        let outbox_busy = snapshot.outbox_pending > 0;
        if (findings.is_clean() && !outbox_busy)
            || !findings.only_settling()
            || settle_start.elapsed() >= cfg.settle
        {
            break (snapshot, findings);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let settled_after = settle_start.elapsed();

    let mut refused = BTreeMap::new();
    let mut gave_up = BTreeMap::new();
    for a in &attempted {
        match &a.outcome {
            Outcome::Refused(why) => *refused.entry(why.clone()).or_default() += 1,
            Outcome::GaveUp(why) => *gave_up.entry(why.clone()).or_default() += 1,
            Outcome::Accepted(_) => {}
        }
    }
    let faults = injected
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let until = injected.get(n + 1).map(|next| next.at);
            let window: Vec<&Attempted> = attempted
                .iter()
                .filter(|a| a.started >= i.at && until.is_none_or(|u| a.started < u))
                .collect();
            FaultRow {
                fault: i.fault.clone(),
                pod: i.pod.clone(),
                whole_after: i.whole_after,
                first_order_after: window
                    .iter()
                    .filter(|a| matches!(a.outcome, Outcome::Accepted(_)))
                    .map(|a| a.finished - i.at)
                    .min(),
                slowest_order: window.iter().map(|a| a.finished - a.started).max(),
                orders: window.len(),
                retried: window.iter().filter(|a| a.requests > 1).count(),
                retried_because: window.iter().flat_map(|a| &a.retried_because).fold(
                    BTreeMap::new(),
                    |mut m, why| {
                        *m.entry(why.clone()).or_default() += 1;
                        m
                    },
                ),
            }
        })
        .collect();
    Ok(Report {
        command: cfg.command.clone(),
        started,
        shop: format!("{}/{}", cfg.namespace, cfg.shop),
        rate: cfg.rate,
        load_for,
        attempted: attempted.len(),
        accepted: attempted
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Accepted(_)))
            .count(),
        refused,
        gave_up,
        requests: requests.load(Ordering::Relaxed),
        stored: snapshot.orders.values().map(Vec::len).sum(),
        notified_once: snapshot.notifications.values().filter(|&&k| k == 1).count(),
        faults,
        settled_after,
        findings,
    })
}
