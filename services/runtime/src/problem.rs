//! RFC 9457 `application/problem+json` error bodies, so every service reports errors the same way and names
//! the offending field; plus a JSON extractor whose rejections are such problems.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document. Build it with [`Problem::new`] or the helpers and return it from a handler.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    title: String,
    detail: Option<String>,
    kind: Option<String>,
    extensions: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl Problem {
    /// A problem with the given status and short human-readable title.
    pub fn new(status: StatusCode, title: impl Into<String>) -> Self {
        Self {
            status,
            title: title.into(),
            detail: None,
            kind: None,
            extensions: Map::new(),
            retry_after: None,
        }
    }

    /// Explanation specific to this occurrence.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The `type` URI (default `about:blank`).
    pub fn kind(mut self, uri: impl Into<String>) -> Self {
        self.kind = Some(uri.into());
        self
    }

    /// Names the offending input field (extension member `field`).
    pub fn field(self, name: impl Into<String>) -> Self {
        self.with("field", Value::String(name.into()))
    }

    /// Adds an extension member.
    pub fn with(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }

    /// Sets a `Retry-After` header (whole seconds, rounded up).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// HTTP status of this problem.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem document as JSON.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(self.kind.clone().unwrap_or_else(|| "about:blank".into())),
        );
        body.insert("title".into(), Value::String(self.title.clone()));
        body.insert("status".into(), json!(self.status.as_u16()));
        if let Some(d) = &self.detail {
            body.insert("detail".into(), Value::String(d.clone()));
        }
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// 400 naming the bad field.
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad request")
            .field(field)
            .detail(detail)
    }

    /// 404 for a missing resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found").detail(detail)
    }

    /// 409 for a state conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict").detail(detail)
    }

    /// 422 for well-formed input that breaks a rule, naming the field.
    pub fn unprocessable(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable content")
            .field(field)
            .detail(detail)
    }

    /// 503 with `Retry-After`.
    pub fn service_unavailable(retry_after: Duration, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
            .detail(detail)
            .retry_after(retry_after)
    }

    /// 500 without leaking internals (log the cause yourself).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error").detail(detail)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Parses a JSON body into `T`, or a 400 problem whose `field` is the JSON path of the first bad value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." {
            missing_field(&inner.to_string()).unwrap_or_else(|| "body".to_owned())
        } else {
            match missing_field(&inner.to_string()) {
                Some(f) => format!("{path}.{f}"),
                None => path,
            }
        };
        Problem::bad_request(field, format!("invalid JSON body: {inner}"))
    })
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// Drop-in replacement for `axum::Json` whose rejections are problem documents naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                ct == "application/json" || ct.ends_with("+json")
            });
        if !is_json {
            return Err(
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type")
                    .field("content-type")
                    .detail("expected Content-Type: application/json"),
            );
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                Problem::new(e.status(), "Unreadable body")
                    .field("body")
                    .detail(e.body_text())
            })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        qty: u32,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Order {
        lines: Vec<Line>,
    }

    #[test]
    fn bad_json_names_the_field_path() {
        let p = parse_json::<Order>(br#"{"lines":[{"sku":"a","qty":1},{"sku":"b","qty":-1}]}"#)
            .unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert_eq!(p.body()["field"], "lines[1].qty");
        let p = parse_json::<Order>(br#"{"lines":[{"sku":"a"}]}"#).unwrap_err();
        assert_eq!(p.body()["field"], "lines[0].qty");
        let p = parse_json::<Order>(br#"{}"#).unwrap_err();
        assert_eq!(p.body()["field"], "lines");
    }

    #[test]
    fn response_is_problem_json_with_retry_after() {
        let r = Problem::service_unavailable(Duration::from_millis(1500), "down").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
