//! One-round-trip transactions (`shop_runtime::mysql::script`) against the real MariaDB: values
//! round-trip exactly, a failing statement leaves nothing behind, and the pooled connection comes
//! back clean (not inside a half-done transaction).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use shop_runtime::mysql::{
    Dialect, Script, ScriptError, connect_pool, run_transaction, run_transaction_as,
};
use shop_testkit::fresh_mysql_database;
use sqlx::{MySqlPool, Row};

async fn pool() -> MySqlPool {
    let url = fresh_mysql_database("script").await;
    // One connection: every statement of a test runs on the connection the script used.
    let pool = connect_pool(&url, 1).await.expect("pool");
    sqlx::raw_sql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR(200) NULL, price DECIMAL(19,2) NOT NULL, \
         at TIMESTAMP(6) NOT NULL, qty BIGINT NOT NULL, CHECK (qty >= 0)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    )
    .execute(&pool)
    .await
    .expect("create table");
    pool
}

async fn count(pool: &MySqlPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn in_transaction(pool: &MySqlPool) -> u64 {
    sqlx::query_scalar("SELECT @@in_transaction")
        .fetch_one(pool)
        .await
        .expect("@@in_transaction")
}

#[tokio::test]
async fn values_round_trip_exactly_and_match_bound_parameters() {
    let pool = pool().await;
    let names = [
        "plain",
        "it's a \"quote\"; DROP TABLE t; --",
        "back\\slash and \0 nul",
        "ünïcödé 🛒 ✓",
        "",
    ];
    let at: DateTime<Utc> = Utc::now().trunc_subsecs(6);
    let price = Decimal::new(-123_456, 2);
    let mut s = Script::new();
    s.sql("INSERT INTO t (id, name, price, at, qty) VALUES ");
    s.join(names.iter().enumerate(), ", ", |s, (i, n)| {
        s.sql("(")
            .int(i64::try_from(i).unwrap_or(0))
            .sql(", ")
            .str(n)
            .sql(", ")
            .decimal(price)
            .sql(", ")
            .timestamp(at)
            .sql(", 1)");
    });
    s.sql("; INSERT INTO t (id, name, price, at, qty) VALUES (99, ")
        .opt_str(None)
        .sql(", 0, ")
        .timestamp(at)
        .sql(", 0)");
    run_transaction(&pool, &s).await.expect("script commits");

    for (i, n) in names.iter().enumerate() {
        let row = sqlx::query("SELECT name, price, at FROM t WHERE id = ?")
            .bind(i64::try_from(i).unwrap_or(0))
            .fetch_one(&pool)
            .await
            .expect("row");
        assert_eq!(row.get::<String, _>("name"), *n);
        assert_eq!(row.get::<Decimal, _>("price"), price);
        assert_eq!(row.get::<DateTime<Utc>, _>("at"), at, "timestamps are UTC");
        // A literal written by the script compares equal to the same value bound as a parameter.
        let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE name = ? AND at = ?")
            .bind(*n)
            .bind(at)
            .fetch_one(&pool)
            .await
            .expect("lookup");
        assert_eq!(found, 1, "{n:?} found by a bound parameter");
    }
    let null: Option<String> = sqlx::query_scalar("SELECT name FROM t WHERE id = 99")
        .fetch_one(&pool)
        .await
        .expect("row 99");
    assert_eq!(null, None);
    assert_eq!(in_transaction(&pool).await, 0);
}

#[tokio::test]
async fn a_failing_statement_rolls_back_the_earlier_ones() {
    let pool = pool().await;
    let mut s = Script::new();
    s.sql("INSERT INTO t (id, price, at, qty) VALUES (1, 0, NOW(6), 1); ")
        .sql("INSERT INTO t (id, price, at, qty) VALUES (2, 0, NOW(6), 1); ")
        .sql("INSERT INTO t (id, price, at, qty) VALUES (1, 0, NOW(6), 1)");
    let err = run_transaction(&pool, &s)
        .await
        .expect_err("duplicate key refused");
    match &err {
        ScriptError::Refused { source, aborted } => {
            assert!(!aborted);
            assert!(
                source
                    .as_database_error()
                    .is_some_and(|d| d.is_unique_violation()),
                "{source}"
            );
        }
        other => panic!("expected Refused, got {other}"),
    }
    assert_eq!(
        count(&pool).await,
        0,
        "nothing of the failed script is kept"
    );
    assert_eq!(
        in_transaction(&pool).await,
        0,
        "the connection is back outside any transaction"
    );
    // The same (only) connection still commits the next script.
    let mut ok = Script::new();
    ok.sql("INSERT INTO t (id, price, at, qty) VALUES (3, 0, NOW(6), 1)");
    run_transaction(&pool, &ok).await.expect("next script");
    assert_eq!(count(&pool).await, 1);
}

#[tokio::test]
async fn abort_unless_row_count_guards_an_optimistic_update() {
    let pool = pool().await;
    sqlx::raw_sql("INSERT INTO t (id, price, at, qty) VALUES (1, 0, NOW(6), 5), (2, 0, NOW(6), 1)")
        .execute(&pool)
        .await
        .expect("seed");
    let take = |a: i64, b: i64| {
        let mut s = Script::new();
        s.sql("INSERT INTO t (id, price, at, qty) VALUES (10, 0, NOW(6), 0); ")
            .sql("UPDATE t SET qty = qty - CASE id WHEN 1 THEN ")
            .int(a)
            .sql(" WHEN 2 THEN ")
            .int(b)
            .sql(" END WHERE id IN (1, 2) AND qty >= CASE id WHEN 1 THEN ")
            .int(a)
            .sql(" WHEN 2 THEN ")
            .int(b)
            .sql(" END; ")
            .abort_unless_row_count(2);
        s
    };
    // Row 2 has 1 left: asking for 2 matches only row 1, so the script aborts and undoes it all.
    let err = run_transaction(&pool, &take(1, 2))
        .await
        .expect_err("short");
    assert!(
        matches!(err, ScriptError::Refused { aborted: true, .. }),
        "{err}"
    );
    let qty: Vec<i64> = sqlx::query_scalar("SELECT qty FROM t ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("qty");
    assert_eq!(
        qty,
        vec![5, 1],
        "row 1 not decremented, row 10 not inserted"
    );
    assert_eq!(in_transaction(&pool).await, 0);

    run_transaction(&pool, &take(1, 1)).await.expect("fits");
    let qty: Vec<i64> = sqlx::query_scalar("SELECT qty FROM t ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("qty");
    assert_eq!(qty, vec![4, 0, 0]);
}

#[tokio::test]
async fn the_mysql_form_is_atomic_too_and_refuses_scripts_that_need_a_compound_statement() {
    let pool = pool().await;
    let insert = |id: i64| {
        let mut s = Script::new();
        s.sql("INSERT INTO t (id, price, at, qty) VALUES (")
            .int(id)
            .sql(", 0, NOW(6), 1)");
        s
    };
    // The multi-statement form (what MySQL gets) commits ...
    let mut two = insert(1);
    two.sql("; INSERT INTO t (id, price, at, qty) VALUES (2, 0, NOW(6), 1)");
    run_transaction_as(&pool, &two, Dialect::MySql)
        .await
        .expect("commits");
    assert_eq!(count(&pool).await, 2);
    // ... and a failing second statement undoes the first.
    let mut dup = insert(3);
    dup.sql("; INSERT INTO t (id, price, at, qty) VALUES (1, 0, NOW(6), 1)");
    let err = run_transaction_as(&pool, &dup, Dialect::MySql)
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, ScriptError::Refused { aborted: false, .. }),
        "{err}"
    );
    assert_eq!(count(&pool).await, 2, "row 3 rolled back");
    assert_eq!(in_transaction(&pool).await, 0);
    // A guarded script is refused before anything is sent.
    let mut guarded = insert(4);
    guarded.sql("; ").abort_unless_row_count(1);
    let err = run_transaction_as(&pool, &guarded, Dialect::MySql)
        .await
        .expect_err("unsupported");
    assert!(
        matches!(err, ScriptError::Unsupported(Dialect::MySql)),
        "{err}"
    );
    assert_eq!(count(&pool).await, 2);
}
