//! HTTP API of shop-product: `/api/product` CRUD with problem+json errors.
//!
//! Exists to keep the original's wire shapes accepted (`POST {name, description, price}`,
//! `GET` returning a bare JSON array with `id`, `name`, `description`, `price`) while adding what the
//! original lacked: a 201 body, validation naming the field, SKU codes, stock seeding and paging.
//! Paging keeps the bare-array response and reports the total in `X-Total-Count`, so a client of the
//! original still parses the list.

// `Problem` (the runtime's RFC 9457 response) is large; it is only built on cold error paths.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use shop_runtime::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, ProblemComponents, ServiceUnavailable,
    UnprocessableContent, UnsupportedMediaType,
};
use shop_runtime::{Problem, Query};
use utoipa::{OpenApi, ToSchema};

use crate::model::{self, FieldError, ProductView, Severity};
use crate::search::{self, SharedIndex};
use crate::stock::{StockSyncer, StockTarget, SyncOutcome};
use crate::store::{self, ProductStore, StoreError};

/// Default page size of `GET /api/product`.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u64 = 200;

/// The service's OpenAPI 3.1 document (served at `/openapi.json`, committed as `docs/openapi/product.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "shop-product", description = "The product catalogue: CRUD, paging and search."),
    paths(list, create, get_one, replace, delete_one),
    components(schemas(ProductView, model::StockSync, ProductRequest)),
    modifiers(&ProblemComponents),
    tags((name = "product", description = "Products, their stock seeding, and catalog search"))
)]
pub struct ApiDoc;

/// The body of `POST` and `PUT /api/product` as documented. The handlers parse the JSON by hand
/// (see [`crate::model`]) so an error can name the field; this type only describes it.
#[derive(ToSchema)]
#[schema(as = ProductRequest)]
#[allow(dead_code)]
struct ProductRequest {
    /// Name, 1..=200 characters after trimming.
    #[schema(max_length = 200, example = "iPhone 13")]
    name: String,
    /// Description, at most 4000 characters.
    #[schema(max_length = 4000)]
    description: Option<String>,
    /// Price, >= 0 with at most two decimal places: a JSON number (the original's shape) or a
    /// decimal string.
    #[schema(schema_with = price_schema)]
    price: serde_json::Value,
    /// SKU code, 1..=64 letters, digits, `_`, `-` or `.`; generated from the name when absent.
    /// Cannot change on `PUT`.
    #[serde(rename = "skuCode")]
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    sku_code: Option<String>,
    /// Stock to seed into inventory (0..=1,000,000,000).
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    quantity: Option<i64>,
}

/// `price` in a request: a JSON number or a decimal string, >= 0 with at most two places.
fn price_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0)),
        )
        // No pattern: the service trims the string and accepts `5.500` (two places once the
        // trailing zeros go), which `^[0-9]+(\.[0-9]{1,2})?$` refused (found by fuzzing).
        .item(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "Price, >= 0 with at most two decimal places, at most 1000000000000: a JSON number \
             (the original's shape) or a decimal string such as \"19.99\".",
        ))
        .build()
        .into()
}

/// Shared state of the handlers.
pub struct AppState<T: StockTarget> {
    /// Product collection.
    pub store: ProductStore,
    /// Stock seeding.
    pub syncer: Arc<StockSyncer<T>>,
    /// Catalog search index (see [`crate::search`]).
    pub search: SharedIndex,
}

/// The `/api/product` routes.
pub fn router<T: StockTarget>(state: Arc<AppState<T>>) -> Router {
    Router::new()
        .route("/api/product", get(list::<T>).post(create::<T>))
        .route(
            "/api/product/{id}",
            get(get_one::<T>).put(replace::<T>).delete(delete_one::<T>),
        )
        .with_state(state)
}

fn field_problem(e: FieldError) -> Problem {
    match e.severity {
        Severity::Malformed => Problem::bad_request(e.field, e.detail),
        Severity::Invalid => Problem::unprocessable(e.field, e.detail),
    }
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::DuplicateSku(sku) => Problem::conflict(format!(
            "skuCode {sku:?} is already used by another product"
        ))
        .field("skuCode"),
        other => {
            tracing::error!(error = %other, "product store failure");
            Problem::service_unavailable(
                std::time::Duration::from_secs(1),
                "the product database is unavailable",
            )
        }
    }
}

/// Parse a JSON body, insisting on a JSON content type.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, Problem> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct != "application/json" && !ct.ends_with("+json") {
        return Err(
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported media type")
                .field("content-type")
                .detail("expected Content-Type: application/json"),
        );
    }
    let body = body.map_err(|e| {
        Problem::new(e.status(), "Unreadable body")
            .field("body")
            .detail(e.body_text())
    })?;
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("body", format!("body is not valid JSON: {e}")))?;
    // `quantity: 5.0` is the integer 5 to JSON Schema and to the documented body (found by fuzzing).
    shop_runtime::problem::whole_floats_to_integers(&mut value);
    Ok(value)
}

fn path_id(id: &str) -> Result<mongodb::bson::oid::ObjectId, Problem> {
    store::parse_id(id)
        .ok_or_else(|| Problem::not_found(format!("no product with id {id:?}")).field("id"))
}

/// Create a product; a `quantity` is seeded into inventory (the answer says whether it got there).
#[utoipa::path(
    post,
    path = "/api/product",
    tag = "product",
    request_body = ProductRequest,
    responses(
        (status = 201, description = "The product as stored", body = ProductView,
            headers(("Location" = String, description = "The product's URL"))),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn create<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let v = json_body(&headers, body)?;
    let input = model::parse_product(&v).map_err(field_problem)?;
    let sku = input
        .sku_code
        .clone()
        .unwrap_or_else(|| model::generate_sku(&input.name));
    let (mut view, pending) = st.store.insert(&input, &sku).await.map_err(store_problem)?;
    if let Some(id) = store::parse_id(&view.id) {
        st.search.apply(&id, Some(&view));
    }
    if let Some(p) = pending {
        view = sync_inline(&st, p.id, view).await;
    }
    tracing::info!(id = %view.id, sku = %view.sku_code, "product created");
    let mut resp = (StatusCode::CREATED, axum::Json(&view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/product/{}", view.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Try to push the stock right away so the answer usually says SYNCED; on any failure the marker
/// stays and the retry loop takes over.
async fn sync_inline<T: StockTarget>(
    st: &AppState<T>,
    id: mongodb::bson::oid::ObjectId,
    view: ProductView,
) -> ProductView {
    match st.syncer.sync_one(id).await {
        Ok(SyncOutcome::Synced) => match st.store.get(id).await {
            Ok(Some(fresh)) => fresh,
            _ => view,
        },
        Ok(_) => {
            st.syncer.wake();
            view
        }
        Err(e) => {
            tracing::warn!(error = %e, "inline stock sync failed; retry loop will take over");
            st.syncer.wake();
            view
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    page: Option<String>,
    size: Option<String>,
    /// Exact name (the original's filter).
    name: Option<String>,
    /// Search words (see [`crate::search`]).
    q: Option<String>,
    /// Exact SKU code.
    sku: Option<String>,
    /// Inclusive lower price bound.
    min_price: Option<String>,
    /// Inclusive upper price bound.
    max_price: Option<String>,
}

impl ListQuery {
    /// Whether the request asks for more than the original's exact-name listing.
    fn is_search(&self) -> bool {
        [&self.q, &self.sku, &self.min_price, &self.max_price]
            .iter()
            .any(|v| v.as_deref().is_some_and(|s| !s.trim().is_empty()))
    }
}

/// Products in creation order, a bare JSON array (the original's shape) with the total in
/// `X-Total-Count`. `q`, `sku`, `minPrice` and `maxPrice` search the catalog (see the module docs
/// of `search`); `name` alone is the original's exact-name filter.
#[utoipa::path(
    get,
    path = "/api/product",
    tag = "product",
    params(
        ("page" = Option<u64>, Query, description = "Page index from 0 (default 0)"),
        ("size" = Option<u64>, Query, minimum = 1, maximum = 200, description = "Page size, 1..=200 (default 20)"),
        ("name" = Option<String>, Query, description = "Exact name"),
        ("q" = Option<String>, Query, max_length = 200, description = "Words (at most 8, 200 characters); each must start a word of the name or description, case-insensitive"),
        ("sku" = Option<String>, Query, description = "Exact SKU code"),
        ("minPrice" = Option<String>, Query, description = "Inclusive lower price bound, a decimal such as 19.99"),
        ("maxPrice" = Option<String>, Query, description = "Inclusive upper price bound")
    ),
    responses(
        (status = 200, description = "One page of products", body = Vec<ProductView>,
            headers(("X-Total-Count" = u64, description = "Products matching, in all pages"))),
        (status = 400, response = BadRequest),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn list<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    let page = shop_runtime::problem::int64_param("page", q.page.as_deref(), 0)?;
    let size = shop_runtime::problem::int64_param("size", q.size.as_deref(), DEFAULT_PAGE_SIZE)?;
    if size == 0 || size > MAX_PAGE_SIZE {
        return Err(Problem::bad_request(
            "size",
            format!("size must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let result = if q.is_search() {
        search_page(&st, &q, page, size).await?
    } else {
        let name = q.name.as_deref().filter(|n| !n.is_empty());
        st.store
            .list(name, page, size)
            .await
            .map_err(store_problem)?
    };
    let mut resp = axum::Json(&result.items).into_response();
    if let Ok(v) = HeaderValue::from_str(&result.total.to_string()) {
        resp.headers_mut().insert("x-total-count", v);
    }
    Ok(resp)
}

/// A search page: the ids from the index, each product read back by `_id` and re-checked against
/// the query (a product another replica changed a moment ago is left out, and re-read into the
/// index); the total is the index's.
async fn search_page<T: StockTarget>(
    st: &AppState<T>,
    q: &ListQuery,
    page: u64,
    size: u64,
) -> Result<store::Page, Problem> {
    let query = search::Query::parse(
        q.q.as_deref(),
        q.name.as_deref(),
        q.sku.as_deref(),
        q.min_price.as_deref(),
        q.max_price.as_deref(),
    )
    .map_err(|e| Problem::bad_request(e.field, e.detail))?;
    let Some(hits) = st.search.search(&query, page, size) else {
        return Err(Problem::service_unavailable(
            std::time::Duration::from_secs(1),
            "the catalog search index is still being built",
        ));
    };
    let reads = hits.ids.iter().map(|id| st.store.get(*id));
    let fresh = futures::future::try_join_all(reads)
        .await
        .map_err(store_problem)?;
    let mut items = Vec::with_capacity(fresh.len());
    for (id, now) in hits.ids.iter().zip(fresh) {
        match now {
            Some(p) if query.matches(&p) => items.push(p),
            other => st.search.apply(id, other.as_ref()),
        }
    }
    Ok(store::Page {
        items,
        total: hits.total,
    })
}

/// One product.
#[utoipa::path(
    get,
    path = "/api/product/{id}",
    tag = "product",
    params(("id" = String, Path, description = "The product's id (24 hex digits)")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn get_one<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let oid = path_id(&id)?;
    match st.store.get(oid).await.map_err(store_problem)? {
        Some(p) => Ok(axum::Json(p).into_response()),
        None => Err(Problem::not_found(format!("no product with id {id:?}")).field("id")),
    }
}

/// Replace a product (its SKU code stays).
#[utoipa::path(
    put,
    path = "/api/product/{id}",
    tag = "product",
    params(("id" = String, Path, description = "The product's id (24 hex digits)")),
    request_body = ProductRequest,
    responses(
        (status = 200, description = "The product as stored", body = ProductView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn replace<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let oid = path_id(&id)?;
    let v = json_body(&headers, body)?;
    let input = model::parse_product(&v).map_err(field_problem)?;
    if let Some(sku) = &input.sku_code {
        let Some(current) = st.store.get(oid).await.map_err(store_problem)? else {
            return Err(Problem::not_found(format!("no product with id {id:?}")).field("id"));
        };
        if &current.sku_code != sku {
            return Err(Problem::unprocessable(
                "skuCode",
                format!(
                    "skuCode cannot be changed (is {:?}); create a new product instead",
                    current.sku_code
                ),
            ));
        }
    }
    // Under the product's write lock: on FerretDB an update racing the stock syncer's marker update
    // would be lost (see `StockSyncer::write_lock`). Released before the inline sync takes it.
    let replaced = {
        let _guard = st.syncer.write_lock(oid).await;
        st.store.replace(oid, &input).await.map_err(store_problem)?
    };
    let Some((mut view, pending)) = replaced else {
        return Err(Problem::not_found(format!("no product with id {id:?}")).field("id"));
    };
    st.search.apply(&oid, Some(&view));
    if pending.is_some() {
        view = sync_inline(&st, oid, view).await;
    }
    Ok(axum::Json(view).into_response())
}

/// Delete a product.
#[utoipa::path(
    delete,
    path = "/api/product/{id}",
    tag = "product",
    params(("id" = String, Path, description = "The product's id (24 hex digits)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn delete_one<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let oid = path_id(&id)?;
    if st.store.delete(oid).await.map_err(store_problem)? {
        st.search.apply(&oid, None);
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found(format!("no product with id {id:?}")).field("id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = shop_runtime::openapi::committed_path(env!("CARGO_MANIFEST_DIR"), "product");
        shop_runtime::openapi::check_committed(&ApiDoc::openapi(), &path).unwrap();
    }

    // Found by fuzzing (tests/e2e/tests/fuzz.rs): `"quantity": 5.0` is an integer to JSON Schema
    // (schemathesis sends it so) and was refused with 400 "quantity must be a whole number".
    #[test]
    fn a_whole_float_quantity_is_an_integer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::from_static(br#"{"name":"n","price":1200.0,"quantity":5.0}"#);
        let input = model::parse_product(&json_body(&headers, Ok(body)).unwrap()).unwrap();
        assert_eq!(input.quantity, Some(5));
        assert_eq!(input.price.to_string(), "1200.00");
        let body = Bytes::from_static(br#"{"name":"n","price":"1","quantity":5.5}"#);
        let e = model::parse_product(&json_body(&headers, Ok(body)).unwrap()).unwrap_err();
        assert_eq!(e.field, "quantity");
    }
}
