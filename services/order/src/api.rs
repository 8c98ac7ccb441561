//! HTTP API of shop-order: `POST /api/order` (the original's body; Idempotency-Key; stock
//! reserved in inventory before the order and its outbox event are committed together),
//! `GET /api/order/{orderNumber}` and `GET /api/order` (paged).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{SubsecRound, Utc};
use serde::Deserialize;
use serde_json::json;
use shop_runtime::openapi::{
    BadRequest, Conflict, InternalError, NotFound, PayloadTooLarge, ProblemComponents,
    ServiceUnavailable, UnprocessableContent, UnsupportedMediaType,
};
use shop_runtime::problem::{ApiQuery, Problem, json_response, parse_api_json, require_api_json};
use sqlx::MySqlPool;
use tracing::Instrument;
use utoipa::{OpenApi, ToSchema};

use crate::{
    inventory::{InventoryClient, ReserveError},
    model::{self, Order, OrderPlacedEvent, OrderRequest},
    relay::{Committed, FastLane},
    store::{self, KeyClaim, OrderWrite},
};
use shop_runtime::batch::{BatchConfig, Batcher};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Largest page size of `GET /api/order`.
pub const MAX_PAGE_SIZE: u32 = 200;

/// Shared handler state.
/// The service's OpenAPI 3.1 document (served at `/openapi.json`, committed as `docs/openapi/order.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "shop-order", description = "Orders: idempotent placement, reads and pages."),
    paths(place_order, get_order, list_orders),
    components(schemas(model::Order, model::OrderLine, model::OrderRequest, OrderPage)),
    modifiers(&ProblemComponents),
    tags((name = "order", description = "Orders"))
)]
pub struct ApiDoc;

/// One page of `GET /api/order` (Spring's `Page` shape).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct OrderPage {
    /// Orders of this page, newest first.
    content: Vec<model::Order>,
    /// Page index (from 0).
    page: u32,
    /// Page size.
    size: u32,
    /// Orders in all pages.
    total_elements: i64,
    /// Number of pages.
    total_pages: i64,
}

#[derive(Clone)]
pub struct AppState {
    /// MySQL pool.
    pub pool: MySqlPool,
    /// Inventory client (discovery + breaker + timeout).
    pub inventory: Arc<InventoryClient>,
    /// Hands committed events to the outbox relay in memory.
    pub relay: FastLane,
    /// Kafka topic of OrderPlaced.
    pub topic: Arc<str>,
    /// An IN_FLIGHT Idempotency-Key not refreshed for this long is considered abandoned.
    pub idempotency_stale_after: Duration,
    /// The keys this process's requests hold, kept fresh by a heartbeat (see [`crate::lease`]).
    pub leases: Arc<crate::lease::Leases>,
    /// Hook that returns the trace-context headers to carry on the Kafka message.
    pub trace_headers: fn() -> BTreeMap<String, String>,
    /// Writes orders; orders that arrive together share a transaction (see [`order_writer`]).
    pub writes: OrderWriter,
}

/// The group-commit queue of order writes.
pub type OrderWriter = Batcher<OrderWrite, Result<(), store::StoreError>>;

/// Starts the order writer on the current runtime: concurrent orders are written in one
/// transaction each batch ([`store::write_orders`]).
pub fn order_writer(pool: MySqlPool, cfg: BatchConfig) -> OrderWriter {
    Batcher::spawn(cfg, move |writes| {
        let pool = pool.clone();
        async move { store::write_orders(&pool, writes).await }
    })
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/order", get(list_orders).post(place_order))
        .route("/api/order/{order_number}", get(get_order))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn db_problem(e: &store::StoreError) -> Problem {
    tracing::error!(error = %e, "order database failure");
    match e {
        store::StoreError::Db(
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
        ) => Problem::unavailable("the order database is unavailable", Duration::from_secs(1)),
        _ => Problem::opaque_internal(),
    }
}

/// Frees the Idempotency-Key of a failed attempt so the client may retry it.
async fn forget(st: &AppState, key: Option<&str>) {
    if let Some(k) = key
        && let Err(e) = store::forget_key(&st.pool, k).await
    {
        tracing::warn!(error = %e, "could not free idempotency key; it frees itself when stale");
    }
}

/// Places an order: validates it, reserves its stock atomically, stores it and publishes OrderPlaced.
#[utoipa::path(
    post,
    path = "/api/order",
    tag = "order",
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[\x21-\x7E]{1,255}$",
        description = "Makes retries safe: a repeat gets the first answer. 1..=255 visible ASCII characters")),
    request_body = model::OrderRequest,
    responses(
        (status = 201, description = "Order placed (a replay with the same Idempotency-Key answers the same)", body = model::Order,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn place_order(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::typed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
                format!("the body must be at most {MAX_BODY_BYTES} bytes"),
            )
            .with("field", json!("body"))
            .into_response();
        }
    };
    // Detached from the connection: a client that hangs up mid-request must not cancel the work
    // between reserving stock and committing the order (that would leak the reservation or
    // strand a half-finished transaction on a pooled connection).
    let work = tokio::spawn(
        async move { place_order_inner(&st, &headers, &body).await }
            .instrument(tracing::Span::current()),
    );
    match work.await {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => p.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "order task failed");
            Problem::opaque_internal().into_response()
        }
    }
}

async fn place_order_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Problem> {
    // 1. Everything about the request is checked before anything is written.
    require_api_json(headers)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(model::validate_idempotency_key(v.as_bytes())?),
        None => None,
    };
    let lines = model::validate(parse_api_json::<OrderRequest>(body)?)?;
    let fingerprint = model::fingerprint(&lines);

    // 2. Idempotency-Key: replay, refuse, or claim.
    let mut order_number = uuid::Uuid::new_v4().to_string();
    let mut taken_over = false;
    // Held until this request is over: the key stays fresh while it runs.
    let mut _held = None;
    if let Some(k) = key.as_deref() {
        match store::claim_key(
            &st.pool,
            k,
            &fingerprint,
            &order_number,
            st.idempotency_stale_after,
        )
        .await
        .map_err(|e| db_problem(&e))?
        {
            KeyClaim::Fresh => _held = Some(st.leases.hold(k)),
            KeyClaim::TakenOver(previous) => {
                _held = Some(st.leases.hold(k));
                tracing::warn!(idempotency_key = k, order_number = %previous, "taking over an abandoned in-flight request");
                order_number = previous;
                taken_over = true;
            }
            KeyClaim::Mismatch => {
                return Err(Problem::typed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with a different body",
                    "this Idempotency-Key was used with a different request body",
                )
                .with("field", json!("Idempotency-Key")));
            }
            KeyClaim::InFlight => {
                return Err(Problem::typed(
                    StatusCode::CONFLICT,
                    "idempotency-key-in-flight",
                    "Request with this Idempotency-Key is in progress",
                    "a request with this Idempotency-Key is still being processed; retry shortly",
                )
                .with("field", json!("Idempotency-Key"))
                .retry_after(Duration::from_secs(1)));
            }
            KeyClaim::Done { status, body } => {
                tracing::info!(idempotency_key = k, "idempotent replay");
                let mut resp = (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
                    body,
                )
                    .into_response();
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(resp);
            }
        }
    }

    // 3. Reserve stock (never retried here; the breaker and timeout bound it).
    let mut reserved = st.inventory.reserve(&order_number, &lines).await;
    if taken_over
        && let Err(ReserveError::Released(_)) = &reserved
        && let Some(k) = key.as_deref()
    {
        // The abandoned attempt's number was given back (it failed after reserving, e.g. its
        // database went away, and released its stock): nothing was ordered under it, so this
        // attempt goes on under a new number instead of failing the client's retry for good.
        let fresh = uuid::Uuid::new_v4().to_string();
        if store::renumber_key(&st.pool, k, &order_number, &fresh)
            .await
            .map_err(|e| db_problem(&e))?
        {
            tracing::info!(previous = %order_number, %fresh, "taken-over request continues under a new order number");
            order_number = fresh;
            reserved = st.inventory.reserve(&order_number, &lines).await;
        }
    }
    if let Err(e) = reserved {
        forget(st, key.as_deref()).await;
        return Err(match e {
            ReserveError::OutOfStock { unavailable } => {
                let skus: Vec<String> = unavailable
                    .iter()
                    .filter_map(|u| u.get("skuCode").and_then(|s| s.as_str()).map(str::to_owned))
                    .collect();
                tracing::info!(%order_number, skus = ?skus, "order refused: out of stock");
                Problem::typed(
                    StatusCode::CONFLICT,
                    "out-of-stock",
                    "Out of stock",
                    format!("not enough stock for: {}", skus.join(", ")),
                )
                .with("field", json!("orderLineItemsDtoList"))
                .with("skuCodes", json!(skus))
                .with("unavailable", json!(unavailable))
            }
            ReserveError::Conflict(detail) | ReserveError::Released(detail) => Problem::typed(
                StatusCode::CONFLICT,
                "reservation-conflict",
                "Reservation conflict",
                detail,
            ),
            ReserveError::Unavailable {
                reason,
                retry_after,
                maybe_reserved,
            } => {
                tracing::warn!(%order_number, %reason, "order refused: inventory unavailable");
                if maybe_reserved {
                    // Abandon the number before giving its stock back: a retry that takes
                    // over this key's number later must not store an order on released stock.
                    crate::reconcile::settle_in_background(
                        st.pool.clone(),
                        st.inventory.clone(),
                        order_number.clone(),
                    );
                }
                Problem::unavailable(
                    format!(
                        "inventory is unavailable ({reason}); nothing was ordered, retry later"
                    ),
                    Duration::from_secs(retry_after.as_secs().max(1)),
                )
            }
            ReserveError::Protocol(detail) => {
                tracing::error!(%order_number, %detail, "unexpected inventory answer");
                Problem::opaque_internal()
            }
        });
    }

    // 4. Order + lines + outbox + stored response: one transaction.
    let created_at = Utc::now().trunc_subsecs(6);
    let total = model::total(&lines);
    let order = Order {
        order_number: order_number.clone(),
        status: model::STATUS_PLACED.to_owned(),
        lines,
        total,
        created_at,
    };
    let event = OrderPlacedEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: "OrderPlaced",
        order_number: order_number.clone(),
        occurred_at: created_at,
        lines: order.lines.clone(),
        total,
    };
    let mut kafka_headers = (st.trace_headers)();
    kafka_headers.insert("__TypeId__".into(), "event".into());
    kafka_headers.insert("eventId".into(), event.event_id.clone());
    kafka_headers.insert("eventType".into(), "OrderPlaced".into());
    let body = serde_json::to_string(&order).map_err(|e| {
        tracing::error!(error = %e, "order serialisation failed");
        Problem::opaque_internal()
    })?;
    let payload = serde_json::to_string(&event).map_err(|e| {
        tracing::error!(error = %e, "event serialisation failed");
        Problem::opaque_internal()
    })?;
    let written = st
        .writes
        .submit(OrderWrite {
            order,
            idempotency_key: key.clone(),
            event_id: event.event_id.clone(),
            payload: payload.clone(),
            topic: st.topic.clone(),
            headers: kafka_headers.clone(),
            response_body: body.clone(),
        })
        .await
        .unwrap_or(Err(store::StoreError::Db(sqlx::Error::WorkerCrashed)));
    if let Err(e) = written {
        let p = if store::is_number_taken(&e) {
            tracing::warn!(%order_number, "order arrived after the reconciler abandoned its number; its stock was already given back");
            Problem::unavailable(
                "this order took too long and was abandoned; nothing was ordered, retry",
                Duration::from_secs(1),
            )
        } else {
            db_problem(&e)
        };
        // The write may have committed before the connection broke: the stock goes back only
        // when the order is surely not stored (see `settle_in_background`).
        crate::reconcile::settle_in_background(
            st.pool.clone(),
            st.inventory.clone(),
            order_number.clone(),
        );
        forget(st, key.as_deref()).await;
        return Err(p);
    }
    st.relay.offer(Committed {
        event_id: event.event_id,
        topic: st.topic.clone(),
        key: order_number.clone(),
        payload,
        headers: kafka_headers,
        queued: std::time::Instant::now(),
    });
    tracing::info!(%order_number, total = %model::money_string(&total), "order placed");
    let mut resp = (StatusCode::CREATED, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/order/{order_number}")) {
        h.insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// One order.
#[utoipa::path(
    get,
    path = "/api/order/{order_number}",
    tag = "order",
    params(("order_number" = String, Path, description = "Order number")),
    responses(
        (status = 200, description = "The order", body = model::Order),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn get_order(
    State(st): State<AppState>,
    Path(order_number): Path<String>,
) -> Result<Response, Problem> {
    if order_number.len() > 64 {
        return Err(Problem::missing("order", &order_number));
    }
    match store::get_order(&st.pool, &order_number)
        .await
        .map_err(|e| db_problem(&e))?
    {
        Some(o) => Ok(json_response(StatusCode::OK, &o)),
        None => Err(Problem::missing("order", &order_number)),
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<String>,
    size: Option<String>,
}

/// Orders, a page at a time.
#[utoipa::path(
    get,
    path = "/api/order",
    tag = "order",
    params(
        // i64 with bounds, not u32: utoipa writes u32 as format int32, whose bound (2^31 - 1) is
        // not the service's (found by fuzzing: page=2147483648 is served).
        ("page" = Option<i64>, Query, minimum = 0, maximum = 4_294_967_295_i64, description = "Page index from 0 (default 0), at most 4294967295"),
        ("size" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size, 1..=200 (default 20)")
    ),
    responses(
        (status = 200, description = "One page of orders", body = OrderPage),
        (status = 400, response = BadRequest),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn list_orders(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, Problem> {
    let page = match q.page.as_deref() {
        None => 0,
        Some(p) => p
            .parse::<u32>()
            .map_err(|_| Problem::malformed("page", "page must be a non-negative integer"))?,
    };
    let size = match q.size.as_deref() {
        None => 20,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
            .ok_or_else(|| {
                Problem::malformed(
                    "size",
                    format!("size must be between 1 and {MAX_PAGE_SIZE}"),
                )
            })?,
    };
    let (orders, total) = store::list_orders(&st.pool, page, size)
        .await
        .map_err(|e| db_problem(&e))?;
    let total_pages = (total + i64::from(size) - 1) / i64::from(size);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "content": orders,
            "page": page,
            "size": size,
            "totalElements": total,
            "totalPages": total_pages,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = shop_runtime::openapi::committed_path(env!("CARGO_MANIFEST_DIR"), "order");
        shop_runtime::openapi::check_committed(&ApiDoc::openapi(), &path).unwrap();
    }
}
