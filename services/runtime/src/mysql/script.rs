//! Transactions sent to MariaDB as ONE text query, so a transaction costs one round trip instead of
//! one per statement plus `BEGIN` and `COMMIT`.
//!
//! Why: on loopback a round trip is cheap in time but not in CPU. Every statement wakes a server
//! thread and a client task and costs a send and a receive on each side; with two shared cores the
//! kernel's TCP and context-switch work per statement was a large share of MariaDB's and the
//! services' CPU per order (profile in docs/benchmarks.md). A five-statement transaction also held its row locks across five round
//! trips; sent as one script it holds them for the time the server needs to run it.
//!
//! Safety: a [`Script`] is built only from `&'static str` SQL fragments (written in our source) and
//! typed values that are rendered so they cannot end a literal: strings as `_utf8mb4 X'…'` hex
//! literals, integers and decimals by their `Display` (digits, sign and point only), timestamps in a
//! fixed format. Nothing a client sends can become SQL text.
//!
//! Atomicity: the script runs as one compound statement, `BEGIN NOT ATOMIC START TRANSACTION; …;
//! COMMIT; END`, so the server answers the whole transaction with ONE packet (a plain multi-statement
//! query answers, and flushes, once per statement: on loopback each of those sends ran the client's
//! TCP receive path and wake-up, 12 % of the machine's CPU in a perf profile). The server stops at the
//! first failing statement and leaves the transaction open; [`run_transaction`] then rolls it back,
//! and a connection whose state is unknown (an I/O error, a failed rollback, a cancelled future) is
//! closed instead of going back to the pool, which makes the server roll back. A script may abort
//! itself with `SIGNAL` (see [`Script::abort_unless_row_count`]).
//!
//! On MySQL, which has no anonymous compound statements, the same script runs as a plain
//! multi-statement query (see [`Dialect`]); scripts that need `IF … SIGNAL` are refused there and
//! their callers take their exact multi-round-trip path.
//!
//! Values of `TIMESTAMP` columns are written in UTC: sqlx sets every session's `time_zone` to
//! `+00:00`, the same assumption its own chrono binding makes.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, MySql, MySqlPool};

/// Failures of [`run_transaction`].
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The server refused a statement (the transaction was rolled back). `aborted` is true when
    /// the script's own `SIGNAL` stopped it ([`Script::abort_unless_row_count`]).
    #[error("database refused the transaction: {source}")]
    Refused {
        /// The server's error.
        source: sqlx::Error,
        /// The script aborted itself.
        aborted: bool,
    },
    /// No answer from the server (pool timeout, I/O): the outcome is unknown.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The script needs a compound statement (`IF … SIGNAL`) and the server is not MariaDB;
    /// nothing was sent.
    #[error("this script needs MariaDB's compound statements; the server is {0:?}")]
    Unsupported(Dialect),
}

impl ScriptError {
    /// Converts into the underlying sqlx error.
    pub fn into_sqlx(self) -> sqlx::Error {
        match self {
            ScriptError::Refused { source, .. } => source,
            ScriptError::Unavailable(e) => e,
            ScriptError::Unsupported(d) => {
                sqlx::Error::Protocol(format!("script needs MariaDB, server is {d:?}"))
            }
        }
    }
}

/// The SQLSTATE and message of [`Script::abort_unless_row_count`].
const ABORT_SQLSTATE: &str = "45000";
const ABORT_MESSAGE: &str = "shop: script aborted";

/// SQL text built from trusted fragments and safely rendered values. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Script {
    sql: String,
    needs_compound: bool,
}

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends trusted SQL text (only `'static` strings: SQL written in the source).
    pub fn sql(&mut self, fragment: &'static str) -> &mut Self {
        self.sql.push_str(fragment);
        self
    }

    /// Appends a string value as a `_utf8mb4 X'…'` literal.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.sql.reserve(12 + value.len() * 2);
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        self.sql.push_str("_utf8mb4 X'");
        for b in value.bytes() {
            self.sql.push(char::from(HEX[usize::from(b >> 4)]));
            self.sql.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        self.sql.push('\'');
        self
    }

    /// Appends a string value, or `NULL`.
    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(v),
            None => self.sql("NULL"),
        }
    }

    /// Appends an integer.
    pub fn int(&mut self, value: i64) -> &mut Self {
        let _ = write!(self.sql, "{value}");
        self
    }

    /// Appends a decimal (plain notation: sign, digits and a point).
    pub fn decimal(&mut self, value: Decimal) -> &mut Self {
        let _ = write!(self.sql, "{value}");
        self
    }

    /// Appends a timestamp as `'YYYY-MM-DD hh:mm:ss.ffffff'` (UTC; see the module docs).
    pub fn timestamp(&mut self, value: DateTime<Utc>) -> &mut Self {
        let _ = write!(self.sql, "'{}'", value.format("%Y-%m-%d %H:%M:%S%.6f"));
        self
    }

    /// Appends one item per element of `items`, separated by `sep`.
    pub fn join<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        sep: &'static str,
        mut item: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        for (i, t) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(sep);
            }
            item(self, t);
        }
        self
    }

    /// Appends a statement that aborts the transaction unless the previous statement affected
    /// (matched) exactly `expected` rows: the guard of an optimistic `UPDATE … WHERE <condition>`.
    /// An `IF … SIGNAL` statement, valid inside the compound statement [`run_transaction`] sends;
    /// it reports the abort as [`ScriptError::Refused`] with `aborted: true`.
    pub fn abort_unless_row_count(&mut self, expected: u64) -> &mut Self {
        self.needs_compound = true;
        let _ = write!(
            self.sql,
            "IF ROW_COUNT() <> {expected} THEN SIGNAL SQLSTATE '{ABORT_SQLSTATE}' \
             SET MESSAGE_TEXT = '{ABORT_MESSAGE}'; END IF"
        );
        self
    }

    /// The SQL text.
    pub fn as_str(&self) -> &str {
        &self.sql
    }
}

/// A pooled connection that is closed, not reused, unless its transaction was finished.
struct Guard {
    conn: PoolConnection<MySql>,
    clean: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}

fn is_abort(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.code().as_deref() == Some(ABORT_SQLSTATE) && d.message() == ABORT_MESSAGE
    })
}

/// Which server answers: MariaDB runs scripts as one compound statement; MySQL has no anonymous
/// compound statements (`BEGIN NOT ATOMIC`), so there a script is a plain multi-statement query
/// (one round trip still, one answer packet per statement) and scripts that need `IF … SIGNAL`
/// are refused with [`ScriptError::Unsupported`] before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MariaDB (the local stack's server).
    MariaDb,
    /// MySQL or another server speaking its protocol.
    MySql,
}

/// The server kind, asked once per process (`SELECT VERSION()`): a process talks to one server.
static DIALECT: tokio::sync::OnceCell<Dialect> = tokio::sync::OnceCell::const_new();

async fn dialect(pool: &MySqlPool) -> Result<Dialect, sqlx::Error> {
    DIALECT
        .get_or_try_init(|| async {
            let version: String = sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(pool)
                .await?;
            Ok(if version.contains("MariaDB") {
                Dialect::MariaDb
            } else {
                Dialect::MySql
            })
        })
        .await
        .copied()
}

/// Runs `script` (`;`-separated statements) as one transaction in one round trip:
/// `BEGIN NOT ATOMIC START TRANSACTION; <script>; COMMIT; END` on MariaDB,
/// `START TRANSACTION; <script>; COMMIT` on MySQL. All or nothing; see the module docs.
pub async fn run_transaction(pool: &MySqlPool, script: &Script) -> Result<(), ScriptError> {
    let d = dialect(pool).await.map_err(ScriptError::Unavailable)?;
    run_transaction_as(pool, script, d).await
}

/// [`run_transaction`] for a given dialect (tests run the MySQL form against MariaDB, which
/// accepts it too).
pub async fn run_transaction_as(
    pool: &MySqlPool,
    script: &Script,
    dialect: Dialect,
) -> Result<(), ScriptError> {
    let text = match dialect {
        Dialect::MariaDb => format!(
            "BEGIN NOT ATOMIC START TRANSACTION; {}; COMMIT; END",
            script.as_str()
        ),
        Dialect::MySql if script.needs_compound => {
            return Err(ScriptError::Unsupported(dialect));
        }
        Dialect::MySql => format!("START TRANSACTION; {}; COMMIT", script.as_str()),
    };
    let conn = pool.acquire().await.map_err(ScriptError::Unavailable)?;
    let mut guard = Guard { conn, clean: false };
    match guard.conn.execute(sqlx::raw_sql(AssertSqlSafe(text))).await {
        Ok(_) => {
            guard.clean = true;
            Ok(())
        }
        Err(e) if e.as_database_error().is_some() => {
            // The server stopped at the failing statement with the transaction open.
            if guard.conn.execute("ROLLBACK").await.is_ok() {
                guard.clean = true;
            }
            let aborted = is_abort(&e);
            Err(ScriptError::Refused { source: e, aborted })
        }
        Err(e) => Err(ScriptError::Unavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_hex_literals_so_quotes_cannot_end_them() {
        let mut s = Script::new();
        s.sql("SELECT ")
            .str("a'; DROP TABLE x; --")
            .sql(", ")
            .opt_str(None);
        assert_eq!(
            s.as_str(),
            "SELECT _utf8mb4 X'61273B2044524F50205441424C4520783B202D2D', NULL"
        );
        assert!(!s.as_str()[7..].contains(';'));
    }

    #[test]
    fn numbers_and_timestamps_render_plainly() {
        let mut s = Script::new();
        let ts = DateTime::parse_from_rfc3339("2026-11-23T17:01:02.000345Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        s.int(-42)
            .sql(",")
            .decimal(Decimal::new(-1999, 2))
            .sql(",")
            .timestamp(ts);
        assert_eq!(s.as_str(), "-42,-19.99,'2026-11-23 17:01:02.000345'");
    }

    #[test]
    fn join_separates_items() {
        let mut s = Script::new();
        s.sql("(").join([1, 2, 3], ", ", |s, i| {
            s.int(i);
        });
        s.sql(")");
        assert_eq!(s.as_str(), "(1, 2, 3)");
    }
}
