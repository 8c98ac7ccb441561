//! The reverse proxy: one request in, one streamed request out to an upstream instance, and the
//! upstream's streamed response back, with the gateway's policies applied in order (route, CORS,
//! security, rate limit, body limit, breaker, retries, timeouts).
//!
//! Exists as the hot path of the gateway. Bodies are never fully buffered in either direction
//! (only request bodies of known, small size are held so a refused connection can be retried on
//! another instance), hop-by-hop headers are stripped, `X-Forwarded-*`, a request id and trace
//! context are set, and every refusal is an `application/problem+json` response.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dashmap::DashMap;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
    header::{self, HeaderValue as HV},
};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use shop_runtime::{BreakerConfig, CircuitBreaker, Discovery, Metrics, metrics::ServiceLabels};

use crate::{
    auth::{AuthError, Authenticator, Principal, authorize, bearer},
    config::{CorsConfig, ProxyConfig},
    ratelimit::{Decision, RateInfo, RateLimits},
    routes::{Route, RouteTable, Target},
};

/// Boxed error of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of both directions: streamed, never collected.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Header carrying the authenticated subject downstream (client-sent copies are removed).
pub const USER_ID: &str = "x-user-id";
/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Everything the proxy needs, shared by all connections.
pub struct Gateway {
    table: RouteTable,
    auth: Authenticator,
    limits: RateLimits,
    discovery: Discovery,
    breakers: DashMap<String, Arc<CircuitBreaker>>,
    breaker_config: BreakerConfig,
    route_breakers: std::collections::HashMap<usize, (String, Arc<CircuitBreaker>)>,
    metrics: Metrics,
    proxy: ProxyConfig,
    cors: CorsConfig,
    tracing_enabled: bool,
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
    fn into_response(self, instance: &str) -> Response<ProxyBody> {
        let mut body = shop_runtime::Problem::new(self.status, self.title)
            .detail(self.detail)
            .with("instance", serde_json::Value::String(instance.to_owned()));
        if let Some(f) = self.field {
            body = body.field(f);
        }
        let text = body.body().to_string();
        let mut resp = Response::new(full(Bytes::from(text)));
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

fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Whether a method may be retried after the request may have reached the upstream.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::TRANSFER_ENCODING);
}

enum Outbound {
    /// Replayable: no body, or a small body already read.
    Replayable(Option<Bytes>),
    /// Streamed once.
    Stream(Option<ProxyBody>),
}

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
        // One breaker per upstream service (routes to the same service share it), resolved once.
        let mut per_route = std::collections::HashMap::new();
        for r in gw.table.routes() {
            let key = breaker_key(r);
            per_route.insert(r.index, (key.clone(), gw.breaker(&key)));
        }
        gw.route_breakers = per_route;
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
            route_breakers: std::collections::HashMap::new(),
            metrics: p.metrics,
            proxy: p.proxy,
            cors: p.cors,
            tracing_enabled: p.tracing_enabled,
        }
    }

    /// This thread's pooled upstream client. Each server worker thread runs its own single-threaded
    /// runtime, so keeping the pool per thread keeps a request and its upstream connection on one
    /// thread (no cross-thread wake-ups on the hot path).
    fn client(&self) -> Client<HttpConnector, ProxyBody> {
        thread_local! {
            static CLIENT: std::cell::OnceCell<Client<HttpConnector, ProxyBody>> = const { std::cell::OnceCell::new() };
        }
        CLIENT.with(|c| {
            c.get_or_init(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_millis(
                    self.proxy.connect_timeout_ms,
                )));
                connector.enforce_http(true);
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(self.proxy.pool_max_idle_per_host)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .build(connector)
            })
            .clone()
        })
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
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let method = req.method().clone();
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string()
            });
        let origin = req.headers().get(header::ORIGIN).cloned();
        let path = req.uri().path().to_owned();
        let (mut resp, route_id) = if self.tracing_enabled {
            use tracing::Instrument;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let parent = shop_runtime::telemetry::extract_headers(req.headers());
            let span = tracing::info_span!(
                "http.server",
                otel.name = %format!("{method} gateway"),
                otel.kind = "server",
                http.method = %method,
                http.target = %path,
                http.status_code = tracing::field::Empty,
                request_id = %request_id,
            );
            let _ = span.set_parent(parent);
            let r = self
                .clone()
                .route_request(req, peer, &request_id)
                .instrument(span.clone())
                .await;
            span.record("http.status_code", r.0.status().as_u16());
            r
        } else {
            self.clone().route_request(req, peer, &request_id).await
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        if let Some(o) = origin {
            self.cors_response_headers(&o, resp.headers_mut());
        }
        self.record(
            &method,
            route_id.unwrap_or("unmatched"),
            resp.status().as_u16(),
            start,
        );
        resp
    }

    /// Counts the request in `http_server_requests` / `..._duration_seconds`. The metric handles
    /// are cached per worker thread, so the hot path takes no lock and allocates nothing.
    fn record(&self, method: &Method, route: &'static str, status: u16, start: Instant) {
        use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
        type Key = (&'static str, Method, u16);
        thread_local! {
            static CACHE: std::cell::RefCell<std::collections::HashMap<Key, (Counter, Histogram)>> =
                std::cell::RefCell::new(std::collections::HashMap::new());
        }
        // Extension methods are folded into one label value (bounded cardinality).
        let method = match *method {
            Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::OPTIONS => method.clone(),
            _ => Method::TRACE,
        };
        let secs = start.elapsed().as_secs_f64();
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let (counter, hist) = c.entry((route, method.clone(), status)).or_insert_with(|| {
                let labels = shop_runtime::metrics::HttpLabels {
                    method: method.to_string(),
                    route: route.to_owned(),
                    status,
                };
                (
                    self.metrics.requests.get_or_create(&labels).clone(),
                    self.metrics.latency.get_or_create(&labels).clone(),
                )
            });
            counter.inc();
            hist.observe(secs);
        });
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

    fn preflight(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        if req.method() != Method::OPTIONS || self.cors.allowed_origins.is_empty() {
            return None;
        }
        let origin = req.headers().get(header::ORIGIN)?;
        req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(empty());
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

    async fn route_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
    ) -> (Response<ProxyBody>, Option<&'static str>) {
        let path = req.uri().path().to_owned();
        if let Some(resp) = self.preflight(&req) {
            return (resp, Some("cors-preflight"));
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(str::to_owned);
        let Some(route) = self
            .table
            .find(req.method(), host.as_deref(), &path)
            .cloned()
        else {
            let p = Problem::new(
                StatusCode::NOT_FOUND,
                "No route",
                format!("no route for {} {path}", req.method()),
            )
            .field("path");
            return (p.into_response(&path), None);
        };
        // Route ids live as long as the table (the gateway is never rebuilt while serving).
        let route_label: &'static str = leak_route_id(&route);
        let resp = match self
            .proxy_on_route(req, &route, peer, request_id, host)
            .await
        {
            Ok(r) => r,
            Err(p) => p.into_response(&path),
        };
        (resp, Some(route_label))
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
                Some(self.auth.verify(token).await.map_err(auth_problem)?)
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

    async fn proxy_on_route(
        &self,
        req: Request<Incoming>,
        route: &Route,
        peer: SocketAddr,
        request_id: &str,
        host: Option<String>,
    ) -> Result<Response<ProxyBody>, Problem> {
        let principal = self.authenticate(&req, route).await?;

        // Rate limit: per client (subject, else IP) and route.
        let client_key = principal.as_ref().map_or_else(
            || format!("ip:{}", peer.ip()),
            |p| format!("sub:{}", p.subject),
        );
        let rate = match self.limits.check(route.index, &client_key) {
            Decision::Allowed(i) => Some(i),
            Decision::Limited { info, retry_after } => {
                let secs = crate::ratelimit::ceil_secs(retry_after).max(1);
                let mut p = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    format!(
                        "rate limit of route {} exceeded; retry in {secs} s",
                        route.id
                    ),
                )
                .header(header::RETRY_AFTER, secs.to_string());
                p = add_rate_problem_headers(p, &info);
                return Err(p);
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
            let collected = Limited::new(body, limit).collect().await.map_err(|e| {
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
            Outbound::Stream(Some(
                Limited::new(body, limit)
                    .map_err(BoxError::from)
                    .boxed_unsync(),
            ))
        };

        let headers = self.upstream_headers(
            &parts.headers,
            peer,
            request_id,
            host.as_deref(),
            principal.as_ref(),
        );
        let pq = route.upstream_path_and_query(parts.uri.path(), parts.uri.query());
        let mut resp = self
            .forward(route, &parts.method, &pq, headers, outbound)
            .await?;
        strip_hop_by_hop(resp.headers_mut());
        *resp.version_mut() = http::Version::HTTP_11;
        if let Some(i) = rate {
            put_rate_headers(resp.headers_mut(), &i);
        }
        Ok(resp)
    }

    fn upstream_headers(
        &self,
        incoming: &HeaderMap,
        peer: SocketAddr,
        request_id: &str,
        host: Option<&str>,
        principal: Option<&Principal>,
    ) -> HeaderMap {
        let mut h = incoming.clone();
        strip_hop_by_hop(&mut h);
        h.remove(header::HOST);
        h.remove(USER_ID);
        if let Some(p) = principal
            && let Ok(v) = HeaderValue::from_str(&p.subject)
        {
            h.insert(USER_ID, v);
        }
        let ip = peer.ip().to_string();
        let xff = match incoming
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert("x-forwarded-for", v);
        }
        if !h.contains_key("x-forwarded-proto") {
            h.insert("x-forwarded-proto", HV::from_static("http"));
        }
        if let Some(hv) = host.and_then(|x| HeaderValue::from_str(x).ok()) {
            h.insert("x-forwarded-host", hv);
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID, v);
        }
        if self.tracing_enabled {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let cx = tracing::Span::current().context();
            shop_runtime::telemetry::inject_headers(&cx, &mut h);
        }
        h
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
            Target::Service(name) => match self.discovery.pick_instance(name).await {
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

    async fn forward(
        &self,
        route: &Route,
        method: &Method,
        pq: &str,
        headers: HeaderMap,
        mut outbound: Outbound,
    ) -> Result<Response<ProxyBody>, Problem> {
        let (service_key, breaker) = match self.route_breakers.get(&route.index) {
            Some((k, b)) => (k.clone(), b.clone()),
            None => {
                let k = breaker_key(route);
                let b = self.breaker(&k);
                (k, b)
            }
        };
        let client = self.client();
        let attempts = 1 + self.proxy.retries;
        let deadline = Instant::now() + route.timeout;
        let mut last_problem = None;
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
            let uri: Uri = match format!("{}{}", up.base(), pq).parse() {
                Ok(u) => u,
                Err(e) => {
                    breaker.record(true);
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "Bad request target",
                        e.to_string(),
                    )
                    .field("path"));
                }
            };
            let (body, replayable) = match &mut outbound {
                Outbound::Replayable(None) => (empty(), true),
                Outbound::Replayable(Some(b)) => (full(b.clone()), true),
                Outbound::Stream(s) => match s.take() {
                    Some(b) => (b, false),
                    None => break,
                },
            };
            let mut req = Request::new(body);
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri;
            *req.headers_mut() = headers.clone();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let last = attempt + 1 == attempts;
            match tokio::time::timeout(remaining, client.request(req)).await {
                Err(_) => {
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
                    return Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()));
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
                    breaker.record(false);
                    if connect {
                        self.mark_down(route, &up);
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

fn breaker_key(route: &Route) -> String {
    match &route.target {
        Target::Service(s) => s.clone(),
        Target::Static(_) => format!("route:{}", route.id),
    }
}

fn leak_route_id(route: &Route) -> &'static str {
    use std::sync::OnceLock;
    static IDS: OnceLock<DashMap<String, &'static str>> = OnceLock::new();
    let ids = IDS.get_or_init(DashMap::new);
    if let Some(v) = ids.get(&route.id) {
        return *v;
    }
    // Bounded: one small string per configured route id, for the process lifetime.
    let s: &'static str = Box::leak(route.id.clone().into_boxed_str());
    ids.insert(route.id.clone(), s);
    s
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
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HV::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HV::from_static("1"));
        h.insert("keep-alive", HV::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HV::from_static("chunked"));
        h.insert(header::UPGRADE, HV::from_static("websocket"));
        h.insert("x-keep", HV::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("x-keep").unwrap(), "yes");
    }

    #[test]
    fn idempotency() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
