//! Schema migrations against the real MariaDB: several replicas starting at once all come up and
//! each migration is applied exactly once (Deployments with two order replicas used to lose one to
//! "migration 2 is partially applied"); a store that is not there yet keeps the service unready,
//! then is created and migrated when it answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shop_runtime::Readiness;
use shop_runtime::mysql::{connect_pool, migrate, open_store};
use shop_testkit::fresh_mysql_database;
use tokio_util::sync::CancellationToken;

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

#[tokio::test]
async fn a_store_that_is_not_there_yet_keeps_the_service_unready_then_is_created_and_migrated() {
    let server = shop_testkit::mysql_url(); // the real MariaDB; also fails loudly when it is down
    assert!(server.ends_with("@127.0.0.1:3306"), "{server}");
    // Where MariaDB will appear later (a link started after the service): chosen up front.
    let port = shop_testkit::free_port();
    let database = shop_testkit::fresh_name("late_");
    let url = format!("mysql://shop:shop@127.0.0.1:{port}/{database}");
    let readiness = Readiness::default();
    let stop = CancellationToken::new();
    let (pool, migrated) =
        open_store(&url, 2, &MIGRATOR, &readiness, stop.clone()).expect("a valid URL");

    // Nothing answers at that address: unready, and the reason names the store and its address.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = readiness.check().await;
    assert!(!report.ready);
    assert!(!migrated.is_cancelled(), "no tables yet");
    let reason = report.body["checks"]["mysql"]["error"].to_string();
    assert!(
        reason.contains(&format!("127.0.0.1:{port}/{database}")) && !reason.contains("shop:shop"),
        "the reason names the store, not the password: {reason}"
    );

    // The server appears: the database is created, migrated, and the check turns ready.
    let forwarder = shop_testkit::lossy_link::LossyLink::start_on(port, "127.0.0.1:3306").await;
    let ready = shop_testkit::wait_until(Duration::from_secs(20), || async {
        readiness.check().await.ready
    })
    .await;
    assert!(ready, "{}", readiness.check().await.body);
    assert!(
        migrated.is_cancelled(),
        "ready, but background work waiting for the tables was not let go"
    );
    let rows: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(1, true), (2, true)]);
    stop.cancel();
    drop(forwarder);
}

#[tokio::test]
async fn a_database_name_that_is_not_a_plain_identifier_is_refused_not_created() {
    let readiness = Readiness::default();
    let url = format!(
        "{}/bad%60name",
        shop_testkit::mysql_url() // mysql://shop:shop@127.0.0.1:3306
    );
    let _store = open_store(&url, 1, &MIGRATOR, &readiness, CancellationToken::new()).unwrap();
    let reason = shop_testkit::wait_until(Duration::from_secs(5), || async {
        readiness.check().await.body["checks"]["mysql"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a plain identifier"))
    })
    .await;
    assert!(reason, "{}", readiness.check().await.body);
}
