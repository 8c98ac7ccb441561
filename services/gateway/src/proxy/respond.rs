//! Phase *respond*: the response the client gets, from the upstream's answer or a refusal: hop-by-hop
//! headers and the upstream's HTTP version dropped, the rate-limit state, the request id and the
//! CORS headers set, and the request's metrics armed to be recorded when the body has been sent.
//!
//! Exists so that every response, proxied or refused, leaves through the same door.

use http::{HeaderMap, HeaderValue, Method, Response};

use super::{Gateway, RequestCtx};
use crate::{
    body::{Done, ResponseBody},
    outgoing::{X_REQUEST_ID, strip_hop_by_hop},
    ratelimit::RateInfo,
};

impl Gateway {
    /// Phase *respond*, for an upstream's answer: its hop-by-hop headers removed, sent as
    /// HTTP/1.1 (whatever the upstream spoke), with the client's rate-limit state.
    #[inline]
    pub(super) fn upstream_response(
        &self,
        mut resp: Response<ResponseBody>,
        ctx: &RequestCtx<'_>,
    ) -> Response<ResponseBody> {
        strip_hop_by_hop(resp.headers_mut());
        *resp.version_mut() = http::Version::HTTP_11;
        if let Some(i) = &ctx.rate {
            put_rate_headers(resp.headers_mut(), i);
        }
        resp
    }

    /// Phase *respond*, for every response: the request id and CORS headers, and the request's
    /// metrics recorded once its body has been sent.
    #[inline]
    pub(super) fn respond(
        &self,
        mut resp: Response<ResponseBody>,
        ctx: RequestCtx<'_>,
    ) -> Response<ResponseBody> {
        resp.headers_mut().insert(X_REQUEST_ID, ctx.request_id);
        if let Some(o) = ctx.origin {
            self.cors_response_headers(&o, resp.headers_mut());
        }
        // Extension methods are folded into one label value (bounded cardinality).
        let method = match ctx.method {
            m @ (Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::OPTIONS) => m,
            _ => Method::TRACE,
        };
        let status = resp.status().as_u16();
        resp.body_mut().record_when_done(Done {
            route: ctx.label,
            method,
            status,
            start: ctx.start,
        });
        resp
    }
}

/// The client's rate-limit state on an allowed request's response.
fn put_rate_headers(h: &mut HeaderMap, i: &RateInfo) {
    h.insert("x-ratelimit-limit", HeaderValue::from(i.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(i.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(i.reset_secs));
}
