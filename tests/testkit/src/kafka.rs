//! Reading a Kafka topic from a test, the one way every test does it: a real consumer in a fresh
//! group from the earliest offset, committing nothing, tolerant of a topic that does not exist
//! yet (the service under test creates it with its first event).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use serde_json::Value;

use crate::{fresh_name, kafka_bootstrap};

/// One Kafka record as a test sees it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The key as text (empty when there is none).
    pub key: String,
    /// The payload as JSON (`Null` when it is not JSON).
    pub value: Value,
    /// The payload's bytes.
    pub payload: Vec<u8>,
    /// Header names and values as text.
    pub headers: BTreeMap<String, String>,
}

impl Record {
    fn of<M: Message>(m: &M) -> Record {
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for hd in h.iter() {
                headers.insert(
                    hd.key.to_owned(),
                    String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        let payload = m.payload().unwrap_or_default().to_vec();
        Record {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            value: serde_json::from_slice(&payload).unwrap_or(Value::Null),
            payload,
            headers,
        }
    }
}

/// A consumer of `topic` on the local stack's broker, in a fresh group, from the beginning.
pub fn reader(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", fresh_name("test-reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "true")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .unwrap_or_else(|e| panic!("Kafka consumer for {topic}: {e}"));
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribing to {topic}: {e}"));
    consumer
}

/// Reads `topic` from the beginning until `want` records arrived (then `settle` longer, to catch
/// duplicates) or `timeout` passed.
pub async fn consume(topic: &str, want: usize, settle: Duration, timeout: Duration) -> Vec<Record> {
    let consumer = reader(topic);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut settle_until: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let until = settle_until.map_or(deadline, |s| s.min(deadline));
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                // Unknown topic until the first event creates it: keep polling.
                eprintln!("consumer of {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(m)) => {
                out.push(Record::of(&m));
                if out.len() >= want && settle_until.is_none() {
                    settle_until = Some(tokio::time::Instant::now() + settle);
                }
            }
        }
    }
    out
}

/// Reads `topic` from the beginning until a record keyed `key` arrives or `timeout` passes.
pub async fn record_keyed(topic: &str, key: &str, timeout: Duration) -> Option<Record> {
    let consumer = reader(topic);
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let left = deadline - tokio::time::Instant::now();
        match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(Ok(m)) if m.key() == Some(key.as_bytes()) => return Some(Record::of(&m)),
            Ok(Ok(_)) => {}
        }
    }
    None
}
