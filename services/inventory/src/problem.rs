//! RFC 9457 `application/problem+json` errors and a JSON body extractor that turns every
//! malformed or mistyped body into such a problem naming the offending field, so no handler
//! ever sees (or half-writes) bad input.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: `type`, `title`, `status`, `detail`, plus extension members.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status sent with the problem.
    pub status: StatusCode,
    /// Short, stable problem kind (becomes `type` as `urn:shopkeeper:problem:<kind>`).
    pub kind: &'static str,
    /// Human summary of the problem kind.
    pub title: &'static str,
    /// Specific explanation of this occurrence.
    pub detail: String,
    /// Extension members (`field`, `unavailable`, ...).
    pub extensions: Map<String, Value>,
    /// `Retry-After` seconds, for 503s.
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with no extension members.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after: None,
        }
    }

    /// 400: the body or a parameter is not well-formed.
    pub fn bad_request(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
        .with("field", Value::String(field.to_owned()))
    }

    /// 422: well-formed but semantically invalid input, naming the field.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Validation failed",
            detail,
        )
        .with("field", Value::String(field.to_owned()))
    }

    /// 404 for a named resource.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} '{id}' does not exist"),
        )
    }

    /// 500 without leaking internals (the cause is logged by the caller).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; see the service log",
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            "Service temporarily unavailable",
            detail,
        );
        p.retry_after = Some(retry_after_secs);
        p
    }

    /// Adds an extension member.
    #[must_use]
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// The JSON document sent on the wire.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            Value::String(format!("urn:shopkeeper:problem:{}", self.kind)),
        );
        m.insert("title".into(), Value::String(self.title.to_owned()));
        m.insert("status".into(), Value::from(self.status.as_u16()));
        m.insert("detail".into(), Value::String(self.detail.clone()));
        for (k, v) in &self.extensions {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// JSON body extractor: 415 without a JSON content type, 400 for syntax errors,
/// 422 for a wrong shape, always naming the field path (e.g. `lines[0].quantity`).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let ct = ct.to_ascii_lowercase();
                ct.starts_with("application/json")
                    || (ct.starts_with("application/") && ct.contains("+json"))
            })
            .unwrap_or(false);
        if !json_ct {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "the body must be JSON (Content-Type: application/json)",
            )
            .with("field", Value::String("Content-Type".into())));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-unreadable",
                "Body could not be read",
                e.body_text(),
            )
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserialises `bytes` as `T`, mapping errors to problems that name the offending field path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(Problem::bad_request("body", format!("malformed JSON: {e}"))),
        },
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let mut field = if path == "." || path == "?" || path.is_empty() {
                String::new()
            } else {
                path
            };
            // serde reports a missing member against its parent; name the member itself.
            let msg = inner.to_string();
            if let Some(rest) = msg.strip_prefix("missing field `")
                && let Some(name) = rest.split('`').next()
            {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(name);
            }
            if field.is_empty() {
                field = "body".to_owned();
            }
            use serde_json::error::Category;
            match inner.classify() {
                Category::Data => Err(Problem::invalid(&field, format!("{field}: {inner}"))),
                // A syntax error is about the document, not one member.
                Category::Syntax | Category::Eof | Category::Io => Err(Problem::bad_request(
                    "body",
                    format!("malformed JSON: {inner}"),
                )),
            }
        }
    }
}

/// Serialises `value` with the given status as `application/json`.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            Problem::internal().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        #[serde(rename = "skuCode")]
        sku_code: String,
        quantity: i64,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        lines: Vec<Line>,
    }

    #[test]
    fn wrong_type_names_the_nested_field_with_422() {
        let p = parse_json::<Body>(br#"{"lines":[{"skuCode":"a","quantity":"x"}]}"#)
            .expect_err("must fail");
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.body()["field"], "lines[0].quantity");
    }

    #[test]
    fn missing_field_is_422_and_syntax_error_is_400() {
        let p = parse_json::<Body>(br#"{"lines":[{"quantity":1}]}"#).expect_err("must fail");
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.body()["field"], "lines[0].skuCode");
        let p = parse_json::<Body>(br#"{"lines":[{"#).expect_err("must fail");
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        let p = parse_json::<Body>(br#"{"lines":[]} trailing"#).expect_err("must fail");
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn problem_body_has_rfc9457_members() {
        let p = Problem::unavailable("inventory down", 5);
        let b = p.body();
        assert_eq!(b["status"], 503);
        assert_eq!(b["type"], "urn:shopkeeper:problem:dependency-unavailable");
        let r = p.into_response();
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }
}
