//! shop-registry binary: parses flags, starts the shared runtime, runs lease expiry, peer discovery and
//! replication, catches up from a peer at start, and serves the Eureka API and dashboard.

use anyhow::Context;
use clap::Parser;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shop_registry::api::{self, AppState};
use shop_registry::replication::{self, PeerSource, Replicator};
use shop_registry::store::{Store, StoreConfig};
use shop_runtime::{CommonArgs, Runtime};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use utoipa::OpenApi;

/// Eureka-compatible discovery registry.
#[derive(Parser, Debug)]
#[command(name = "shop-registry", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Interval of the lease-expiry check, in milliseconds.
    #[arg(
        long,
        env = "SHOP_REGISTRY_EVICTION_INTERVAL_MS",
        default_value_t = 5000
    )]
    eviction_interval_ms: u64,

    /// Lease duration for registrations that carry none, in seconds.
    #[arg(long, env = "SHOP_REGISTRY_DEFAULT_LEASE_SECS", default_value_t = 90)]
    default_lease_secs: u64,

    /// Renewal interval clients are expected to use (self-preservation threshold), in seconds.
    #[arg(
        long,
        env = "SHOP_REGISTRY_EXPECTED_RENEWAL_SECS",
        default_value_t = 30
    )]
    expected_renewal_secs: u64,

    /// Pause lease expiry while renewals fall below the threshold (Eureka's self-preservation).
    #[arg(long, env = "SHOP_REGISTRY_SELF_PRESERVATION", default_value_t = false)]
    self_preservation: bool,

    /// Fraction of expected renewals per minute below which self-preservation engages.
    #[arg(long, env = "SHOP_REGISTRY_RENEWAL_THRESHOLD", default_value_t = 0.85)]
    renewal_percent_threshold: f64,

    /// How long changes are kept for delta fetches, in seconds.
    #[arg(
        long,
        env = "SHOP_REGISTRY_DELTA_RETENTION_SECS",
        default_value_t = 180
    )]
    delta_retention_secs: u64,

    /// Maximum number of registered instances.
    #[arg(long, env = "SHOP_REGISTRY_MAX_INSTANCES", default_value_t = 20_000)]
    max_instances: usize,

    /// Maximum request body size in bytes.
    #[arg(long, env = "SHOP_REGISTRY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,

    /// Peer registries, comma separated base URLs (http://host:8761/eureka); our own address is skipped.
    #[arg(long, env = "SHOP_REGISTRY_PEERS", value_delimiter = ',')]
    peers: Vec<String>,

    /// host:port of a headless Service whose addresses are the peers (instead of --peers).
    #[arg(long, env = "SHOP_REGISTRY_PEER_DNS")]
    peer_dns: Option<String>,

    /// How often the peer DNS name is resolved again, in seconds.
    #[arg(long, env = "SHOP_REGISTRY_PEER_REFRESH_SECS", default_value_t = 15)]
    peer_refresh_secs: u64,
}

fn is_self(url: &str, own_port: u16, advertise: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if u.port_or_known_default() != Some(own_port) {
        return false;
    }
    match u.host_str() {
        Some(h) => {
            h == advertise
                || h == "localhost"
                || h.parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
        }
        None => false,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = Runtime::init("registry", &args.common)
        .await
        .context("starting the runtime")?;
    let listener = rt.bind(8761).await.context("binding the listener")?;
    let local = listener.local_addr().context("local address")?;
    let store = Arc::new(Store::new(StoreConfig {
        default_lease_duration: Duration::from_secs(args.default_lease_secs.max(1)),
        default_renewal_interval: Duration::from_secs(args.common.lease_renewal_secs.max(1)),
        delta_retention: Duration::from_secs(args.delta_retention_secs.max(1)),
        max_instances: args.max_instances,
        self_preservation: args.self_preservation,
        renewal_percent_threshold: args.renewal_percent_threshold.clamp(0.0, 1.0),
        expected_renewal_interval: Duration::from_secs(args.expected_renewal_secs.max(1)),
    }));
    let replicator = Replicator::new(store.clone());
    let stop = rt.shutdown_token();

    // Peers: static list (minus ourselves) or a headless Service name resolved periodically.
    let source = match &args.peer_dns {
        Some(name) => {
            let mut own = vec![local];
            if let Ok(ip) = args.common.advertise_host.parse::<IpAddr>() {
                own.push(SocketAddr::new(ip, local.port()));
            }
            PeerSource::Dns {
                name: name.clone(),
                own,
            }
        }
        None => PeerSource::Static(
            args.peers
                .iter()
                .map(|p| p.trim().trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty() && !is_self(p, local.port(), &args.common.advertise_host))
                .collect(),
        ),
    };
    replicator.set_peers(&replication::resolve(&source).await);
    if matches!(source, PeerSource::Dns { .. }) {
        let (r, s, stop) = (replicator.clone(), source.clone(), stop.clone());
        let every = Duration::from_secs(args.peer_refresh_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => r.set_peers(&replication::resolve(&s).await),
                }
            }
        });
    }

    // Catch up from a peer before reporting ready.
    let caught_up = Arc::new(AtomicBool::new(replicator.peer_urls().is_empty()));
    {
        let (r, flag) = (replicator.clone(), caught_up.clone());
        tokio::spawn(async move {
            if !flag.load(Ordering::SeqCst) {
                match r.catch_up().await {
                    Some(n) => tracing::info!(instances = n, "registry copied from a peer"),
                    None => tracing::warn!("no peer answered; starting empty"),
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
        let flag = caught_up.clone();
        rt.readiness().add("peer-catch-up", move || {
            let done = flag.load(Ordering::SeqCst);
            async move {
                if done {
                    Ok(())
                } else {
                    Err("copying the registry from a peer".to_owned())
                }
            }
        });
    }

    // Metrics.
    let instances = Gauge::<i64>::default();
    let renews = Gauge::<i64>::default();
    let threshold = Gauge::<i64>::default();
    let evictions = Counter::<u64>::default();
    {
        let m = rt.metrics();
        let mut reg = m.registry();
        reg.register(
            "registry_instances",
            "Registered instances",
            instances.clone(),
        );
        reg.register(
            "registry_renews_last_minute",
            "Lease renewals in the last minute",
            renews.clone(),
        );
        reg.register(
            "registry_renew_threshold",
            "Self-preservation threshold in renewals per minute",
            threshold.clone(),
        );
        reg.register(
            "registry_evictions",
            "Leases evicted for lack of renewal",
            evictions.clone(),
        );
    }

    // Lease expiry.
    {
        let (store, stop, r) = (store.clone(), stop.clone(), replicator.clone());
        let every = Duration::from_millis(args.eviction_interval_ms.max(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let evicted = store.evict_expired();
                        evictions.inc_by(evicted.len() as u64);
                        // Each replica expires leases itself; cancels are replicated so peers agree sooner.
                        for i in evicted {
                            r.replicate(replication::Event::Cancel { app: i.app, id: i.instance_id });
                        }
                        instances.set(i64::try_from(store.len()).unwrap_or(i64::MAX));
                        renews.set(i64::try_from(store.renews_last_minute()).unwrap_or(i64::MAX));
                        threshold.set(i64::try_from(store.renew_threshold()).unwrap_or(i64::MAX));
                    }
                }
            }
        });
    }

    let router = api::router(
        AppState {
            store,
            replicator: replicator.clone(),
        },
        args.max_body_bytes,
    )
    .merge(shop_runtime::openapi::route(&api::ApiDoc::openapi()));
    rt.serve(listener, router).await.context("serving")?;
    replicator.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_address_is_not_a_peer() {
        assert!(is_self("http://127.0.0.1:8761/eureka", 8761, "10.0.0.5"));
        assert!(is_self("http://10.0.0.5:8761/eureka", 8761, "10.0.0.5"));
        assert!(!is_self("http://10.0.0.6:8761/eureka", 8761, "10.0.0.5"));
        assert!(!is_self("http://127.0.0.1:8762/eureka", 8761, "10.0.0.5"));
    }
}
