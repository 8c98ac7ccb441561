//! The reverse proxy: one request in, one streamed request out to an upstream instance, and the
//! upstream's streamed response back, with the gateway's policies applied in order (route, CORS,
//! security, rate limit, body limit, breaker, retries, timeouts).
//!
//! Exists as the hot path of the gateway. Bodies are never fully buffered in either direction
//! (only request bodies of known, small size are held so a refused connection can be retried on
//! another instance), hop-by-hop headers are stripped, `X-Forwarded-*`, a request id and trace
//! context are set, and every refusal is an `application/problem+json` response.

use std::{
    cell::Cell,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use dashmap::DashMap;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
    header::{self, HeaderValue as HV},
};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use shop_runtime::{BreakerConfig, CircuitBreaker, Discovery, Metrics, metrics::ServiceLabels};

use crate::{
    auth::{AuthError, Authenticator, Principal, authorize, bearer},
    body::{Done, empty, full},
    config::{CorsConfig, ProxyConfig},
    outgoing::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID},
    pool::PoolConfig,
    ratelimit::{Decision, RateInfo, RateLimits},
    routes::{Route, RouteTable, Target},
    upstream::{self, UpstreamError},
};
pub use crate::{
    body::{BoxError, ProxyBody, ResponseBody},
    outgoing::{Outgoing, REQUEST_ID, USER_ID, strip_hop_by_hop},
};

/// The client side of one downstream connection: its address (for `X-Forwarded-For` and per-IP
/// limits), with the address as a header value computed once per connection, not per request.
#[derive(Debug, Clone)]
pub struct Peer {
    addr: SocketAddr,
    ip: HeaderValue,
    /// The client's key for per-IP rate limits (built once per connection, not per request).
    limit_key: String,
    /// Whether the connection came over TLS (`X-Forwarded-Proto: https`).
    tls: bool,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HV::from_static("unknown"));
        Self {
            addr,
            ip,
            limit_key: limit_key(addr.ip()),
            tls: false,
        }
    }

    /// The peer at `addr` of a connection that came over TLS.
    pub fn over_tls(addr: SocketAddr) -> Self {
        Self {
            tls: true,
            ..Self::new(addr)
        }
    }

    /// The peer's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The per-IP rate-limit key of a client address. An IPv6 client is keyed by its /64, the
/// smallest prefix a site is given: keyed by the full address, one client could rotate through
/// its 2^64 addresses to get a fresh bucket each time and fill the limiter's key table (which
/// then refuses new clients). An IPv4-mapped IPv6 address counts as the IPv4 address.
fn limit_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Everything the proxy needs, shared by all connections.
pub struct Gateway {
    table: RouteTable,
    auth: Authenticator,
    limits: RateLimits,
    discovery: Discovery,
    breakers: DashMap<String, Arc<CircuitBreaker>>,
    breaker_config: BreakerConfig,
    /// Per route index: the breaker key (upstream service) and its breaker, resolved at start-up.
    route_breakers: Vec<Option<(String, Arc<CircuitBreaker>)>>,
    /// Per route index: the route id as the metrics label.
    route_labels: Vec<&'static str>,
    metrics: Metrics,
    proxy: ProxyConfig,
    /// `proxy.trusted_proxies`, parsed.
    trusted: Vec<crate::config::Cidr>,
    pool: PoolConfig,
    cors: CorsConfig,
    tracing_enabled: bool,
    /// Answers the paths no route takes, when on (see `storefront`).
    storefront: Option<crate::storefront::Storefront>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.table.len())
            .finish()
    }
}

/// Parts to build a [`Gateway`].
pub struct GatewayParts {
    /// Compiled routes.
    pub table: RouteTable,
    /// Token verifier.
    pub auth: Authenticator,
    /// Rate limiters (indexed like the config's routes).
    pub limits: RateLimits,
    /// Registry client.
    pub discovery: Discovery,
    /// Breaker settings per upstream service.
    pub breaker: BreakerConfig,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Proxy limits and timeouts.
    pub proxy: ProxyConfig,
    /// CORS policy.
    pub cors: CorsConfig,
    /// Whether to open a span per request and inject it downstream.
    pub tracing_enabled: bool,
}

struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    field: Option<&'static str>,
    headers: Vec<(HeaderName, String)>,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            field: None,
            headers: vec![],
        }
    }
    fn field(mut self, f: &'static str) -> Self {
        self.field = Some(f);
        self
    }
    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn into_response(self, instance: &str) -> Response<ResponseBody> {
        let mut body = shop_runtime::Problem::new(self.status, self.title)
            .detail(self.detail)
            .with("instance", serde_json::Value::String(instance.to_owned()));
        if let Some(f) = self.field {
            body = body.field(f);
        }
        let text = body.body().to_string();
        let mut resp = Response::new(ResponseBody::full(Bytes::from(text)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HV::from_static("application/problem+json"),
        );
        for (n, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(n, v);
            }
        }
        resp
    }
}

/// How long an idle upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a method may be retried after the request may have reached the upstream.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

enum Outbound {
    /// Replayable: no body, or a small body already read.
    Replayable(Option<Bytes>),
    /// Streamed once, with how far the client got with it.
    Stream(Option<ProxyBody>, Arc<Upload>),
}

/// How far a streamed request body has come from the client, so that an upstream call that timed
/// out or failed can be told apart from a client that stalled or broke off its upload (which is
/// not the upstream's failure, and must not count against its circuit breaker).
#[derive(Debug, Default)]
struct Upload(AtomicU8);

impl Upload {
    /// Data was passed on (or nothing was asked for yet).
    const MOVING: u8 = 0;
    /// The last read found nothing from the client yet.
    const WAITING: u8 = 1;
    /// The body ended.
    const DONE: u8 = 2;
    /// Reading from the client failed (connection lost, bad chunked framing).
    const FAILED: u8 = 3;

    fn is(&self, state: u8) -> bool {
        self.0.load(Ordering::Relaxed) == state
    }
}

/// The client's request body, recording its progress in an [`Upload`].
#[derive(Debug)]
struct ClientBody {
    inner: Incoming,
    upload: Arc<Upload>,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Pending => Upload::WAITING,
            Poll::Ready(None) => Upload::DONE,
            Poll::Ready(Some(Err(_))) => Upload::FAILED,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Upload::DONE,
            Poll::Ready(Some(Ok(_))) => Upload::MOVING,
        };
        this.upload.0.store(state, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug)]
enum Upstream<'a> {
    Static(&'a str),
    Discovered {
        base: String,
        instance: Option<String>,
    },
}

impl Upstream<'_> {
    fn base(&self) -> &str {
        match self {
            Upstream::Static(b) => b,
            Upstream::Discovered { base, .. } => base,
        }
    }
}

fn has_length_limit_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

impl Gateway {
    /// Builds the gateway (upstream clients are created per worker thread on first use).
    pub fn new(p: GatewayParts) -> Self {
        let mut gw = Self::bare(p);
        // One breaker per upstream service (routes to the same service share it), resolved once;
        // the route ids are the metrics' `route` label (one small string per route, for the
        // process lifetime).
        let n = gw
            .table
            .routes()
            .iter()
            .map(|r| r.index + 1)
            .max()
            .unwrap_or(0);
        let mut breakers = vec![None; n];
        let mut labels = vec!["unmatched"; n];
        for r in gw.table.routes() {
            let key = breaker_key(r);
            breakers[r.index] = Some((key.clone(), gw.breaker(&key)));
            labels[r.index] = Box::leak(r.id.clone().into_boxed_str());
        }
        gw.route_breakers = breakers;
        gw.route_labels = labels;
        gw
    }

    fn bare(p: GatewayParts) -> Self {
        Self {
            table: p.table,
            auth: p.auth,
            limits: p.limits,
            discovery: p.discovery,
            breakers: DashMap::new(),
            breaker_config: p.breaker,
            route_breakers: Vec::new(),
            route_labels: Vec::new(),
            metrics: p.metrics,
            pool: PoolConfig {
                connect_timeout: Duration::from_millis(p.proxy.connect_timeout_ms),
                max_idle_per_host: p.proxy.pool_max_idle_per_host,
                idle_timeout: UPSTREAM_IDLE_TIMEOUT,
            },
            trusted: p
                .proxy
                .trusted_proxies
                .iter()
                .filter_map(|t| crate::config::Cidr::parse(t))
                .collect(),
            proxy: p.proxy,
            cors: p.cors,
            tracing_enabled: p.tracing_enabled,
            storefront: None,
        }
    }

    /// Serves the storefront on the paths no configured route takes (None: those are 404).
    pub fn with_storefront(mut self, storefront: Option<crate::storefront::Storefront>) -> Self {
        self.storefront = storefront;
        self
    }

    /// Closes this worker thread's idle upstream connections past the idle timeout (run
    /// periodically by each server worker).
    pub fn sweep_idle_upstreams(&self) {
        upstream::sweep_idle(self.pool.idle_timeout);
    }

    /// Rate limiters (for the sweeper task).
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    fn breaker(&self, key: &str) -> Arc<CircuitBreaker> {
        if let Some(b) = self.breakers.get(key) {
            return b.clone();
        }
        self.breakers
            .entry(key.to_owned())
            .or_insert_with(|| {
                let gauge = self
                    .metrics
                    .breaker_state
                    .get_or_create(&ServiceLabels {
                        service: key.to_owned(),
                    })
                    .clone();
                Arc::new(CircuitBreaker::new(self.breaker_config, Some(gauge)))
            })
            .clone()
    }

    /// Handles one proxied request (health and metrics are answered by the server before this).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
    )]
    pub fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> impl Future<Output = Response<ResponseBody>> {
        async move {
            let start = Instant::now();
            crate::body::bind_recorder(&self.metrics);
            let method = req.method().clone();
            let request_id = request_id_of(req.headers());
            let origin = if self.cors.allowed_origins.is_empty() {
                None
            } else {
                req.headers().get(header::ORIGIN).cloned()
            };
            let (mut resp, route_label) = if self.tracing_enabled {
                use tracing::Instrument;
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                let parent = shop_runtime::telemetry::extract_headers(req.headers());
                let span = tracing::info_span!(
                    "http.server",
                    otel.name = %format!("{method} gateway"),
                    otel.kind = "server",
                    http.method = %method,
                    http.target = %req.uri().path(),
                    http.status_code = tracing::field::Empty,
                    request_id = %request_id.to_str().unwrap_or_default(),
                );
                let _ = span.set_parent(parent);
                // Boxed: the traced branch's future would otherwise sit next to the untraced one in
                // this future, which is moved (copied) on every request.
                let r = Box::pin(
                    self.route_request(req, peer, &request_id)
                        .instrument(span.clone()),
                )
                .await;
                span.record("http.status_code", r.0.status().as_u16());
                r
            } else {
                self.route_request(req, peer, &request_id).await
            };
            resp.headers_mut().insert(X_REQUEST_ID, request_id);
            if let Some(o) = origin {
                self.cors_response_headers(&o, resp.headers_mut());
            }
            // Extension methods are folded into one label value (bounded cardinality).
            let method = match method {
                Method::GET
                | Method::HEAD
                | Method::POST
                | Method::PUT
                | Method::DELETE
                | Method::PATCH
                | Method::OPTIONS => method,
                _ => Method::TRACE,
            };
            let status = resp.status().as_u16();
            resp.body_mut().record_when_done(Done {
                route: route_label,
                method,
                status,
                start,
            });
            resp
        }
    }

    fn cors_allows(&self, origin: &HeaderValue) -> bool {
        let Ok(o) = origin.to_str() else { return false };
        self.cors.allowed_origins.iter().any(|a| a == "*" || a == o)
    }

    fn cors_response_headers(&self, origin: &HeaderValue, h: &mut HeaderMap) {
        if !self.cors_allows(origin) {
            return;
        }
        let any =
            self.cors.allowed_origins.iter().any(|a| a == "*") && !self.cors.allow_credentials;
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            if any {
                HV::from_static("*")
            } else {
                origin.clone()
            },
        );
        if !any {
            h.append(header::VARY, HV::from_static("origin"));
        }
        if self.cors.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HV::from_static("true"),
            );
        }
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HV::from_static("x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after"),
        );
    }

    fn preflight(&self, req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
        if req.method() != Method::OPTIONS || self.cors.allowed_origins.is_empty() {
            return None;
        }
        let origin = req.headers().get(header::ORIGIN)?;
        req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if self.cors_allows(origin) {
            let methods = if self.cors.allowed_methods.is_empty() {
                "GET, POST, PUT, PATCH, DELETE, OPTIONS".to_owned()
            } else {
                self.cors.allowed_methods.join(", ")
            };
            let headers = if self.cors.allowed_headers.is_empty() {
                "authorization, content-type, x-request-id, idempotency-key".to_owned()
            } else {
                self.cors.allowed_headers.join(", ")
            };
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&methods) {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            if let Ok(v) = HeaderValue::from_str(&headers) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if self.cors.max_age_secs > 0 {
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from(self.cors.max_age_secs),
                );
            }
        }
        Some(resp)
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
    )]
    fn route_request(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        request_id: &HeaderValue,
    ) -> impl Future<Output = (Response<ResponseBody>, &'static str)> {
        async move {
            if let Some(resp) = self.preflight(&req) {
                return (resp, "cors-preflight");
            }
            if let Some(why) = bad_host(&req) {
                let path = req.uri().path();
                let p = Problem::new(StatusCode::BAD_REQUEST, "Bad Host header", why).field("host");
                return (p.into_response(path), "unmatched");
            }
            let host = match req.headers().get(header::HOST) {
                Some(h) if h.to_str().is_ok() => Some(h.clone()),
                _ => req
                    .uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            };
            if let Some(normal) = req
                .uri()
                .path_and_query()
                .and_then(|pq| crate::routes::normalize_unreserved(pq.as_str()))
                && let Ok(pq) = normal.parse::<http::uri::PathAndQuery>()
            {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(pq);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
            if let Some(why) = crate::routes::ambiguous_path(req.uri().path()) {
                let path = req.uri().path();
                let p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "Ambiguous request path",
                    format!(
                        "the path contains {why}, which upstream servers may resolve differently"
                    ),
                )
                .field("path");
                return (p.into_response(path), "unmatched");
            }
            let host_str = host.as_ref().and_then(|h| h.to_str().ok());
            let Some(route) = self.table.find(req.method(), host_str, req.uri().path()) else {
                let path = req.uri().path();
                // Boxed, like the other rare branches: keeps the per-request future small.
                if let Some(sf) = &self.storefront
                    && let Some(resp) =
                        Box::pin(sf.respond(req.method(), path, req.headers())).await
                {
                    return (resp, "storefront");
                }
                let p = Problem::new(
                    StatusCode::NOT_FOUND,
                    "No route",
                    format!("no route for {} {path}", req.method()),
                )
                .field("path");
                return (p.into_response(path), "unmatched");
            };
            let label = self
                .route_labels
                .get(route.index)
                .copied()
                .unwrap_or("unmatched");
            // For the problem's `instance` (a cheap clone: the URI shares the request's buffer).
            let uri = req.uri().clone();
            let resp = match self
                .proxy_on_route(req, route, peer, request_id, host)
                .await
            {
                Ok(r) => r,
                Err(p) => p.into_response(uri.path()),
            };
            (resp, label)
        }
    }

    async fn authenticate(
        &self,
        req: &Request<Incoming>,
        route: &Route,
    ) -> Result<Option<Principal>, Problem> {
        let authz = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = match authz.and_then(bearer) {
            Some(token) if self.auth.enabled() => {
                // Boxed: token verification (possibly a JWKS fetch) is a large future that would
                // otherwise be carried, and copied, by every request's future.
                Some(
                    Box::pin(self.auth.verify(token))
                        .await
                        .map_err(auth_problem)?,
                )
            }
            Some(_) => {
                return Err(auth_problem(AuthError::Invalid(
                    "token verification is not configured".into(),
                )));
            }
            None => None,
        };
        authorize(&route.auth, req.method(), principal.as_ref()).map_err(auth_problem)?;
        Ok(principal)
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
    )]
    fn proxy_on_route(
        &self,
        req: Request<Incoming>,
        route: &Route,
        peer: &Peer,
        request_id: &HeaderValue,
        host: Option<HeaderValue>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Problem>> {
        async move {
            let principal = match self.authenticate(&req, route).await {
                Ok(p) => p,
                Err(refused) => {
                    // A refused request still costs its client (by IP) a token, so missing or bad
                    // tokens cannot be sent without limit; once over it, 429 instead of 401/403.
                    if self.limits.enabled()
                        && let Decision::Limited { info, retry_after } =
                            self.limits.check(route.index, &peer.limit_key)
                    {
                        return Err(too_many_requests(route, &info, retry_after));
                    }
                    return Err(refused);
                }
            };

            // Rate limit: per client (subject, else IP) and route (the key is built only when on).
            let check = || match principal.as_ref() {
                Some(p) => self
                    .limits
                    .check(route.index, &format!("sub:{}", p.subject)),
                None => self.limits.check(route.index, &peer.limit_key),
            };
            let decision = if self.limits.enabled() {
                check()
            } else {
                Decision::Disabled
            };
            let rate = match decision {
                Decision::Allowed(i) => Some(i),
                Decision::Limited { info, retry_after } => {
                    return Err(too_many_requests(route, &info, retry_after));
                }
                Decision::Unavailable => {
                    return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Rate limit unavailable",
                    "the rate limit cannot be checked right now (limiter at capacity); failing closed",
                )
                .header(header::RETRY_AFTER, "1"));
                }
                Decision::Unchecked | Decision::Disabled => None,
            };

            let (parts, body) = req.into_parts();
            // Body size limit: reject declared oversize bodies before anything is sent upstream.
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > route.max_body_bytes) {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body too large",
                    format!(
                        "the body is larger than the limit of {} bytes",
                        route.max_body_bytes
                    ),
                )
                .field("body"));
            }
            let limit = usize::try_from(route.max_body_bytes).unwrap_or(usize::MAX);
            let outbound = if body.is_end_stream() || declared == Some(0) {
                Outbound::Replayable(None)
            } else if declared.is_some_and(|n| n <= self.proxy.replay_buffer_bytes) {
                // Bounded by the route's timeout: a client that announces a body and stalls must not
                // hold the request (and its connection) forever.
                let collected = tokio::time::timeout(
                    route.timeout,
                    Box::pin(Limited::new(body, limit).collect()),
                )
                .await
                .map_err(|_| {
                    Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "Request body timeout",
                        format!(
                            "the announced body did not arrive within {} ms",
                            route.timeout.as_millis()
                        ),
                    )
                    .field("body")
                })?
                .map_err(|e| {
                    if has_length_limit_error(e.as_ref()) {
                        Problem::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Request body too large",
                            "body exceeds the limit",
                        )
                        .field("body")
                    } else {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "Request body unreadable",
                            e.to_string(),
                        )
                        .field("body")
                    }
                })?;
                Outbound::Replayable(Some(collected.to_bytes()))
            } else {
                let upload = Arc::new(Upload::default());
                let body = ClientBody {
                    inner: body,
                    upload: upload.clone(),
                };
                Outbound::Stream(
                    Some(
                        Limited::new(body, limit)
                            .map_err(BoxError::from)
                            .boxed_unsync(),
                    ),
                    upload,
                )
            };

            let uri = upstream_uri(route, &parts.uri).map_err(|e| {
                Problem::new(StatusCode::BAD_REQUEST, "Bad request target", e.to_string())
                    .field("path")
            })?;
            let headers = self.upstream_headers(
                &parts.headers,
                peer,
                request_id,
                host.as_ref(),
                principal.as_ref(),
            );
            let mut resp = self
                .forward(route, &parts.method, &uri, &headers, outbound)
                .await?;
            strip_hop_by_hop(resp.headers_mut());
            *resp.version_mut() = http::Version::HTTP_11;
            if let Some(i) = rate {
                put_rate_headers(resp.headers_mut(), &i);
            }
            Ok(resp)
        }
    }

    fn upstream_headers<'a>(
        &self,
        incoming: &'a HeaderMap,
        peer: &Peer,
        request_id: &HeaderValue,
        host: Option<&HeaderValue>,
        principal: Option<&Principal>,
    ) -> Outgoing<'a> {
        let user = principal.and_then(|p| HeaderValue::from_str(&p.subject).ok());
        let forwarded_for = match incoming.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => {
                HeaderValue::from_str(&format!("{prev}, {}", peer.addr.ip())).ok()
            }
            _ => Some(peer.ip.clone()),
        };
        let trace = self.tracing_enabled.then(|| {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let cx = tracing::Span::current().context();
            let mut t = HeaderMap::new();
            shop_runtime::telemetry::inject_headers(&cx, &mut t);
            t
        });
        Outgoing {
            incoming,
            connection_named: incoming.contains_key(header::CONNECTION),
            user,
            forwarded_for,
            forwarded_proto: !(incoming.contains_key(X_FORWARDED_PROTO)
                && self.trusted.iter().any(|c| c.contains(peer.addr.ip()))),
            tls: peer.tls,
            forwarded_host: host.cloned(),
            request_id: request_id.clone(),
            trace,
        }
    }

    async fn pick<'r>(&self, route: &'r Route) -> Result<Upstream<'r>, Problem> {
        match &route.target {
            Target::Static(pool) => pool.pick().map(Upstream::Static).ok_or_else(|| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No upstream",
                    "route has no upstream",
                )
                .header(header::RETRY_AFTER, "1")
            }),
            // Boxed, like the other rarely-suspending awaits: keeps every request's future small.
            Target::Service(name) => match Box::pin(self.discovery.pick_instance(name)).await {
                Ok(p) => Ok(Upstream::Discovered {
                    base: p.base_url.as_str().trim_end_matches('/').to_owned(),
                    instance: p.instance_id,
                }),
                Err(e) => Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No instance available",
                    format!("service {name}: {e}"),
                )
                .header(header::RETRY_AFTER, "1")),
            },
        }
    }

    fn mark_down(&self, route: &Route, up: &Upstream<'_>) {
        match (&route.target, up) {
            (Target::Static(pool), Upstream::Static(b)) => pool.mark_down(b),
            (
                _,
                Upstream::Discovered {
                    instance: Some(id), ..
                },
            ) => self.discovery.mark_down(id),
            _ => {}
        }
    }

    /// Whether an instance other than `up` could take this route's traffic now.
    fn has_other_instance(&self, route: &Route, up: &Upstream<'_>) -> bool {
        match (&route.target, up) {
            (Target::Static(pool), Upstream::Static(b)) => pool.has_live_except(b),
            (
                Target::Service(name),
                Upstream::Discovered {
                    instance: Some(id), ..
                },
            ) => self.discovery.has_live_instance_except(name, id),
            // Reached through DNS (no instance identity): nothing to fail over to that we know of.
            _ => false,
        }
    }

    async fn forward(
        &self,
        route: &Route,
        method: &Method,
        uri: &Uri,
        headers: &Outgoing<'_>,
        mut outbound: Outbound,
    ) -> Result<Response<ResponseBody>, Problem> {
        let unresolved;
        let (service_key, breaker) = match self.route_breakers.get(route.index) {
            Some(Some((k, b))) => (k.as_str(), &**b),
            _ => {
                let k = breaker_key(route);
                let b = self.breaker(&k);
                unresolved = (k, b);
                (unresolved.0.as_str(), &*unresolved.1)
            }
        };
        let attempts = 1 + self.proxy.retries;
        let deadline = Instant::now() + route.timeout;
        let mut last_problem = None;
        let upload = match &outbound {
            Outbound::Stream(_, u) => Some(u.clone()),
            Outbound::Replayable(_) => None,
        };
        for attempt in 0..attempts {
            if let Err(rej) = breaker.try_acquire() {
                let secs = crate::ratelimit::ceil_secs(rej.retry_after).max(1);
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Upstream circuit open",
                    format!("{service_key} is failing; calls are short-circuited for {secs} s"),
                )
                .header(header::RETRY_AFTER, secs.to_string()));
            }
            let up = match self.pick(route).await {
                Ok(u) => u,
                Err(p) => {
                    breaker.record(false);
                    return Err(p);
                }
            };
            let (body, replayable) = match &mut outbound {
                Outbound::Replayable(None) => (empty(), true),
                Outbound::Replayable(Some(b)) => (full(b.clone()), true),
                Outbound::Stream(s, _) => match s.take() {
                    Some(b) => (b, false),
                    None => break,
                },
            };
            let last = attempt + 1 == attempts;
            // At the deadline itself: no clock read per attempt (`timeout` would read it again).
            match tokio::time::timeout_at(
                deadline.into(),
                upstream::send(up.base(), method, uri, body, headers, &self.pool, route.h2c),
            )
            .await
            {
                Err(_) => {
                    // Waiting on the client's upload (not on an upstream that stopped reading it):
                    // the client's timeout, not the upstream's failure. The breaker's permit is
                    // left unreported, which it allows for (like a cancelled call).
                    if upload.as_ref().is_some_and(|u| u.is(Upload::WAITING)) {
                        return Err(Problem::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "Request body timeout",
                            format!(
                                "the body did not arrive within {} ms",
                                route.timeout.as_millis()
                            ),
                        )
                        .field("body"));
                    }
                    breaker.record(false);
                    return Err(Problem::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Upstream timeout",
                        format!(
                            "{service_key} did not answer within {} ms",
                            route.timeout.as_millis()
                        ),
                    ));
                }
                Ok(Ok(resp)) => {
                    let st = resp.status();
                    let failed = matches!(
                        st,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) || st == StatusCode::INTERNAL_SERVER_ERROR;
                    breaker.record(!failed);
                    if failed && replayable && is_idempotent(method) && !last {
                        tracing::debug!(
                            status = st.as_u16(),
                            upstream = up.base(),
                            "retrying idempotent request"
                        );
                        continue;
                    }
                    return Ok(resp.map(ResponseBody::upstream));
                }
                Ok(Err(UpstreamError::BadTarget(base))) => {
                    breaker.record(true);
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "Bad request target",
                        format!("the path cannot be sent to {base}"),
                    )
                    .field("path"));
                }
                Ok(Err(e)) => {
                    let connect = e.is_connect();
                    if has_length_limit_error(&e) {
                        breaker.record(true);
                        return Err(Problem::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Request body too large",
                            format!(
                                "the body exceeded the limit of {} bytes",
                                route.max_body_bytes
                            ),
                        )
                        .field("body"));
                    }
                    if upload.as_ref().is_some_and(|u| u.is(Upload::FAILED)) {
                        // The client broke off or garbled its upload: not the upstream's failure.
                        return Err(Problem::new(
                            StatusCode::BAD_REQUEST,
                            "Request body unreadable",
                            "the body could not be read from the client",
                        )
                        .field("body"));
                    }
                    // The instance is suspect whatever failed on its connection (refused, reset,
                    // closed before the answer): it is skipped for a while, as outlier ejection
                    // does. Its failure counts against the service's breaker only when no other
                    // instance is left to take the traffic: one killed replica of two must not
                    // short-circuit the calls the healthy one answers (the chaos soak saw 400
                    // such 503s per killed order pod).
                    let others = self.has_other_instance(route, &up);
                    self.mark_down(route, &up);
                    if !others {
                        breaker.record(false);
                    }
                    tracing::warn!(upstream = up.base(), connect, error = %e, "upstream call failed");
                    let problem = Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "Upstream unreachable",
                        format!(
                            "{service_key}: {}",
                            if connect {
                                "connection refused or timed out"
                            } else {
                                "connection failed"
                            }
                        ),
                    );
                    // Not sent at all (connect error) → safe to retry any replayable request;
                    // possibly sent → only idempotent ones.
                    if replayable && !last && (connect || is_idempotent(method)) {
                        last_problem = Some(problem);
                        continue;
                    }
                    return Err(problem);
                }
            }
        }
        Err(last_problem.unwrap_or_else(|| {
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "Upstream unreachable",
                format!("{service_key}: no attempt left"),
            )
        }))
    }
}

/// Why a request's `Host` is refused (RFC 9112 §3.2), if it is: more than one, none on an
/// HTTP/1.1 request, or one that is not a host and port. The route's host and the
/// `X-Forwarded-Host` sent upstream are taken from it, so it must be one unambiguous value.
fn bad_host(req: &Request<Incoming>) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("more than one Host header"),
        (None, _) if req.version() == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request needs a Host header")
        }
        (Some(h), None)
            if !h.is_empty()
                && !plain_host(h.as_bytes())
                && http::uri::Authority::try_from(h.as_bytes()).is_err() =>
        {
            Some("the Host header is not a host name and port")
        }
        _ => None,
    }
}

/// Whether `b` is a name or IPv4 address with an optional numeric port (`shop.example:8080`): the
/// usual `Host`, which the full authority parser would accept, checked in one pass (this runs for
/// every request).
fn plain_host(b: &[u8]) -> bool {
    let (host, port) = match b.iter().position(|&c| c == b':') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    !host.is_empty()
        && host
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

fn breaker_key(route: &Route) -> String {
    match &route.target {
        Target::Service(s) => s.clone(),
        Target::Static(_) => format!("route:{}", route.id),
    }
}

/// The request id: the client's `X-Request-Id` when it is a sane token (at most 128 letters,
/// digits and `-_.:+/=@`, as UUIDs, ULIDs and base64 ids are), else a new UUID v4. Quotes, angle
/// brackets, back slashes and commas are refused: the id is written to logs, spans and
/// upstream headers, where they could break the format or split it into a list.
fn request_id_of(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        let sane = |c: &u8| c.is_ascii_alphanumeric() || b"-_.:+/=@".contains(c);
        if !b.is_empty() && b.len() <= 128 && b.iter().all(sane) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(id_bytes())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    // One allocation, and clones (request upstream, response) only count references.
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
        .unwrap_or_else(|_| HV::from_static("invalid-request-id"))
}

thread_local! {
    /// State of this thread's request id sequence, seeded from the OS on first use.
    static ID_STATE: Cell<u64> = Cell::new(rand::random());
}

/// 16 bytes for a new request id: two steps of SplitMix64 over a per-thread state seeded from the
/// OS. Request ids correlate logs and spans, they are not secrets; SplitMix64's outputs are
/// distinct over its 2^64 period, and a random seed per thread keeps threads and restarts apart.
/// (The thread's ChaCha generator behind `rand::random` cost a fifth of the id.)
fn id_bytes() -> [u8; 16] {
    fn step(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let (a, b) = ID_STATE
        .try_with(|s| (step(s), step(s)))
        .unwrap_or_else(|_| (rand::random(), rand::random()));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// The origin-form target to send upstream: the client's own when the route does not rewrite it.
fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, http::uri::InvalidUri> {
    if !route.rewrites() && uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    route
        .upstream_path_and_query(uri.path(), uri.query())
        .parse()
}

fn auth_problem(e: AuthError) -> Problem {
    let www = e.www_authenticate();
    let p = match &e {
        AuthError::Missing => Problem::new(
            StatusCode::UNAUTHORIZED,
            "Authentication required",
            e.to_string(),
        ),
        AuthError::Invalid(_) => {
            Problem::new(StatusCode::UNAUTHORIZED, "Invalid token", e.to_string())
        }
        AuthError::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string()),
        AuthError::KeysUnavailable(_) => {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Token keys unavailable",
                e.to_string(),
            )
            .field("authorization")
            .header(header::RETRY_AFTER, "5");
        }
    };
    p.field("authorization")
        .header(header::WWW_AUTHENTICATE, www)
}

fn put_rate_headers(h: &mut HeaderMap, i: &RateInfo) {
    h.insert("x-ratelimit-limit", HeaderValue::from(i.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(i.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(i.reset_secs));
}

/// The 429 for a client over its limit on `route`.
fn too_many_requests(route: &Route, info: &RateInfo, retry_after: Duration) -> Problem {
    let secs = crate::ratelimit::ceil_secs(retry_after).max(1);
    let p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        format!(
            "rate limit of route {} exceeded; retry in {secs} s",
            route.id
        ),
    )
    .header(header::RETRY_AFTER, secs.to_string());
    add_rate_problem_headers(p, info)
}

fn add_rate_problem_headers(p: Problem, i: &RateInfo) -> Problem {
    p.header(
        HeaderName::from_static("x-ratelimit-limit"),
        i.limit.to_string(),
    )
    .header(
        HeaderName::from_static("x-ratelimit-remaining"),
        i.remaining.to_string(),
    )
    .header(
        HeaderName::from_static("x-ratelimit-reset"),
        i.reset_secs.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hosts_are_valid_authorities_and_others_go_to_the_full_parser() {
        for h in [
            "shop",
            "shop.example",
            "shop-1.example:8080",
            "127.0.0.1:1",
            "a:65535",
        ] {
            assert!(plain_host(h.as_bytes()), "{h}");
            assert!(http::uri::Authority::try_from(h).is_ok(), "{h}");
        }
        for h in [
            "", ":80", "a:", "a:123456", "a:8x", "a:1:2", "[::1]:80", "a b", "a@b", "a_b",
        ] {
            assert!(!plain_host(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids_and_sane_client_ids_are_kept() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let id = request_id_of(&HeaderMap::new());
            let u = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(u.get_version_num(), 4, "{u}");
            assert!(seen.insert(u), "repeated id {u}");
        }
        let other = std::thread::spawn(|| request_id_of(&HeaderMap::new()))
            .join()
            .unwrap();
        assert!(!seen.contains(&uuid::Uuid::parse_str(other.to_str().unwrap()).unwrap()));
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HV::from_static("abc-123"));
        assert_eq!(request_id_of(&h), "abc-123");
        h.insert(X_REQUEST_ID, HV::from_static("a,b"));
        assert_ne!(request_id_of(&h), "a,b");
    }

    #[test]
    fn per_ip_limit_keys_group_an_ipv6_site_and_unmap_ipv4() {
        let key = |s: &str| Peer::new(s.parse().unwrap()).limit_key;
        assert_eq!(key("192.0.2.7:4000"), "ip:192.0.2.7");
        assert_eq!(key("[::ffff:192.0.2.7]:4000"), "ip:192.0.2.7");
        assert_eq!(
            key("[2001:db8:1:2:aaaa::1]:4000"),
            key("[2001:db8:1:2:ffff:1:2:3]:5000"),
            "one /64, one bucket"
        );
        assert_eq!(key("[2001:db8:1:2::1]:4000"), "ip6:2001:db8:1:2::/64");
        assert_ne!(key("[2001:db8:1:2::1]:1"), key("[2001:db8:1:3::1]:1"));
    }

    #[test]
    fn idempotency() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
