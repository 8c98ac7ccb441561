//! shop-inventory binary: parses configuration, applies migrations, serves the API through the
//! shared runtime (logs, traces, health, metrics, registry, graceful shutdown).

// Each order allocates and frees many small buffers (HTTP heads, JSON, SQL text, rows) on the
// tokio workers; glibc's malloc and its consolidation took ~4 % of the machine's CPU in a perf
// profile of the order path (docs/benchmarks.md, "Orders"). The gateway uses mimalloc for the same reason.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use shop_inventory::api::{ApiDoc, AppState, router};
use shop_runtime::{
    CommonArgs, Runtime,
    batch::BatchConfig,
    faults::{FaultArgs, Faults},
    mysql::MysqlArgs,
};
use utoipa::OpenApi;

/// Command line / environment configuration.
#[derive(Debug, Parser)]
#[command(
    name = "shop-inventory",
    about = "Stock on MySQL with atomic, idempotent reservations"
)]
#[command(mut_arg("database_url", |a| a
    .help("MySQL URL, e.g. mysql://shop:shop@127.0.0.1:3306/inventory_service")))]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    mysql: MysqlArgs,
    /// Most reservations written in one transaction (1 = no batching).
    #[arg(long, env = "RESERVE_BATCH_MAX", default_value_t = 64)]
    reserve_batch_max: usize,
    /// Reservation transactions that may run at the same time.
    #[arg(long, env = "RESERVE_BATCH_WORKERS", default_value_t = 8)]
    reserve_batch_workers: usize,
    #[command(flatten)]
    faults: FaultArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = Runtime::init("inventory", &args.common).await?;
    let listener = rt.bind(8083).await?;
    // Starts unready and prepares the database in the background (created if missing, migrated),
    // so a database that is not there yet makes the pod wait, not crash-loop.
    let (pool, _migrated) = args
        .mysql
        .open_store(
            &shop_inventory::store::MIGRATOR,
            &rt.readiness(),
            rt.shutdown_token(),
        )
        .context("DATABASE_URL")?;
    let batch = BatchConfig {
        max_batch: args.reserve_batch_max.max(1),
        workers: args.reserve_batch_workers.max(1),
        ..BatchConfig::default()
    };
    let state = AppState::new(pool.clone(), batch);
    rt.metrics().registry().register(
        "inventory_reservation_batch_size",
        "Reservations written per database transaction",
        state.reservations.batch_sizes(),
    );
    // Fault flags (spec.faults) wrap the API routes only: health, metrics and the OpenAPI
    // document are added outside them. Unset SHOP_FAULTS_FILE: no wrapper at all.
    let mut api = router(state);
    if let Some(faults) = Faults::from_args(&args.faults, &rt.metrics(), rt.shutdown_token()) {
        api = shop_inventory::faults::wrap(api, faults);
    }
    rt.serve(
        listener,
        api.merge(shop_runtime::openapi::route(&ApiDoc::openapi())),
    )
    .await?;
    pool.close().await;
    Ok(())
}
