//! Phase *cors*: answers CORS preflights before routing, and adds the CORS response headers for an
//! allowed origin in phase *respond*.
//!
//! Exists because the policy (`cors` in the config) is the same for every route and the browser's
//! preflight must be answered whether a route takes the path or not.

use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header,
    header::HeaderValue as HV,
};
use hyper::body::Incoming;

use super::Gateway;
use crate::body::ResponseBody;

impl Gateway {
    fn cors_allows(&self, origin: &HeaderValue) -> bool {
        let Ok(o) = origin.to_str() else { return false };
        self.cors.allowed_origins.iter().any(|a| a == "*" || a == o)
    }

    /// Phase *respond*: the CORS headers of an allowed origin's response.
    #[inline]
    pub(super) fn cors_response_headers(&self, origin: &HeaderValue, h: &mut HeaderMap) {
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

    /// Phase *cors*: a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// is answered here, 204 with the allowed methods and headers when the origin is allowed (and
    /// without them when not), before any route is looked up.
    #[inline]
    pub(super) fn preflight(&self, req: &Request<Incoming>) -> Option<Response<ResponseBody>> {
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
}
