//! Where the servers of the local stack are, and loud failures when they are not there.
//!
//! Addresses default to the fixed loopback ports `hack/stack.sh up` uses and can be overridden with
//! the `SHOP_TEST_*` variables. Every `require_*` panics with the server's name, its address and the
//! command that starts it, because an integration test must fail, not skip, without its server.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// Panics unless a TCP connection to `addr` succeeds within two seconds.
pub fn require_tcp(name: &str, addr: &str) {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{name}: cannot resolve {addr}: {e}"))
        .collect();
    let ok = resolved
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok());
    assert!(
        ok,
        "{name} is not reachable at {addr}. Start the local stack with `make up` \
         (or `hack/stack.sh up`) and run the tests again."
    );
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// MariaDB server URL without a database, e.g. `mysql://shop:shop@127.0.0.1:3306`.
pub fn mysql_url() -> String {
    let url = env_or("SHOP_TEST_MYSQL_URL", "mysql://shop:shop@127.0.0.1:3306");
    require_tcp("MariaDB", &host_port(&url));
    url
}

/// Creates a new, empty database and returns its URL. The database is left behind for inspection;
/// `make down` wipes the state folder.
pub async fn fresh_mysql_database(prefix: &str) -> String {
    use sqlx::Connection;
    let server = mysql_url();
    let name = crate::fresh_name(&format!("{prefix}_")).replace('-', "_");
    let mut conn = sqlx::MySqlConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {server} refused the connection: {e}"));
    // The name is built from a fixed prefix and a UUID, so it cannot inject SQL.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    format!("{server}/{name}")
}

/// MongoDB wire-protocol server URL.
pub fn mongo_url() -> String {
    let url = env_or(
        "SHOP_TEST_MONGODB_URL",
        "mongodb://127.0.0.1:27017/?directConnection=true",
    );
    require_tcp("MongoDB (FerretDB)", &host_port(&url));
    url
}

/// Kafka bootstrap servers.
pub fn kafka_bootstrap() -> String {
    let b = env_or("SHOP_TEST_KAFKA", "127.0.0.1:9092");
    require_tcp("Kafka", b.split(',').next().unwrap_or(&b));
    b
}

/// Zipkin base URL (no trailing slash).
pub fn zipkin_url() -> String {
    let url = env_or("SHOP_TEST_ZIPKIN_URL", "http://127.0.0.1:9411");
    require_tcp("Zipkin", &host_port(&url));
    url
}

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent). Needed before building a kube
/// client: two providers are compiled in (mongodb brings ring), so rustls cannot choose by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The admin kubeconfig of the local control plane (and the rustls provider a kube client needs).
pub fn kubeconfig_path() -> PathBuf {
    install_crypto_provider();
    let p = std::env::var("SHOP_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".state/kubeconfig"));
    assert!(
        p.exists(),
        "no kubeconfig at {}: the Kubernetes control plane is not up. Start it with `make up` \
         (or `hack/stack.sh up`).",
        p.display()
    );
    require_tcp("kube-apiserver", "127.0.0.1:6443");
    p
}

/// The helm binary built by the stack scripts (linked into `.state/bin`).
pub fn helm_path() -> PathBuf {
    let p = std::env::var("SHOP_TEST_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".state/bin/helm"));
    assert!(
        p.exists(),
        "helm not found at {}: run `make up` (or `hack/stack.sh up`), which builds it.",
        p.display()
    );
    p
}
