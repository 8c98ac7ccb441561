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
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use shop_runtime::Problem;

use crate::model::{self, FieldError, ProductView, Severity};
use crate::stock::{StockSyncer, StockTarget, SyncOutcome};
use crate::store::{self, ProductStore, StoreError};

/// Default page size of `GET /api/product`.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Largest page size accepted.
pub const MAX_PAGE_SIZE: u64 = 200;

/// Shared state of the handlers.
pub struct AppState<T: StockTarget> {
    /// Product collection.
    pub store: ProductStore,
    /// Stock seeding.
    pub syncer: Arc<StockSyncer<T>>,
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
    serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("body", format!("body is not valid JSON: {e}")))
}

fn path_id(id: &str) -> Result<mongodb::bson::oid::ObjectId, Problem> {
    store::parse_id(id)
        .ok_or_else(|| Problem::not_found(format!("no product with id {id:?}")).field("id"))
}

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
            view
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    page: Option<String>,
    size: Option<String>,
    name: Option<String>,
}

fn parse_u64(field: &'static str, v: Option<&str>, default: u64) -> Result<u64, Problem> {
    match v {
        None | Some("") => Ok(default),
        Some(s) => s.parse::<u64>().map_err(|_| {
            Problem::bad_request(field, format!("{field} must be a non-negative integer"))
        }),
    }
}

async fn list<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    let page = parse_u64("page", q.page.as_deref(), 0)?;
    let size = parse_u64("size", q.size.as_deref(), DEFAULT_PAGE_SIZE)?;
    if size == 0 || size > MAX_PAGE_SIZE {
        return Err(Problem::bad_request(
            "size",
            format!("size must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let name = q.name.as_deref().filter(|n| !n.is_empty());
    let result = st
        .store
        .list(name, page, size)
        .await
        .map_err(store_problem)?;
    let mut resp = axum::Json(&result.items).into_response();
    if let Ok(v) = HeaderValue::from_str(&result.total.to_string()) {
        resp.headers_mut().insert("x-total-count", v);
    }
    Ok(resp)
}

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
    if pending.is_some() {
        view = sync_inline(&st, oid, view).await;
    }
    Ok(axum::Json(view).into_response())
}

async fn delete_one<T: StockTarget>(
    State(st): State<Arc<AppState<T>>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let oid = path_id(&id)?;
    if st.store.delete(oid).await.map_err(store_problem)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found(format!("no product with id {id:?}")).field("id"))
    }
}
