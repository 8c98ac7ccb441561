//! Schema migrations when several replicas start at once, against the real MariaDB: every
//! instance comes up, and each migration is applied exactly once (Deployments with two order
//! replicas used to lose one to "migration 2 is partially applied").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shop_runtime::mysql::{connect_pool, migrate};
use shop_testkit::fresh_mysql_database;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./tests/fixtures/migrate");

#[tokio::test]
async fn eight_instances_migrating_one_database_at_once_all_start() {
    let url = fresh_mysql_database("migrate").await;
    let mut instances = Vec::new();
    for _ in 0..8 {
        // Each instance has its own pool, as separate pods do.
        let pool = connect_pool(&url, 2).await.expect("pool");
        instances.push(tokio::spawn(async move {
            let result = migrate(&pool, &MIGRATOR).await;
            (result.map_err(|e| e.to_string()), pool)
        }));
    }
    let mut pools = Vec::new();
    for i in instances {
        let (result, pool) = i.await.unwrap();
        assert_eq!(result, Ok(()), "an instance failed to migrate");
        pools.push(pool);
    }
    let rows: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pools[0])
            .await
            .unwrap();
    assert_eq!(rows, vec![(1, true), (2, true)]);
    // The schema is the one both migrations describe.
    sqlx::query("INSERT INTO items (id, sku, qty, reserved) VALUES (1, 'a', 1, 0)")
        .execute(&pools[0])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_start_finds_nothing_to_do() {
    let url = fresh_mysql_database("migrate").await;
    let pool = connect_pool(&url, 1).await.unwrap();
    migrate(&pool, &MIGRATOR).await.unwrap();
    migrate(&pool, &MIGRATOR).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}
