//! The MySQL/MariaDB connection policy of the services that keep their state there (inventory,
//! order), in one place so both tune their locking the same way, and [`script`]: transactions sent
//! to the server in one round trip.

pub mod script;
pub use script::{Dialect, Script, ScriptError, run_transaction, run_transaction_as};

use std::time::Duration;

use sqlx::MySqlPool;
use sqlx::mysql::MySqlPoolOptions;

/// A pool whose sessions use READ COMMITTED (no gap locks, so stock updates and outbox claims never
/// block inserts) and a 5 s lock wait (a bounded stall instead of the server's 50 s default).
///
/// Connections are not pinged before each use (sqlx's default): on loopback that ping was one
/// extra round trip and wakeup per transaction, a tenth of the database's work per order. A
/// connection the server dropped fails its next statement instead, which the services already
/// report as a 503; idle connections are closed after 5 minutes, well inside the server's
/// `wait_timeout`.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(300))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("SET SESSION innodb_lock_wait_timeout = 5")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Why a service could not bring its schema up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No connection for the migration.
    #[error("no connection to run the migrations on: {0}")]
    Connect(#[source] sqlx::Error),
    /// Another instance held the migration lock for the whole wait.
    #[error("another instance held the migration lock of database `{database}` for {secs} s")]
    LockTimeout {
        /// The database being migrated.
        database: String,
        /// How long this instance waited.
        secs: u64,
    },
    /// The lock query failed.
    #[error("taking the migration lock: {0}")]
    Lock(#[source] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How long [`migrate`] waits for another instance's migration to finish.
pub const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Applies `migrator`'s pending migrations with at most one instance of the service migrating a
/// database at a time.
///
/// Why not `Migrator::run` alone: sqlx serialises migrators with `GET_LOCK(name, -1)` and ignores
/// the answer. MySQL reads -1 as "wait forever"; MariaDB (10.11) answers NULL at once and grants
/// nothing, so two replicas starting together (every Deployment with `replicas: 2`) ran the same
/// DDL concurrently, and as MySQL DDL commits implicitly one of them died on "migration 2 is
/// partially applied" (seen on the real node). Here the lock is taken with a finite timeout,
/// checked, and held on the connection the migrations run on; sqlx's own lock call stays, harmless.
pub async fn migrate(
    pool: &MySqlPool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await.map_err(MigrateError::Connect)?;
    let database: String = sqlx::query_scalar("SELECT COALESCE(DATABASE(), '')")
        .fetch_one(&mut *conn)
        .await
        .map_err(MigrateError::Lock)?;
    // Lock names are at most 64 characters; database names are too.
    let name: String = format!("shopkeeper-migrate:{database}")
        .chars()
        .take(64)
        .collect();
    let started = std::time::Instant::now();
    loop {
        // 1: granted; 0: timed out (someone else is migrating); NULL: an error.
        let granted: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 5)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .map_err(MigrateError::Lock)?;
        match granted {
            Some(1) => break,
            Some(_) if started.elapsed() < MIGRATION_LOCK_WAIT => {
                tracing::info!(%database, "waiting for another instance's migration to finish");
            }
            Some(_) => {
                return Err(MigrateError::LockTimeout {
                    database,
                    secs: started.elapsed().as_secs(),
                });
            }
            None => {
                return Err(MigrateError::Lock(sqlx::Error::Protocol(format!(
                    "GET_LOCK('{name}') returned NULL"
                ))));
            }
        }
    }
    // `run_direct` is what `run` calls; calling it on the connection directly keeps this future
    // `Send` (sqlx's `Acquire` lifetimes make `run(&mut *conn)` unusable from a spawned task).
    let result = migrator.run_direct(None, &mut *conn, false).await;
    // The lock also goes with the connection if this fails.
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&name)
        .execute(&mut *conn)
        .await;
    Ok(result?)
}
