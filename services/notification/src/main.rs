//! shop-notification: consumes OrderPlaced events exactly-once-effectively, stores and streams notifications.
//!
//! This file only wires configuration, the shared runtime (logs, traces, health, metrics,
//! registration, graceful shutdown), MongoDB, the Kafka consumer loop and the HTTP routes.

mod api;
mod consumer;
mod event;
mod store;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shop_runtime::{
    CommonArgs, Runtime,
    faults::{FaultArgs, Faults},
};

/// Command-line / environment configuration of shop-notification.
#[derive(Parser, Debug)]
#[command(name = "shop-notification", version, about)]
#[command(mut_arg("mongo_db", |a| a
    .required(false)
    .default_value("notification-service")
    .help("MongoDB database")))]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(flatten)]
    mongo: shop_runtime::mongo::MongoArgs,

    /// Kafka bootstrap servers.
    #[arg(long, env = "SHOP_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    kafka_bootstrap: String,

    /// Topic carrying OrderPlaced events (the original's `notificationTopic`).
    #[arg(
        long,
        env = "SHOP_NOTIFICATION_TOPIC",
        default_value = "notificationTopic"
    )]
    topic: String,

    /// Consumer group (the original's `notificationId`).
    #[arg(
        long,
        env = "SHOP_NOTIFICATION_GROUP",
        default_value = "notificationId"
    )]
    group: String,

    /// Dead-letter topic (default: `<topic>.DLT`, as Spring Kafka names it).
    #[arg(long, env = "SHOP_NOTIFICATION_DLT")]
    dlt_topic: Option<String>,

    /// Webhook URL each new notification is POSTed to (off when unset).
    #[arg(long, env = "SHOP_WEBHOOK_URL")]
    webhook_url: Option<String>,

    /// Webhook attempts in total before the record is dead-lettered.
    #[arg(long, env = "SHOP_WEBHOOK_MAX_ATTEMPTS", default_value_t = 4)]
    webhook_max_attempts: u32,

    /// First webhook retry delay in milliseconds (doubles each retry).
    #[arg(long, env = "SHOP_WEBHOOK_BACKOFF_MS", default_value_t = 250)]
    webhook_backoff_ms: u64,

    /// Cap of the webhook retry delay in milliseconds.
    #[arg(long, env = "SHOP_WEBHOOK_MAX_BACKOFF_MS", default_value_t = 4000)]
    webhook_max_backoff_ms: u64,

    /// Timeout of one webhook attempt in milliseconds.
    #[arg(long, env = "SHOP_WEBHOOK_TIMEOUT_MS", default_value_t = 3000)]
    webhook_timeout_ms: u64,

    /// Most records taken from Kafka and stored in one MongoDB insert.
    #[arg(long, env = "SHOP_NOTIFICATION_BATCH_MAX", default_value_t = 256)]
    batch_max: usize,

    /// Seconds between keep-alive comments on the SSE stream.
    #[arg(long, env = "SHOP_SSE_KEEP_ALIVE_SECS", default_value_t = 15)]
    sse_keep_alive_secs: u64,

    /// Buffered notifications per stream subscriber before it is told it lagged.
    #[arg(long, env = "SHOP_SSE_BUFFER", default_value_t = 1024)]
    sse_buffer: usize,

    #[command(flatten)]
    faults: FaultArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = Runtime::init("notification", &args.common)
        .await
        .context("starting the runtime")?;
    let listener = rt.bind(8084).await.context("binding the listener")?;
    let store = store::NotificationStore::connect(&args.mongo.mongo_url, &args.mongo.mongo_db)
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
    let webhook = match &args.webhook_url {
        Some(url) => Some(
            webhook::Webhook::new(webhook::WebhookConfig {
                url: url.clone(),
                max_attempts: args.webhook_max_attempts.max(1),
                initial_backoff: Duration::from_millis(args.webhook_backoff_ms),
                max_backoff: Duration::from_millis(args.webhook_max_backoff_ms),
                timeout: Duration::from_millis(args.webhook_timeout_ms),
            })
            .context("building the webhook client")?,
        ),
        None => None,
    };
    let (tx, _) = tokio::sync::broadcast::channel(args.sse_buffer.max(16));
    let counters = Arc::new(consumer::Counters::default());
    counters.register(&mut rt.metrics().registry());
    let cfg = consumer::ConsumerConfig {
        bootstrap: args.kafka_bootstrap.clone(),
        topic: args.topic.clone(),
        group: args.group.clone(),
        dlt_topic: args
            .dlt_topic
            .clone()
            .unwrap_or_else(|| format!("{}.DLT", args.topic)),
        store_retry_max: Duration::from_secs(5),
        batch_max: args.batch_max,
    };
    let kafka = consumer::make_consumer(&cfg).context("creating the Kafka consumer")?;
    let producer =
        consumer::make_producer(&args.kafka_bootstrap).context("creating the DLT producer")?;
    let pipeline = Arc::new(consumer::Pipeline {
        store: store.clone(),
        webhook,
        tx: tx.clone(),
        counters,
    });
    let shutdown = rt.shutdown_token();
    let consuming = tokio::spawn(consumer::run(
        cfg,
        kafka,
        producer,
        pipeline,
        // Fault flags (spec.faults): notificationConsumerPaused; None when SHOP_FAULTS_FILE is unset.
        Faults::from_args(&args.faults, &rt.metrics(), shutdown.clone()),
        shutdown.clone(),
    ));
    let state = Arc::new(api::AppState {
        store: store.clone(),
        tx,
        shutdown: shutdown.clone(),
        keep_alive: Duration::from_secs(args.sse_keep_alive_secs.max(1)),
    });
    rt.serve(
        listener,
        api::router(state).merge(shop_runtime::openapi::route(
            &<api::ApiDoc as utoipa::OpenApi>::openapi(),
        )),
    )
    .await
    .context("serving HTTP")?;
    // serve returns after the shutdown signal; let the consumer commit its final offsets.
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), consuming)
        .await
        .is_err()
    {
        tracing::warn!("consumer did not stop within 10 s");
    }
    store.close(Duration::from_secs(2)).await;
    Ok(())
}
