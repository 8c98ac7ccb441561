//! The MySQL/MariaDB connection policy of the services that keep their state there (inventory,
//! order), in one place so both tune their locking the same way, and [`script`]: transactions sent
//! to the server in one round trip.

pub mod script;
pub use script::{Dialect, Script, ScriptError, run_transaction, run_transaction_as};

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, MySqlPool};
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;

/// The MySQL flags of a service, flattened into its `clap::Parser` so every MySQL service has the
/// same names and variables. The URL's example names the service's own database, so its help is
/// set with `mut_arg` on the service's parser (see [`MysqlArgs::open_store`] for the use):
///
/// ```
/// #[derive(clap::Parser)]
/// #[command(mut_arg("database_url", |a| a.help("MySQL URL of the order database")))]
/// struct Args {
///     #[command(flatten)]
///     mysql: shop_runtime::mysql::MysqlArgs,
/// }
/// let args = <Args as clap::Parser>::parse_from(["order", "--database-url", "mysql://h/o"]);
/// assert_eq!(args.mysql.database_max_connections, 16);
/// ```
#[derive(clap::Args, Clone, Debug)]
pub struct MysqlArgs {
    /// MySQL URL, e.g. mysql://shop:shop@127.0.0.1:3306/<service>_service
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Maximum pooled MySQL connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
}

impl MysqlArgs {
    /// [`open_store`] with these flags.
    pub fn open_store(
        &self,
        migrator: &'static sqlx::migrate::Migrator,
        readiness: &Readiness,
        stop: CancellationToken,
    ) -> Result<(MySqlPool, CancellationToken), sqlx::Error> {
        open_store(
            &self.database_url,
            self.database_max_connections,
            migrator,
            readiness,
            stop,
        )
    }
}

/// A pool whose sessions use READ COMMITTED (no gap locks, so stock updates and outbox claims never
/// block inserts) and a 5 s lock wait (a bounded stall instead of the server's 50 s default).
///
/// Connections are not pinged before each use (sqlx's default): on loopback that ping was one
/// extra round trip and wakeup per transaction, a tenth of the database's work per order. A
/// connection the server dropped fails its next statement instead, which the services already
/// report as a 503; idle connections are closed after 5 minutes, well inside the server's
/// `wait_timeout`.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    pool_options(max_connections).connect(url).await
}

fn pool_options(max_connections: u32) -> MySqlPoolOptions {
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

/// Why a service's MySQL store is not ready yet (logged and shown by `/health/ready`).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    /// The server did not answer, refused the credentials, or refused the statement.
    #[error("creating database `{database}` if missing: {source}")]
    CreateDatabase {
        /// The database of `DATABASE_URL`.
        database: String,
        /// What the server (or the network) said.
        #[source]
        source: sqlx::Error,
    },
    /// Only plain identifiers are created (the name goes into SQL text).
    #[error("database name `{0}` is not a plain identifier (letters, digits, '_', '$')")]
    BadName(String),
}

/// MySQL's "access denied" errors: the user may not create databases (an administrator did).
const ACCESS_DENIED: [&str; 2] = ["1044", "1227"];

/// Creates the URL's database unless it exists; a user without the right is not an error here
/// (the migrations then say whether the database is there).
async fn ensure_database(opts: &MySqlConnectOptions) -> Result<(), PrepareError> {
    let Some(database) = opts.get_database().map(str::to_owned) else {
        return Ok(());
    };
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    {
        return Err(PrepareError::BadName(database));
    }
    let err = |source| PrepareError::CreateDatabase {
        database: database.clone(),
        source,
    };
    // Every account may use information_schema; the URL's own database may not exist yet.
    let server = opts.clone().database("information_schema");
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::MySqlConnection::connect_with(&server),
    )
    .await
    .map_err(|_| err(sqlx::Error::PoolTimedOut))?
    .map_err(err)?;
    // The name was checked to be a plain identifier above.
    let created = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
    )))
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e))
            if e.code()
                .is_some_and(|c| ACCESS_DENIED.contains(&c.as_ref())) =>
        {
            tracing::info!(%database, "no right to create databases; expecting it to exist");
            Ok(())
        }
        Err(e) => Err(err(e)),
    }
}

/// `user@host:port/database` of a URL, without the password, for logs and readiness.
fn describe(opts: &MySqlConnectOptions) -> String {
    format!(
        "{}@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("")
    )
}

/// A service's MySQL store, usable from the first moment while the database may not answer yet:
/// the pool connects lazily and [`Readiness::prepare`] creates the database when the account may,
/// then applies `migrator` under [`migrate`]'s lock, retrying until it works; the check `mysql`
/// fails with the reason until then, and is `SELECT 1` afterwards. Returns the pool and a token
/// cancelled once the migrations ran (for background work that needs the tables); an error only
/// for a URL that cannot be parsed.
pub fn open_store(
    url: &str,
    max_connections: u32,
    migrator: &'static sqlx::migrate::Migrator,
    readiness: &Readiness,
    stop: CancellationToken,
) -> Result<(MySqlPool, CancellationToken), sqlx::Error> {
    let opts: MySqlConnectOptions = url.parse()?;
    let pool = pool_options(max_connections).connect_lazy_with(opts.clone());
    let (prepare_pool, check_pool) = (pool.clone(), pool.clone());
    let prepared = readiness.prepare(
        "mysql",
        describe(&opts),
        move || {
            let (opts, pool) = (opts.clone(), prepare_pool.clone());
            async move {
                ensure_database(&opts).await.map_err(|e| e.to_string())?;
                migrate(&pool, migrator).await.map_err(|e| e.to_string())
            }
        },
        move || {
            let pool = check_pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
        stop,
    );
    Ok((pool, prepared))
}
