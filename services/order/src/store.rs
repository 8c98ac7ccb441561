//! MySQL persistence of orders, Idempotency-Key records and the transactional outbox. The
//! order, its lines, its OrderPlaced outbox row and the key's stored response are written in
//! ONE transaction, so an order is never stored without its event (or the other way round).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use shop_runtime::mysql::Script;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row};

use crate::model::{Order, OrderLine};

/// Migrations embedded at compile time and applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database failure.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Could not encode a row.
    #[error("encoding error: {0}")]
    Encode(#[from] serde_json::Error),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Outcome of claiming an Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// First use: go ahead with this order number.
    Fresh,
    /// A previous attempt with this key died mid-flight: go ahead, reusing its order number
    /// (so an inventory reservation it made is replayed, not duplicated).
    TakenOver(String),
    /// Same key, different body.
    Mismatch,
    /// Same key, the first request is still running.
    InFlight,
    /// Same key and body, completed: replay this response.
    Done {
        /// HTTP status of the stored response.
        status: u16,
        /// Body of the stored response.
        body: String,
    },
}

/// Claims `key` for a request with `fingerprint` and the new `order_number`.
pub async fn claim_key(
    pool: &MySqlPool,
    key: &str,
    fingerprint: &str,
    order_number: &str,
    stale_after: std::time::Duration,
) -> Result<KeyClaim, StoreError> {
    let ins = sqlx::query(
        "INSERT INTO idempotency_keys (idem_key, fingerprint, order_number, state) VALUES (?, ?, ?, 'IN_FLIGHT')",
    )
    .bind(key)
    .bind(fingerprint)
    .bind(order_number)
    .execute(pool)
    .await;
    match ins {
        Ok(_) => return Ok(KeyClaim::Fresh),
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(row) = sqlx::query(
        "SELECT fingerprint, order_number, state, response_status, response_body, \
         updated_at < NOW(6) - INTERVAL ? MICROSECOND AS stale \
         FROM idempotency_keys WHERE idem_key = ?",
    )
    .bind(i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX))
    .bind(key)
    .fetch_optional(pool)
    .await?
    else {
        // The first request failed and forgot the key between our INSERT and SELECT: it is
        // free again, but report in-flight and let the client retry rather than loop.
        return Ok(KeyClaim::InFlight);
    };
    let fp: String = row.try_get("fingerprint")?;
    if fp != fingerprint {
        return Ok(KeyClaim::Mismatch);
    }
    let state: String = row.try_get("state")?;
    if state == "DONE" {
        let status: Option<i16> = row.try_get("response_status")?;
        let body: Option<String> = row.try_get("response_body")?;
        return Ok(KeyClaim::Done {
            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(201),
            body: body.unwrap_or_default(),
        });
    }
    let stale: Option<i64> = row.try_get("stale")?;
    if stale == Some(1) {
        let prev: String = row.try_get("order_number")?;
        let took = sqlx::query(
            "UPDATE idempotency_keys SET updated_at = NOW(6) \
             WHERE idem_key = ? AND state = 'IN_FLIGHT' AND updated_at < NOW(6) - INTERVAL ? MICROSECOND",
        )
        .bind(key)
        .bind(i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
        if took.rows_affected() == 1 {
            return Ok(KeyClaim::TakenOver(prev));
        }
    }
    Ok(KeyClaim::InFlight)
}

/// Claims `order_number` for the reconciler with an ABANDONED row (no lines, no event). Returns
/// true when the number is (now or already) abandoned, so its stock must go back; false when an
/// order was stored under it and keeps its stock.
pub async fn abandon_order(pool: &MySqlPool, order_number: &str) -> Result<bool, sqlx::Error> {
    let ins = sqlx::query(
        "INSERT INTO orders (order_number, status, total, created_at) VALUES (?, ?, 0, NOW(6))",
    )
    .bind(order_number)
    .bind(crate::model::STATUS_ABANDONED)
    .execute(pool)
    .await;
    match ins {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM orders WHERE order_number = ?")
                    .bind(order_number)
                    .fetch_optional(pool)
                    .await?;
            Ok(status.as_deref() == Some(crate::model::STATUS_ABANDONED))
        }
        Err(e) => Err(e),
    }
}

/// True when the store refused an order because its number is taken: the reconciler abandoned
/// it (and gave its stock back) while this request was stalled.
pub fn is_number_taken(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(db) if is_unique_violation(db))
}

/// Forgets an in-flight key after a failed attempt so the client can retry with it.
/// Moves an in-flight key from order number `from` to `to` (a taken-over request whose old number
/// can no longer be used); false when the key is no longer in flight under `from`.
pub async fn renumber_key(
    pool: &MySqlPool,
    key: &str,
    from: &str,
    to: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE idempotency_keys SET order_number = ?, updated_at = NOW(6) \
         WHERE idem_key = ? AND state = 'IN_FLIGHT' AND order_number = ?",
    )
    .bind(to)
    .bind(key)
    .bind(from)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn forget_key(pool: &MySqlPool, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE idem_key = ? AND state = 'IN_FLIGHT'")
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// One order ready to be written: the order, the OrderPlaced outbox row and (when keyed) the
/// stored response, owned, so it can wait in a [`shop_runtime::batch::Batcher`] queue.
#[derive(Debug, Clone)]
pub struct OrderWrite {
    /// The order with its lines.
    pub order: Order,
    /// The request's Idempotency-Key, if any (its stored response is completed in the same transaction).
    pub idempotency_key: Option<String>,
    /// The OrderPlaced event's id.
    pub event_id: String,
    /// The OrderPlaced event's JSON, encoded once for the outbox row and the relay's fast lane.
    pub payload: String,
    /// Kafka topic of the event.
    pub topic: std::sync::Arc<str>,
    /// Kafka headers of the event.
    pub headers: BTreeMap<String, String>,
    /// The response body stored for Idempotency-Key replays.
    pub response_body: String,
}

/// Most order lines written by one batch transaction (bounds statement size and lock time).
pub const MAX_LINES_PER_TX: usize = 2_000;

/// Writes every order of a batch; one answer per order, in order. Orders that arrive together
/// share one transaction, sent to the server as one script (one round trip; see
/// [`shop_runtime::mysql::script`]); when the database refuses a batch, each order is written in a
/// transaction of its own so one bad order cannot fail the others.
pub async fn write_orders(
    pool: &MySqlPool,
    writes: Vec<OrderWrite>,
) -> Vec<Result<(), StoreError>> {
    let mut answers: Vec<Option<Result<(), StoreError>>> =
        (0..writes.len()).map(|_| None).collect();
    let mut start = 0;
    while start < writes.len() {
        let mut end = start;
        let mut lines = 0;
        while end < writes.len()
            && (end == start || lines + writes[end].order.lines.len() <= MAX_LINES_PER_TX)
        {
            lines += writes[end].order.lines.len();
            end += 1;
        }
        let group = &writes[start..end];
        match insert_orders(pool, group).await {
            Ok(()) => {
                for a in &mut answers[start..end] {
                    *a = Some(Ok(()));
                }
            }
            Err(e) if group.len() == 1 => answers[start] = Some(Err(e)),
            Err(e) => {
                tracing::warn!(error = %e, orders = group.len(), "batch order write refused; writing one by one");
                let each = futures::future::join_all(
                    group
                        .iter()
                        .map(|w| insert_orders(pool, std::slice::from_ref(w))),
                )
                .await;
                for (a, r) in answers[start..end].iter_mut().zip(each) {
                    *a = Some(r);
                }
            }
        }
        start = end;
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(StoreError::Db(sqlx::Error::WorkerCrashed))))
        .collect()
}

/// One transaction, one round trip, for `writes`: orders, lines, outbox rows and completed keys.
async fn insert_orders(pool: &MySqlPool, writes: &[OrderWrite]) -> Result<(), StoreError> {
    let script = order_script(writes)?;
    shop_runtime::mysql::run_transaction(pool, &script)
        .await
        .map_err(|e| StoreError::Db(e.into_sqlx()))
}

/// The statements of [`insert_orders`]: four multi-row statements, whatever the batch size.
fn order_script(writes: &[OrderWrite]) -> Result<Script, StoreError> {
    let headers: Vec<String> = writes
        .iter()
        .map(|w| serde_json::to_string(&w.headers))
        .collect::<Result<_, _>>()?;
    let mut s = Script::new();
    s.sql("INSERT INTO orders (order_number, status, total, idempotency_key, created_at) VALUES ");
    s.join(writes, ", ", |s, w| {
        s.sql("(")
            .str(&w.order.order_number)
            .sql(", ")
            .str(&w.order.status)
            .sql(", ")
            .decimal(w.order.total)
            .sql(", ")
            .opt_str(w.idempotency_key.as_deref())
            .sql(", ")
            .timestamp(w.order.created_at)
            .sql(")");
    });
    s.sql(
        "; INSERT INTO order_line_items (order_number, line_no, sku_code, price, quantity) VALUES ",
    );
    s.join(
        writes.iter().flat_map(|w| {
            w.order
                .lines
                .iter()
                .enumerate()
                .map(move |(i, l)| (&w.order.order_number, i, l))
        }),
        ", ",
        |s, (number, i, l)| {
            s.sql("(")
                .str(number)
                .sql(", ")
                .int(i64::try_from(i).unwrap_or(i64::MAX))
                .sql(", ")
                .str(&l.sku_code)
                .sql(", ")
                .decimal(l.price)
                .sql(", ")
                .int(l.quantity)
                .sql(")");
        },
    );
    s.sql("; INSERT INTO outbox (event_id, topic, msg_key, payload, headers) VALUES ");
    s.join(writes.iter().zip(&headers), ", ", |s, (w, headers)| {
        s.sql("(")
            .str(&w.event_id)
            .sql(", ")
            .str(&w.topic)
            .sql(", ")
            .str(&w.order.order_number)
            .sql(", ")
            .str(&w.payload)
            .sql(", ")
            .str(headers)
            .sql(")");
    });
    let keyed: Vec<(&str, &str)> = writes
        .iter()
        .filter_map(|w| {
            w.idempotency_key
                .as_deref()
                .map(|k| (k, w.response_body.as_str()))
        })
        .collect();
    if !keyed.is_empty() {
        s.sql(
            "; UPDATE idempotency_keys SET state = 'DONE', response_status = 201, \
             updated_at = NOW(6), response_body = CASE idem_key",
        );
        for (key, body) in &keyed {
            s.sql(" WHEN ").str(key).sql(" THEN ").str(body);
        }
        s.sql(" END WHERE idem_key IN (");
        s.join(&keyed, ", ", |s, (key, _)| {
            s.str(key);
        });
        s.sql(")");
    }
    Ok(s)
}

async fn lines_of(
    pool: &MySqlPool,
    numbers: &[String],
) -> Result<BTreeMap<String, Vec<OrderLine>>, StoreError> {
    let mut out: BTreeMap<String, Vec<OrderLine>> = BTreeMap::new();
    if numbers.is_empty() {
        return Ok(out);
    }
    let mut qb: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT order_number, sku_code, price, quantity FROM order_line_items WHERE order_number IN (",
    );
    let mut sep = qb.separated(", ");
    for n in numbers {
        sep.push_bind(n);
    }
    sep.push_unseparated(") ORDER BY order_number, line_no");
    for row in qb.build().fetch_all(pool).await? {
        let n: String = row.try_get("order_number")?;
        let qty: i32 = row.try_get("quantity")?;
        out.entry(n).or_default().push(OrderLine {
            sku_code: row.try_get("sku_code")?,
            price: row.try_get::<Decimal, _>("price")?,
            quantity: i64::from(qty),
        });
    }
    Ok(out)
}

fn order_from_row(
    row: &sqlx::mysql::MySqlRow,
    lines: &mut BTreeMap<String, Vec<OrderLine>>,
) -> Result<Order, StoreError> {
    let order_number: String = row.try_get("order_number")?;
    Ok(Order {
        lines: lines.remove(&order_number).unwrap_or_default(),
        order_number,
        status: row.try_get("status")?,
        total: row.try_get("total")?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at")?,
    })
}

/// Reads one order.
pub async fn get_order(pool: &MySqlPool, order_number: &str) -> Result<Option<Order>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT order_number, status, total, created_at FROM orders WHERE order_number = ? AND status <> 'ABANDONED'",
    )
    .bind(order_number)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let mut lines = lines_of(pool, &[order_number.to_owned()]).await?;
    Ok(Some(order_from_row(&row, &mut lines)?))
}

/// A page of orders, newest first, and the total count.
pub async fn list_orders(
    pool: &MySqlPool,
    page: u32,
    size: u32,
) -> Result<(Vec<Order>, i64), StoreError> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status <> 'ABANDONED'")
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query(
        "SELECT order_number, status, total, created_at FROM orders WHERE status <> 'ABANDONED' \
         ORDER BY id DESC LIMIT ? OFFSET ?",
    )
    .bind(size)
    .bind(u64::from(page) * u64::from(size))
    .fetch_all(pool)
    .await?;
    let numbers: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("order_number"))
        .collect::<Result<_, _>>()?;
    let mut lines = lines_of(pool, &numbers).await?;
    let orders = rows
        .iter()
        .map(|r| order_from_row(r, &mut lines))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((orders, total))
}

/// Number of outbox rows not yet published (exported as a gauge).
pub async fn outbox_pending(pool: &MySqlPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?,
    )
}

/// Deletes outbox rows published, and Idempotency-Keys completed, more than `retention` ago
/// (bounded batches, so the tables do not grow forever). Returns the rows deleted.
pub async fn purge(pool: &MySqlPool, retention: std::time::Duration) -> Result<u64, StoreError> {
    let secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let a = sqlx::query(
        "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < NOW(6) - INTERVAL ? SECOND LIMIT 5000",
    )
    .bind(secs)
    .execute(pool)
    .await?;
    let b = sqlx::query(
        "DELETE FROM idempotency_keys WHERE state = 'DONE' AND updated_at < NOW(6) - INTERVAL ? SECOND LIMIT 5000",
    )
    .bind(secs)
    .execute(pool)
    .await?;
    Ok(a.rows_affected() + b.rows_affected())
}
