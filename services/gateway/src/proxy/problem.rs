//! The proxy's refusals: every phase that stops a request returns a [`Problem`], answered as an
//! `application/problem+json` response (RFC 9457) with the request path as its `instance`.
//!
//! Exists so the phases say *why* they refuse (status, title, detail, field, extra headers) and
//! one place renders it.

use std::time::Duration;

use bytes::Bytes;
use http::{
    HeaderName, HeaderValue, Response, StatusCode,
    header::{self, HeaderValue as HV},
};

use crate::{auth::AuthError, body::ResponseBody, ratelimit::RateInfo, routes::Route};

/// Why a phase refused a request.
pub(crate) struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    field: Option<&'static str>,
    headers: Vec<(HeaderName, String)>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            field: None,
            headers: vec![],
        }
    }
    pub(crate) fn field(mut self, f: &'static str) -> Self {
        self.field = Some(f);
        self
    }
    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub(crate) fn into_response(self, instance: &str) -> Response<ResponseBody> {
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

/// The refusal for a token or security-rule failure (`WWW-Authenticate` on 401s).
pub(crate) fn auth_problem(e: AuthError) -> Problem {
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

/// The 429 for a client over its limit on `route`.
pub(crate) fn too_many_requests(route: &Route, info: &RateInfo, retry_after: Duration) -> Problem {
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

/// The rate-limit headers on a refusal.
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
