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
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

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
