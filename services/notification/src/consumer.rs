//! The Kafka consumer loop: OrderPlaced record → stored notification → stream push → webhook.
//!
//! Exists to give the effectively-once guarantee the original lacked:
//! * offsets are committed (manually) only after the record's outcome is durable — the
//!   notification is stored in MongoDB, or the record is safely on the dead-letter topic;
//! * redelivery (a restart, a rebalance, a lost commit) is harmless because the store dedups on
//!   the event id, so a user is notified once;
//! * a record that cannot be decoded, or whose webhook keeps failing after bounded retries, goes to
//!   `<topic>.DLT` with the reason in headers, and consumption continues (the original v2 logged and
//!   skipped after nine instant retries);
//! * a MongoDB outage is not a property of the record, so it is retried with capped backoff (never
//!   dead-lettered, never committed) until the database returns or the service stops.
//!
//! While the fault flag `notificationConsumerPaused` (`shop_runtime::faults`) is on, the loop
//! takes no records: it stops polling between batches, so nothing is fetched into processing and
//! no offset moves; records wait in Kafka (or librdkafka's local queue) and are processed, once
//! each, when the flag is removed. Not polling was chosen over librdkafka's `pause`: for a
//! partition this process has not read from yet, `pause` discards the prefetched records and
//! `resume` goes on fetching after them (librdkafka 2.12, `rd_kafka_toppar_pause_resume`). A pause longer than `max.poll.interval.ms` (5 min) makes the member leave the group;
//! it rejoins at the next poll and starts from the committed offsets, so nothing is lost then
//! either (redelivery is de-duplicated).
//!
//! The span of each record continues the trace carried in the Kafka headers, so the notification
//! joins the order's trace in Zipkin.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use opentelemetry::trace::TraceContextExt;
use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use shop_runtime::faults::{Fault, FaultFlags, Faults};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::event::{self, DecodeError, OrderPlaced};
use crate::store::{Delivery, Notification, NotificationStore, Source, Stored};
use crate::webhook::{Outcome, Webhook};

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Topic with OrderPlaced events.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Dead-letter topic.
    pub dlt_topic: String,
    /// Upper bound of the MongoDB retry delay.
    pub store_retry_max: Duration,
    /// Most records stored in one MongoDB insert.
    pub batch_max: usize,
}

/// Errors that stop the consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// librdkafka refused the configuration or subscription.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Counters exported on `/metrics` (prometheus counters are shared handles: clones count together).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Notifications stored (first delivery of an event).
    pub stored: Counter,
    /// Redeliveries recognised as duplicates.
    pub duplicates: Counter,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: Counter,
    /// Webhook deliveries that succeeded.
    pub webhook_delivered: Counter,
    /// Webhook deliveries that gave up.
    pub webhook_failed: Counter,
}

impl Counters {
    /// Register every counter in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "notifications_stored",
            "Notifications stored (first delivery of an event)",
            self.stored.clone(),
        );
        registry.register(
            "notifications_duplicates",
            "Redelivered events recognised as already notified",
            self.duplicates.clone(),
        );
        registry.register(
            "notifications_dead_lettered",
            "Records sent to the dead-letter topic",
            self.dead_lettered.clone(),
        );
        registry.register(
            "notifications_webhook_delivered",
            "Webhook deliveries that succeeded",
            self.webhook_delivered.clone(),
        );
        registry.register(
            "notifications_webhook_failed",
            "Webhook deliveries that gave up after retries",
            self.webhook_failed.clone(),
        );
    }
}

/// Everything one record's processing needs.
pub struct Pipeline {
    /// Notification storage.
    pub store: NotificationStore,
    /// Webhook, when configured.
    pub webhook: Option<Webhook>,
    /// Live stream of new notifications.
    pub tx: broadcast::Sender<Notification>,
    /// Counters.
    pub counters: Arc<Counters>,
}

enum Step {
    /// Outcome durable: commit the offset.
    Done,
    /// Shutting down mid-record: do not commit, the record is redelivered later.
    Stopped,
}

/// Build the consumer (manual commits, earliest offset for a new group).
pub fn make_consumer(cfg: &ConsumerConfig) -> Result<StreamConsumer, ConsumerError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("group.id", &cfg.group)
        .set("client.id", "shop-notification")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("allow.auto.create.topics", "true")
        .create()?;
    consumer.subscribe(&[&cfg.topic])?;
    Ok(consumer)
}

/// Build the dead-letter producer (idempotent, all acks).
pub fn make_producer(bootstrap: &str) -> Result<FutureProducer, ConsumerError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "shop-notification-dlt")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .create()?)
}

/// Resolves when the fault flags change; never without fault flags (or once their poller is gone).
async fn flags_changed(changes: &mut Option<watch::Receiver<FaultFlags>>) {
    if let Some(rx) = changes
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// Consume until `shutdown`; then commit what is done, synchronously.
///
/// Records are taken in batches: the first is awaited, then whatever else librdkafka already has
/// buffered (up to `batch_max`) is taken without waiting, so an idle stream costs one record per
/// round trip and a backlog is drained with one MongoDB insert per batch.
pub async fn run(
    cfg: ConsumerConfig,
    consumer: StreamConsumer,
    producer: FutureProducer,
    pipeline: Arc<Pipeline>,
    faults: Option<Faults>,
    shutdown: CancellationToken,
) {
    let mut paused = false;
    let mut changes = faults.as_ref().map(Faults::subscribe);
    let mut done: HashMap<(String, i32), i64> = HashMap::new();
    tracing::info!(topic = %cfg.topic, group = %cfg.group, "consuming OrderPlaced events");
    loop {
        // Fault flag: while paused take nothing, between batches (the previous one is done and
        // committed), until the flags change.
        if let Some(faults) = &faults {
            let want = faults.flags().notification_consumer_paused;
            if want != paused {
                paused = want;
                if paused {
                    faults.count(Fault::NotificationConsumerPaused);
                    tracing::warn!(
                        "consumer paused by the fault flag notificationConsumerPaused; records wait in Kafka"
                    );
                } else {
                    tracing::info!(
                        "consumer resumed: the fault flag notificationConsumerPaused is off"
                    );
                }
            }
            if paused {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = flags_changed(&mut changes) => continue,
                }
            }
        }
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Before recv(): a pause that arrives with a record wins. recv() is cancel-safe (a
            // record is only taken when it is returned).
            () = flags_changed(&mut changes) => continue,
            m = consumer.recv() => m,
        };
        let first = match first {
            Ok(m) => m,
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                // The topic does not exist until the first order is published (auto-creation).
                tracing::debug!(topic = %cfg.topic, "topic not created yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < cfg.batch_max.max(1) {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "kafka receive error while batching");
                    break;
                }
                None => break,
            }
        }
        match process_batch(&cfg, &producer, &pipeline, &batch, &shutdown).await {
            Step::Done => {
                let mut tpl = TopicPartitionList::new();
                let mut next: HashMap<(&str, i32), i64> = HashMap::new();
                for m in &batch {
                    let e = next.entry((m.topic(), m.partition())).or_insert(0);
                    *e = (*e).max(m.offset() + 1);
                }
                for ((topic, partition), offset) in next {
                    done.insert((topic.to_owned(), partition), offset);
                    if let Err(e) =
                        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                    {
                        tracing::warn!(error = %e, "building offset commit");
                    }
                }
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, "offset commit failed; the records may be redelivered (dedup covers it)");
                }
            }
            Step::Stopped => break,
        }
    }
    if !done.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &done {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(error = %e, "building final commit");
            }
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => tracing::info!(partitions = done.len(), "final offsets committed"),
            Err(e) => {
                tracing::warn!(error = %e, "final offset commit failed; redelivery is deduplicated")
            }
        }
    }
    consumer.unsubscribe();
    tracing::info!("consumer stopped");
}

fn header_map(msg: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One record of a batch with its span (continuing the producer's trace) and decode result.
struct Item<'a> {
    msg: &'a BorrowedMessage<'a>,
    headers: Vec<(String, Vec<u8>)>,
    span: tracing::Span,
    trace_id: Option<String>,
    decoded: Result<OrderPlaced, DecodeError>,
}

fn item<'a>(msg: &'a BorrowedMessage<'a>) -> Item<'a> {
    let headers = header_map(msg);
    let span = tracing::info_span!(
        "notification.process",
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination = %msg.topic(),
        messaging.kafka.partition = msg.partition(),
        messaging.kafka.offset = msg.offset(),
        order_number = tracing::field::Empty,
        event_id = tracing::field::Empty,
    );
    let parent = shop_runtime::kafka::extract(msg.headers());
    let parent_trace = {
        let sc = parent.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    };
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "could not attach the record's trace context");
    }
    // The span's own trace id when tracing is on; otherwise the producer's, so the notification
    // still names the order's trace.
    let trace_id = {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid()
            .then(|| sc.trace_id().to_string())
            .or(parent_trace)
    };
    let header_event_id = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("eventId"))
        .map(|(_, v)| v.as_slice());
    let decoded = event::decode(msg.payload(), header_event_id);
    if let Ok(ev) = &decoded {
        span.record("order_number", ev.order_number.as_str());
        span.record("event_id", ev.event_id.to_string().as_str());
    }
    Item {
        msg,
        headers,
        span,
        trace_id,
        decoded,
    }
}

async fn process_batch(
    cfg: &ConsumerConfig,
    producer: &FutureProducer,
    p: &Pipeline,
    batch: &[BorrowedMessage<'_>],
    shutdown: &CancellationToken,
) -> Step {
    let items: Vec<Item<'_>> = batch.iter().map(item).collect();
    // 1. Poison records go to the dead-letter topic first (their offsets are in this batch).
    for it in &items {
        if let Err(e) = &it.decoded {
            let reason = e.to_string();
            let step = async {
                tracing::warn!(error = %reason, "undecodable record; dead-lettering");
                dead_letter(
                    cfg,
                    producer,
                    p,
                    it.msg,
                    &it.headers,
                    "decode",
                    &reason,
                    shutdown,
                )
                .await
            }
            .instrument(it.span.clone())
            .await;
            if let Step::Stopped = step {
                return Step::Stopped;
            }
        }
    }
    // 2. Store every good record in one insert, retrying while MongoDB is unavailable.
    let good: Vec<&Item<'_>> = items.iter().filter(|i| i.decoded.is_ok()).collect();
    let rows: Vec<(&OrderPlaced, Source, Option<String>)> = good
        .iter()
        .filter_map(|i| {
            i.decoded.as_ref().ok().map(|ev| {
                (
                    ev,
                    Source {
                        topic: i.msg.topic().to_owned(),
                        partition: i.msg.partition(),
                        offset: i.msg.offset(),
                    },
                    i.trace_id.clone(),
                )
            })
        })
        .collect();
    let initial = if p.webhook.is_some() {
        Delivery::Pending
    } else {
        Delivery::None
    };
    let mut delay = Duration::from_millis(100);
    let stored = loop {
        match p.store.store_many(&rows, initial).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, records = rows.len(), retry_in_ms = delay.as_millis() as u64, "storing notifications failed; retrying (offsets not committed)");
                tokio::select! {
                    () = shutdown.cancelled() => return Step::Stopped,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(cfg.store_retry_max);
            }
        }
    };
    // 3. Push new ones to the stream; deliver webhooks (resuming ones left PENDING by a crash).
    let mut fresh: HashSet<String> = HashSet::new();
    for (it, st) in good.iter().zip(stored) {
        let to_deliver = {
            let _enter = it.span.enter();
            match st {
                Stored::New(n) => {
                    p.counters.stored.inc();
                    tracing::info!(order_number = %n.order_number, event_id = %n.event_id, "notification stored: order placed");
                    fresh.insert(n.event_id.clone());
                    // No receivers is fine: nobody is watching the stream.
                    let _ = p.tx.send(n.clone());
                    Some(n)
                }
                Stored::Duplicate(existing) => {
                    p.counters.duplicates.inc();
                    tracing::info!("duplicate event; already notified");
                    existing
                        .filter(|n| n.delivery == Delivery::Pending && !fresh.contains(&n.event_id))
                }
            }
        };
        if let (Some(n), Some(hook)) = (to_deliver, &p.webhook) {
            let step = deliver(cfg, producer, p, it, hook, &n, shutdown)
                .instrument(it.span.clone())
                .await;
            if let Step::Stopped = step {
                return Step::Stopped;
            }
        }
    }
    Step::Done
}

async fn deliver(
    cfg: &ConsumerConfig,
    producer: &FutureProducer,
    p: &Pipeline,
    it: &Item<'_>,
    hook: &Webhook,
    n: &Notification,
    shutdown: &CancellationToken,
) -> Step {
    match hook.deliver(n).await {
        Outcome::Delivered { attempts } => {
            p.counters.webhook_delivered.inc();
            if let Err(e) = p
                .store
                .set_delivery(n, Delivery::Delivered, attempts, None)
                .await
            {
                tracing::warn!(error = %e, "recording webhook delivery failed");
            }
            Step::Done
        }
        Outcome::Failed { attempts, reason } => {
            p.counters.webhook_failed.inc();
            tracing::warn!(attempts, %reason, "webhook delivery gave up; dead-lettering");
            if let Err(e) = p
                .store
                .set_delivery(n, Delivery::Failed, attempts, Some(&reason))
                .await
            {
                tracing::warn!(error = %e, "recording webhook failure failed");
            }
            let why = format!("webhook delivery failed after {attempts} attempt(s): {reason}");
            dead_letter(
                cfg,
                producer,
                p,
                it.msg,
                &it.headers,
                "webhook",
                &why,
                shutdown,
            )
            .await
        }
    }
}

/// Headers added to a dead-lettered record.
pub const DLT_REASON: &str = "dlt-reason";
/// Kind of failure: `decode` or `webhook`.
pub const DLT_KIND: &str = "dlt-error-kind";
/// Original topic.
pub const DLT_TOPIC: &str = "dlt-original-topic";
/// Original partition (decimal text).
pub const DLT_PARTITION: &str = "dlt-original-partition";
/// Original offset (decimal text).
pub const DLT_OFFSET: &str = "dlt-original-offset";

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    cfg: &ConsumerConfig,
    producer: &FutureProducer,
    p: &Pipeline,
    msg: &BorrowedMessage<'_>,
    headers: &[(String, Vec<u8>)],
    kind: &str,
    reason: &str,
    shutdown: &CancellationToken,
) -> Step {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let mut delay = Duration::from_millis(200);
    loop {
        let mut h = OwnedHeaders::new_with_capacity(headers.len() + 5);
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        for (k, v) in [
            (DLT_REASON, reason),
            (DLT_KIND, kind),
            (DLT_TOPIC, msg.topic()),
            (DLT_PARTITION, partition.as_str()),
            (DLT_OFFSET, offset.as_str()),
        ] {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&cfg.dlt_topic).headers(h);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        match producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => {
                p.counters.dead_lettered.inc();
                tracing::warn!(dlt = %cfg.dlt_topic, %kind, %reason, "record dead-lettered");
                return Step::Done;
            }
            Err((e, _)) => {
                tracing::error!(error = %e, "dead-letter publish failed; retrying (offset not committed)");
                tokio::select! {
                    () = shutdown.cancelled() => return Step::Stopped,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
