//! Logging and distributed tracing: one subscriber per process that writes JSON (or text) lines carrying
//! trace_id/span_id, an OpenTelemetry tracer exporting to Zipkin, and W3C trace-context + B3 propagation.

// opentelemetry-zipkin marks itself deprecated in favour of OTLP; the issue asks for Zipkin export and B3, so we use it.
#![allow(deprecated)]

use crate::config::LogFormat;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Zipkin exporter could not be built (bad endpoint).
    #[error("zipkin exporter: {0}")]
    Zipkin(String),
    /// `RUST_LOG` / `--log-filter` is not a tracing filter.
    #[error("RUST_LOG / --log-filter {filter:?} is not a valid log filter: {reason}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// The log filter when none is given: info, with the chatty libraries at warn.
pub const DEFAULT_LOG_FILTER: &str =
    "info,h2=warn,hyper=warn,reqwest=warn,rdkafka=warn,opentelemetry=warn";

/// Parses a log filter (`RUST_LOG` syntax); `None` gives [`DEFAULT_LOG_FILTER`].
pub fn log_filter(filter: Option<&str>) -> Result<EnvFilter, TelemetryError> {
    let text = filter.unwrap_or(DEFAULT_LOG_FILTER);
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| TelemetryError::LogFilter {
            filter: text.to_owned(),
            reason: e.to_string(),
        })
}

/// Installs the global subscriber, tracer provider and propagator once per process.
/// Later calls (several runtimes in one test process) are no-ops.
pub(crate) fn init(
    app: &str,
    format: LogFormat,
    filter: Option<&str>,
    zipkin: Option<&str>,
) -> Result<(), TelemetryError> {
    // Parsed first: a bad filter is an error even when another runtime of the process set up
    // logging already.
    let filter = log_filter(filter)?;
    if PROVIDER.get().is_some() {
        return Ok(());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(app.to_owned())
            .build(),
    );
    if let Some(endpoint) = zipkin.filter(|e| !e.trim().is_empty()) {
        let client = SpawningClient::new(app).map_err(|e| TelemetryError::Zipkin(e.to_string()))?;
        let exporter = opentelemetry_zipkin::ZipkinExporter::builder()
            .with_collector_endpoint(endpoint)
            .with_http_client(client)
            .build()
            .map_err(|e| TelemetryError::Zipkin(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .with_max_queue_size(8192)
                    .build(),
            )
            .build();
        builder = builder.with_span_processor(processor);
    }
    let provider = builder.build();
    let tracer = provider.tracer(app.to_owned());
    if PROVIDER.set(provider.clone()).is_err() {
        return Ok(());
    }
    global::set_tracer_provider(provider);
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(opentelemetry_zipkin::Propagator::with_encoding(
            opentelemetry_zipkin::B3Encoding::SingleAndMultiHeader,
        )),
        Box::new(TraceContextPropagator::new()),
    ]));

    let fmt_layer = tracing_subscriber::fmt::layer()
        .event_format(LineFormat { format })
        .with_writer(std::io::stdout)
        .boxed();
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);
    // A second global subscriber (e.g. set by a test harness) is not an error worth failing on.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init();
    Ok(())
}

/// Flushes buffered spans (blocking; call from a blocking context or `spawn_blocking`).
pub fn flush_spans() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// Injects `cx` into HTTP headers as W3C `traceparent` and B3 (`b3` and `X-B3-*`).
pub fn inject_headers(cx: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

/// Extracts a remote parent from W3C or B3 headers (an empty context when none is present).
pub fn extract_headers(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&opentelemetry_http::HeaderExtractor(headers)))
}

/// Injects into any carrier (Kafka headers use this).
pub fn inject_into(cx: &Context, carrier: &mut dyn Injector) {
    global::get_text_map_propagator(|p| p.inject_context(cx, carrier));
}

/// Extracts from any carrier.
pub fn extract_from(carrier: &dyn Extractor) -> Context {
    global::get_text_map_propagator(|p| p.extract(carrier))
}

/// Trace id and span id of the current tracing span (None outside any span).
pub fn current_ids() -> Option<(String, String)> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Writes each event as one JSON object (or a text line) with the current trace/span ids.
struct LineFormat {
    format: LogFormat,
}

#[derive(Default)]
struct FieldsVisitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for FieldsVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.message = v;
        } else {
            self.fields
                .insert(field.name().to_owned(), serde_json::Value::String(v));
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().to_owned(), value.into());
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut visitor = FieldsVisitor::default();
        event.record(&mut visitor);
        let meta = event.metadata();
        let ids = if ctx.lookup_current().is_some() {
            current_ids()
        } else {
            None
        };
        let ts = chrono_like_now();
        match self.format {
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), ts.into());
                obj.insert("level".into(), meta.level().as_str().into());
                obj.insert("target".into(), meta.target().into());
                obj.insert("message".into(), visitor.message.into());
                if let Some((t, s)) = ids {
                    obj.insert("trace_id".into(), t.into());
                    obj.insert("span_id".into(), s.into());
                }
                for (k, v) in visitor.fields {
                    obj.entry(k).or_insert(v);
                }
                writeln!(writer, "{}", serde_json::Value::Object(obj))
            }
            LogFormat::Text => {
                write!(
                    writer,
                    "{ts} {:>5} {}: {}",
                    meta.level(),
                    meta.target(),
                    visitor.message
                )?;
                for (k, v) in visitor.fields {
                    match v {
                        serde_json::Value::String(s) => write!(writer, " {k}={s}")?,
                        other => write!(writer, " {k}={other}")?,
                    }
                }
                if let Some((t, s)) = ids {
                    write!(writer, " trace_id={t} span_id={s}")?;
                }
                writeln!(writer)
            }
        }
    }
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a date crate.
fn chrono_like_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let millis = now.subsec_millis();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant), valid for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// Zipkin upload client: the SDK's batch processor runs exports on its own thread without a Tokio
/// reactor, so each request is spawned onto the runtime that built this client and awaited from there.
#[derive(Debug, Clone)]
struct SpawningClient {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    service_name: String,
}

/// opentelemetry-zipkin 0.33 no longer writes `localEndpoint.serviceName`, without which Zipkin cannot
/// find spans by service; add it to every span of the upload body.
fn add_service_name(body: &[u8], service: &str) -> Option<Bytes> {
    let mut spans: Vec<serde_json::Value> = serde_json::from_slice(body).ok()?;
    for span in &mut spans {
        let obj = span.as_object_mut()?;
        let ep = obj
            .entry("localEndpoint")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(ep) = ep.as_object_mut() {
            ep.entry("serviceName")
                .or_insert_with(|| serde_json::Value::String(service.to_owned()));
        }
    }
    serde_json::to_vec(&spans).ok().map(Bytes::from)
}

impl SpawningClient {
    fn new(app: &str) -> Result<Self, String> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            handle,
            service_name: app.to_ascii_lowercase(),
        })
    }
}

impl HttpClient for SpawningClient {
    fn send_bytes<'a, 'async_trait>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'a: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let handle = self.handle.clone();
        let service = self.service_name.clone();
        Box::pin(async move {
            let join = handle.spawn(async move {
                let (parts, body) = request.into_parts();
                let body = add_service_name(&body, &service).unwrap_or(body);
                let url = parts.uri.to_string();
                let resp = client
                    .request(parts.method, url)
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.bytes().await?;
                let mut out = Response::new(body);
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                Ok::<_, reqwest::Error>(out)
            });
            match join.await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(Box::new(e) as HttpError),
                Err(e) => Err(Box::new(e) as HttpError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_body_gets_the_service_name() {
        let body = br#"[{"traceId":"a","localEndpoint":{}},{"traceId":"b"}]"#;
        let out = add_service_name(body, "product").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["localEndpoint"]["serviceName"], "product");
        assert_eq!(v[1]["localEndpoint"]["serviceName"], "product");
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused_naming_rust_log() {
        assert!(log_filter(None).is_ok());
        assert!(log_filter(Some("warn,shop_order=debug")).is_ok());
        let err = log_filter(Some("shop_order=loud")).unwrap_err().to_string();
        assert!(
            err.contains("RUST_LOG") && err.contains("shop_order=loud"),
            "{err}"
        );
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let ts = chrono_like_now();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.starts_with("20") && ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    }
}
