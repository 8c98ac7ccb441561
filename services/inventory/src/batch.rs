//! Reservations written in groups. Under load most of the cost of a reservation is the database's
//! per-statement overhead (five round trips and a commit each), and orders for the same SKU queue on
//! its row lock for every one of those commits. A batch of concurrent reservations takes the stock
//! rows' locks once, decides every order in arrival order in memory, and writes the result with
//! multi-row statements in one transaction: seven statements for the whole batch.
//!
//! The semantics are those of [`store::reserve`] for each order on its own: all lines or none,
//! never negative stock (the rows are locked `FOR UPDATE` and the table's CHECK constraint stays as
//! the last guard), idempotent by order number. Anything unusual — an order number that already has
//! a row (a replay, a tombstone), the same number twice in one batch, or a batch the database
//! refuses — goes through the one-order path, which owns those cases.
//!
//! Before any of that, a batch is tried optimistically as ONE script (one round trip, see
//! [`shop_runtime::mysql::script`]): insert the reservation rows, take every SKU's total with one
//! `UPDATE … WHERE quantity >= wanted`, abort unless every SKU matched, insert the lines, commit. When
//! everything fits (nearly always) that is the whole cost; when anything does not (a shortage, an
//! unknown SKU, a replayed number) the script undoes itself and the exact path above decides.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{SubsecRound, Utc};
use futures::future::join_all;
use shop_runtime::mysql::{Script, run_transaction};
use sqlx::{MySql, MySqlPool, QueryBuilder, Row};

use crate::store::{
    self, Line, Reservation, ReservationStatus, ReserveOutcome, Shortage, StoreError,
};

/// Most reservation lines written by one batch transaction (bounds statement size and lock time).
pub const MAX_LINES_PER_TX: usize = 2_000;

/// One reservation request: an order number and its lines as the client sent them.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The order the stock is for.
    pub order_number: String,
    /// Lines (merged and sorted here).
    pub lines: Vec<Line>,
}

/// The answer to one [`ReserveRequest`].
pub type ReserveResult = Result<ReserveOutcome, StoreError>;

/// Reserves every request of the batch; one answer per request, in order.
pub async fn reserve_batch(pool: &MySqlPool, reqs: Vec<ReserveRequest>) -> Vec<ReserveResult> {
    let reqs: Vec<(String, Vec<Line>)> = reqs
        .into_iter()
        .map(|r| {
            let lines = store::normalize(&r.lines);
            (r.order_number, lines)
        })
        .collect();
    if let Some(answers) = reserve_optimistically(pool, &reqs).await {
        return answers;
    }
    if reqs.len() == 1 {
        let (number, lines) = &reqs[0];
        return vec![store::reserve(pool, number, lines).await];
    }
    let mut answers: Vec<Option<ReserveResult>> = (0..reqs.len()).map(|_| None).collect();

    // Group into transactions of bounded size; a repeated order number waits for the one-order path.
    let mut seen = HashSet::new();
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut lines_in_group = 0;
    for (i, (number, lines)) in reqs.iter().enumerate() {
        if !seen.insert(number.as_str()) {
            continue;
        }
        if lines_in_group + lines.len() > MAX_LINES_PER_TX && lines_in_group > 0 {
            groups.push(Vec::new());
            lines_in_group = 0;
        }
        lines_in_group += lines.len();
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
    }
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let batch: Vec<(&str, &[Line])> = group
            .iter()
            .map(|&i| (reqs[i].0.as_str(), reqs[i].1.as_slice()))
            .collect();
        match store::with_retries(|| try_reserve_batch(pool, &batch)).await {
            Ok(results) => {
                for (&i, r) in group.iter().zip(results) {
                    answers[i] = r;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, orders = group.len(), "batch reservation refused; reserving one by one");
            }
        }
    }
    // Everything not decided by a batch: replays, tombstones, duplicates, refused batches.
    let rest: Vec<usize> = (0..reqs.len()).filter(|&i| answers[i].is_none()).collect();
    let singles = join_all(
        rest.iter()
            .map(|&i| store::reserve(pool, &reqs[i].0, &reqs[i].1)),
    )
    .await;
    for (i, r) in rest.into_iter().zip(singles) {
        answers[i] = Some(r);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(StoreError::Db(sqlx::Error::WorkerCrashed))))
        .collect()
}

/// The one-round-trip attempt: `Some` with every answer when the whole batch committed, `None`
/// when the exact path must decide (nothing was written).
async fn reserve_optimistically(
    pool: &MySqlPool,
    reqs: &[(String, Vec<Line>)],
) -> Option<Vec<ReserveResult>> {
    let lines: usize = reqs.iter().map(|(_, l)| l.len()).sum();
    let distinct: HashSet<&str> = reqs.iter().map(|(n, _)| n.as_str()).collect();
    if reqs.is_empty()
        || lines > MAX_LINES_PER_TX
        || distinct.len() != reqs.len()
        || reqs.iter().any(|(_, l)| l.is_empty())
    {
        return None;
    }
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for l in reqs.iter().flat_map(|(_, lines)| lines) {
        *wanted.entry(l.sku_code.as_str()).or_insert(0) += l.quantity;
    }
    let created_at = Utc::now().trunc_subsecs(6);
    let mut s = Script::new();
    s.sql("INSERT INTO reservations (order_number, status, created_at) VALUES ");
    s.join(reqs, ", ", |s, (number, _)| {
        s.sql("(")
            .str(number)
            .sql(", ")
            .str(ReservationStatus::Reserved.as_db())
            .sql(", ")
            .timestamp(created_at)
            .sql(")");
    });
    // Rows are locked in primary-key order, like the exact paths: no deadlock between them.
    let case = |s: &mut Script| {
        s.sql("CASE sku_code");
        for (sku, qty) in &wanted {
            s.sql(" WHEN ").str(sku).sql(" THEN ").int(*qty);
        }
        s.sql(" END");
    };
    s.sql("; UPDATE inventory SET quantity = quantity - ");
    case(&mut s);
    s.sql(" WHERE sku_code IN (");
    s.join(wanted.keys(), ", ", |s, sku| {
        s.str(sku);
    });
    s.sql(") AND quantity >= ");
    case(&mut s);
    s.sql("; ")
        .abort_unless_row_count(u64::try_from(wanted.len()).unwrap_or(u64::MAX));
    s.sql("; INSERT INTO reservation_lines (order_number, sku_code, quantity) VALUES ");
    s.join(
        reqs.iter()
            .flat_map(|(number, lines)| lines.iter().map(move |l| (number, l))),
        ", ",
        |s, (number, l)| {
            s.sql("(")
                .str(number)
                .sql(", ")
                .str(&l.sku_code)
                .sql(", ")
                .int(l.quantity)
                .sql(")");
        },
    );
    match run_transaction(pool, &s).await {
        Ok(()) => Some(
            reqs.iter()
                .map(|(number, lines)| {
                    Ok(ReserveOutcome::Created(Reservation {
                        order_number: number.clone(),
                        status: ReservationStatus::Reserved,
                        lines: lines.clone(),
                        created_at,
                    }))
                })
                .collect(),
        ),
        Err(e) => {
            tracing::debug!(error = %e, orders = reqs.len(), "optimistic reservation refused; deciding exactly");
            None
        }
    }
}

/// One transaction for `batch` (distinct order numbers). `None` for an order left to the one-order
/// path (its number already has a reservation row).
async fn try_reserve_batch(
    pool: &MySqlPool,
    batch: &[(&str, &[Line])],
) -> Result<Vec<Option<ReserveResult>>, StoreError> {
    let mut tx = pool.begin().await?;

    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("SELECT order_number FROM reservations WHERE order_number IN (");
    let mut sep = qb.separated(", ");
    for (number, _) in batch {
        sep.push_bind(*number);
    }
    sep.push_unseparated(")");
    let existing: HashSet<String> = qb
        .build()
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("order_number"))
        .collect::<Result<_, _>>()?;

    let skus: BTreeSet<&str> = batch
        .iter()
        .filter(|(n, _)| !existing.contains(*n))
        .flat_map(|(_, lines)| lines.iter().map(|l| l.sku_code.as_str()))
        .collect();
    if skus.is_empty() {
        tx.rollback().await?;
        return Ok(batch.iter().map(|_| None).collect());
    }
    // Locks in primary-key order, the order the one-order path updates in: no deadlock between them.
    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("SELECT sku_code, quantity FROM inventory WHERE sku_code IN (");
    let mut sep = qb.separated(", ");
    for sku in &skus {
        sep.push_bind(*sku);
    }
    sep.push_unseparated(") ORDER BY sku_code FOR UPDATE");
    let mut stock: BTreeMap<String, i64> = BTreeMap::new();
    for row in qb.build().fetch_all(&mut *tx).await? {
        stock.insert(row.try_get("sku_code")?, row.try_get("quantity")?);
    }

    // Decide in arrival order: an order takes its stock only if every line fits.
    let mut taken: BTreeMap<&str, i64> = BTreeMap::new();
    let mut accepted: Vec<usize> = Vec::new();
    let mut results: Vec<Option<ReserveResult>> = Vec::with_capacity(batch.len());
    for (i, (number, lines)) in batch.iter().enumerate() {
        if existing.contains(*number) {
            results.push(None);
            continue;
        }
        let left =
            |sku: &str| stock.get(sku).copied().unwrap_or(0) - taken.get(sku).copied().unwrap_or(0);
        let short: Vec<Shortage> = lines
            .iter()
            .filter(|l| left(&l.sku_code) < l.quantity)
            .map(|l| Shortage {
                sku_code: l.sku_code.clone(),
                requested: l.quantity,
                available: left(&l.sku_code).max(0),
            })
            .collect();
        if short.is_empty() {
            for l in lines.iter() {
                *taken.entry(l.sku_code.as_str()).or_insert(0) += l.quantity;
            }
            accepted.push(i);
            results.push(None); // filled after the commit
        } else {
            results.push(Some(Err(StoreError::Insufficient(short))));
        }
    }
    if accepted.is_empty() {
        tx.rollback().await?;
        return Ok(results);
    }

    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("UPDATE inventory SET quantity = quantity - CASE sku_code");
    for (sku, qty) in &taken {
        qb.push(" WHEN ")
            .push_bind(*sku)
            .push(" THEN ")
            .push_bind(*qty);
    }
    qb.push(" ELSE 0 END WHERE sku_code IN (");
    let mut sep = qb.separated(", ");
    for sku in taken.keys() {
        sep.push_bind(*sku);
    }
    sep.push_unseparated(")");
    qb.build().execute(&mut *tx).await?;

    let created_at = Utc::now().trunc_subsecs(6);
    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("INSERT INTO reservations (order_number, status, created_at) ");
    qb.push_values(&accepted, |mut b, &i| {
        b.push_bind(batch[i].0)
            .push_bind(ReservationStatus::Reserved.as_db())
            .push_bind(created_at);
    });
    qb.build().execute(&mut *tx).await?;

    let mut qb: QueryBuilder<MySql> =
        QueryBuilder::new("INSERT INTO reservation_lines (order_number, sku_code, quantity) ");
    qb.push_values(
        accepted
            .iter()
            .flat_map(|&i| batch[i].1.iter().map(move |l| (batch[i].0, l))),
        |mut b, (number, l)| {
            b.push_bind(number)
                .push_bind(&l.sku_code)
                .push_bind(l.quantity);
        },
    );
    qb.build().execute(&mut *tx).await?;
    tx.commit().await?;

    for i in accepted {
        results[i] = Some(Ok(ReserveOutcome::Created(Reservation {
            order_number: batch[i].0.to_owned(),
            status: ReservationStatus::Reserved,
            lines: batch[i].1.to_vec(),
            created_at,
        })));
    }
    Ok(results)
}
