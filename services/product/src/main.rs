//! shop-product: product catalogue on MongoDB; seeds stock into inventory without losing it.
//!
//! This file only wires configuration, the shared runtime (logs, traces, health, metrics,
//! registration, graceful shutdown), the MongoDB store, the stock retry loop and the HTTP routes.

mod api;
mod inventory;
mod model;
mod search;
mod stock;
mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shop_runtime::{CommonArgs, Runtime};

/// Command-line / environment configuration of shop-product.
#[derive(Parser, Debug)]
#[command(name = "shop-product", version, about)]
#[command(mut_arg("mongo_db", |a| a
    .required(false)
    .default_value("product-service")
    .help("MongoDB database (the original's `product-service`)")))]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    mongo: shop_runtime::mongo::MongoArgs,

    /// Interval between retries of stock not yet confirmed by inventory, in milliseconds.
    #[arg(long, env = "SHOP_STOCK_RETRY_MS", default_value_t = 1000)]
    stock_retry_ms: u64,

    /// Upper bound of the retry interval while inventory stays down, and the interval of the idle
    /// pass that looks for markers another replica left, in milliseconds.
    #[arg(long, env = "SHOP_STOCK_RETRY_MAX_MS", default_value_t = 15000)]
    stock_retry_max_ms: u64,

    /// Timeout of one stock push to inventory, in milliseconds.
    #[arg(long, env = "SHOP_INVENTORY_TIMEOUT_MS", default_value_t = 2000)]
    inventory_timeout_ms: u64,

    /// Interval between reads of `product_changes` (other replicas' writes) into the search index,
    /// in milliseconds (50..=10000).
    #[arg(long, env = "SHOP_SEARCH_REFRESH_MS", default_value_t = 1000)]
    search_refresh_ms: u64,

    /// Interval between full rebuilds of the search index from the product collection, in seconds.
    #[arg(long, env = "SHOP_SEARCH_REBUILD_SECS", default_value_t = 600)]
    search_rebuild_secs: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SHOP_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = Runtime::init("product", &args.common)
        .await
        .context("starting the runtime")?;
    let listener = rt.bind(8081).await.context("binding the listener")?;
    let store = store::ProductStore::connect(&args.mongo.mongo_url, &args.mongo.mongo_db)
        .await
        .with_context(|| format!("connecting to MongoDB at {}", args.mongo.mongo_url))?;
    // Starts unready and creates the indexes in the background, so a MongoDB that is not there
    // yet makes the pod wait, not crash-loop.
    {
        let indexes = store.clone();
        shop_runtime::mongo::prepare(
            &rt.readiness(),
            args.mongo.describe().await,
            store.client(),
            move || {
                let store = indexes.clone();
                async move { store.ensure_indexes().await.map_err(|e| e.to_string()) }
            },
            rt.shutdown_token(),
        );
    }
    let target = inventory::InventoryTarget::new(
        rt.client(),
        Duration::from_millis(args.inventory_timeout_ms),
    );
    let syncer = Arc::new(stock::StockSyncer::new(store.clone(), target));
    syncer.register(&mut rt.metrics().registry());
    let retry = tokio::spawn(syncer.clone().run(
        Duration::from_millis(args.stock_retry_ms),
        Duration::from_millis(args.stock_retry_max_ms.max(args.stock_retry_ms)),
        rt.shutdown_token(),
    ));
    // Markers left by a previous run (crash, inventory outage) are retried right away.
    syncer.wake();
    let index = search::SharedIndex::default();
    let indexer = tokio::spawn(search::run(
        index.clone(),
        store.clone(),
        Duration::from_millis(args.search_refresh_ms.max(50)),
        Duration::from_secs(args.search_rebuild_secs.max(10)),
        rt.shutdown_token(),
    ));
    let state = Arc::new(api::AppState {
        store: store.clone(),
        syncer,
        search: index,
    });
    let router = api::router(state)
        .layer(axum::extract::DefaultBodyLimit::max(args.max_body_bytes))
        .merge(shop_runtime::openapi::route(
            &<api::ApiDoc as utoipa::OpenApi>::openapi(),
        ));
    rt.serve(listener, router).await.context("serving HTTP")?;
    retry.abort();
    indexer.abort();
    store.close(Duration::from_secs(2)).await;
    Ok(())
}
