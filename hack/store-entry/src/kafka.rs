//! `shop-store-entry kafka`: apache/kafka's environment contract for one KRaft broker.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{JAVA, exec, jvm_opts};

/// Kafka's jars in the image.
const LIBS: &str = "/opt/kafka/libs/*";
/// Where the generated configuration goes (the root filesystem is the image's; /tmp is writable).
const CONFIG_DIR: &str = "/tmp/kafka";
/// `KAFKA_*` variables that configure the JVM or the scripts, not the broker (apache/kafka's list).
const NOT_PROPERTIES: &[&str] = &[
    "KAFKA_VERSION",
    "KAFKA_HOME",
    "KAFKA_DEBUG",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_HEAP_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_LOG",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
];
/// Broker log to stdout: the kubelet keeps it (`kubectl logs`).
const LOG4J2: &str = "rootLogger.level=WARN
rootLogger.appenderRef.c.ref=C
appender.c.type=Console
appender.c.name=C
appender.c.layout.type=PatternLayout
appender.c.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.server.name=org.apache.kafka.server
logger.server.level=INFO
";

/// The property a `KAFKA_*` variable sets: without the prefix, lower case, `___` → `-`,
/// `__` → `_`, `_` → `.` (so `KAFKA_LOG_DIRS` is `log.dirs`). `None` for other variables and
/// for JVM options.
pub fn property_name(var: &str) -> Option<String> {
    let rest = var.strip_prefix("KAFKA_")?;
    if rest.is_empty() || NOT_PROPERTIES.contains(&var) {
        return None;
    }
    Some(
        rest.to_ascii_lowercase()
            .replace("___", "\u{1}")
            .replace("__", "\u{2}")
            .replace('_', ".")
            .replace('\u{1}', "-")
            .replace('\u{2}', "_"),
    )
}

/// `server.properties` of the environment, in key order.
pub fn properties(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(k, v)| property_name(&k).map(|p| (p, v)))
        .collect()
}

/// The properties file's text (values escaped as java.util.Properties reads them).
pub fn render(props: &BTreeMap<String, String>) -> String {
    props
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.replace('\\', "\\\\").replace('\n', "\\n")))
        .collect()
}

pub fn run() -> Result<()> {
    let cluster_id = std::env::var("CLUSTER_ID")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .context("CLUSTER_ID is not set: the KRaft log directories are formatted with it")?;
    let props = properties(std::env::vars());
    for required in ["process.roles", "node.id", "listeners", "log.dirs"] {
        if !props.contains_key(required) {
            bail!(
                "{required} is not configured: set KAFKA_{}",
                required.to_ascii_uppercase().replace('.', "_")
            );
        }
    }
    for dir in props["log.dirs"].split(',').filter(|d| !d.is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating log directory {dir}"))?;
    }
    std::fs::create_dir_all(CONFIG_DIR).with_context(|| format!("creating {CONFIG_DIR}"))?;
    let config = Path::new(CONFIG_DIR).join("server.properties");
    std::fs::write(&config, render(&props))
        .with_context(|| format!("writing {}", config.display()))?;
    let log4j = Path::new(CONFIG_DIR).join("log4j2.properties");
    std::fs::write(&log4j, LOG4J2).with_context(|| format!("writing {}", log4j.display()))?;
    let log4j_opt = format!("-Dlog4j2.configurationFile={}", log4j.display());

    // Formats each log directory once; an already formatted one is left as it is.
    let out = Command::new(JAVA)
        .args([
            "-Xmx128m",
            &log4j_opt,
            "-cp",
            LIBS,
            "kafka.tools.StorageTool",
            "format",
        ])
        .args(["-t", &cluster_id, "-c"])
        .arg(&config)
        .arg("--ignore-formatted")
        .output()
        .context("running kafka.tools.StorageTool format")?;
    if !out.status.success() {
        bail!(
            "formatting the log directories failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut cmd = Command::new(JAVA);
    cmd.args(jvm_opts("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m"))
        .args(jvm_opts(
            "KAFKA_JVM_PERFORMANCE_OPTS",
            "-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true",
        ))
        .args(jvm_opts("KAFKA_OPTS", ""))
        .arg(&log4j_opt)
        .args(["-Djava.io.tmpdir=/tmp", "-cp", LIBS, "kafka.Kafka"])
        .arg(&config);
    exec(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_become_properties_by_the_apache_kafka_rule() {
        assert_eq!(property_name("KAFKA_LOG_DIRS").as_deref(), Some("log.dirs"));
        assert_eq!(
            property_name("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP").as_deref(),
            Some("listener.security.protocol.map")
        );
        assert_eq!(
            property_name("KAFKA_LISTENER_NAME_PODS___X__Y").as_deref(),
            Some("listener.name.pods-x_y")
        );
        assert_eq!(property_name("KAFKA_HEAP_OPTS"), None);
        assert_eq!(property_name("KAFKA_OPTS"), None);
        assert_eq!(property_name("CLUSTER_ID"), None);
        assert_eq!(property_name("KAFKA_"), None);
    }

    #[test]
    fn the_operators_environment_gives_a_complete_broker_configuration() {
        let env = [
            ("KAFKA_NODE_ID", "1"),
            ("KAFKA_PROCESS_ROLES", "broker,controller"),
            ("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093"),
            ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093"),
            ("KAFKA_HEAP_OPTS", "-Xmx512m"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let props = properties(env);
        assert_eq!(props.len(), 4, "{props:?}");
        assert_eq!(props["controller.quorum.voters"], "1@localhost:9093");
        let text = render(&props);
        assert!(text.contains("process.roles=broker,controller\n"), "{text}");
        assert!(!text.contains("Xmx"), "{text}");
    }
}
