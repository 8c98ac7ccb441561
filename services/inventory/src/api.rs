//! HTTP API of shop-inventory: the original's `GET /api/inventory?skuCode=…` (with correct
//! quantity semantics), stock set/adjust used by shop-product, and reservations used by
//! shop-order. Input is validated completely before anything is written.

use axum::{
    Router,
    extract::{DefaultBodyLimit, Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::MySqlPool;
use tracing::Instrument;

use shop_runtime::batch::{BatchConfig, Batcher};
use shop_runtime::openapi::{
    BadRequest, Conflict, InternalError, NotFound, PayloadTooLarge, ProblemComponents,
    ServiceUnavailable, UnprocessableContent, UnsupportedMediaType,
};
use shop_runtime::problem::{ApiJson, Problem, json_response};
use utoipa::{OpenApi, ToSchema};

use crate::batch::{ReserveRequest, ReserveResult};

use crate::store::{self, Line, ReserveOutcome, StoreError};

/// Longest SKU code accepted (the column width).
pub const MAX_SKU_LEN: usize = 128;
/// Longest order number accepted (the column width).
pub const MAX_ORDER_NUMBER_LEN: usize = 64;
/// Most SKUs in one stock query or reservation.
pub const MAX_SKUS: usize = 200;
/// Largest quantity in one line or stock level.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The service's OpenAPI 3.1 document (served at `/openapi.json`, committed as `docs/openapi/inventory.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "shop-inventory", description = "Stock levels and order reservations."),
    paths(
        check_stock,
        get_stock,
        set_stock,
        adjust_stock,
        create_reservation,
        create_reservations,
        list_reservations,
        get_reservation,
        release_reservation
    ),
    components(schemas(
        SkuCodes,
        store::StockLevel,
        store::Reservation,
        store::Shortage,
        BatchAnswer,
        BatchResult,
        BatchResultBody
    )),
    modifiers(&ProblemComponents),
    tags((name = "inventory", description = "Stock and reservations"))
)]
pub struct ApiDoc;

/// Shared handler state.
#[derive(Clone)]
pub struct AppState {
    /// MySQL pool.
    pub pool: MySqlPool,
    /// Reservations are written in groups (see [`crate::batch`]).
    pub reservations: Batcher<ReserveRequest, ReserveResult>,
}

impl AppState {
    /// State over `pool`, with a reservation batcher started on the current runtime.
    pub fn new(pool: MySqlPool, batch: BatchConfig) -> Self {
        let batch_pool = pool.clone();
        let reservations = Batcher::spawn(batch, move |reqs| {
            let pool = batch_pool.clone();
            async move { crate::batch::reserve_batch(&pool, reqs).await }
        });
        Self { pool, reservations }
    }
}

/// The service's routes (health/metrics are added by the runtime).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/inventory", get(check_stock))
        .route("/api/inventory/reservations", post(create_reservation))
        .route(
            "/api/inventory/reservations/batch",
            post(create_reservations),
        )
        .route("/api/inventory/reservations", get(list_reservations))
        .route(
            "/api/inventory/reservations/{order_number}",
            get(get_reservation).delete(release_reservation),
        )
        .route("/api/inventory/{sku_code}", put(set_stock).get(get_stock))
        .route("/api/inventory/{sku_code}/adjust", post(adjust_stock))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs a store operation on its own task so that a client hanging up cannot cancel it halfway
/// (a cancelled transaction could otherwise linger on a pooled connection holding row locks).
async fn detached<T, F>(fut: F) -> Result<T, Problem>
where
    T: Send + 'static,
    F: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    match tokio::spawn(fut.instrument(tracing::Span::current())).await {
        Ok(r) => r.map_err(store_problem),
        Err(e) => {
            tracing::error!(error = %e, "store task failed");
            Err(Problem::opaque_internal())
        }
    }
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Insufficient(short) => Problem::typed(
            StatusCode::CONFLICT,
            "insufficient-stock",
            "Insufficient stock",
            format!(
                "not enough stock for: {}",
                short
                    .iter()
                    .map(|s| s.sku_code.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with("unavailable", json!(short)),
        StoreError::ConflictingReplay(n) => Problem::typed(
            StatusCode::CONFLICT,
            "reservation-conflict",
            "Reservation conflict",
            format!("order number {n} was already reserved with different lines"),
        )
        .with("field", json!("orderNumber")),
        StoreError::Released(n) => Problem::typed(
            StatusCode::CONFLICT,
            "reservation-released",
            "Reservation released",
            format!("the reservation for order {n} was released; use a new order number"),
        )
        .with("field", json!("orderNumber")),
        StoreError::WouldGoNegative {
            sku_code,
            available,
            delta,
        } => Problem::typed(
            StatusCode::CONFLICT,
            "insufficient-stock",
            "Insufficient stock",
            format!("stock of {sku_code} is {available}; adjusting by {delta} would go below zero"),
        )
        .with("field", json!("delta"))
        .with(
            "unavailable",
            json!([{"skuCode": sku_code, "requested": -delta, "available": available}]),
        ),
        StoreError::UnknownSku(s) => Problem::missing("SKU", &s),
        StoreError::Db(e) => {
            tracing::error!(error = %e, "database failure");
            match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                    Problem::unavailable(
                        "the inventory database is unavailable",
                        std::time::Duration::from_secs(1),
                    )
                }
                _ => Problem::opaque_internal(),
            }
        }
    }
}

/// Checks a SKU code: non-empty, bounded, printable without spaces at the ends.
pub fn validate_sku(field: &str, sku: &str) -> Result<(), Problem> {
    if sku.trim().is_empty() {
        return Err(Problem::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    // Characters, as the utf8mb4 VARCHAR column and the documents' maxLength count them.
    if sku.chars().count() > MAX_SKU_LEN {
        return Err(Problem::invalid(
            field,
            format!("{field} must be at most {MAX_SKU_LEN} characters"),
        ));
    }
    if sku.trim() != sku || sku.chars().any(char::is_control) {
        return Err(Problem::invalid(
            field,
            format!("{field} must not contain control characters or surrounding spaces"),
        ));
    }
    Ok(())
}

fn validate_order_number(n: &str) -> Result<(), Problem> {
    if n.is_empty()
        || n.chars().count() > MAX_ORDER_NUMBER_LEN
        || n.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Problem::invalid(
            "orderNumber",
            format!("orderNumber must be 1..={MAX_ORDER_NUMBER_LEN} characters without spaces"),
        ));
    }
    Ok(())
}

/// The parsed query of `GET /api/inventory`.
#[derive(Debug, PartialEq, Eq)]
pub struct StockQuery {
    /// Requested SKUs, de-duplicated, in request order.
    pub skus: Vec<String>,
    /// Units each SKU must have to be `inStock`.
    pub quantity: i64,
}

/// Parses `skuCode=a&skuCode=b,c&quantity=n` (repeated and comma-separated forms, as Spring binds `List<String>`).
pub fn parse_stock_query(raw: Option<&str>) -> Result<StockQuery, Problem> {
    let mut skus: Vec<String> = Vec::new();
    let mut quantity = 1;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "skuCode" => {
                for sku in v.split(',') {
                    validate_sku("skuCode", sku)?;
                    if !skus.iter().any(|s| s == sku) {
                        skus.push(sku.to_owned());
                    }
                }
            }
            "quantity" => {
                quantity = v
                    .parse::<i64>()
                    .map_err(|_| Problem::malformed("quantity", "quantity must be an integer"))?;
                if !(1..=MAX_QUANTITY).contains(&quantity) {
                    return Err(Problem::invalid(
                        "quantity",
                        format!("quantity must be between 1 and {MAX_QUANTITY}"),
                    ));
                }
            }
            _ => {}
        }
    }
    if skus.is_empty() {
        return Err(Problem::malformed(
            "skuCode",
            "at least one skuCode query parameter is required",
        ));
    }
    if skus.len() > MAX_SKUS {
        return Err(Problem::invalid(
            "skuCode",
            format!("at most {MAX_SKUS} SKUs per query"),
        ));
    }
    Ok(StockQuery { skus, quantity })
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct StockAnswer {
    sku_code: String,
    in_stock: bool,
    available_quantity: i64,
}

/// One `skuCode` value of `GET /api/inventory` as the document describes it: SKU codes (each
/// 1..=128 characters, no control character, no white space at either end) separated by commas.
struct SkuCodes;

impl utoipa::PartialSchema for SkuCodes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[^\x00-\x20,\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f,\x7f-\x9f]{0,126}[^\x00-\x20,\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?(?:,[^\x00-\x20,\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f,\x7f-\x9f]{0,126}[^\x00-\x20,\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?)*$"))
            .into()
    }
}

impl ToSchema for SkuCodes {}

/// Whether each SKU has at least `quantity` units; unknown SKUs are not in stock.
#[utoipa::path(
    get,
    path = "/api/inventory",
    tag = "inventory",
    params(
        ("skuCode" = Vec<SkuCodes>, Query, min_items = 1, max_items = 200, description = "SKUs to check (at most 200), repeated or comma-separated; each 1..=128 characters, no control character, no white space at either end"),
        ("quantity" = Option<i64>, Query, minimum = 1, maximum = 1_000_000_000, description = "Units each SKU must have to be in stock, 1..=1000000000 (default 1)")
    ),
    responses(
        (status = 200, description = "One answer per requested SKU, in request order", body = Vec<StockAnswer>),
        (status = 400, response = BadRequest),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn check_stock(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let q = parse_stock_query(raw.as_deref())?;
    let found = store::levels(&st.pool, &q.skus)
        .await
        .map_err(store_problem)?;
    let answers: Vec<StockAnswer> = q
        .skus
        .into_iter()
        .map(|sku| {
            let available = found.get(&sku).copied().unwrap_or(0);
            StockAnswer {
                in_stock: found.contains_key(&sku) && available >= q.quantity,
                available_quantity: available,
                sku_code: sku,
            }
        })
        .collect();
    Ok(json_response(StatusCode::OK, &answers))
}

/// The stock level of one SKU.
#[utoipa::path(
    get,
    path = "/api/inventory/{skuCode}",
    tag = "inventory",
    params(("skuCode" = String, Path, pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,126}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$", description = "SKU code: 1..=128 characters, no control character, no white space at either end")),
    responses(
        (status = 200, description = "The stock level", body = store::StockLevel),
        (status = 404, response = NotFound),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn get_stock(
    State(st): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Response, Problem> {
    validate_sku("skuCode", &sku)?;
    let found = store::levels(&st.pool, std::slice::from_ref(&sku))
        .await
        .map_err(store_problem)?;
    match found.get(&sku) {
        Some(q) => Ok(json_response(
            StatusCode::OK,
            &json!({"skuCode": sku, "quantity": q}),
        )),
        None => Err(Problem::missing("SKU", &sku)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetStockBody {
    /// Units available, 0..=1000000000.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    quantity: i64,
}

/// Sets a SKU's stock level (creating the SKU).
#[utoipa::path(
    put,
    path = "/api/inventory/{skuCode}",
    tag = "inventory",
    params(("skuCode" = String, Path, pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,126}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$", description = "SKU code: 1..=128 characters, no control character, no white space at either end")),
    request_body = SetStockBody,
    responses(
        (status = 200, description = "The new stock level", body = store::StockLevel),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn set_stock(
    State(st): State<AppState>,
    Path(sku): Path<String>,
    ApiJson(body): ApiJson<SetStockBody>,
) -> Result<Response, Problem> {
    validate_sku("skuCode", &sku)?;
    if !(0..=MAX_QUANTITY).contains(&body.quantity) {
        return Err(Problem::invalid(
            "quantity",
            format!("quantity must be between 0 and {MAX_QUANTITY}"),
        ));
    }
    let pool = st.pool.clone();
    let sku2 = sku.clone();
    let level =
        detached(async move { store::set_stock(&pool, &sku2, body.quantity).await }).await?;
    tracing::info!(sku = %level.sku_code, quantity = level.quantity, "stock set");
    Ok(json_response(StatusCode::OK, &level))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    /// Units to add (or take, when negative), -1000000000..=1000000000.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    delta: i64,
}

/// Adds `delta` (possibly negative) to a SKU's stock.
#[utoipa::path(
    post,
    path = "/api/inventory/{skuCode}/adjust",
    tag = "inventory",
    params(("skuCode" = String, Path, pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,126}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$", description = "SKU code: 1..=128 characters, no control character, no white space at either end")),
    request_body = AdjustBody,
    responses(
        (status = 200, description = "The new stock level", body = store::StockLevel),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn adjust_stock(
    State(st): State<AppState>,
    Path(sku): Path<String>,
    ApiJson(body): ApiJson<AdjustBody>,
) -> Result<Response, Problem> {
    validate_sku("skuCode", &sku)?;
    // A range, not `delta.abs()`: the absolute value of i64::MIN overflows (found by fuzzing).
    if !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&body.delta) {
        return Err(Problem::invalid(
            "delta",
            format!("delta must be between -{MAX_QUANTITY} and {MAX_QUANTITY}"),
        ));
    }
    let pool = st.pool.clone();
    let sku2 = sku.clone();
    let delta = body.delta;
    let level = detached(async move { store::adjust_stock(&pool, &sku2, delta).await }).await?;
    tracing::info!(sku = %level.sku_code, delta = body.delta, quantity = level.quantity, "stock adjusted");
    Ok(json_response(StatusCode::OK, &level))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReservationLineBody {
    /// SKU code: 1..=128 characters, no control character, no white space at either end.
    #[schema(
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\x00-\x1f\x7f-\x9f]{0,126}[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$"
    )]
    sku_code: String,
    /// Units, 1..=1000000000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    quantity: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReservationBody {
    /// Order number: 1..=64 characters, no control character or white space.
    #[schema(
        pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}$"
    )]
    order_number: String,
    /// Lines, 1..=200.
    #[schema(min_items = 1, max_items = 200)]
    lines: Vec<ReservationLineBody>,
}

fn validate_reservation(body: ReservationBody) -> Result<(String, Vec<Line>), Problem> {
    validate_order_number(&body.order_number)?;
    if body.lines.is_empty() {
        return Err(Problem::invalid("lines", "lines must not be empty"));
    }
    if body.lines.len() > MAX_SKUS {
        return Err(Problem::invalid(
            "lines",
            format!("at most {MAX_SKUS} lines per reservation"),
        ));
    }
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, l) in body.lines.into_iter().enumerate() {
        validate_sku(&format!("lines[{i}].skuCode"), &l.sku_code)?;
        if !(1..=MAX_QUANTITY).contains(&l.quantity) {
            return Err(Problem::invalid(
                format!("lines[{i}].quantity"),
                format!("lines[{i}].quantity must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        lines.push(Line {
            sku_code: l.sku_code,
            quantity: l.quantity,
        });
    }
    Ok((body.order_number, lines))
}

/// Reserves every line for an order, atomically; idempotent per order number.
#[utoipa::path(
    post,
    path = "/api/inventory/reservations",
    tag = "inventory",
    request_body = ReservationBody,
    responses(
        (status = 201, description = "Stock reserved", body = store::Reservation),
        (status = 200, description = "The same reservation was made before (replay)", body = store::Reservation),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn create_reservation(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<ReservationBody>,
) -> Result<Response, Problem> {
    let (order_number, lines) = validate_reservation(body)?;
    let request = ReserveRequest {
        order_number: order_number.clone(),
        lines,
    };
    // The batcher's workers own the write: a client hanging up cannot cancel it halfway.
    let outcome = match st.reservations.submit(request).await {
        Ok(r) => r.map_err(store_problem),
        Err(e) => {
            tracing::error!(error = %e, "reservation writer stopped");
            Err(Problem::opaque_internal())
        }
    };
    match outcome {
        Ok(ReserveOutcome::Created(r)) => {
            tracing::info!(order_number = %r.order_number, lines = r.lines.len(), "stock reserved");
            Ok(json_response(StatusCode::CREATED, &r))
        }
        Ok(ReserveOutcome::Replayed(r)) => {
            tracing::info!(order_number = %r.order_number, "reservation replayed");
            Ok(json_response(StatusCode::OK, &r))
        }
        Err(p) => {
            tracing::info!(%order_number, problem = %p, "reservation refused");
            Err(p)
        }
    }
}

/// Most reservations in one `POST /api/inventory/reservations/batch`.
pub const MAX_BATCH: usize = 256;

#[derive(Deserialize, ToSchema)]
struct BatchBody {
    /// Reservations, 1..=256.
    #[schema(min_items = 1, max_items = 256)]
    reservations: Vec<ReservationBody>,
}

/// One answer of a batch: what the single endpoint would have answered.
#[derive(ToSchema)]
#[allow(dead_code)]
struct BatchResult {
    /// The status the single endpoint would have answered (201, 200, or a problem's status).
    status: u16,
    /// A `Reservation`, or a `Problem` for a refused one.
    #[schema(no_recursion)]
    body: BatchResultBody,
}

/// A reservation or a problem.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(no_recursion)]
#[serde(untagged)]
enum BatchResultBody {
    Reservation(store::Reservation),
    Problem(Problem),
}

/// The answer of `POST /api/inventory/reservations/batch`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct BatchAnswer {
    /// One per requested reservation, in order.
    results: Vec<BatchResult>,
}

/// `POST /api/inventory/reservations/batch` `{"reservations":[{orderNumber, lines}, …]}`: several
/// reservations in one call (shop-order sends the orders that arrive together), written by the same
/// group commit as single ones. Each gets its own answer, in order, with the status and body the
/// single endpoint would have given: `{"results":[{"status":201,"body":{…}}, …]}`.
#[utoipa::path(
    post,
    path = "/api/inventory/reservations/batch",
    tag = "inventory",
    request_body = BatchBody,
    responses(
        (status = 200, description = "One result per reservation, in order", body = BatchAnswer),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 500, response = InternalError)
    )
)]
async fn create_reservations(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Response, Problem> {
    if body.reservations.is_empty() || body.reservations.len() > MAX_BATCH {
        return Err(Problem::invalid(
            "reservations",
            format!("reservations must hold 1 to {MAX_BATCH} entries"),
        ));
    }
    let mut answers: Vec<Option<(StatusCode, serde_json::Value)>> = Vec::new();
    let mut requests = Vec::new();
    let mut slots = Vec::new();
    for (i, r) in body.reservations.into_iter().enumerate() {
        match validate_reservation(r) {
            Ok((order_number, lines)) => {
                requests.push(ReserveRequest {
                    order_number,
                    lines,
                });
                slots.push(i);
                answers.push(None);
            }
            Err(p) => {
                let mut body = p.body();
                if let Some(field) = body.get("field").and_then(|f| f.as_str()) {
                    body["field"] = json!(format!("reservations[{i}].{field}"));
                }
                answers.push(Some((p.status(), body)));
            }
        }
    }
    // The first entry of each order number is reserved with the others at once; a repeat of an
    // order number waits for them and then gets what the single endpoint would answer a repeat (the
    // replay, or the conflict of different lines). Reserved at once, 200 entries of one order
    // number fought over the same rows until their retries ran out: per-entry 500s (found by
    // fuzzing).
    let mut seen = std::collections::HashSet::new();
    let (mut first, mut repeats) = (Vec::new(), Vec::new());
    for (slot, request) in slots.into_iter().zip(requests) {
        if seen.insert(request.order_number.clone()) {
            first.push((slot, request));
        } else {
            repeats.push((slot, request));
        }
    }
    let answer = |result| match result {
        Ok(Ok(ReserveOutcome::Created(r))) => (StatusCode::CREATED, json!(r)),
        Ok(Ok(ReserveOutcome::Replayed(r))) => (StatusCode::OK, json!(r)),
        Ok(Err(e)) => {
            let p = store_problem(e);
            (p.status(), p.body())
        }
        Err(e) => {
            tracing::error!(error = %e, "reservation writer stopped");
            let p = Problem::opaque_internal();
            (p.status(), p.body())
        }
    };
    if !first.is_empty() {
        // Queued together, so the reservation writer takes them as one batch (and owns the
        // write: a caller hanging up cannot cancel it halfway).
        let (first_slots, first_requests): (Vec<_>, Vec<_>) = first.into_iter().unzip();
        let results = futures::future::join_all(
            first_requests
                .into_iter()
                .map(|r| st.reservations.submit(r)),
        )
        .await;
        for (slot, result) in first_slots.into_iter().zip(results) {
            answers[slot] = Some(answer(result));
        }
    }
    for (slot, request) in repeats {
        answers[slot] = Some(answer(st.reservations.submit(request).await));
    }
    let results: Vec<serde_json::Value> = answers
        .into_iter()
        .map(|a| {
            let (status, body) =
                a.unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, serde_json::Value::Null));
            json!({"status": status.as_u16(), "body": body})
        })
        .collect();
    let created = results.iter().filter(|r| r["status"] == 201).count();
    tracing::info!(
        reservations = results.len(),
        created,
        "batch of reservations"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({ "results": results }),
    ))
}

/// One order's reservation.
#[utoipa::path(
    get,
    path = "/api/inventory/reservations/{orderNumber}",
    tag = "inventory",
    params(("orderNumber" = String, Path, pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}$", description = "Order number: 1..=64 characters, no control character or white space")),
    responses(
        (status = 200, description = "The reservation", body = store::Reservation),
        (status = 404, response = NotFound),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn get_reservation(
    State(st): State<AppState>,
    Path(order_number): Path<String>,
) -> Result<Response, Problem> {
    validate_order_number(&order_number)?;
    match store::get_reservation(&st.pool, &order_number)
        .await
        .map_err(store_problem)?
    {
        Some(r) => Ok(json_response(StatusCode::OK, &r)),
        None => Err(Problem::missing("reservation", &order_number)),
    }
}

/// Releases an order's reservation (idempotent; leaves a tombstone for an unknown order).
#[utoipa::path(
    delete,
    path = "/api/inventory/reservations/{orderNumber}",
    tag = "inventory",
    params(("orderNumber" = String, Path, pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}$", description = "Order number: 1..=64 characters, no control character or white space")),
    responses(
        (status = 200, description = "The released reservation", body = store::Reservation),
        (status = 422, response = UnprocessableContent),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn release_reservation(
    State(st): State<AppState>,
    Path(order_number): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    validate_order_number(&order_number)?;
    let pool = st.pool.clone();
    let number = order_number.clone();
    let r = detached(async move { store::release(&pool, &number).await }).await?;
    tracing::info!(%order_number, "reservation released");
    Ok(json_response(StatusCode::OK, &r))
}

/// Most reservations in one page of `GET /api/inventory/reservations`.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Page size of `GET /api/inventory/reservations` when `limit` is absent.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

fn parse_instant(field: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, Problem> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            Problem::malformed(
                field,
                format!("{field} must be an RFC 3339 timestamp, e.g. 2024-05-01T12:00:00Z"),
            )
        })
}

/// Parses the query of `GET /api/inventory/reservations`:
/// `status=RESERVED|RELEASED` (required), `createdBefore`, `createdFrom` (RFC 3339), `after`
/// (the last order number of the previous page) and `limit` (1..=1000, default 100). Unknown or
/// repeated parameters are refused: a misspelt filter must not silently widen the listing.
pub fn parse_reservation_query(raw: Option<&str>) -> Result<store::ReservationFilter, Problem> {
    let mut status = None;
    let mut created_before = None;
    let mut created_from = None;
    let mut after = None;
    let mut limit = None;
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if seen.iter().any(|s| *s == k) {
            return Err(Problem::malformed(
                k.as_ref(),
                format!("{k} must be given at most once"),
            ));
        }
        seen.push(k.clone().into_owned());
        match k.as_ref() {
            "status" => {
                status = Some(match v.as_ref() {
                    "RESERVED" => store::ReservationStatus::Reserved,
                    "RELEASED" => store::ReservationStatus::Released,
                    _ => {
                        return Err(Problem::malformed(
                            "status",
                            "status must be RESERVED or RELEASED",
                        ));
                    }
                });
            }
            "createdBefore" => created_before = Some(parse_instant("createdBefore", &v)?),
            "createdFrom" => created_from = Some(parse_instant("createdFrom", &v)?),
            "after" => {
                validate_order_number(&v).map_err(|_| {
                    Problem::malformed(
                        "after",
                        format!("after must be an order number (1..={MAX_ORDER_NUMBER_LEN} characters without spaces)"),
                    )
                })?;
                after = Some(v.into_owned());
            }
            "limit" => {
                limit = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
                        .ok_or_else(|| {
                            Problem::malformed(
                                "limit",
                                format!("limit must be an integer between 1 and {MAX_LIST_LIMIT}"),
                            )
                        })?,
                );
            }
            // A parameter without a name (`?=x`) has nothing to name but the query (found by
            // fuzzing: the problem's `field` was empty).
            "" => {
                return Err(Problem::malformed(
                    "query",
                    "a query parameter has no name; expected status, createdBefore, createdFrom, after, limit",
                ));
            }
            other => {
                return Err(Problem::malformed(
                    other,
                    format!(
                        "unknown parameter {other}; expected status, createdBefore, createdFrom, after, limit"
                    ),
                ));
            }
        }
    }
    let status = status
        .ok_or_else(|| Problem::malformed("status", "status is required (RESERVED or RELEASED)"))?;
    Ok(store::ReservationFilter {
        status,
        created_before,
        created_from,
        after,
        limit: limit.unwrap_or(DEFAULT_LIST_LIMIT),
    })
}

/// `GET /api/inventory/reservations`: reservations of one status, oldest first, keyset-paged.
/// The order service's reconciler uses it to find stock held for orders that were never stored.
#[utoipa::path(
    get,
    path = "/api/inventory/reservations",
    tag = "inventory",
    params(
        ("status" = store::ReservationStatus, Query, description = "RESERVED or RELEASED"),
        ("createdBefore" = Option<String>, Query, format = DateTime, description = "RFC 3339 upper bound (exclusive)"),
        ("createdFrom" = Option<String>, Query, format = DateTime, description = "RFC 3339 lower bound"),
        ("after" = Option<String>, Query, pattern = r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}$", description = "Last order number of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1..=1000 (default 100)")
    ),
    responses(
        (status = 200, description = "Reservations, oldest first", body = Vec<store::Reservation>),
        (status = 400, response = BadRequest),
        (status = 503, response = ServiceUnavailable),
        (status = 500, response = InternalError)
    )
)]
async fn list_reservations(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let filter = parse_reservation_query(raw.as_deref())?;
    match store::list_reservations(&st.pool, &filter).await {
        Ok(list) => Ok(json_response(StatusCode::OK, &list)),
        Err(store::ListError::UnknownPosition(n)) => Err(Problem::malformed(
            "after",
            format!(
                "after names no reservation ({n}); pass the last orderNumber of the previous page"
            ),
        )),
        Err(store::ListError::Store(e)) => Err(store_problem(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = shop_runtime::openapi::committed_path(env!("CARGO_MANIFEST_DIR"), "inventory");
        shop_runtime::openapi::check_committed(&ApiDoc::openapi(), &path).unwrap();
    }

    #[test]
    fn stock_query_accepts_repeated_and_comma_forms_and_dedups() {
        let q = parse_stock_query(Some("skuCode=a&skuCode=b%2Cc&skuCode=a&quantity=3")).unwrap();
        assert_eq!(q.skus, vec!["a", "b", "c"]);
        assert_eq!(q.quantity, 3);
        let q = parse_stock_query(Some("skuCode=iphone_13")).unwrap();
        assert_eq!(q.quantity, 1);
    }

    #[test]
    fn stock_query_rejects_missing_sku_and_bad_quantity() {
        assert_eq!(
            parse_stock_query(None).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let p = parse_stock_query(Some("skuCode=a&quantity=x")).unwrap_err();
        assert_eq!(p.body()["field"], "quantity");
        let p = parse_stock_query(Some("skuCode=a&quantity=0")).unwrap_err();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let p = parse_stock_query(Some("skuCode=")).unwrap_err();
        assert_eq!(p.body()["field"], "skuCode");
    }

    // Found by fuzzing: a parameter without a name got a problem whose `field` was empty.
    #[test]
    fn a_nameless_reservation_query_parameter_names_the_query() {
        let p = parse_reservation_query(Some("status=RESERVED&=x")).unwrap_err();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert_eq!(p.body()["field"], "query");
        let p = parse_reservation_query(Some("status=RESERVED&zone=x")).unwrap_err();
        assert_eq!(p.body()["field"], "zone");
    }

    // Found by fuzzing: lengths were bytes, the document's maxLength and the utf8mb4 columns count
    // characters.
    #[test]
    fn sku_length_counts_characters() {
        assert!(validate_sku("skuCode", &"é".repeat(MAX_SKU_LEN)).is_ok());
        let p = validate_sku("skuCode", &"é".repeat(MAX_SKU_LEN + 1)).unwrap_err();
        assert_eq!(p.body()["field"], "skuCode");
    }

    #[test]
    fn reservation_validation_names_the_line() {
        let body = ReservationBody {
            order_number: "o-1".into(),
            lines: vec![
                ReservationLineBody {
                    sku_code: "a".into(),
                    quantity: 1,
                },
                ReservationLineBody {
                    sku_code: "b".into(),
                    quantity: 0,
                },
            ],
        };
        let p = validate_reservation(body).unwrap_err();
        assert_eq!(p.body()["field"], "lines[1].quantity");
    }
}
