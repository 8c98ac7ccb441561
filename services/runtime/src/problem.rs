//! RFC 9457 `application/problem+json` error bodies, so every service reports errors the same way and names
//! the offending field; plus a JSON extractor whose rejections are such problems.
//!
//! Two vocabularies share the one [`Problem`] type:
//!
//! * the plain one ([`Problem::bad_request`], [`Json`], [`parse_json`], ...): `type` is `about:blank` and every
//!   unusable body is a 400;
//! * the typed one ([`Problem::typed`], [`Problem::invalid`], [`ApiJson`], [`parse_api_json`], ...) used by
//!   order and inventory: `type` is `urn:shopkeeper:problem:<kind>`, `detail` is always present, a body of the
//!   wrong shape is a 422 (a syntax error or trailing data is a 400), and an unreadable or oversized body a 413.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of the `type` URI of typed problems ([`Problem::typed`]); the problem kind follows it.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:shopkeeper:problem:";

/// An RFC 9457 problem document. Build it with [`Problem::new`] or the helpers and return it from a handler.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    title: String,
    detail: Option<String>,
    kind: Option<String>,
    /// Boxed: with serde_json's `preserve_order` (enabled elsewhere in the workspace) the map is
    /// large, and `Result<T, Problem>` is returned on every request path.
    extensions: Box<Map<String, Value>>,
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
            extensions: Box::default(),
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
        for (k, v) in self.extensions.iter() {
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

/// The typed vocabulary: `type` is [`PROBLEM_TYPE_PREFIX`] plus a short, stable kind, and `detail` is always set.
impl Problem {
    /// A typed problem: `type` is `urn:shopkeeper:problem:<kind>`.
    pub fn typed(
        status: StatusCode,
        kind: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(status, title)
            .kind(format!("{PROBLEM_TYPE_PREFIX}{kind}"))
            .detail(detail)
    }

    /// 400 `malformed-request`: the body or a parameter is not well-formed, naming the field.
    pub fn malformed(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::typed(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
        .field(field)
    }

    /// 422 `validation-failed`: well-formed but semantically invalid input, naming the field.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Validation failed",
            detail,
        )
        .field(field)
    }

    /// 404 `not-found` for a named resource: "`<what>` '`<id>`' does not exist".
    pub fn missing(what: &str, id: &str) -> Self {
        Self::typed(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} '{id}' does not exist"),
        )
    }

    /// 500 `internal` with a fixed detail that leaks nothing (log the cause yourself).
    pub fn opaque_internal() -> Self {
        Self::typed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; see the service log",
        )
    }

    /// 503 `dependency-unavailable` with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        Self::typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency-unavailable",
            "Service temporarily unavailable",
            detail,
        )
        .retry_after(retry_after)
    }

    /// 415 `unsupported-media-type` naming the `Content-Type` header.
    pub fn not_json() -> Self {
        Self::typed(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be JSON (Content-Type: application/json)",
        )
        .field("Content-Type")
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
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the server must drop the connection; saying
            // so keeps a client from reusing it for its next request (and failing on a closed socket).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
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
    let first = match serde_path_to_error::deserialize(de) {
        Ok(_) if is_array(bytes) => {
            return Err(Problem::bad_request("body", NOT_AN_OBJECT));
        }
        Ok(v) => return Ok(v),
        Err(e) if is_array(bytes) && e.inner().classify() == serde_json::error::Category::Data => {
            return Err(Problem::bad_request("body", NOT_AN_OBJECT));
        }
        Err(e) => e,
    };
    let err = match retry_with_whole_numbers(bytes, &first) {
        Some(Ok(v)) => return Ok(v),
        Some(Err(again)) => again,
        None => first,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let field = if path == "." {
        missing_field(&inner.to_string()).unwrap_or_else(|| "body".to_owned())
    } else {
        match missing_field(&inner.to_string()) {
            Some(f) => format!("{path}.{f}"),
            None => path,
        }
    };
    Err(Problem::bad_request(
        field,
        format!("invalid JSON body: {inner}"),
    ))
}

/// Every request body of the shop is a JSON object.
const NOT_AN_OBJECT: &str = "the body must be a JSON object";

/// Whether the document is a JSON array. serde reads a struct from an array too, member by member
/// in declaration order, so `["o-1",[...]]` was taken for `{"orderNumber":"o-1","lines":[...]}`, and
/// a wrong array was blamed on a member `[0]` that no document has (found by fuzzing). Every body of
/// the shop is documented as an object, so an array is refused as a whole.
fn is_array(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[')
}

/// JSON Schema (and so every OpenAPI document) counts `5.0` as an integer, and clients that keep
/// every number as a float (Python's, some JavaScript serialisers) send it so; serde refuses it for
/// an integer field. When a body of the right syntax did not fit `T`, this tries once more with every
/// whole float within the integers' range (`5.0`, `-3e2`) turned into that integer. The fast path
/// (a body that fits) pays nothing. `None` when there was nothing to retry.
fn retry_with_whole_numbers<T: DeserializeOwned>(
    bytes: &[u8],
    first: &serde_path_to_error::Error<serde_json::Error>,
) -> Option<Result<T, serde_path_to_error::Error<serde_json::Error>>> {
    if first.inner().classify() != serde_json::error::Category::Data {
        return None;
    }
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    if !whole_floats_to_integers(&mut value) {
        return None;
    }
    Some(serde_path_to_error::deserialize(value))
}

/// Turns every float with no fractional part that fits an `i64` (or, when positive, a `u64`) into
/// that integer, at any depth; returns whether it changed anything.
pub fn whole_floats_to_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else {
                return false;
            };
            // 2^63 and 2^64 are exact in f64; a whole f64 below them converts exactly.
            let int = if f.fract() != 0.0 || !f.is_finite() {
                None
            } else if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
                Some(Value::from(f as i64))
            } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                Some(Value::from(f as u64))
            } else {
                None
            };
            match int {
                Some(i) => {
                    *value = i;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| whole_floats_to_integers(v) | changed),
        Value::Object(members) => members
            .values_mut()
            .fold(false, |changed, v| whole_floats_to_integers(v) | changed),
        _ => false,
    }
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// The member a serde error about the whole document names (`missing`, `duplicate` or `unknown
/// field `x``), if it names one.
fn named_field(msg: &str) -> Option<String> {
    ["missing field `", "duplicate field `", "unknown field `"]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
}

/// Parses a query string into `T`, or (field, detail) naming the parameter at fault: the one
/// whose value did not parse, or the one a `missing`/`duplicate field` error names (`query` when
/// there is none, e.g. a query that is not `a=b&c=d`).
fn parse_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, (String, String)> {
    let parse = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    let de = serde_urlencoded::Deserializer::new(parse);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path.is_empty() || path == "." || path == "?" {
            named_field(&inner).unwrap_or_else(|| "query".to_owned())
        } else {
            path
        };
        (field, format!("invalid query string: {inner}"))
    })
}

/// A non-negative int64 query parameter, as the documents type `page` and `size` (format int64,
/// minimum 0): absent is `default`; anything but an integer from 0 to `i64::MAX` (`page=`, a
/// value past the int64 range, both once served: found by fuzzing) is a 400 naming `field`.
pub fn int64_param(field: &'static str, v: Option<&str>, default: u64) -> Result<u64, Problem> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| {
                Problem::bad_request(
                    field,
                    format!("{field} must be an integer from 0 to {}", i64::MAX),
                )
            }),
    }
}

/// Drop-in replacement for `axum::extract::Query` whose rejection is a 400 problem naming the
/// parameter (axum's own is `text/plain`; found by fuzzing: `?size=1&size=2`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query())
            .map(Query)
            .map_err(|(field, detail)| Problem::bad_request(field, detail))
    }
}

/// [`Query`] in the typed vocabulary: its rejection is a 400 `malformed-request` naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query())
            .map(ApiQuery)
            .map_err(|(field, detail)| Problem::malformed(field, detail))
    }
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

/// Checks the request declares a JSON body (`application/json` or `application/*+json`), else the typed 415.
pub fn require_api_json(headers: &HeaderMap) -> Result<(), Problem> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.starts_with("application/json")
                || (ct.starts_with("application/") && ct.contains("+json"))
        });
    if json {
        Ok(())
    } else {
        Err(Problem::not_json())
    }
}

/// Parses a whole JSON body into `T` in the typed vocabulary: a syntax error or trailing data is a 400
/// `malformed-request` on `body`, a value of the wrong shape a 422 `validation-failed` naming its JSON path.
pub fn parse_api_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let first = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            return match de.end() {
                Ok(()) if is_array(bytes) => Err(Problem::invalid("body", NOT_AN_OBJECT)),
                Ok(()) => Ok(v),
                Err(e) => Err(Problem::malformed("body", format!("malformed JSON: {e}"))),
            };
        }
        Err(err)
            if is_array(bytes) && err.inner().classify() == serde_json::error::Category::Data =>
        {
            return Err(Problem::invalid("body", NOT_AN_OBJECT));
        }
        Err(err) => err,
    };
    // Perhaps only an integer spelled `5.0` (see `retry_with_whole_numbers`); a retry that fails
    // again reports its own error, on the same document.
    let err = match retry_with_whole_numbers::<T>(bytes, &first) {
        Some(Ok(v)) => return Ok(v),
        Some(Err(again)) => again,
        None => first,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let mut field = if path == "." || path == "?" || path.is_empty() {
        String::new()
    } else {
        path
    };
    // serde reports a missing member against its parent; name the member itself.
    if let Some(name) = missing_field(&inner.to_string()) {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(&name);
    }
    if field.is_empty() {
        field = "body".to_owned();
    }
    use serde_json::error::Category;
    match inner.classify() {
        Category::Data => {
            let detail = format!("{field}: {inner}");
            Err(Problem::invalid(field, detail))
        }
        // A syntax error is about the document, not one member.
        Category::Syntax | Category::Eof | Category::Io => Err(Problem::malformed(
            "body",
            format!("malformed JSON: {inner}"),
        )),
    }
}

/// JSON body extractor in the typed vocabulary: 415 without a JSON content type, 413 for a body that cannot
/// be read (too large), then [`parse_api_json`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_api_json(req.headers())?;
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                Problem::typed(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-unreadable",
                    "Body could not be read",
                    e.body_text(),
                )
            })?;
        parse_api_json(&bytes).map(ApiJson)
    }
}

/// Serialises `value` as an `application/json` response with `status` (a typed 500 if it cannot be).
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
            Problem::opaque_internal().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_params_are_integers_within_the_int64_range() {
        assert_eq!(int64_param("page", None, 7).unwrap(), 7);
        assert_eq!(int64_param("page", Some("0"), 7).unwrap(), 0);
        assert_eq!(
            int64_param("size", Some("9223372036854775807"), 7).unwrap(),
            i64::MAX as u64
        );
        for bad in ["", "-1", "1.5", "9223372036854775808", "x"] {
            let p = int64_param("size", Some(bad), 7).unwrap_err();
            assert_eq!(p.status(), StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(p.body()["field"], "size", "{bad:?}");
        }
    }

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
    fn a_413_tells_the_client_the_connection_closes() {
        let too_large =
            Problem::typed(StatusCode::PAYLOAD_TOO_LARGE, "t", "T", "d").into_response();
        assert_eq!(too_large.headers()[header::CONNECTION], "close");
        let other = Problem::typed(StatusCode::BAD_REQUEST, "t", "T", "d").into_response();
        assert!(other.headers().get(header::CONNECTION).is_none());
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

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct ApiLine {
        #[serde(rename = "skuCode")]
        sku_code: String,
        quantity: i64,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct ApiBody {
        lines: Vec<ApiLine>,
    }

    #[test]
    fn api_json_wrong_type_names_the_nested_field_with_422() {
        let p = parse_api_json::<ApiBody>(br#"{"lines":[{"skuCode":"a","quantity":"x"}]}"#)
            .unwrap_err();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.body()["field"], "lines[0].quantity");
        assert_eq!(p.body()["type"], "urn:shopkeeper:problem:validation-failed");
    }

    #[test]
    fn api_json_missing_field_is_422_and_syntax_error_is_400() {
        let p = parse_api_json::<ApiBody>(br#"{"lines":[{"quantity":1}]}"#).unwrap_err();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.body()["field"], "lines[0].skuCode");
        let p = parse_api_json::<ApiBody>(br#"{}"#).unwrap_err();
        assert_eq!(p.body()["field"], "lines");
        let p = parse_api_json::<ApiBody>(br#"{"lines":[{"#).unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert_eq!(p.body()["field"], "body");
        let p = parse_api_json::<ApiBody>(br#"{"lines":[]} trailing"#).unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert_eq!(p.body()["type"], "urn:shopkeeper:problem:malformed-request");
    }

    // Found by fuzzing (tests/e2e/tests/fuzz.rs): JSON Schema's `integer` includes `5.0`, which
    // schemathesis sends; both vocabularies refused it as "not an integer".
    #[test]
    fn a_whole_float_is_an_integer() {
        let b =
            parse_api_json::<ApiBody>(br#"{"lines":[{"skuCode":"a","quantity":5.0}]}"#).unwrap();
        assert_eq!(b.lines[0].quantity, 5);
        let o = parse_json::<Order>(br#"{"lines":[{"sku":"a","qty":-0.0},{"sku":"b","qty":7e0}]}"#)
            .unwrap();
        assert_eq!((o.lines[0].qty, o.lines[1].qty), (0, 7));
        // A fraction is still no integer, and the error still names the member.
        let p = parse_api_json::<ApiBody>(br#"{"lines":[{"skuCode":"a","quantity":5.5}]}"#)
            .unwrap_err();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.body()["field"], "lines[0].quantity");
        let p = parse_json::<Order>(br#"{"lines":[{"sku":"a","qty":1e300}]}"#).unwrap_err();
        assert_eq!(p.body()["field"], "lines[0].qty");
        // A document with trailing data is still refused, whatever its numbers.
        assert!(
            parse_api_json::<ApiBody>(br#"{"lines":[{"skuCode":"a","quantity":5.0}]} x"#).is_err()
        );
    }

    // Found by fuzzing (tests/e2e/tests/fuzz.rs): `[null, null]` was blamed on a member `[0]`, and a
    // well-typed array was read as the struct, member by member.
    #[test]
    fn an_array_body_is_not_an_object() {
        let p = parse_api_json::<ApiBody>(br#"[null, null]"#).unwrap_err();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.body()["field"], "body");
        let p = parse_api_json::<ApiBody>(br#" [[{"skuCode":"a","quantity":1}]]"#).unwrap_err();
        assert_eq!(p.body()["field"], "body");
        let p = parse_json::<Order>(br#"[[{"sku":"a","qty":1}]]"#).unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert_eq!(p.body()["field"], "body");
        let p = parse_json::<Order>(br#"[null]"#).unwrap_err();
        assert_eq!(p.body()["field"], "body");
        // A document that ends inside its array is still a syntax error.
        let p = parse_api_json::<ApiBody>(br#"["#).unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Page {
        page: Option<u32>,
        size: Option<String>,
    }

    fn query_problem<T: DeserializeOwned>(q: &str, typed: bool) -> Problem {
        let Err((field, detail)) = parse_query::<T>(Some(q)) else {
            panic!("{q} parsed");
        };
        if typed {
            Problem::malformed(field, detail)
        } else {
            Problem::bad_request(field, detail)
        }
    }

    // Found by fuzzing (tests/e2e/tests/fuzz.rs): `GET /api/order?size=1&size=2` was a text/plain
    // 400 from axum's Query ("duplicate field `size`").
    #[test]
    fn a_bad_query_names_the_parameter() {
        let p = query_problem::<Page>("size=1&size=2", false);
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert_eq!(p.body()["field"], "size");
        let p = query_problem::<Page>("page=x", true);
        assert_eq!(p.body()["field"], "page");
        assert_eq!(p.body()["type"], "urn:shopkeeper:problem:malformed-request");
        let ok: Page = parse_query(Some("page=2&other=1")).unwrap();
        assert_eq!(ok.page, Some(2));
        let none: Page = parse_query(None).unwrap();
        assert!(none.page.is_none() && none.size.is_none());
    }

    #[test]
    fn typed_problem_has_rfc9457_members_and_retry_after() {
        let p = Problem::unavailable("inventory down", Duration::from_secs(5));
        let b = p.body();
        assert_eq!(b["status"], 503);
        assert_eq!(b["type"], "urn:shopkeeper:problem:dependency-unavailable");
        assert_eq!(b["title"], "Service temporarily unavailable");
        assert_eq!(b["detail"], "inventory down");
        let r = p.into_response();
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn api_json_content_type_check() {
        let mut h = HeaderMap::new();
        assert_eq!(
            require_api_json(&h).unwrap_err().body()["field"],
            "Content-Type"
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            require_api_json(&h).unwrap_err().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_api_json(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        );
        assert!(require_api_json(&h).is_ok());
    }
}
