//! The outbox relay: claims unsent outbox rows (a short lease, so several replicas never send
//! the same row at the same time), publishes them with an idempotent Kafka producer and marks
//! them sent only after the broker acknowledged them. At least once; a Kafka outage only
//! delays events, orders keep being accepted.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::join_all;
use prometheus_client::metrics::counter::Counter;
use rdkafka::{
    ClientConfig, ClientContext,
    config::RDKafkaLogLevel,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use sqlx::{MySqlPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// How long the producer keeps trying one message before reporting failure.
    pub message_timeout: Duration,
    /// Poll interval when idle (new orders also wake the relay at once).
    pub poll_interval: Duration,
    /// Rows per batch.
    pub batch_size: u32,
}

/// Counters the relay exposes on /metrics.
#[derive(Debug, Default, Clone)]
pub struct RelayStats {
    /// Events acknowledged by Kafka.
    pub published: Counter,
    /// Publish attempts that failed (will be retried).
    pub failed: Counter,
}

/// Errors of one relay round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Kafka refused or timed out on some messages.
    #[error("kafka: {failed} of {total} messages not acknowledged: {first}")]
    Kafka {
        /// Failed messages.
        failed: usize,
        /// Batch size.
        total: usize,
        /// First error.
        first: String,
    },
}

/// Client context that reports broker outages at most every 30 s at WARN instead of
/// librdkafka's stream of ERROR lines (an outage is expected and handled by the outbox).
#[derive(Debug, Default)]
pub struct QuietContext {
    last_warn: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl ClientContext for QuietContext {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(facility = fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let transport = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        );
        if !transport {
            tracing::warn!(error = %error, %reason, "Kafka client error");
            return;
        }
        let mut last = self.last_warn.lock();
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(%reason, "Kafka unreachable; events wait in the outbox");
        }
    }
}

/// The relay's producer type.
pub type OutboxProducer = FutureProducer<QuietContext>;

/// Builds the idempotent producer.
pub fn producer(cfg: &RelayConfig) -> Result<OutboxProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("client.id", "shop-order")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            cfg.message_timeout.as_millis().to_string(),
        )
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(QuietContext::default())
}

/// The relay task.
pub struct Relay {
    pool: MySqlPool,
    producer: OutboxProducer,
    wake: Arc<Notify>,
    cfg: RelayConfig,
    stats: Arc<RelayStats>,
    id: String,
}

struct Pending {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    headers: BTreeMap<String, String>,
}

impl Relay {
    /// A relay over `pool`, woken by `wake`.
    pub fn new(
        pool: MySqlPool,
        producer: OutboxProducer,
        wake: Arc<Notify>,
        cfg: RelayConfig,
        stats: Arc<RelayStats>,
    ) -> Self {
        Self {
            pool,
            producer,
            wake,
            cfg,
            stats,
            id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Runs until `shutdown`, then flushes what is in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            let round = self.pump_once().await;
            if round.is_ok() && failing {
                failing = false;
                tracing::info!("outbox relay publishing again");
            }
            let wait = match round {
                Ok(n) if n >= self.cfg.batch_size as usize => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    self.cfg.poll_interval
                }
                Err(e) => {
                    failing = true;
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay round failed; events stay pending");
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    w
                }
            };
            if wait.is_zero() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        let _ = self.producer.flush(Timeout::After(Duration::from_secs(2)));
        tracing::info!("outbox relay stopped");
    }

    /// One round: claim, publish, mark. Returns the number of rows handled.
    pub async fn pump_once(&self) -> Result<usize, RelayError> {
        let lease_secs = self.cfg.message_timeout.as_secs() + 10;
        let claimed = sqlx::query(
            "UPDATE outbox SET claimed_by = ?, claimed_until = NOW(6) + INTERVAL ? SECOND, attempts = attempts + 1 \
             WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < NOW(6)) \
             ORDER BY id LIMIT ?",
        )
        .bind(&self.id)
        .bind(lease_secs)
        .bind(self.cfg.batch_size)
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 0 {
            return Ok(0);
        }
        let rows = sqlx::query(
            "SELECT id, topic, msg_key, payload, headers FROM outbox \
             WHERE claimed_by = ? AND sent_at IS NULL ORDER BY id",
        )
        .bind(&self.id)
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for r in rows {
            let headers: String = r.try_get("headers")?;
            pending.push(Pending {
                id: r.try_get("id")?,
                topic: r.try_get("topic")?,
                key: r.try_get("msg_key")?,
                payload: r.try_get("payload")?,
                headers: serde_json::from_str(&headers).unwrap_or_default(),
            });
        }
        let sends = pending.iter().map(|p| {
            let mut headers = OwnedHeaders::new_with_capacity(p.headers.len());
            for (k, v) in &p.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(&p.topic)
                .key(&p.key)
                .payload(&p.payload)
                .headers(headers);
            self.producer
                .send(record, Timeout::After(self.cfg.message_timeout))
        });
        let results = join_all(sends).await;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        let mut first_err = None;
        for (p, r) in pending.iter().zip(results) {
            match r {
                Ok(_) => sent.push(p.id),
                Err((e, _)) => {
                    first_err.get_or_insert_with(|| e.to_string());
                    failed.push(p.id);
                }
            }
        }
        if !sent.is_empty() {
            mark(
                &self.pool,
                "sent_at = NOW(6), claimed_by = NULL, claimed_until = NULL",
                &sent,
            )
            .await?;
            self.stats.published.inc_by(sent.len() as u64);
            tracing::debug!(count = sent.len(), "outbox events published");
        }
        if !failed.is_empty() {
            mark(
                &self.pool,
                "claimed_by = NULL, claimed_until = NULL",
                &failed,
            )
            .await?;
            self.stats.failed.inc_by(failed.len() as u64);
            return Err(RelayError::Kafka {
                failed: failed.len(),
                total: pending.len(),
                first: first_err.unwrap_or_default(),
            });
        }
        Ok(pending.len())
    }
}

async fn mark(pool: &MySqlPool, set: &str, ids: &[i64]) -> Result<(), sqlx::Error> {
    let mut qb: sqlx::QueryBuilder<sqlx::MySql> =
        sqlx::QueryBuilder::new(format!("UPDATE outbox SET {set} WHERE id IN ("));
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    sep.push_unseparated(")");
    qb.build().execute(pool).await?;
    Ok(())
}
