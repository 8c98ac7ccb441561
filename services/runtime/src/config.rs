//! Command-line and environment configuration shared by every service, so that each binary gets the same
//! flags (`--help`), the same env variable names and the same defaults without repeating them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Output format of the log lines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default; what log collectors want).
    #[default]
    Json,
    /// Human-readable lines for a terminal.
    Text,
}

/// Flags common to every shopkeeper service. Flatten it into the service's own `clap::Parser`:
///
/// ```
/// #[derive(clap::Parser)]
/// struct Args {
///     #[command(flatten)]
///     common: shop_runtime::CommonArgs,
/// }
/// ```
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Address to listen on.
    #[arg(long, env = "SHOP_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port to listen on (default: the service's own port; 0 picks a free one).
    #[arg(long, env = "SHOP_PORT")]
    pub port: Option<u16>,

    /// File the bound port is written to once listening (one line, written whole), so a process
    /// started with port 0 tells its starter which port it got (the tests use it). Off when unset.
    #[arg(long, env = "SHOP_PORT_FILE")]
    pub port_file: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "SHOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Which log lines to write, as a tracing filter, e.g. "info,shop_order=debug" (default:
    /// info, with the HTTP, Kafka and telemetry libraries at warn). A filter that does not parse
    /// stops the service at start, naming it.
    #[arg(long, env = "RUST_LOG")]
    pub log_filter: Option<String>,

    /// Zipkin span endpoint, e.g. http://127.0.0.1:9411/api/v2/spans. Span export is off when unset.
    #[arg(long, env = "SHOP_ZIPKIN_ENDPOINT")]
    pub zipkin_endpoint: Option<String>,

    /// Registry base URLs, comma separated, e.g. http://127.0.0.1:8761/eureka. Registration is off when unset.
    #[arg(long, env = "SHOP_REGISTRY_URL", value_delimiter = ',')]
    pub registry_url: Vec<String>,

    /// Host or IP other services use to reach this instance (the pod IP in Kubernetes).
    #[arg(long, env = "POD_IP", default_value = "127.0.0.1")]
    pub advertise_host: String,

    /// DNS fallback base URL used when the registry is unreachable and nothing is cached;
    /// `{service}` is replaced by the app name, e.g. "http://myshop-{service}.shop.svc:8080".
    #[arg(long, env = "SHOP_DNS_PATTERN")]
    pub dns_pattern: Option<String>,

    /// Seconds between lease renewals sent to the registry. Eureka clients default to 30 s / 90 s,
    /// which leaves a crashed instance in everyone's view for minutes; ours renew every 5 s with a
    /// 15 s lease, so a crash leaves discovery in seconds (a renewal is one tiny PUT).
    #[arg(long, env = "SHOP_LEASE_RENEWAL_SECS", default_value_t = 5)]
    pub lease_renewal_secs: u64,

    /// Seconds after the last renewal at which the registry may evict this instance.
    #[arg(long, env = "SHOP_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// Seconds between refreshes of the local copy of the registry.
    #[arg(long, env = "SHOP_REGISTRY_FETCH_SECS", default_value_t = 5)]
    pub registry_fetch_secs: u64,

    /// Upper bound in seconds for draining in-flight requests at shutdown.
    #[arg(long, env = "SHOP_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Seconds to keep accepting requests after SIGTERM, already unready and deregistered, so
    /// that callers drop this instance first: registry clients at their next refresh
    /// (`SHOP_REGISTRY_FETCH_SECS`), kube-proxy when the pod leaves the Service's endpoints.
    /// Without it a rolling update fails the requests sent in between (0 outside Kubernetes).
    #[arg(long, env = "SHOP_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    pub shutdown_delay_secs: u64,

    /// Instance id announced to the registry (default: "<advertise-host>:<app>:<port>").
    #[arg(long, env = "SHOP_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Extra registry metadata for this instance, as key=value (repeatable or comma separated).
    #[arg(long = "metadata", env = "SHOP_METADATA", value_delimiter = ',')]
    pub metadata: Vec<String>,
}

impl Default for CommonArgs {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: Some(0),
            port_file: None,
            log_format: LogFormat::Json,
            log_filter: None,
            zipkin_endpoint: None,
            registry_url: Vec::new(),
            advertise_host: "127.0.0.1".to_owned(),
            dns_pattern: None,
            lease_renewal_secs: 5,
            lease_duration_secs: 15,
            registry_fetch_secs: 5,
            shutdown_grace_secs: 10,
            shutdown_delay_secs: 0,
            instance_id: None,
            metadata: Vec::new(),
        }
    }
}

impl CommonArgs {
    /// Registry URLs with blanks removed and without a trailing slash.
    pub fn registry_urls(&self) -> Vec<String> {
        self.registry_url
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Lease renewal interval (at least one second).
    pub fn lease_renewal(&self) -> Duration {
        Duration::from_secs(self.lease_renewal_secs.max(1))
    }

    /// Registry refresh interval (at least one second).
    pub fn registry_fetch(&self) -> Duration {
        Duration::from_secs(self.registry_fetch_secs.max(1))
    }

    /// Shutdown drain bound.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How long to keep accepting after SIGTERM.
    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_secs(self.shutdown_delay_secs)
    }

    /// Metadata pairs parsed from `--metadata k=v`; entries without `=` are ignored.
    pub fn metadata_pairs(&self) -> Vec<(String, String)> {
        self.metadata
            .iter()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                let k = k.trim();
                (!k.is_empty()).then(|| (k.to_owned(), v.trim().to_owned()))
            })
            .collect()
    }
}

/// Writes `port` and a newline to `path` through a sibling temporary file renamed into place, so a
/// reader polling for `path` never sees it half written.
pub fn write_port_file(path: &Path, port: u16) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults_and_lists_parse() {
        let a = Args::parse_from([
            "x",
            "--registry-url",
            "http://a:8761/eureka/, http://b:8761/eureka",
            "--metadata",
            "zone=a,bad,k = v",
        ]);
        assert_eq!(a.common.port, None);
        assert_eq!(a.common.port_file, None);
        assert_eq!(a.common.lease_renewal_secs, 5);
        assert_eq!(a.common.lease_duration_secs, 15);
        assert_eq!(a.common.log_format, LogFormat::Json);
        assert_eq!(
            a.common.registry_urls(),
            vec!["http://a:8761/eureka", "http://b:8761/eureka"]
        );
        assert_eq!(
            a.common.metadata_pairs(),
            vec![("zone".into(), "a".into()), ("k".into(), "v".into())]
        );
    }

    #[test]
    fn port_file_holds_the_port_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.port");
        std::fs::write(&path, "1\n").unwrap();
        write_port_file(&path, 43123).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "43123\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "the temporary file is renamed, not left behind"
        );
    }
}
