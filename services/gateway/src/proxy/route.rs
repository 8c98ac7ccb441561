//! Phase *route*: checks the request target and `Host`, normalizes the path and finds the route
//! that takes the request (or the storefront, or a 404).
//!
//! Exists as the first phase that can refuse a request for what it is rather than who sent it:
//! an ambiguous `Host` or path is refused (400) before any route, security rule or upstream sees
//! it, since upstream servers could read it differently from the gateway.

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;

use super::{Gateway, RequestCtx, problem::Problem};
use crate::{body::ResponseBody, routes::Route};

impl Gateway {
    /// Phase *route*: the route that takes `req`, with the request's `Host` (or the target's
    /// authority) kept in `ctx.host`. Short-circuits with a response: 400 for a bad `Host` or an
    /// ambiguous path, the storefront's answer or 404 when no route takes it (`ctx.label` says
    /// which). Percent-encoded unreserved characters in the target are decoded in place first.
    pub(super) async fn route(
        &self,
        req: &mut Request<Incoming>,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<&Route, Response<ResponseBody>> {
        if let Some(why) = bad_host(req) {
            let path = req.uri().path();
            let p = Problem::new(StatusCode::BAD_REQUEST, "Bad Host header", why).field("host");
            return Err(p.into_response(path));
        }
        ctx.host = match req.headers().get(header::HOST) {
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
                format!("the path contains {why}, which upstream servers may resolve differently"),
            )
            .field("path");
            return Err(p.into_response(path));
        }
        let host_str = ctx.host.as_ref().and_then(|h| h.to_str().ok());
        let Some(route) = self.table.find(req.method(), host_str, req.uri().path()) else {
            let path = req.uri().path();
            // Boxed, like the other rare branches: keeps the per-request future small.
            if let Some(sf) = &self.storefront
                && let Some(resp) = Box::pin(sf.respond(req.method(), path, req.headers())).await
            {
                ctx.label = "storefront";
                return Err(resp);
            }
            let p = Problem::new(
                StatusCode::NOT_FOUND,
                "No route",
                format!("no route for {} {path}", req.method()),
            )
            .field("path");
            return Err(p.into_response(path));
        };
        ctx.label = self
            .route_labels
            .get(route.index)
            .copied()
            .unwrap_or("unmatched");
        Ok(route)
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
}
