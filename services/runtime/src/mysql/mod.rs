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
