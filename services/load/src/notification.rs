//! `shop-load notification` (formerly the notification crate's `notification-load` binary): the load
//! generator of `hack/bench/notification.sh`. It publishes N distinct OrderPlaced events (the
//! shop-order wire shape) to a topic as fast as the broker takes them, then exits.
//!
//! It exists so the benchmark measures shop-notification's consumption against real Kafka records
//! without needing the order service in the loop; it is bounded by `--count`.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kafka bootstrap servers (loopback only in benchmarks).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to publish to.
    #[arg(long)]
    topic: String,
    /// Number of events (bounded load).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
}

/// Publishes the events and prints `<count> <seconds>`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.count <= 1_000_000, "--count is capped at 1,000,000");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating the producer")?;
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..args.count {
        let id = uuid::Uuid::new_v4().to_string();
        let order = format!("bench-{i}-{}", &id[..8]);
        let body = serde_json::json!({
            "eventId": id, "eventType": "OrderPlaced", "orderNumber": order,
            "occurredAt": chrono::Utc::now().to_rfc3339(),
            "lines": [{"skuCode": "iphone_13", "price": "999.99", "quantity": 1}],
            "total": "999.99"
        })
        .to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "__TypeId__",
                value: Some("event"),
            })
            .insert(Header {
                key: "eventId",
                value: Some(id.as_str()),
            });
        let p = producer.clone();
        let topic = args.topic.clone();
        pending.push(async move {
            p.send(
                FutureRecord::to(&topic)
                    .key(&order)
                    .payload(&body)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        });
        if pending.len() >= 5000 {
            drain(&mut pending, 2500).await?;
        }
    }
    drain(&mut pending, 0).await?;
    let secs = started.elapsed().as_secs_f64();
    println!("{} {:.3}", args.count, secs);
    Ok(())
}

async fn drain<F>(
    pending: &mut futures::stream::FuturesUnordered<F>,
    down_to: usize,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = Result<(), rdkafka::error::KafkaError>>,
{
    use futures::StreamExt;
    while pending.len() > down_to {
        if let Some(r) = pending.next().await {
            r.context("publishing an event")?;
        }
    }
    Ok(())
}
