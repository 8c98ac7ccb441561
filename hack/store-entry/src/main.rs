//! `shop-store-entry`: the entrypoint of the store images `hack/images.sh` builds for the local
//! node (`shopkeeper.local/store-{mariadb,kafka,zipkin}:dev`).
//!
//! Why it exists: the local node reaches no registry, so a Shop's managed stores cannot run the
//! public images the CRD defaults to (official MariaDB, apache/kafka, openzipkin). The local images
//! are built from what this machine has (Debian's MariaDB, the Kafka and Zipkin jars with a jlink'd
//! JRE), and this binary gives them the same contract: the environment variables the operator sets
//! for the public images (`operator/src/stores.rs`) mean the same here. The images have no shell,
//! so what the public images' shell entrypoints do is done here, then the store is `exec`ed (it
//! becomes PID 1 and gets the pod's signals directly).
//!
//! - `mariadb`: on a data directory without the completion marker, initialises it from scratch
//!   (system tables, root and `MARIADB_USER` passwords, `/docker-entrypoint-initdb.d/*.sql`) with
//!   `mariadbd --bootstrap`, then writes the marker; then runs `mariadbd`. A pod killed mid-init
//!   leaves no marker, so the next start wipes the half-made directory and starts over instead of
//!   serving it.
//! - `kafka`: every `KAFKA_*` variable becomes a `server.properties` key (the apache/kafka rule),
//!   `CLUSTER_ID` formats the log directories once, then `kafka.Kafka` runs.
//! - `zipkin`: `java $JAVA_OPTS -jar zipkin.jar` (Zipkin reads `STORAGE_TYPE` itself).

mod kafka;
mod mariadb;

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Java launcher of the JVM images (a jlink'd runtime).
const JAVA: &str = "/opt/java/bin/java";
/// Zipkin's executable jar in the zipkin image.
const ZIPKIN_JAR: &str = "/opt/zipkin/zipkin.jar";

/// `--help`: every environment variable each store reads.
const HELP: &str = "\
shop-store-entry: entrypoint of the local store images; prepares the store from the environment, then
runs it (exec). Usage: shop-store-entry mariadb|kafka|zipkin

mariadb   MARIADB_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD)  root's password; needed on a new data directory
          MARIADB_USER, MARIADB_PASSWORD (or MYSQL_*)     an account created with the data directory
          MARIADB_DATABASE (or MYSQL_DATABASE)            a database created with it (granted to the user)
          MARIADB_AUTO_UPGRADE                            accepted; the image's version is fixed, nothing to upgrade
          SHOP_STORE_DATA_DIR    data directory (default /var/lib/mysql)
          SHOP_STORE_INITDB_DIR  *.sql run once on a new data directory (default /docker-entrypoint-initdb.d)
          SHOP_STORE_PORT        port (default 3306)
kafka     CLUSTER_ID             KRaft cluster id; formats the log directories once (required)
          KAFKA_<NAME>           server.properties key <name>: lower case, ___ -> '-', __ -> '_', _ -> '.'
                                 (KAFKA_PROCESS_ROLES, KAFKA_NODE_ID, KAFKA_LISTENERS, KAFKA_LOG_DIRS required)
          KAFKA_HEAP_OPTS        JVM heap (default -Xms256m -Xmx512m)
          KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS  more JVM options
zipkin    JAVA_OPTS              JVM options (default -Xms128m -Xmx256m); Zipkin reads STORAGE_TYPE etc. itself
";

fn main() {
    let store = std::env::args().nth(1).unwrap_or_default();
    if matches!(store.as_str(), "--help" | "-h" | "help") {
        print!("{HELP}");
        return;
    }
    let result = match store.as_str() {
        "mariadb" => mariadb::run(),
        "kafka" => kafka::run(),
        "zipkin" => zipkin(),
        other => Err(anyhow::anyhow!(
            "unknown store {other:?}: usage: shop-store-entry mariadb|kafka|zipkin"
        )),
    };
    if let Err(e) = result {
        eprintln!("shop-store-entry {store}: {e:#}");
        std::process::exit(1);
    }
}

/// Replaces this process with `cmd`; returns only when that fails.
pub(crate) fn exec(mut cmd: Command) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let err = cmd.exec();
    bail!("cannot start {program}: {err}")
}

/// Whitespace-separated JVM options of an environment variable (`JAVA_OPTS`, `KAFKA_HEAP_OPTS`).
pub(crate) fn jvm_opts(name: &str, default: &str) -> Vec<String> {
    split_opts(std::env::var(name).ok().as_deref().unwrap_or(default))
}

fn split_opts(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn zipkin() -> Result<()> {
    let mut cmd = Command::new(JAVA);
    cmd.args(jvm_opts("JAVA_OPTS", "-Xms128m -Xmx256m")).args([
        "-XX:+UseSerialGC",
        "-Djava.io.tmpdir=/tmp",
        "-jar",
        ZIPKIN_JAR,
    ]);
    exec(cmd).context("zipkin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jvm_options_split_on_any_whitespace() {
        assert_eq!(
            split_opts("  -Xms128m\t-Xmx256m \n"),
            ["-Xms128m", "-Xmx256m"]
        );
        assert!(split_opts("").is_empty());
    }
}
