//! shop-inventory binary: parses configuration, applies migrations, serves the API through the
//! shared runtime (logs, traces, health, metrics, registry, graceful shutdown).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shop_inventory::api::{AppState, router};
use shop_runtime::{CommonArgs, Runtime};
use sqlx::mysql::MySqlPoolOptions;

/// Command line / environment configuration.
#[derive(Debug, Parser)]
#[command(
    name = "shop-inventory",
    about = "Stock on MySQL with atomic, idempotent reservations"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// MySQL URL, e.g. mysql://shop:shop@127.0.0.1:3306/inventory_service
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Maximum pooled MySQL connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    database_max_connections: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = Runtime::init("inventory", 8083, &args.common).await?;
    let pool = MySqlPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(Duration::from_secs(3))
        // READ COMMITTED: no gap locks, so stock updates and outbox claims never block inserts;
        // a short lock wait bounds any stall instead of the server's 50 s default.
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("SET SESSION innodb_lock_wait_timeout = 5")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&args.database_url)
        .await
        .context("connecting to MySQL (DATABASE_URL)")?;
    shop_inventory::store::MIGRATOR
        .run(&pool)
        .await
        .context("applying inventory migrations")?;
    let ready_pool = pool.clone();
    rt.readiness().add("mysql", move || {
        let pool = ready_pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| format!("mysql: {e}"))
        }
    });
    rt.serve(router(AppState { pool: pool.clone() })).await?;
    pool.close().await;
    Ok(())
}
