//! MySQL persistence of stock and reservations. Every stock change is a single conditional
//! `UPDATE` inside a transaction, so stock can never go negative however many orders race,
//! and a reservation is all-or-nothing and idempotent by order number.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row, Transaction, mysql::MySqlDatabaseError};

/// Migrations embedded at compile time and applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How many times a transaction that lost a deadlock / lock wait is retried.
const MAX_TX_ATTEMPTS: u32 = 6;

/// Stock of one SKU as seen by a reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockLevel {
    /// SKU code.
    pub sku_code: String,
    /// Quantity available for new reservations.
    pub quantity: i64,
}

/// One line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// SKU code.
    pub sku_code: String,
    /// Units reserved (> 0).
    pub quantity: i64,
}

/// Lifecycle of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// Stock is held for the order.
    Reserved,
    /// Stock went back to the shelf (or the order never reserved: tombstone).
    Released,
}

impl ReservationStatus {
    pub(crate) fn as_db(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Released => "RELEASED",
        }
    }
    fn from_db(s: &str) -> Self {
        if s == "RESERVED" {
            Self::Reserved
        } else {
            Self::Released
        }
    }
}

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The order the stock is held for.
    pub order_number: String,
    /// Current status.
    pub status: ReservationStatus,
    /// Lines, merged per SKU and sorted by SKU.
    pub lines: Vec<Line>,
    /// When the reservation was made.
    pub created_at: DateTime<Utc>,
}

/// Result of a reservation request.
#[derive(Debug, Clone)]
pub enum ReserveOutcome {
    /// Stock was taken now.
    Created(Reservation),
    /// The same order number and lines were reserved before: nothing changed.
    Replayed(Reservation),
}

/// A line that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shortage {
    /// SKU code.
    pub sku_code: String,
    /// Units asked for.
    pub requested: i64,
    /// Units available right now (0 for an unknown SKU).
    pub available: i64,
}

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// At least one line cannot be served; nothing was reserved.
    #[error("insufficient stock for {} SKU(s)", .0.len())]
    Insufficient(Vec<Shortage>),
    /// The order number was reserved before with different lines.
    #[error("order number {0} was already reserved with different lines")]
    ConflictingReplay(String),
    /// The order number's reservation was released (or cancelled before it arrived).
    #[error("reservation for order {0} was released")]
    Released(String),
    /// An adjustment would take the stock below zero.
    #[error("stock of {sku_code} is {available}; adjusting by {delta} would go below zero")]
    WouldGoNegative {
        /// SKU code.
        sku_code: String,
        /// Current quantity.
        available: i64,
        /// Requested change.
        delta: i64,
    },
    /// The SKU does not exist.
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    /// A database failure.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// Deadlock (1213) or lock wait timeout (1205): the transaction can simply be run again.
fn is_retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(db) if matches!(mysql_error_number(db), Some(1213 | 1205)))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Merges duplicate SKUs and sorts by SKU, so locks are always taken in the same order
/// (no deadlocks between two reservations) and replays compare equal.
pub fn normalize(lines: &[Line]) -> Vec<Line> {
    let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
    for l in lines {
        *merged.entry(l.sku_code.as_str()).or_insert(0) += l.quantity;
    }
    merged
        .into_iter()
        .map(|(sku, quantity)| Line {
            sku_code: sku.to_owned(),
            quantity,
        })
        .collect()
}

/// Runs `f` again when it lost a deadlock or a lock wait (bounded).
pub(crate) async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(e) if attempt < MAX_TX_ATTEMPTS && is_retryable(&e) => {
                tracing::debug!(attempt, error = %e, "transaction conflict, retrying");
                tokio::time::sleep(Duration::from_millis(2 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

/// Stock levels for the given SKUs (unknown SKUs are absent from the map).
pub async fn levels(
    pool: &MySqlPool,
    skus: &[String],
) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut out = BTreeMap::new();
    if skus.is_empty() {
        return Ok(out);
    }
    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("SELECT sku_code, quantity FROM inventory WHERE sku_code IN (");
    let mut sep = qb.separated(", ");
    for s in skus {
        sep.push_bind(s);
    }
    sep.push_unseparated(")");
    for row in qb.build().fetch_all(pool).await? {
        out.insert(row.try_get("sku_code")?, row.try_get("quantity")?);
    }
    Ok(out)
}

/// Sets the available quantity of a SKU (creating it). Idempotent.
pub async fn set_stock(
    pool: &MySqlPool,
    sku_code: &str,
    quantity: i64,
) -> Result<StockLevel, StoreError> {
    sqlx::query(
        "INSERT INTO inventory (sku_code, quantity) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE quantity = VALUES(quantity)",
    )
    .bind(sku_code)
    .bind(quantity)
    .execute(pool)
    .await?;
    Ok(StockLevel {
        sku_code: sku_code.to_owned(),
        quantity,
    })
}

/// Adds `delta` (may be negative) to a SKU's stock; never below zero.
pub async fn adjust_stock(
    pool: &MySqlPool,
    sku_code: &str,
    delta: i64,
) -> Result<StockLevel, StoreError> {
    with_retries(|| async move {
        let mut tx = pool.begin().await?;
        if delta >= 0 {
            sqlx::query(
                "INSERT INTO inventory (sku_code, quantity) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE quantity = quantity + VALUES(quantity)",
            )
            .bind(sku_code)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        } else {
            let needed = delta.checked_neg().unwrap_or(i64::MAX);
            let done = sqlx::query(
                "UPDATE inventory SET quantity = quantity - ? WHERE sku_code = ? AND quantity >= ?",
            )
            .bind(needed)
            .bind(sku_code)
            .bind(needed)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                let available = current(&mut tx, sku_code).await?;
                tx.rollback().await?;
                return Err(match available {
                    Some(available) => StoreError::WouldGoNegative {
                        sku_code: sku_code.to_owned(),
                        available,
                        delta,
                    },
                    None => StoreError::UnknownSku(sku_code.to_owned()),
                });
            }
        }
        let quantity = current(&mut tx, sku_code).await?.unwrap_or(0);
        tx.commit().await?;
        Ok(StockLevel {
            sku_code: sku_code.to_owned(),
            quantity,
        })
    })
    .await
}

async fn current(
    tx: &mut Transaction<'_, MySql>,
    sku_code: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT quantity FROM inventory WHERE sku_code = ?")
        .bind(sku_code)
        .fetch_optional(&mut **tx)
        .await
}

/// Reserves all `lines` for `order_number`, or nothing.
pub async fn reserve(
    pool: &MySqlPool,
    order_number: &str,
    lines: &[Line],
) -> Result<ReserveOutcome, StoreError> {
    let lines = normalize(lines);
    with_retries(|| try_reserve(pool, order_number, &lines)).await
}

async fn try_reserve(
    pool: &MySqlPool,
    order_number: &str,
    lines: &[Line],
) -> Result<ReserveOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    // The primary key on order_number is the idempotency anchor: a concurrent duplicate
    // blocks here until the first commits (then sees the duplicate) or rolls back.
    let created_at = Utc::now().trunc_subsecs(6);
    let inserted =
        sqlx::query("INSERT INTO reservations (order_number, status, created_at) VALUES (?, ?, ?)")
            .bind(order_number)
            .bind(ReservationStatus::Reserved.as_db())
            .bind(created_at)
            .execute(&mut *tx)
            .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            tx.rollback().await?;
            let existing = get_reservation(pool, order_number)
                .await?
                .ok_or_else(|| StoreError::Db(sqlx::Error::RowNotFound))?;
            return match existing.status {
                ReservationStatus::Released => Err(StoreError::Released(order_number.to_owned())),
                ReservationStatus::Reserved if existing.lines == lines => {
                    Ok(ReserveOutcome::Replayed(existing))
                }
                ReservationStatus::Reserved => {
                    Err(StoreError::ConflictingReplay(order_number.to_owned()))
                }
            };
        }
        Err(e) => return Err(e.into()),
    }

    let mut short = Vec::new();
    for line in lines {
        let done = sqlx::query(
            "UPDATE inventory SET quantity = quantity - ? WHERE sku_code = ? AND quantity >= ?",
        )
        .bind(line.quantity)
        .bind(&line.sku_code)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            short.push(line);
        }
    }
    if !short.is_empty() {
        let mut shortages = Vec::with_capacity(short.len());
        for line in short {
            shortages.push(Shortage {
                sku_code: line.sku_code.clone(),
                requested: line.quantity,
                available: current(&mut tx, &line.sku_code).await?.unwrap_or(0),
            });
        }
        tx.rollback().await?;
        return Err(StoreError::Insufficient(shortages));
    }

    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("INSERT INTO reservation_lines (order_number, sku_code, quantity) ");
    qb.push_values(lines, |mut b, l| {
        b.push_bind(order_number)
            .push_bind(&l.sku_code)
            .push_bind(l.quantity);
    });
    qb.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(ReserveOutcome::Created(Reservation {
        order_number: order_number.to_owned(),
        status: ReservationStatus::Reserved,
        lines: lines.to_vec(),
        created_at,
    }))
}

/// Reads a reservation.
pub async fn get_reservation(
    pool: &MySqlPool,
    order_number: &str,
) -> Result<Option<Reservation>, StoreError> {
    let Some(row) =
        sqlx::query("SELECT status, created_at FROM reservations WHERE order_number = ?")
            .bind(order_number)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    let status: String = row.try_get("status")?;
    let lines = sqlx::query(
        "SELECT sku_code, quantity FROM reservation_lines WHERE order_number = ? ORDER BY sku_code",
    )
    .bind(order_number)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| {
        Ok(Line {
            sku_code: r.try_get("sku_code")?,
            quantity: r.try_get("quantity")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(Reservation {
        order_number: order_number.to_owned(),
        status: ReservationStatus::from_db(&status),
        lines,
        created_at: row.try_get("created_at")?,
    }))
}

/// Puts a reservation's stock back. Idempotent; releasing an unknown order number records a
/// tombstone so a reservation that arrives late (e.g. after the caller timed out) is refused.
pub async fn release(pool: &MySqlPool, order_number: &str) -> Result<Reservation, StoreError> {
    with_retries(|| try_release(pool, order_number)).await
}

async fn try_release(pool: &MySqlPool, order_number: &str) -> Result<Reservation, StoreError> {
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_number = ? FOR UPDATE")
            .bind(order_number)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref().map(ReservationStatus::from_db) {
        None => {
            let ins = sqlx::query(
                "INSERT INTO reservations (order_number, status, released_at) VALUES (?, ?, NOW(6))",
            )
            .bind(order_number)
            .bind(ReservationStatus::Released.as_db())
            .execute(&mut *tx)
            .await;
            match ins {
                Ok(_) => tx.commit().await?,
                // A reservation raced in: release that one on the next attempt.
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    return Box::pin(try_release(pool, order_number)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(ReservationStatus::Released) => tx.commit().await?,
        Some(ReservationStatus::Reserved) => {
            let lines: Vec<(String, i64)> = sqlx::query_as(
                "SELECT sku_code, quantity FROM reservation_lines WHERE order_number = ? ORDER BY sku_code",
            )
            .bind(order_number)
            .fetch_all(&mut *tx)
            .await?;
            for (sku, qty) in &lines {
                sqlx::query(
                    "INSERT INTO inventory (sku_code, quantity) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE quantity = quantity + VALUES(quantity)",
                )
                .bind(sku)
                .bind(qty)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE reservations SET status = ?, released_at = NOW(6) WHERE order_number = ?",
            )
            .bind(ReservationStatus::Released.as_db())
            .bind(order_number)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    get_reservation(pool, order_number)
        .await?
        .ok_or(StoreError::Db(sqlx::Error::RowNotFound))
}

/// What `GET /api/inventory/reservations` asks for: one status, an optional creation window, and
/// a keyset position, in `(created_at, order_number)` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationFilter {
    /// Only reservations in this status.
    pub status: ReservationStatus,
    /// Only reservations created strictly before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only reservations created at or after this instant.
    pub created_from: Option<DateTime<Utc>>,
    /// Keyset position: only reservations after this one in `(created_at, order_number)` order.
    pub after: Option<String>,
    /// Most reservations returned.
    pub limit: u32,
}

/// Why a listing could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The keyset position names no reservation.
    #[error("no reservation with order number {0}")]
    UnknownPosition(String),
    /// A database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ListError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

/// Lists reservations matching `filter`, oldest first, with their lines. Keyset-paged (pass the
/// last order number of a page as `after`), so a page costs the same however deep it is and
/// rows created meanwhile are neither skipped nor repeated.
pub async fn list_reservations(
    pool: &MySqlPool,
    filter: &ReservationFilter,
) -> Result<Vec<Reservation>, ListError> {
    let position: Option<(DateTime<Utc>, String)> = match &filter.after {
        None => None,
        Some(n) => Some(
            sqlx::query_as(
                "SELECT created_at, order_number FROM reservations WHERE order_number = ?",
            )
            .bind(n)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ListError::UnknownPosition(n.clone()))?,
        ),
    };
    // A TIMESTAMP column holds 1970-01-01 00:00:01 ..= 2038-01-19 03:14:07.999999 UTC; a bound
    // outside that range is compared as a zero timestamp, so bounds are fitted to it first.
    let (min, max) = (
        DateTime::<Utc>::from_timestamp(1, 0).unwrap_or(DateTime::<Utc>::MIN_UTC),
        DateTime::<Utc>::from_timestamp(i64::from(i32::MAX), 999_999_000)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    );
    if filter.created_before.is_some_and(|b| b <= min)
        || filter.created_from.is_some_and(|f| f > max)
    {
        return Ok(Vec::new());
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT order_number, status, created_at FROM reservations WHERE status = ",
    );
    qb.push_bind(filter.status.as_db());
    if let Some(before) = filter.created_before.filter(|b| *b <= max) {
        qb.push(" AND created_at < ").push_bind(before);
    }
    if let Some(from) = filter.created_from.filter(|f| *f > min) {
        qb.push(" AND created_at >= ").push_bind(from);
    }
    if let Some((at, number)) = position {
        qb.push(" AND (created_at > ")
            .push_bind(at)
            .push(" OR (created_at = ")
            .push_bind(at)
            .push(" AND order_number > ")
            .push_bind(number)
            .push("))");
    }
    qb.push(" ORDER BY created_at, order_number LIMIT ")
        .push_bind(filter.limit);
    let rows = qb.build().fetch_all(pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let status: String = row.try_get("status")?;
        out.push(Reservation {
            order_number: row.try_get("order_number")?,
            status: ReservationStatus::from_db(&status),
            lines: Vec::new(),
            created_at: row.try_get("created_at")?,
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT order_number, sku_code, quantity FROM reservation_lines WHERE order_number IN (",
    );
    let mut sep = qb.separated(", ");
    for r in &out {
        sep.push_bind(&r.order_number);
    }
    sep.push_unseparated(") ORDER BY order_number, sku_code");
    let mut lines: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for row in qb.build().fetch_all(pool).await? {
        lines
            .entry(row.try_get("order_number")?)
            .or_default()
            .push(Line {
                sku_code: row.try_get("sku_code")?,
                quantity: row.try_get("quantity")?,
            });
    }
    for r in &mut out {
        r.lines = lines.remove(&r.order_number).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str, q: i64) -> Line {
        Line {
            sku_code: s.into(),
            quantity: q,
        }
    }

    #[test]
    fn normalize_merges_duplicates_and_sorts() {
        let n = normalize(&[l("b", 1), l("a", 2), l("b", 3)]);
        assert_eq!(n, vec![l("a", 2), l("b", 4)]);
    }
}
