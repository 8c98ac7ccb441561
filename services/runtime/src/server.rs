//! The HTTP server side every service shares: health and metrics endpoints, a middleware that opens a
//! server span from incoming W3C/B3 headers, records request metrics and echoes `x-request-id`, and the
//! graceful-shutdown sequence (deregister, stop accepting, drain within the grace period, flush spans).

use crate::Problem;
use crate::health::Readiness;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::telemetry;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
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

/// Most of an unread request body [`linger`] reads and discards before the answer goes out.
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Longest [`linger`] waits for the rest of an unread request body.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A request body the handler reads through, whose unread rest [`linger`] can still take.
struct SharedBody(std::sync::Arc<parking_lot::Mutex<Option<axum::body::Body>>>);

impl http_body::Body for SharedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.lock().as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Reads and discards what the handler left unread of a request body (at most [`LINGER_BYTES`]
/// within [`LINGER_TIME`]) before its answer is sent.
///
/// A handler that refuses a body early (413 too large, 415 not JSON) answers without reading it,
/// and the connection is then closed with the client's bytes still unread, which makes the kernel
/// reset it: the client, still sending, gets the reset instead of the answer. Through shop-gateway
/// a 413 of inventory came back as a 502 "upstream unreachable" (found by fuzzing). Reading the
/// rest first (what nginx calls a lingering close) lets the answer arrive.
async fn linger(req: Request, next: Next) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let shared = std::sync::Arc::new(parking_lot::Mutex::new(Some(body)));
    let req = Request::from_parts(parts, axum::body::Body::new(SharedBody(shared.clone())));
    let resp = next.run(req).await;
    let rest = shared.lock().take();
    if let Some(rest) = rest.filter(|b| !b.is_end_stream()) {
        use futures::StreamExt as _;
        let mut stream = rest.into_data_stream();
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut read = 0;
            while let Some(Ok(chunk)) = stream.next().await {
                read += chunk.len();
                if read > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    }
    resp
}

/// The 404 of a path no route takes: a problem document, like every other 4xx of the shop (axum's
/// own is an empty body).
async fn no_route(uri: Uri) -> Problem {
    Problem::not_found(format!("nothing is served at {}", uri.path()))
}

/// The 405 of a route that does not answer the method: a problem document (axum's own is an empty
/// body); axum adds the `Allow` header listing the methods the route does answer.
async fn wrong_method(method: Method, uri: Uri) -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        .detail(format!("{} does not answer {method}", uri.path()))
}

/// Adds `/health/live`, `/health/ready`, `/metrics`, the problem-document 404 and 405, the
/// lingering read of unread bodies and the observing middleware to `router`.
pub(crate) fn wrap(router: Router, st: ServerState) -> Router {
    let infra = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(st.clone());
    router
        .merge(infra)
        .fallback(no_route)
        // After every route is in: it is set on the routes registered so far.
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(linger))
        .layer(axum::middleware::from_fn_with_state(st, observe))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn app() -> Router {
        let api = Router::new().route("/api/thing", get(|| async { "thing" }));
        wrap(
            api,
            ServerState {
                metrics: Metrics::new(),
                readiness: Readiness::default(),
            },
        )
    }

    async fn call(method: &str, path: &str) -> (StatusCode, HeaderMap, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let resp = app().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (parts.status, parts.headers, json)
    }

    use axum::http::HeaderMap;

    // Found by fuzzing (tests/e2e/tests/fuzz.rs): `TRACE /api/order` was an empty 405 and an
    // unknown path an empty 404, where every other 4xx of the shop is a problem document.
    #[tokio::test]
    async fn an_unanswered_method_is_a_405_problem_with_allow() {
        let (status, headers, body) = call("TRACE", "/api/thing").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::CONTENT_TYPE], crate::problem::PROBLEM_JSON);
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_eq!(body["status"], 405);
        assert_eq!(body["title"], "Method not allowed");
        let (status, headers, _) = call("POST", "/health/live").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::CONTENT_TYPE], crate::problem::PROBLEM_JSON);
    }

    // Found by fuzzing (tests/e2e/tests/fuzz.rs): inventory refused a 250 kB batch with 413
    // without reading it and closed the connection; the kernel reset it under the still-sending
    // gateway, which answered 502. The unread rest is now read before the answer goes out.
    #[tokio::test]
    async fn the_unread_rest_of_a_refused_body_is_read_before_the_answer() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let served = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let chunks = futures::stream::iter((0..64).map(move |_| {
            counter.fetch_add(4096, Ordering::SeqCst);
            Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 4096]))
        }));
        let api = Router::new()
            .route(
                "/api/upload",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            )
            .layer(axum::extract::DefaultBodyLimit::max(1024));
        let app = wrap(
            api,
            ServerState {
                metrics: Metrics::new(),
                readiness: Readiness::default(),
            },
        );
        let req = Request::builder()
            .method("POST")
            .uri("/api/upload")
            .body(Body::from_stream(chunks))
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            served.load(Ordering::SeqCst),
            64 * 4096,
            "every byte was read"
        );
    }

    #[tokio::test]
    async fn an_unknown_path_is_a_404_problem() {
        let (status, headers, body) = call("GET", "/nothing/here").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], crate::problem::PROBLEM_JSON);
        assert_eq!(body["status"], 404);
        let (status, _, body) = call("GET", "/api/thing").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::Value::Null,
            "a route still answers itself"
        );
    }

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
