//! Phase *forward*: the request as the upstream gets it (target, headers) and the attempts to send
//! it, with the circuit breaker, the route's deadline and retries.
//!
//! Exists as the one place that decides what a failed attempt means: whether it counts against the
//! breaker, whether the instance is skipped, and whether the request may be sent again.

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use super::{
    Gateway, RequestCtx, is_idempotent,
    pick::breaker_key,
    problem::Problem,
    request_body::{Outbound, Upload, has_length_limit_error},
};
use crate::{
    body::{ResponseBody, empty, full},
    outgoing::{Outgoing, X_FORWARDED_FOR, X_FORWARDED_PROTO},
    routes::Route,
    upstream::{self, UpstreamError},
};

impl Gateway {
    /// The headers to send upstream: the client's, less hop-by-hop and forged ones, with the
    /// gateway's `X-User-Id`, `X-Forwarded-*`, request id and trace context.
    #[inline]
    pub(super) fn upstream_headers<'a>(
        &self,
        incoming: &'a HeaderMap,
        ctx: &mut RequestCtx<'_>,
    ) -> Outgoing<'a> {
        let peer = ctx.peer;
        let user = ctx
            .principal
            .as_ref()
            .and_then(|p| HeaderValue::from_str(&p.subject).ok());
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
            forwarded_host: ctx.host.take(),
            request_id: ctx.request_id.clone(),
            trace,
        }
    }

    /// Phase *forward*: sends the request to an instance picked per attempt (phase *pick
    /// upstream*), through the service's circuit breaker, within the route's timeout, retrying
    /// on another instance what is safe to retry. Short-circuits with 503 (breaker open or no
    /// instance), 504 (timeout), 502 (connection failed), 408/400 (the client's upload stalled or
    /// broke) or 413 (body over the limit while streaming).
    pub(super) async fn forward(
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

/// The origin-form target to send upstream: the client's own when the route does not rewrite it.
pub(super) fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, http::uri::InvalidUri> {
    if !route.rewrites() && uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    route
        .upstream_path_and_query(uri.path(), uri.query())
        .parse()
}
