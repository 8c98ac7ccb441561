//! Trace context in Kafka message headers, so a trace continues from the producing service's request to
//! the consumer's handling of the message (W3C `traceparent` and B3 headers, like on HTTP); and the
//! topic a producer owns created with the partition count it is configured for ([`ensure_topic`]),
//! instead of whatever the broker's auto-creation picks on the first message.

use std::collections::BTreeMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MapInjector(BTreeMap<String, String>);

impl Injector for MapInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The trace context of `cx` as header names and values (W3C and B3), for a message that is
/// produced later (shop-order stores them with its outbox row).
pub fn trace_context(cx: &Context) -> BTreeMap<String, String> {
    let mut inj = MapInjector(BTreeMap::new());
    crate::telemetry::inject_into(cx, &mut inj);
    inj.0
}

/// [`trace_context`] of the current span.
pub fn current_trace_context() -> BTreeMap<String, String> {
    trace_context(&tracing::Span::current().context())
}

/// Adds the current span's trace context to `headers`.
pub fn inject_current(headers: OwnedHeaders) -> OwnedHeaders {
    inject(&tracing::Span::current().context(), headers)
}

/// Adds `cx` to `headers`.
pub fn inject(cx: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    trace_context(cx).into_iter().fold(headers, |h, (k, v)| {
        h.insert(Header {
            key: &k,
            value: Some(v.as_bytes()),
        })
    })
}

struct HeadersExtractor(Vec<(String, String)>);

impl Extractor for HeadersExtractor {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Parent context carried by a message's headers (empty when it carries none).
/// Use it with `span.set_parent(cx)` on the consumer's processing span.
pub fn extract<H: Headers>(headers: Option<&H>) -> Context {
    let Some(h) = headers else {
        return Context::new();
    };
    let pairs = h
        .iter()
        .filter_map(|hd| {
            let v = std::str::from_utf8(hd.value?).ok()?;
            Some((hd.key.to_owned(), v.to_owned()))
        })
        .collect();
    crate::telemetry::extract_from(&HeadersExtractor(pairs))
}

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn round_trips_through_kafka_headers() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                Box::new(opentelemetry_zipkin::Propagator::new()),
                Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
            ]),
        );
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc);
        let headers = inject(
            &cx,
            OwnedHeaders::new().insert(Header {
                key: "k",
                value: Some("v"),
            }),
        );
        let keys: Vec<&str> = headers.iter().map(|h| h.key).collect();
        assert!(keys.contains(&"traceparent"), "{keys:?}");
        let back = extract(Some(&headers));
        let span = back.span();
        let got = span.span_context();
        assert_eq!(
            got.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(got.span_id().to_string(), "00f067aa0ba902b7");
        assert!(
            !extract::<OwnedHeaders>(None)
                .span()
                .span_context()
                .is_valid()
        );
    }
}

/// What [`ensure_topic`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// Created now with the partitions asked for.
    Created,
    /// It existed already, with this many partitions (never changed here: adding partitions would
    /// move keys to other partitions and break per-key order).
    Existed(i32),
}

/// Creates `topic` with `partitions` partitions and the broker's default replication factor
/// (KIP-464), unless it exists. Errors when the broker cannot be reached or refuses.
pub async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<TopicState, rdkafka::error::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    use std::time::Duration;

    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "5000")
        .create()?;
    let new = NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(-1));
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new], &opts).await?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(TopicState::Created),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
            let topic = topic.to_owned();
            let metadata = tokio::task::spawn_blocking(move || {
                admin
                    .inner()
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .map(|m| {
                        m.topics().first().map_or(0, |t| {
                            i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)
                        })
                    })
            })
            .await
            .map_err(|_| {
                rdkafka::error::KafkaError::AdminOpCreation("metadata task failed".to_owned())
            })??;
            Ok(TopicState::Existed(metadata))
        }
        Some(Err((_, code))) => Err(rdkafka::error::KafkaError::AdminOp(code)),
        None => Err(rdkafka::error::KafkaError::AdminOpCreation(
            "no result for the topic".to_owned(),
        )),
    }
}
