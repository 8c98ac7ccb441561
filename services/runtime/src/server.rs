//! The HTTP server side every service shares: health and metrics endpoints, a middleware that opens a
//! server span from incoming W3C/B3 headers, records request metrics and echoes `x-request-id`, and the
//! graceful-shutdown sequence (deregister, stop accepting, drain within the grace period, flush spans).

use crate::health::Readiness;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::telemetry;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// How long a stopping server must see no new connection before it closes its listener.
pub const ARRIVALS_QUIET: Duration = Duration::from_secs(1);
/// The longest a stopping server keeps its listener open for late arrivals after the shutdown
/// delay (inside the pod's 30 s grace period, with the 7 s delay and the 10 s drain).
pub const ARRIVALS_MAX_WAIT: Duration = Duration::from_secs(10);

/// When a stopping server may close its listener. After SIGTERM a pod is unready and answers
/// with `Connection: close`, but connections keep arriving for as long as some kube-proxy or
/// caller has not yet seen it leave its Service: a fixed delay is a guess at that time, and a
/// busy node (CI's, loaded) can take longer. Closing the listener then refuses them (and resets
/// those still in its backlog). So the server closes once arrivals have stopped: after
/// [`ARRIVALS_QUIET`] without a new connection, at most [`ARRIVALS_MAX_WAIT`] after being asked.
#[derive(Debug, Clone)]
pub struct Arrivals {
    epoch: tokio::time::Instant,
    /// Milliseconds from `epoch` to the last accepted connection.
    last_ms: Arc<AtomicU64>,
}

impl Default for Arrivals {
    fn default() -> Self {
        Self::new()
    }
}

impl Arrivals {
    /// No connection yet.
    pub fn new() -> Self {
        Arrivals {
            epoch: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records an accepted connection.
    pub fn arrived(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Returns once no connection arrived for `quiet`, or `max_wait` after the call.
    pub async fn quiet(&self, quiet: Duration, max_wait: Duration) {
        let give_up = tokio::time::Instant::now() + max_wait;
        loop {
            let until = (self.last() + quiet).min(give_up);
            if tokio::time::Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

#[derive(Clone)]
pub(crate) struct ServerState {
    pub(crate) metrics: Metrics,
    pub(crate) readiness: Readiness,
}

async fn live() -> impl IntoResponse {
    Json(serde_json::json!({"status": "UP"}))
}

async fn ready(State(st): State<ServerState>) -> Response {
    let report = st.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report.body)).into_response()
}

async fn metrics(State(st): State<ServerState>) -> Response {
    let mut resp = st.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Decrements the in-flight gauge even when the request future is dropped.
struct InFlight(prometheus_client::metrics::gauge::Gauge);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn observe(State(st): State<ServerState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let gauge = st.metrics.in_flight.get_or_create_owned(&RouteLabels {
        method: method.to_string(),
        route: route.clone(),
    });
    gauge.inc();
    let guard = InFlight(gauge);

    let quiet = route.starts_with("/health/") || route == "/metrics";
    let mut resp = if quiet {
        next.run(req).await
    } else {
        let parent = telemetry::extract_headers(req.headers());
        let span = tracing::info_span!(
            "http.server",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.method = %method,
            http.route = %route,
            http.status_code = tracing::field::Empty,
            request_id = %request_id,
        );
        let _ = span.set_parent(parent);
        let resp = next.run(req).instrument(span.clone()).await;
        span.record("http.status_code", resp.status().as_u16());
        if resp.status().is_server_error() {
            span.set_status(opentelemetry::trace::Status::error("server error"));
        }
        resp
    };
    drop(guard);
    let labels = HttpLabels {
        method: method.to_string(),
        route,
        status: resp.status().as_u16(),
    };
    st.metrics.requests.get_or_create(&labels).inc();
    st.metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    // Draining (between SIGTERM and the end of the shutdown delay): the caller's kept-alive
    // connection ends after this answer, so it is not closed idle later under a request the
    // caller sends at that instant.
    if st.readiness.is_draining() {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Adds `/health/live`, `/health/ready`, `/metrics` and the observing middleware to `router`.
pub(crate) fn wrap(router: Router, st: ServerState) -> Router {
    let infra = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(st.clone());
    router
        .merge(infra)
        .layer(axum::middleware::from_fn_with_state(st, observe))
}

#[cfg(test)]
mod tests {
    use super::Arrivals;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn arrivals_close_after_a_quiet_second_or_the_cap() {
        let a = Arrivals::new();
        // Nothing arriving: quiet at once (the last arrival is long enough ago).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = tokio::time::Instant::now();
        a.quiet(Duration::from_secs(1), Duration::from_secs(10))
            .await;
        assert!(t.elapsed() < Duration::from_millis(10));

        // Arrivals every 400 ms for 3 s keep it open until a second after the last one.
        let feeder = {
            let a = a.clone();
            tokio::spawn(async move {
                for _ in 0..8 {
                    a.arrived();
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            })
        };
        tokio::task::yield_now().await;
        let t = tokio::time::Instant::now();
        a.quiet(Duration::from_secs(1), Duration::from_secs(10))
            .await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(3800) && took <= Duration::from_millis(4000),
            "{took:?}"
        );
        feeder.await.unwrap();

        // Arrivals that never stop: closed at the cap.
        let endless = {
            let a = a.clone();
            tokio::spawn(async move {
                loop {
                    a.arrived();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        tokio::task::yield_now().await;
        let t = tokio::time::Instant::now();
        a.quiet(Duration::from_secs(1), Duration::from_secs(10))
            .await;
        assert_eq!(t.elapsed(), Duration::from_secs(10));
        endless.abort();
    }
}
