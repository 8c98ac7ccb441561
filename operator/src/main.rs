//! The `shop-operator` binary: `run` (the default) reconciles Shops; `crd` prints the CRD.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shop_operator::controller::ReconcileSettings;
use shop_operator::lease::LeaseSettings;
use shop_operator::metrics::Metrics;
use shop_operator::operator::{self, Settings};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "shop-operator",
    version,
    about = "Reconciles shopkeeper.dev/v1alpha1 Shop objects into the six shop components"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (the default when no subcommand is given; flags also come from env).
    Run(Box<RunArgs>),
    /// Print the Shop CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SHOP_OPERATOR_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "SHOP_OPERATOR_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Shops reconciled concurrently.
    #[arg(long, env = "SHOP_OPERATOR_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Writes to Shops' children in flight at once, over all Shops.
    #[arg(long, env = "SHOP_OPERATOR_WRITES_IN_FLIGHT", default_value_t = shop_operator::apply::WRITES_IN_FLIGHT)]
    writes_in_flight: usize,
    /// Safety-net resync interval of a healthy Shop, in seconds.
    #[arg(long, env = "SHOP_OPERATOR_RESYNC_SECS", default_value_t = 3600)]
    resync_secs: u64,
    /// Elect a leader through a Lease (needed with more than one replica).
    #[arg(long, env = "SHOP_OPERATOR_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Lease name.
    #[arg(
        long,
        env = "SHOP_OPERATOR_LEASE_NAME",
        default_value = "shop-operator"
    )]
    lease_name: String,
    /// Lease namespace (default: POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity in the Lease and in Events (default: POD_NAME or the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, env = "SHOP_OPERATOR_LEASE_SECS", default_value_t = 15)]
    lease_secs: u64,
    /// Log as JSON lines (default) or text.
    #[arg(long, env = "SHOP_OPERATOR_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Which log lines to write, as a tracing filter, e.g. "info,shop_operator=debug" (default:
    /// info, kube at warn). A filter that does not parse stops the operator at start, naming it.
    #[arg(long, env = "RUST_LOG", default_value = "info,kube=warn")]
    log_filter: String,
    /// Kubeconfig file(s) to use outside a cluster, several separated by ':' and merged as kubectl
    /// does (default: the in-cluster service account, else ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<std::ffi::OsString>,
}

/// The client: from the given kubeconfig file(s), else inferred (in-cluster, then ~/.kube/config).
async fn kube_client(kubeconfig: Option<&std::ffi::OsStr>) -> anyhow::Result<kube::Client> {
    let Some(paths) = kubeconfig.filter(|p| !p.is_empty()) else {
        return kube::Client::try_default()
            .await
            .context("loading the Kubernetes client configuration (in-cluster or ~/.kube/config)");
    };
    let mut merged: Option<kube::config::Kubeconfig> = None;
    for path in std::env::split_paths(paths).filter(|p| !p.as_os_str().is_empty()) {
        let one = kube::config::Kubeconfig::read_from(&path)
            .with_context(|| format!("reading kubeconfig {} (KUBECONFIG)", path.display()))?;
        merged = Some(match merged {
            None => one,
            Some(m) => m
                .merge(one)
                .with_context(|| format!("merging kubeconfig {}", path.display()))?,
        });
    }
    let merged = merged.context("KUBECONFIG names no file")?;
    let config =
        kube::Config::from_custom_kubeconfig(merged, &kube::config::KubeConfigOptions::default())
            .await
            .context("loading the Kubernetes client configuration from KUBECONFIG")?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("shutdown requested");
    token.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A workspace build compiles rustls with both ring (via mongodb) and aws-lc-rs (via reqwest),
    // and then rustls refuses to pick one: name the process default before any kube client exists.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Crd) => {
            print!("{}", shop_operator::crd_yaml()?);
            return Ok(());
        }
        Some(Command::Run(args)) => *args,
        None => match Cli::parse_from(["shop-operator", "run"]).command {
            Some(Command::Run(args)) => *args,
            _ => anyhow::bail!("cannot build the default run arguments"),
        },
    };
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&args.log_filter)
        .with_context(|| {
            format!(
                "RUST_LOG / --log-filter {:?} is not a valid log filter",
                args.log_filter
            )
        })?;
    if args.log_format == "text" {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    }

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("shop-operator-{}", std::process::id()));
    let lease = if args.leader_election {
        let namespace = args.lease_namespace.clone().context(
            "--leader-election needs the Lease namespace: set POD_NAMESPACE or --lease-namespace",
        )?;
        let duration = Duration::from_secs(args.lease_secs.max(2));
        Some(LeaseSettings {
            name: args.lease_name.clone(),
            namespace,
            identity: identity.clone(),
            duration,
            renew_every: duration / 3,
        })
    } else {
        None
    };
    let settings = Settings {
        namespace: args.watch_namespace.clone(),
        concurrency: args.concurrency.max(1),
        reconcile: ReconcileSettings {
            requeue: Duration::from_secs(args.resync_secs.max(10)),
            writes_in_flight: args.writes_in_flight,
            ..Default::default()
        },
        instance: Some(identity),
        lease,
        ..Default::default()
    };

    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let token = CancellationToken::new();
    tokio::spawn(shutdown_signal(token.clone()));
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin server to {}", args.admin_addr))?;
    info!(addr = %listener.local_addr()?, "admin server (/metrics, /healthz, /readyz)");
    let admin = tokio::spawn(shop_operator::admin::serve(
        listener,
        metrics.clone(),
        ready.clone(),
        token.clone(),
    ));

    let result = operator::run(client, settings, metrics, ready, token.clone()).await;
    token.cancel();
    let _ = admin.await;
    if let Err(e) = &result {
        error!(error = %e, "shop-operator failed");
    }
    result.map_err(Into::into)
}
