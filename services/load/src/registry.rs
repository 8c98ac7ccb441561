//! `shop-load registry` (formerly the registry crate's `registry-load` binary): the benchmark driver
//! behind hack/bench/registry.sh. Simulates N instances registering
//! and renewing against a shop-registry on loopback, samples the registry's CPU and RSS from /proc, and
//! measures, through the runtime's own discovery client, how long a new instance takes to become visible
//! and how long a cancelled or crashed one takes to leave the client's view. Every loop is bounded.

use anyhow::{Context, bail};
use serde_json::json;
use shop_runtime::discovery::{Discovery, DiscoveryConfig};
use shop_runtime::eureka::InstanceInfo;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Registry base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8761/eureka")]
    registry: String,
    /// PID of the shop-registry process (for CPU and RSS sampling).
    #[arg(long)]
    pid: u32,
    /// Simulated instances.
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    /// Renewal interval of each simulated instance in the real-rate phase, ms.
    #[arg(long, default_value_t = 30_000)]
    renew_ms: u64,
    /// Length of the real-rate phase, seconds (the crash probe with a 90 s lease needs ~100 s).
    #[arg(long, default_value_t = 110)]
    real_secs: u64,
    /// Time compression factor of the second phase (renewal interval divided by this).
    #[arg(long, default_value_t = 10)]
    compress: u64,
    /// Length of the compressed phase, seconds.
    #[arg(long, default_value_t = 20)]
    compressed_secs: u64,
    /// Discovery client refresh interval, seconds (the runtime's default is 5).
    #[arg(long, default_value_t = 5)]
    fetch_secs: u64,
    /// Lease duration of the short-lease crash probe, seconds.
    #[arg(long, default_value_t = 10)]
    short_lease_secs: u64,
    /// Visibility trials.
    #[arg(long, default_value_t = 3)]
    trials: usize,
}

fn clk_tck() -> f64 {
    100.0
}

/// (cpu seconds used, rss KiB, peak rss KiB) of `pid`.
fn sample(pid: u32) -> anyhow::Result<(f64, u64, u64)> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc stat")?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc status")?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(((ut + st) / clk_tck(), kib("VmRSS:"), kib("VmHWM:")))
}

fn body(app: &str, id: &str, lease_secs: u64, renew_secs: u64) -> serde_json::Value {
    let mut i = InstanceInfo::new(app, id, "127.0.0.1", 9);
    i.lease_info.duration_in_secs = lease_secs;
    i.lease_info.renewal_interval_in_secs = renew_secs;
    json!({"instance": i.to_value()})
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    not_found: AtomicU64,
    failed: AtomicU64,
    lag_ms_max: AtomicU64,
}

struct PhaseResult {
    renewals: u64,
    rate: f64,
    not_found: u64,
    failed: u64,
    lag_ms_max: u64,
    cpu_pct: f64,
    rss_kib: u64,
}

async fn renew_phase(
    http: &reqwest::Client,
    a: &Args,
    interval: Duration,
    secs: u64,
) -> anyhow::Result<PhaseResult> {
    let counts = Arc::new(Counts::default());
    let sem = Arc::new(Semaphore::new(256));
    let (cpu0, _, _) = sample(a.pid)?;
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(secs);
    let n = a.instances as u64;
    let mut j: u64 = 0;
    loop {
        let due = start + interval.mul_f64(j as f64 / n as f64);
        // Bounded in time even when the generator falls behind its schedule.
        if due >= end || tokio::time::Instant::now() >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let permit = sem.clone().acquire_owned().await?;
        let lag = tokio::time::Instant::now()
            .saturating_duration_since(due)
            .as_millis() as u64;
        counts.lag_ms_max.fetch_max(lag, Ordering::Relaxed);
        let id = format!("load-{}", j % n);
        let url = format!("{}/apps/LOAD/{id}?status=UP", a.registry);
        let reg_url = format!("{}/apps/LOAD", a.registry);
        let (http, counts) = (http.clone(), counts.clone());
        tokio::spawn(async move {
            match http.put(url).send().await {
                Ok(r) if r.status() == 200 => counts.ok.fetch_add(1, Ordering::Relaxed),
                Ok(r) if r.status() == 404 => {
                    // As a real client does: register again.
                    let _ = http
                        .post(reg_url)
                        .json(&body("load", &id, 90, 30))
                        .send()
                        .await;
                    counts.not_found.fetch_add(1, Ordering::Relaxed)
                }
                _ => counts.failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
        j += 1;
    }
    let _ = sem.acquire_many(256).await?;
    let wall = start.elapsed().as_secs_f64();
    let (cpu1, rss, _) = sample(a.pid)?;
    let renewals = counts.ok.load(Ordering::Relaxed);
    Ok(PhaseResult {
        renewals,
        rate: renewals as f64 / wall,
        not_found: counts.not_found.load(Ordering::Relaxed),
        failed: counts.failed.load(Ordering::Relaxed),
        lag_ms_max: counts.lag_ms_max.load(Ordering::Relaxed),
        cpu_pct: (cpu1 - cpu0) / wall * 100.0,
        rss_kib: rss,
    })
}

async fn wait_view(
    d: &Discovery,
    app: &str,
    id: &str,
    present: bool,
    limit: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let seen = d.instances(app).iter().any(|i| i.instance_id == id);
        if seen == present {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn stats(v: &[Duration]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64;
    let max = v.iter().map(Duration::as_secs_f64).fold(0.0, f64::max);
    format!("mean {mean:.2} s, max {max:.2} s ({} trials)", v.len())
}

/// Runs the phases and prints the markdown table of measures.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(&a.registry).context("--registry")?;
    let loopback = match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    if !loopback {
        bail!(
            "shop-load registry only targets loopback addresses, not {}",
            a.registry
        );
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()?;
    let (_, rss_idle, _) = sample(a.pid)?;

    // 1. Register everything.
    let t0 = Instant::now();
    let sem = Arc::new(Semaphore::new(128));
    let renew_secs = (a.renew_ms / 1000).max(1);
    let mut handles = Vec::with_capacity(a.instances);
    for i in 0..a.instances {
        let permit = sem.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), format!("{}/apps/LOAD", a.registry));
        let b = body("load", &format!("load-{i}"), 90, renew_secs);
        handles.push(tokio::spawn(async move {
            let ok = matches!(http.post(url).json(&b).send().await, Ok(r) if r.status() == 204);
            drop(permit);
            ok
        }));
    }
    let mut registered = 0;
    for h in handles {
        registered += usize::from(h.await.unwrap_or(false));
    }
    let reg_secs = t0.elapsed().as_secs_f64();
    let (_, rss_loaded, _) = sample(a.pid)?;

    // 2. The client under test: the runtime's discovery with its default refresh interval.
    let discovery = Discovery::new(DiscoveryConfig {
        registry_urls: vec![a.registry.trim_end_matches('/').to_owned()],
        fetch_interval: Duration::from_secs(a.fetch_secs.max(1)),
        request_timeout: Duration::from_secs(10),
        ..DiscoveryConfig::default()
    });
    let stop = tokio_util::sync::CancellationToken::new();
    discovery.spawn_refresh(stop.clone());
    let fetch_t = Instant::now();
    discovery.refresh().await;
    let full_fetch_ms = fetch_t.elapsed().as_millis();

    // 3. Probes run alongside the real-rate renewal phase; each crash probe is watched from its registration.
    let post = |id: &str, lease: u64, renew: u64| {
        http.post(format!("{}/apps/PROBE", a.registry))
            .json(&body("probe", id, lease, renew))
            .send()
    };
    let _ = post("crash-short", a.short_lease_secs, 1).await;
    let short_watch = {
        let d = discovery.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            wait_view(&d, "PROBE", "crash-short", true, Duration::from_secs(30)).await;
            wait_view(&d, "PROBE", "crash-short", false, Duration::from_secs(120))
                .await
                .map(|_| t.elapsed())
        })
    };
    let _ = post("crash-default", 90, 30).await;
    let default_watch = {
        let d = discovery.clone();
        let limit = Duration::from_secs((a.real_secs + a.compressed_secs).max(1));
        tokio::spawn(async move {
            let t = Instant::now();
            wait_view(&d, "PROBE", "crash-default", true, Duration::from_secs(30)).await;
            wait_view(&d, "PROBE", "crash-default", false, limit)
                .await
                .map(|_| t.elapsed())
        })
    };
    let probes = {
        let (http, d, reg) = (http.clone(), discovery.clone(), a.registry.clone());
        let trials = a.trials;
        let fetch_ms = a.fetch_secs * 1000;
        tokio::spawn(async move {
            let mut visible = Vec::new();
            let mut gone = Vec::new();
            for t in 0..trials {
                // Start each trial at a different point of the client's refresh cycle.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::from(d.subsec_nanos()) % (fetch_ms.max(1)))
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                let id = format!("new-{t}");
                let b = body("probe", &id, 90, 30);
                let _ = http.post(format!("{reg}/apps/PROBE")).json(&b).send().await;
                if let Some(d) = wait_view(&d, "PROBE", &id, true, Duration::from_secs(20)).await {
                    visible.push(d);
                }
                let _ = http.delete(format!("{reg}/apps/PROBE/{id}")).send().await;
                if let Some(d) = wait_view(&d, "PROBE", &id, false, Duration::from_secs(20)).await {
                    gone.push(d);
                }
            }
            (visible, gone)
        })
    };
    let real = renew_phase(&http, &a, Duration::from_millis(a.renew_ms), a.real_secs).await?;
    let compressed = renew_phase(
        &http,
        &a,
        Duration::from_millis(a.renew_ms / a.compress.max(1)),
        a.compressed_secs,
    )
    .await?;
    let (visible, gone) = probes.await?;
    let short_gone = short_watch.await?;
    let default_gone = default_watch.await?;
    stop.cancel();
    let (_, _, peak) = sample(a.pid)?;

    let mib = |k: u64| k as f64 / 1024.0;
    let fmt_opt = |d: Option<Duration>| {
        d.map_or("not within the limit".to_owned(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| instances registered | {registered} of {} in {reg_secs:.1} s |",
        a.instances
    );
    println!(
        "| RSS idle → after registering → peak | {:.1} MiB → {:.1} MiB → {:.1} MiB |",
        mib(rss_idle),
        mib(rss_loaded),
        mib(peak)
    );
    println!(
        "| real rate: renewals every {} s for {} s | {} renewals, {:.0}/s, CPU {:.1} % of one core, RSS {:.1} MiB, {} 404 (re-registered), {} failed, max schedule lag {} ms |",
        a.renew_ms / 1000,
        a.real_secs,
        real.renewals,
        real.rate,
        real.cpu_pct,
        mib(real.rss_kib),
        real.not_found,
        real.failed,
        real.lag_ms_max
    );
    println!(
        "| {}× compressed: renewals every {:.1} s for {} s | {} renewals, {:.0}/s, CPU {:.1} % of one core, RSS {:.1} MiB, {} 404 (re-registered), {} failed, max schedule lag {} ms |",
        a.compress,
        a.renew_ms as f64 / a.compress.max(1) as f64 / 1000.0,
        a.compressed_secs,
        compressed.renewals,
        compressed.rate,
        compressed.cpu_pct,
        mib(compressed.rss_kib),
        compressed.not_found,
        compressed.failed,
        compressed.lag_ms_max
    );
    println!(
        "| client's first (full) fetch of the whole registry; later refreshes are deltas | {full_fetch_ms} ms |"
    );
    println!(
        "| new instance → visible to a client (refresh {} s) | {} |",
        a.fetch_secs,
        stats(&visible)
    );
    println!(
        "| cancelled (graceful stop) → out of the client's view | {} |",
        stats(&gone)
    );
    println!(
        "| crashed, {} s lease → out of the client's view | {} |",
        a.short_lease_secs,
        fmt_opt(short_gone)
    );
    println!(
        "| crashed, 90 s lease (Eureka's default) → out of the client's view | {} |",
        fmt_opt(default_gone)
    );
    Ok(())
}
