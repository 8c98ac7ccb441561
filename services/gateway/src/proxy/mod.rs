//! The reverse proxy: one request in, one streamed request out to an upstream instance, and the
//! upstream's streamed response back, in the shape of Cloudflare pingora's proxy phases: small
//! functions over one request context ([`RequestCtx`]), each of which may end the request with a
//! response of its own. In order:
//!
//! 1. *cors* (`cors`): a CORS preflight is answered (204) before any route is looked up.
//! 2. *route* (`route`): a bad `Host` or an ambiguous path is refused (400); the path is
//!    normalized and the route found; no route: the storefront's answer, or 404.
//! 3. *authenticate* (`authenticate`): the bearer token and the route's security rule (401, 403,
//!    503 when the token keys are unavailable; 429 once a refused client is over its limit).
//! 4. *rate limit* (`rate_limit`): the client's bucket on the route (429, or 503 failing closed).
//! 5. *request body* (`request_body`): a declared oversize body is refused (413); a small one is
//!    read whole so it can be retried (408 when it stalls), a larger one streamed.
//! 6. *pick upstream* (`pick`): an instance per attempt (503 when none is live).
//! 7. *forward* (`forward`): the attempts through the service's circuit breaker within the
//!    route's timeout, retrying what is safe (503 breaker open, 504 timeout, 502 unreachable).
//! 8. *respond* (`respond`): hop-by-hop headers dropped, rate-limit, request id and CORS headers
//!    set, metrics recorded when the body has been sent; every response leaves through it,
//!    refusals (`application/problem+json`, see `problem`) included.
//!
//! Exists as the hot path of the gateway. Bodies are never fully buffered in either direction
//! (only request bodies of known, small size are held so a refused connection can be retried on
//! another instance), hop-by-hop headers are stripped, `X-Forwarded-*`, a request id and trace
//! context are set. The phases are plain functions, not a trait as in pingora: the gateway has
//! one proxy, and the request's future (moved per request, see `handle`) stays as small as it was.

mod authenticate;
mod cors;
mod forward;
mod peer;
mod pick;
mod problem;
mod rate_limit;
mod request_body;
mod request_id;
mod respond;
mod route;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use shop_runtime::{BreakerConfig, CircuitBreaker, Discovery, Metrics, metrics::ServiceLabels};

pub use self::peer::Peer;
use self::pick::breaker_key;
use crate::{
    auth::{Authenticator, Principal},
    config::{CorsConfig, ProxyConfig},
    pool::PoolConfig,
    ratelimit::{RateInfo, RateLimits},
    routes::{Route, RouteTable},
    upstream,
};
pub use crate::{
    body::{BoxError, ProxyBody, ResponseBody},
    outgoing::{Outgoing, REQUEST_ID, USER_ID, strip_hop_by_hop},
};

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

/// One request's state as it passes the phases: what the first ones learn (the route's label,
/// `Host`, principal, rate-limit state) for the later ones and for *respond*.
pub(crate) struct RequestCtx<'a> {
    /// The client's connection.
    peer: &'a Peer,
    /// When the request arrived (the metrics' duration starts here).
    start: Instant,
    /// The request's method (for the metrics, once the request is gone).
    method: Method,
    /// `X-Request-Id`, the client's or a new one.
    request_id: HeaderValue,
    /// The client's `Origin`, when CORS is configured.
    origin: Option<HeaderValue>,
    /// The route id as the metrics' `route` label (`unmatched` until *route* found one).
    label: &'static str,
    /// `Host` (or the target's authority), for routing and `X-Forwarded-Host`.
    host: Option<HeaderValue>,
    /// The verified token's principal (None: anonymous).
    principal: Option<Principal>,
    /// The client's rate-limit state on an allowed request.
    rate: Option<RateInfo>,
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

    /// Handles one proxied request (health and metrics are answered by the server before this):
    /// the phases in order, then *respond*, in a span when tracing is on.
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
            crate::body::bind_recorder(&self.metrics);
            let mut ctx = RequestCtx {
                peer,
                start: Instant::now(),
                method: req.method().clone(),
                request_id: request_id::request_id_of(req.headers()),
                origin: if self.cors.allowed_origins.is_empty() {
                    None
                } else {
                    req.headers().get(header::ORIGIN).cloned()
                },
                label: "unmatched",
                host: None,
                principal: None,
                rate: None,
            };
            let resp = if self.tracing_enabled {
                use tracing::Instrument;
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                let parent = shop_runtime::telemetry::extract_headers(req.headers());
                let span = tracing::info_span!(
                    "http.server",
                    otel.name = %format!("{} gateway", ctx.method),
                    otel.kind = "server",
                    http.method = %ctx.method,
                    http.target = %req.uri().path(),
                    http.status_code = tracing::field::Empty,
                    request_id = %ctx.request_id.to_str().unwrap_or_default(),
                );
                let _ = span.set_parent(parent);
                // Boxed: the traced branch's future would otherwise sit next to the untraced one in
                // this future, which is moved (copied) on every request.
                let r = Box::pin(self.phases(req, &mut ctx).instrument(span.clone())).await;
                span.record("http.status_code", r.status().as_u16());
                r
            } else {
                self.phases(req, &mut ctx).await
            };
            self.respond(resp, ctx)
        }
    }

    /// The phases up to *forward*; a phase that refuses ends the request with its response.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
    )]
    fn phases(
        &self,
        mut req: Request<Incoming>,
        ctx: &mut RequestCtx<'_>,
    ) -> impl Future<Output = Response<ResponseBody>> {
        async move {
            if let Some(resp) = self.preflight(&req) {
                ctx.label = "cors-preflight";
                return resp;
            }
            let route = match self.route(&mut req, ctx).await {
                Ok(route) => route,
                Err(resp) => return resp,
            };
            // For the problem's `instance` (a cheap clone: the URI shares the request's buffer).
            let uri = req.uri().clone();
            match self.proxy_on_route(req, route, ctx).await {
                Ok(r) => r,
                Err(p) => p.into_response(uri.path()),
            }
        }
    }

    /// The phases from *authenticate* to *forward* on the route found.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
    )]
    fn proxy_on_route(
        &self,
        req: Request<Incoming>,
        route: &Route,
        ctx: &mut RequestCtx<'_>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, problem::Problem>> {
        async move {
            self.authenticate(&req, route, ctx).await?;
            self.rate_limit(route, ctx)?;
            let (parts, body) = req.into_parts();
            let outbound = self.request_body(route, &parts.headers, body).await?;
            let uri = forward::upstream_uri(route, &parts.uri).map_err(|e| {
                problem::Problem::new(
                    http::StatusCode::BAD_REQUEST,
                    "Bad request target",
                    e.to_string(),
                )
                .field("path")
            })?;
            let headers = self.upstream_headers(&parts.headers, ctx);
            let resp = self
                .forward(route, &parts.method, &uri, &headers, outbound)
                .await?;
            Ok(self.upstream_response(resp, ctx))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
