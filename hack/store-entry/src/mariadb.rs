//! `shop-store-entry mariadb`: the official MariaDB image's environment contract, on Debian's
//! `mariadbd`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::exec;

const MARIADBD: &str = "/usr/sbin/mariadbd";
/// Debian's share directory: error messages, character sets and the bootstrap SQL.
const SHARE: &str = "/usr/share/mysql";
/// The system tables, as `mariadb-install-db` feeds them to `mariadbd --bootstrap` (without the
/// help tables and the test database, which a shop never reads).
const SYSTEM_SQL: &[&str] = &[
    "mysql_system_tables.sql",
    "mysql_performance_tables.sql",
    "mysql_system_tables_data.sql",
    "maria_add_gis_sp_bootstrap.sql",
    "mysql_sys_schema.sql",
];
/// Written last by a completed initialisation.
const MARKER: &str = ".shopkeeper-initialized";

/// Where the data and the init scripts are: the image's paths, which a test on the host points
/// elsewhere (`SHOP_STORE_DATA_DIR`, `SHOP_STORE_INITDB_DIR`).
struct Paths {
    data: PathBuf,
    initdb: PathBuf,
}

impl Paths {
    fn from_env() -> Self {
        let dir = |var: &str, default: &str| {
            PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
        };
        Self {
            data: dir("SHOP_STORE_DATA_DIR", "/var/lib/mysql"),
            initdb: dir("SHOP_STORE_INITDB_DIR", "/docker-entrypoint-initdb.d"),
        }
    }
}

/// Accounts and databases to create on a new data directory (`MARIADB_*`, or the `MYSQL_*`
/// names the official image also reads).
#[derive(Debug, PartialEq)]
pub struct Setup {
    pub root_password: String,
    pub database: Option<String>,
    pub user: Option<(String, String)>,
}

impl Setup {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| {
            get(&format!("MARIADB_{name}"))
                .or_else(|| get(&format!("MYSQL_{name}")))
                .filter(|v| !v.is_empty())
        };
        let root_password = var("ROOT_PASSWORD")
            .context("MARIADB_ROOT_PASSWORD is not set: a new data directory needs it")?;
        let user = match (var("USER"), var("PASSWORD")) {
            (Some(u), Some(p)) if u != "root" => Some((u, p)),
            (Some(u), Some(_)) => bail!("MARIADB_USER={u} is not allowed: root always exists"),
            (Some(_), None) => bail!("MARIADB_USER is set without MARIADB_PASSWORD"),
            (None, Some(_)) => bail!("MARIADB_PASSWORD is set without MARIADB_USER"),
            (None, None) => None,
        };
        Ok(Self {
            root_password,
            database: var("DATABASE"),
            user,
        })
    }

    /// The statements after the system tables: only root (local and, with its password, remote)
    /// and `mariadb.sys` are kept of the accounts the system tables create (root@127.0.0.1,
    /// root@::1 and root@<build host> have no password), then the database and the user.
    pub fn sql(&self) -> String {
        let pw = quote(&self.root_password);
        let mut sql = format!(
            "FLUSH PRIVILEGES;\n\
             DELETE FROM mysql.global_priv WHERE User NOT IN ('mariadb.sys', 'root') OR Host != 'localhost';\n\
             DELETE FROM mysql.proxies_priv WHERE Host != 'localhost';\n\
             FLUSH PRIVILEGES;\n\
             ALTER USER 'root'@'localhost' IDENTIFIED BY {pw};\n\
             CREATE USER 'root'@'%' IDENTIFIED BY {pw};\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;\n"
        );
        if let Some(db) = &self.database {
            sql += &format!("CREATE DATABASE IF NOT EXISTS {};\n", ident(db));
        }
        if let Some((user, password)) = &self.user {
            sql += &format!(
                "CREATE USER {}@'%' IDENTIFIED BY {};\n",
                quote(user),
                quote(password)
            );
            if let Some(db) = &self.database {
                sql += &format!("GRANT ALL ON {}.* TO {}@'%';\n", ident(db), quote(user));
            }
        }
        sql + "FLUSH PRIVILEGES;\n"
    }
}

/// A SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A SQL identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Whether the data directory holds a completed initialisation.
pub fn initialised(data: &Path) -> bool {
    data.join(MARKER).is_file()
}

/// Everything in `data` but `lost+found` (a file system's, on a volume's root).
fn wipe(data: &Path) -> Result<()> {
    for entry in std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))? {
        let entry = entry?;
        if entry.file_name() == "lost+found" {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The init scripts in name order (`*.sql` only: the image has no shell for `*.sh`).
fn init_scripts(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    files.sort();
    let mut sql = String::new();
    for f in files {
        sql += &std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        sql += "\n";
    }
    Ok(sql)
}

fn initialise(paths: &Paths, setup: &Setup) -> Result<()> {
    eprintln!(
        "shop-store-entry: initialising {} (no completed initialisation found)",
        paths.data.display()
    );
    wipe(&paths.data)?;
    let mut sql = String::from(
        "create database if not exists mysql;\nuse mysql;\nSET @auth_root_socket=NULL;\n",
    );
    for file in SYSTEM_SQL {
        let path = Path::new(SHARE).join(file);
        sql += &std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        sql += "\n";
    }
    sql += &setup.sql();
    sql += &init_scripts(&paths.initdb)?;

    let mut child = Command::new(MARIADBD)
        .arg("--no-defaults")
        .arg("--bootstrap")
        .arg(format!("--datadir={}", paths.data.display()))
        .args([
            "--basedir=/usr",
            "--log-warnings=0",
            "--enforce-storage-engine=",
        ])
        .args(["--max_allowed_packet=8M", "--net_buffer_length=16K"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting mariadbd --bootstrap")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(sql.as_bytes())
            .context("feeding the bootstrap SQL to mariadbd")?;
    }
    let status = child.wait().context("waiting for mariadbd --bootstrap")?;
    if !status.success() {
        bail!(
            "mariadbd --bootstrap failed ({status}); the data directory will be initialised again at the next start"
        );
    }
    let marker = paths.data.join(MARKER);
    let file =
        std::fs::File::create(&marker).with_context(|| format!("writing {}", marker.display()))?;
    file.sync_all()?;
    eprintln!("shop-store-entry: {} initialised", paths.data.display());
    Ok(())
}

pub fn run() -> Result<()> {
    let paths = Paths::from_env();
    if !initialised(&paths.data) {
        let setup = Setup::from_vars(|k| std::env::var(k).ok())?;
        initialise(&paths, &setup)?;
    }
    // MARIADB_AUTO_UPGRADE: the image's server version is fixed, so there is never a newer
    // version's system tables to bring this data directory to.
    let mut cmd = Command::new(MARIADBD);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", paths.data.display()))
        .args(["--basedir=/usr", "--port=3306", "--bind-address=0.0.0.0"])
        .args(["--socket=/tmp/mysqld.sock", "--pid-file=/tmp/mysqld.pid"])
        .args(["--skip-name-resolve", "--character-set-server=utf8mb4"])
        .args([
            "--collation-server=utf8mb4_unicode_ci",
            "--max-connections=500",
        ]);
    if let Ok(port) = std::env::var("SHOP_STORE_PORT") {
        cmd.arg(format!("--port={port}"));
    }
    exec(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_operators_environment_creates_root_and_the_shop_user() {
        let setup = Setup::from_vars(vars(&[
            ("MARIADB_ROOT_PASSWORD", "r'oot"),
            ("MARIADB_USER", "shop"),
            ("MARIADB_PASSWORD", "pw"),
        ]))
        .unwrap();
        let sql = setup.sql();
        assert!(
            sql.contains("ALTER USER 'root'@'localhost' IDENTIFIED BY 'r\\'oot';"),
            "{sql}"
        );
        assert!(
            sql.contains("CREATE USER 'shop'@'%' IDENTIFIED BY 'pw';"),
            "{sql}"
        );
        assert!(
            sql.starts_with("FLUSH PRIVILEGES;"),
            "account statements need the grant tables"
        );
    }

    #[test]
    fn missing_or_half_given_credentials_are_refused_naming_the_variable() {
        let err = Setup::from_vars(vars(&[])).unwrap_err().to_string();
        assert!(err.contains("MARIADB_ROOT_PASSWORD"), "{err}");
        let err = Setup::from_vars(vars(&[
            ("MARIADB_ROOT_PASSWORD", "x"),
            ("MARIADB_USER", "u"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("MARIADB_PASSWORD"), "{err}");
        // The official image's MYSQL_* names work too.
        assert!(Setup::from_vars(vars(&[("MYSQL_ROOT_PASSWORD", "x")])).is_ok());
    }

    #[test]
    fn a_directory_without_the_marker_is_wiped_and_lost_and_found_is_kept() {
        let dir = std::env::temp_dir().join(format!("store-entry-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("mysql")).unwrap();
        std::fs::create_dir_all(dir.join("lost+found")).unwrap();
        std::fs::write(dir.join("ibdata1"), b"half").unwrap();
        assert!(
            !initialised(&dir),
            "a half-made directory is not initialised"
        );
        wipe(&dir).unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["lost+found"]);
        std::fs::write(dir.join(MARKER), b"").unwrap();
        assert!(initialised(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
