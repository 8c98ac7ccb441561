//! shop-order binary: configuration, migrations, the inventory client (discovery + breaker +
//! deadline), the outbox relay task, the reservation reconciler and the API, served through the
//! shared runtime.

// Each order allocates and frees many small buffers (HTTP heads, JSON, SQL text, rows) on the
// tokio workers; glibc's malloc and its consolidation took ~4 % of the machine's CPU in a perf
// profile of the order path (docs/benchmarks.md, "Orders"). The gateway uses mimalloc for the same reason.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use prometheus_client::metrics::gauge::Gauge;
use shop_order::{
    api::{self, AppState, router},
    inventory::InventoryClient,
    reconcile::{self, ReconcileConfig},
    relay::{self, Relay, RelayConfig, RelayStats},
    store,
};
use shop_runtime::{
    BreakerConfig, ClientConfig, CommonArgs, Runtime, ServiceClient,
    faults::{FaultArgs, Faults},
    mysql::MysqlArgs,
};

use utoipa::OpenApi;

/// Command line / environment configuration.
#[derive(Debug, Parser)]
#[command(
    name = "shop-order",
    about = "Orders with idempotency keys and a transactional outbox"
)]
#[command(mut_arg("database_url", |a| a
    .help("MySQL URL, e.g. mysql://shop:shop@127.0.0.1:3306/order_service")))]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    mysql: MysqlArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SHOP_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    kafka_bootstrap: String,
    /// Topic of OrderPlaced events.
    #[arg(long, env = "ORDER_TOPIC", default_value = "notificationTopic")]
    topic: String,
    /// Partitions of the OrderPlaced topic when order creates it (an existing topic is left as it
    /// is); notification replicas beyond this count stay idle.
    #[arg(long, env = "SHOP_KAFKA_PARTITIONS", default_value_t = 1)]
    kafka_partitions: i32,
    /// Deadline of one inventory call, in milliseconds.
    #[arg(long, env = "INVENTORY_TIMEOUT_MS", default_value_t = 2000)]
    inventory_timeout_ms: u64,
    /// Seconds the inventory breaker stays open before trial calls.
    #[arg(long, env = "INVENTORY_BREAKER_OPEN_SECS", default_value_t = 5)]
    breaker_open_secs: u64,
    /// Calls in the breaker's count window.
    #[arg(long, env = "INVENTORY_BREAKER_WINDOW", default_value_t = 5)]
    breaker_window: usize,
    /// Kafka per-message delivery timeout, in milliseconds (then the relay retries).
    #[arg(long, env = "KAFKA_MESSAGE_TIMEOUT_MS", default_value_t = 10_000)]
    kafka_message_timeout_ms: u64,
    /// Interval of the outbox sweeper, in milliseconds (committed events reach the relay in
    /// memory at once; the sweeper publishes the ones left behind).
    #[arg(long, env = "OUTBOX_POLL_MS", default_value_t = 500)]
    outbox_poll_ms: u64,
    /// Age in milliseconds after which an unpublished outbox row is taken by the sweeper (at
    /// least the Kafka message timeout plus one second; default: that timeout plus 5 s).
    #[arg(long, env = "OUTBOX_SWEEP_AFTER_MS")]
    outbox_sweep_after_ms: Option<u64>,
    /// Hours a published outbox row or a completed Idempotency-Key is kept (replays within
    /// this window return the stored response).
    #[arg(long, env = "RETENTION_HOURS", default_value_t = 24)]
    retention_hours: u64,
    /// Seconds after which an in-flight Idempotency-Key whose process stopped refreshing it
    /// (it does four times per window while the request runs) is considered abandoned.
    #[arg(long, env = "IDEMPOTENCY_STALE_SECS", default_value_t = 10)]
    idempotency_stale_secs: u64,
    /// Seconds between rounds of the reservation reconciler, which releases stock reserved in
    /// inventory for orders that were never stored (0 disables it).
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value_t = 30)]
    reconcile_interval_secs: u64,
    /// Age (on inventory's clock) a reservation without an order must reach before the
    /// reconciler releases it; must exceed the longest time an order can be in flight.
    #[arg(long, env = "RECONCILE_GRACE_SECS", default_value_t = 120)]
    reconcile_grace_secs: u64,
    /// Most orders written in one transaction (1 = no batching).
    #[arg(long, env = "ORDER_WRITE_BATCH_MAX", default_value_t = 64)]
    order_write_batch_max: usize,
    /// Most reservations sent to inventory in one call (1 = one call per order).
    #[arg(long, env = "ORDER_RESERVE_BATCH_MAX", default_value_t = 64)]
    reserve_batch_max: usize,
    /// Order-write transactions (and batched reservation calls) that may run at the same time.
    #[arg(long, env = "ORDER_WRITE_WORKERS", default_value_t = 8)]
    order_write_workers: usize,
    #[command(flatten)]
    faults: FaultArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = Runtime::init("order", &args.common).await?;
    let listener = rt.bind(8082).await?;
    // Starts unready and prepares the database in the background (created if missing, migrated),
    // so a database that is not there yet makes the pod wait, not crash-loop.
    // The relay, the purge and the reconciler start once the tables exist (`migrated`).
    let (pool, migrated) = args
        .mysql
        .open_store(&store::MIGRATOR, &rt.readiness(), rt.shutdown_token())
        .context("DATABASE_URL")?;

    let timeout = Duration::from_millis(args.inventory_timeout_ms.max(1));
    let client = ServiceClient::new(
        rt.discovery(),
        rt.metrics(),
        ClientConfig {
            timeout,
            breaker: BreakerConfig {
                window: args.breaker_window.max(1),
                open_wait: Duration::from_secs(args.breaker_open_secs.max(1)),
                ..BreakerConfig::default()
            },
            ..ClientConfig::default()
        },
    );
    // Register the breaker gauge now so /metrics shows it closed before the first call.
    let _ = client.breaker(shop_order::inventory::INVENTORY_APP);

    // The topic exists with its partition count before the first event, instead of whatever the
    // broker's auto-creation picks. In the background: orders are accepted into the outbox while
    // Kafka is away, so the broker never gates readiness.
    {
        let (bootstrap, topic, partitions) = (
            args.kafka_bootstrap.clone(),
            args.topic.clone(),
            args.kafka_partitions.max(1),
        );
        let stop = rt.shutdown_token();
        tokio::spawn(async move {
            use shop_runtime::kafka::{TopicState, ensure_topic};
            let created = shop_runtime::retry::until_ok(
                &stop,
                || ensure_topic(&bootstrap, &topic, partitions),
                |e, wait| {
                    tracing::warn!(store = "kafka", %bootstrap, %topic, error = %e, retry_in = ?wait, "cannot create the OrderPlaced topic yet");
                },
            )
            .await;
            match created {
                Some(TopicState::Created) => {
                    tracing::info!(%topic, partitions, "created the OrderPlaced topic");
                }
                Some(TopicState::Existed(n)) if n < partitions => {
                    tracing::warn!(%topic, partitions = n, wanted = partitions, "the topic exists with fewer partitions; left as it is");
                }
                _ => {}
            }
        });
    }

    let relay_cfg = RelayConfig {
        bootstrap: args.kafka_bootstrap.clone(),
        message_timeout: Duration::from_millis(args.kafka_message_timeout_ms.max(100)),
        poll_interval: Duration::from_millis(args.outbox_poll_ms.max(10)),
        batch_size: 500,
        sweep_after: Duration::from_millis(
            args.outbox_sweep_after_ms
                .unwrap_or(args.kafka_message_timeout_ms.saturating_add(5_000)),
        ),
    };
    let producer = relay::producer(&relay_cfg).context("creating the Kafka producer")?;
    let relay_wait = relay_cfg.message_timeout + Duration::from_secs(2);
    let (lane, lane_rx) = relay::fast_lane(8192);
    let stats = Arc::new(RelayStats::default());
    register_metrics(
        &rt,
        &pool,
        &stats,
        Duration::from_secs(args.retention_hours.max(1) * 3600),
        migrated.clone(),
    );
    // The relay outlives the HTTP drain: orders committed while draining are still published.
    let relay_stop = tokio_util::sync::CancellationToken::new();
    let relay_task = {
        // Fault flags (spec.faults): kafkaPublishFailureRatio fails publishes; None when
        // SHOP_FAULTS_FILE is unset.
        let faults = Faults::from_args(&args.faults, &rt.metrics(), rt.shutdown_token());
        let relay =
            Relay::new(pool.clone(), producer, lane_rx, relay_cfg, stats).with_faults(faults);
        let (migrated, stop) = (migrated.clone(), relay_stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = migrated.cancelled() => relay.run(stop).await,
                () = stop.cancelled() => {}
            }
        })
    };

    let writes = shop_order::api::order_writer(
        pool.clone(),
        shop_runtime::batch::BatchConfig {
            max_batch: args.order_write_batch_max.max(1),
            workers: args.order_write_workers.max(1),
            ..Default::default()
        },
    );
    rt.metrics().registry().register(
        "order_write_batch_size",
        "Orders written per database transaction",
        writes.batch_sizes(),
    );
    let inventory = Arc::new(InventoryClient::new(client, timeout).with_batching(
        shop_runtime::batch::BatchConfig {
            max_batch: args.reserve_batch_max.clamp(1, 256),
            workers: args.order_write_workers.max(1),
            ..Default::default()
        },
    ));
    let idempotency_stale_after = Duration::from_secs(args.idempotency_stale_secs.max(1));
    let reconcile_task = reconcile::spawn(
        pool.clone(),
        inventory.clone(),
        ReconcileConfig {
            interval: Duration::from_secs(args.reconcile_interval_secs),
            grace: Duration::from_secs(args.reconcile_grace_secs.max(1)),
            ..ReconcileConfig::default()
        },
        reconcile::min_safe_grace(timeout, idempotency_stale_after),
        &rt.metrics(),
        migrated.clone(),
        rt.shutdown_token(),
    );

    // Keys of requests in flight are refreshed until the last request has drained.
    let leases = Arc::new(shop_order::lease::Leases::default());
    let lease_stop = tokio_util::sync::CancellationToken::new();
    let lease_task = tokio::spawn(leases.clone().run(
        pool.clone(),
        shop_order::lease::heartbeat_every(idempotency_stale_after),
        lease_stop.clone(),
    ));

    let state = AppState {
        leases,
        pool: pool.clone(),
        inventory,
        relay: lane,
        topic: Arc::from(args.topic.as_str()),
        idempotency_stale_after,
        trace_headers: shop_runtime::kafka::current_trace_context,
        writes,
    };
    let served = rt
        .serve(
            listener,
            router(state).merge(shop_runtime::openapi::route(&api::ApiDoc::openapi())),
        )
        .await;
    lease_stop.cancel();
    let _ = lease_task.await;
    relay_stop.cancel();
    // Let a publish round in progress finish (it is bounded by the Kafka message timeout), so
    // its rows are either marked sent or handed back instead of waiting out their lease.
    let _ = tokio::time::timeout(relay_wait, relay_task).await;
    if let Some(task) = reconcile_task {
        // It stops at the shutdown signal; a release it was making is idempotent.
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    pool.close().await;
    served?;
    Ok(())
}

/// Outbox metrics: events published / failed (counters) and rows pending (gauge, sampled), and
/// the housekeeping that purges old published rows and completed keys once a minute.
fn register_metrics(
    rt: &Runtime,
    pool: &sqlx::MySqlPool,
    stats: &Arc<RelayStats>,
    retention: Duration,
    migrated: tokio_util::sync::CancellationToken,
) {
    let pending = Gauge::<i64>::default();
    {
        let metrics = rt.metrics();
        let mut reg = metrics.registry();
        reg.register(
            "order_outbox_pending",
            "Outbox events not yet acknowledged by Kafka",
            pending.clone(),
        );
        reg.register(
            "order_outbox_published",
            "Outbox events acknowledged by Kafka since start",
            stats.published.clone(),
        );
        reg.register(
            "order_outbox_publish_failures",
            "Outbox publish attempts that failed since start (they are retried)",
            stats.failed.clone(),
        );
    }
    let pool = pool.clone();
    let stop = rt.shutdown_token();
    tokio::spawn(async move {
        tokio::select! {
            () = migrated.cancelled() => {}
            () = stop.cancelled() => return,
        }
        let mut tick: u64 = 0;
        loop {
            if let Ok(n) = store::outbox_pending(&pool).await {
                pending.set(n);
            }
            if tick.is_multiple_of(30) {
                match store::purge(&pool, retention).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(rows = n, "purged old outbox rows and idempotency keys")
                    }
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
            tick = tick.wrapping_add(1);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}
