//! OpenAPI 3.1 pieces every service shares, so each service's document describes errors the same way and is
//! served the same way (one mechanism, not six copies):
//!
//! * the [`Problem`] schema component (RFC 9457 members plus the extension members the services really
//!   emit: `field`, `unavailable`, `skuCodes`, `instance`);
//! * reusable `application/problem+json` responses ([`BadRequest`], [`NotFound`], [`Conflict`], ...) that
//!   handlers name in `#[utoipa::path(responses(...))]`;
//! * [`route`], which serves a document as `GET /openapi.json`;
//! * [`check_committed`], the drift check behind the committed `docs/openapi/<service>.json` files.
//!
//! The documents are generated with utoipa from the handlers and types themselves (see docs/api.md).

use std::borrow::Cow;
use std::path::Path;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToResponse, ToSchema};

use crate::problem::{PROBLEM_JSON, Problem};

/// Path every service serves its own document at.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Environment variable that makes [`check_committed`] rewrite the committed file instead of comparing.
pub const UPDATE_ENV: &str = "SHOP_UPDATE_DOCS";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

impl PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        let shortage = ObjectBuilder::new()
            .description(Some("A SKU that lacks stock."))
            .property("skuCode", string())
            .property("requested", integer().description(Some("Units asked for.")))
            .property("available", integer().description(Some("Units on hand.")))
            .required("skuCode")
            .required("requested")
            .required("available");
        ObjectBuilder::new()
            .description(Some(
                "An RFC 9457 problem document. `type` is `about:blank` or \
                 `urn:shopkeeper:problem:<kind>`; extension members name what went wrong.",
            ))
            .property(
                "type",
                string()
                    .format(Some(SchemaFormat::Custom("uri-reference".to_owned())))
                    .description(Some("URI identifying the problem kind.")),
            )
            .required("type")
            .property(
                "title",
                string().description(Some("Short summary of the problem kind.")),
            )
            .required("title")
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(100))
                    .maximum(Some(599))
                    .description(Some("The HTTP status code.")),
            )
            .required("status")
            .property(
                "detail",
                string().description(Some("Explanation specific to this occurrence.")),
            )
            .property(
                "field",
                string().description(Some(
                    "The offending input: a JSON path into the body, a parameter or a header.",
                )),
            )
            .property(
                "unavailable",
                ArrayBuilder::new()
                    .items(shortage)
                    .description(Some("SKUs without enough stock (insufficient-stock).")),
            )
            .property(
                "skuCodes",
                ArrayBuilder::new()
                    .items(string())
                    .description(Some("SKUs of the refused order lines.")),
            )
            .property(
                "instance",
                string().description(Some("The upstream instance a gateway error concerns.")),
            )
            .into()
    }
}

impl ToSchema for Problem {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Problem")
    }
}

/// A response whose body is a [`Problem`] in `application/problem+json`.
pub fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build(),
        )
        .build()
}

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                    (stringify!($name), RefOr::T(problem_response($description)))
                }
            }
        )*

        /// Registers the [`Problem`] schema and every reusable problem response in a document's components.
        #[derive(Debug, Clone, Copy)]
        pub struct ProblemComponents;

        impl utoipa::Modify for ProblemComponents {
            fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
                let components = doc.components.get_or_insert_with(Default::default);
                components
                    .schemas
                    .insert("Problem".to_owned(), <Problem as PartialSchema>::schema());
                $(
                    let (name, response) = <$name as ToResponse>::response();
                    components.responses.insert(name.to_owned(), response);
                )*
            }
        }
    };
}

problem_responses! {
    /// 400: a parameter or the body is not well-formed.
    BadRequest => "The request is malformed; `field` names the offending input.";
    /// 404: the named resource does not exist.
    NotFound => "The resource does not exist.";
    /// 409: the request conflicts with the resource's state.
    Conflict => "The request conflicts with the current state.";
    /// 413: the body is too large to read.
    PayloadTooLarge => "The body is too large.";
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType => "The body must be JSON (`Content-Type: application/json`).";
    /// 422: well-formed input that breaks a rule.
    UnprocessableContent => "The input is well-formed but invalid; `field` names it.";
    /// 500: the request failed inside the service.
    InternalError => "The request could not be completed (see the service log).";
    /// 503: a dependency (database, upstream) is unavailable; `Retry-After` says when to retry.
    ServiceUnavailable => "A dependency is unavailable; retry after `Retry-After` seconds.";
}

/// Renders a document the way it is served and committed: pretty JSON with a trailing newline.
pub fn render(doc: &utoipa::openapi::OpenApi) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(doc)?;
    text.push('\n');
    Ok(text)
}

/// A router serving `doc` as `GET /openapi.json` (`application/json`); merge it into a service's router.
pub fn route(doc: &utoipa::openapi::OpenApi) -> Router {
    let body = match render(doc) {
        Ok(text) => Some(Bytes::from(text)),
        Err(e) => {
            tracing::error!(error = %e, "OpenAPI document cannot be rendered");
            None
        }
    };
    Router::new().route(
        OPENAPI_PATH,
        get(move || {
            let body = body.clone();
            async move {
                match body {
                    Some(body) => (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        body,
                    )
                        .into_response(),
                    None => Problem::opaque_internal().into_response(),
                }
            }
        }),
    )
}

/// Why a committed document does not match the generated one.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The committed file differs from what the code generates.
    #[error(
        "{path} is out of date; regenerate it with `{UPDATE_ENV}=1 cargo test -p <crate> openapi` (docs/api.md)"
    )]
    Stale {
        /// The committed file.
        path: String,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The committed file.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The document could not be rendered.
    #[error("cannot render the document: {0}")]
    Render(#[from] serde_json::Error),
}

/// Compares `doc` with the committed file at `path`; with `SHOP_UPDATE_DOCS=1` rewrites the file instead.
pub fn check_committed(doc: &utoipa::openapi::OpenApi, path: &Path) -> Result<(), DriftError> {
    let text = render(doc)?;
    let shown = path.display().to_string();
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DriftError::Io {
                path: shown.clone(),
                source,
            })?;
        }
        return std::fs::write(path, text).map_err(|source| DriftError::Io {
            path: shown,
            source,
        });
    }
    let committed = std::fs::read_to_string(path).map_err(|source| DriftError::Io {
        path: shown.clone(),
        source,
    })?;
    if committed == text {
        Ok(())
    } else {
        Err(DriftError::Stale { path: shown })
    }
}

/// Where `docs/openapi/<service>.json` is, from a crate directory two levels below the repository root
/// (`services/<name>`).
pub fn committed_path(crate_dir: &str, service: &str) -> std::path::PathBuf {
    Path::new(crate_dir)
        .join("../../docs/openapi")
        .join(format!("{service}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(modifiers(&ProblemComponents))]
    struct Doc;

    #[test]
    fn problem_components_are_registered_as_problem_json() {
        let doc = serde_json::to_value(Doc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let problem = &doc["components"]["schemas"]["Problem"];
        assert_eq!(
            problem["required"],
            serde_json::json!(["type", "title", "status"])
        );
        for name in [
            "BadRequest",
            "NotFound",
            "Conflict",
            "PayloadTooLarge",
            "UnprocessableContent",
            "ServiceUnavailable",
        ] {
            assert_eq!(
                doc["components"]["responses"][name]["content"]["application/problem+json"]["schema"]
                    ["$ref"],
                "#/components/schemas/Problem",
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn the_route_serves_the_document_as_json() {
        use tower::ServiceExt;
        let app = route(&Doc::openapi());
        let resp = app
            .oneshot(
                axum::http::Request::get(OPENAPI_PATH)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
    }
}
