//! Command line and start-up wiring: flags and env, the `mint-token` subcommand, and `run`, which
//! loads the config, builds the gateway on the shared runtime's telemetry, discovery and metrics,
//! and serves until SIGTERM.
//!
//! Exists so `main` stays a few lines and start-up errors carry context.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shop_runtime::{BreakerConfig, CommonArgs, Runtime};

use crate::{
    auth::{AuthConfig, Authenticator, DevToken, mint_hs256},
    config::{FailMode, GatewayConfig},
    proxy::{Gateway, GatewayParts},
    ratelimit::RateLimits,
    routes::RouteTable,
    server::{Admin, ConnLimits, serve_workers},
    tls::{CertStore, TlsFiles},
};

/// The gateway's default port.
pub const DEFAULT_PORT: u16 = 8080;

/// `shop-gateway` command line.
#[derive(Parser, Debug)]
#[command(
    name = "shop-gateway",
    version,
    about = "The single entry point of a shop"
)]
pub struct Cli {
    /// Flags every service shares.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Gateway flags.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Subcommand (none: run the gateway).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Gateway-specific flags.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Routes/config file (YAML). Without it the shop's default routes apply.
    #[arg(long, env = "SHOP_GATEWAY_CONFIG")]
    pub routes: Option<PathBuf>,
    /// Extra or replacing routes: comma list of `prefix=service` or `prefix=http://a|http://b`.
    #[arg(long, env = "SHOP_GATEWAY_ROUTES")]
    pub route_spec: Option<String>,
    /// HS256 shared secret for bearer tokens.
    #[arg(long, env = "SHOP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS URL for RS256/ES256 bearer tokens.
    #[arg(long, env = "SHOP_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Accepted token issuers (comma separated; unset: not checked).
    #[arg(long, env = "SHOP_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,
    /// Accepted token audiences (comma separated; unset: not checked).
    #[arg(long, env = "SHOP_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Clock skew allowed on exp/nbf, seconds.
    #[arg(long, env = "SHOP_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// The JWKS is re-fetched after this many seconds.
    #[arg(long, env = "SHOP_JWKS_TTL_SECS", default_value_t = 300)]
    pub jwks_ttl_secs: u64,
    /// At most one JWKS fetch per this many seconds (unknown key ids cannot force more).
    #[arg(long, env = "SHOP_JWKS_MIN_REFRESH_SECS", default_value_t = 10)]
    pub jwks_min_refresh_secs: u64,
    /// Overrides `rate_limit.on_unavailable` (closed or open).
    #[arg(long, env = "SHOP_RATE_LIMIT_FAIL")]
    pub rate_limit_fail: Option<String>,
    /// Overrides `rate_limit.client.per_second`.
    #[arg(long, env = "SHOP_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<f64>,
    /// Overrides `rate_limit.client.burst`.
    #[arg(long, env = "SHOP_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Server worker threads (default: one per core).
    #[arg(long, env = "SHOP_GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// Circuit breaker: seconds an open breaker waits before trial calls.
    #[arg(long, env = "SHOP_BREAKER_OPEN_SECS", default_value_t = 5)]
    pub breaker_open_secs: u64,
    /// TLS certificate chain, PEM, leaf first. With SHOP_TLS_KEY_FILE the port serves only TLS 1.2/1.3 (unset: plain HTTP)
    #[arg(long, env = "SHOP_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the TLS certificate, PEM (PKCS#8, PKCS#1 or SEC1); needs SHOP_TLS_CERT_FILE
    #[arg(long, env = "SHOP_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Seconds between checks of the TLS files; a changed certificate is served to new connections without a restart
    #[arg(long, env = "SHOP_TLS_RELOAD_SECS", default_value_t = 5)]
    pub tls_reload_secs: u64,
    /// Plain-HTTP port (on the same address) that answers every request with a 308 redirect to https; only with TLS
    #[arg(long, env = "SHOP_TLS_REDIRECT_PORT")]
    pub tls_redirect_port: Option<u16>,
    /// https port the redirects name, when clients reach the TLS port through another one (default: the TLS port; 443 is left out)
    #[arg(long, env = "SHOP_TLS_REDIRECT_HTTPS_PORT")]
    pub tls_redirect_https_port: Option<u16>,
    /// Serve the storefront at / and the admin page at /admin on the paths no route takes (false: those paths are 404)
    #[arg(long, env = "SHOP_STOREFRONT", default_value_t = true, action = clap::ArgAction::Set)]
    pub storefront: bool,
    /// JSON file holding the Shop's status, served at /admin/status.json for the admin page (unset: 404)
    #[arg(long, env = "SHOP_STATUS_FILE")]
    pub status_file: Option<PathBuf>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a development HS256 token signed with the shared secret (SHOP_JWT_SECRET).
    MintToken {
        /// Subject (`sub`), forwarded downstream as X-User-Id.
        #[arg(long)]
        sub: String,
        /// Scope to include (repeatable or space separated).
        #[arg(long)]
        scope: Vec<String>,
        /// Role to include (repeatable).
        #[arg(long)]
        role: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Signing secret (default: SHOP_JWT_SECRET / --jwt-secret).
        #[arg(long, hide_env_values = true)]
        secret: Option<String>,
        /// Issuer claim (default: the first SHOP_JWT_ISSUER).
        #[arg(long)]
        issuer: Option<String>,
        /// Audience claim (default: the first SHOP_JWT_AUDIENCE).
        #[arg(long)]
        audience: Option<String>,
    },
}

/// Loads and validates the config from flags and env.
pub fn load_config(args: &GatewayArgs) -> anyhow::Result<GatewayConfig> {
    let mut cfg = match &args.routes {
        Some(p) => GatewayConfig::load(p)?,
        None => GatewayConfig::default(),
    };
    if let Some(spec) = &args.route_spec {
        cfg.apply_env_routes(spec)?;
    }
    if let Some(mode) = &args.rate_limit_fail {
        cfg.rate_limit.on_unavailable = match mode.as_str() {
            "closed" => FailMode::Closed,
            "open" => FailMode::Open,
            other => {
                anyhow::bail!("invalid SHOP_RATE_LIMIT_FAIL `{other}`: expected closed or open")
            }
        };
    }
    if let Some(r) = args.rate_limit_per_second {
        cfg.rate_limit.client.per_second = r;
    }
    if let Some(b) = args.rate_limit_burst {
        cfg.rate_limit.client.burst = b;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The TLS certificate store and server configuration, when the TLS files are configured. Loads the
/// certificate once, so a broken setting stops the gateway at start, naming the file.
pub fn load_tls(
    args: &GatewayArgs,
    http2: bool,
) -> anyhow::Result<Option<(Arc<CertStore>, Arc<rustls::ServerConfig>)>> {
    let files = TlsFiles::from_settings(args.tls_cert_file.clone(), args.tls_key_file.clone())?;
    let Some(files) = files else {
        if args.tls_redirect_port.is_some() {
            anyhow::bail!(
                "SHOP_TLS_REDIRECT_PORT redirects to https, which needs SHOP_TLS_CERT_FILE and SHOP_TLS_KEY_FILE"
            );
        }
        return Ok(None);
    };
    let store = Arc::new(CertStore::load(files, crate::tls::provider())?);
    let alpn = if http2 {
        crate::tls::ALPN_H2
    } else {
        crate::tls::ALPN_HTTP1
    };
    let config = crate::tls::server_config(store.clone(), alpn)?;
    Ok(Some((store, config)))
}

fn auth_config(args: &GatewayArgs) -> AuthConfig {
    AuthConfig {
        hs_secret: args
            .jwt_secret
            .clone()
            .filter(|s| !s.is_empty())
            .map(String::into_bytes),
        jwks_url: args.jwks_url.clone().filter(|s| !s.is_empty()),
        issuers: args.jwt_issuer.clone(),
        audiences: args.jwt_audience.clone(),
        leeway_secs: args.jwt_leeway_secs,
        jwks_ttl: Duration::from_secs(args.jwks_ttl_secs.max(1)),
        jwks_min_refresh: Duration::from_secs(args.jwks_min_refresh_secs),
    }
}

/// Prints a development token (`shop-gateway mint-token --sub alice --scope orders.write`).
pub fn mint_token(args: &GatewayArgs, cmd: &Command) -> anyhow::Result<String> {
    let Command::MintToken {
        sub,
        scope: scopes,
        role: roles,
        ttl_secs,
        secret,
        issuer,
        audience,
    } = cmd;
    let secret = secret
        .as_deref()
        .or(args.jwt_secret.as_deref())
        .filter(|s| !s.is_empty())
        .context("--secret or SHOP_JWT_SECRET must be set to mint a token")?;
    let t = DevToken {
        sub: sub.clone(),
        scopes: scopes
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_owned)
            .collect(),
        roles: roles.clone(),
        issuer: issuer.clone().or_else(|| args.jwt_issuer.first().cloned()),
        audience: audience
            .clone()
            .or_else(|| args.jwt_audience.first().cloned()),
        ttl: Duration::from_secs(*ttl_secs),
    };
    Ok(mint_hs256(secret.as_bytes(), &t)?)
}

/// Runs the gateway until SIGTERM/SIGINT.
pub async fn run(common: CommonArgs, args: GatewayArgs) -> anyhow::Result<()> {
    let cfg = load_config(&args).context("invalid gateway configuration")?;
    let tls = load_tls(&args, cfg.proxy.http2).context("invalid TLS configuration")?;
    // The runtime sets up logs, tracing, metrics, discovery and the signal handler; the gateway
    // binds its own listener (SO_REUSEPORT) and serves with its own connection loop (peer
    // addresses, no router on the hot path).
    let rt = Runtime::init("gateway", &common)
        .await
        .context("runtime start-up")?;
    let discovery = rt.discovery();
    let metrics = rt.metrics();
    let readiness = rt.readiness();
    // The gateway is unready at SIGTERM and stops accepting after the shutdown delay, so that
    // kube-proxy stops sending it connections first.
    let shutdown = rt.stop_accepting_token();

    let addr = SocketAddr::new(common.bind, common.port.unwrap_or(DEFAULT_PORT));
    let listener =
        crate::server::bind_reuseport(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    // The `listening` line, and the port in SHOP_PORT_FILE for a gateway started on port 0.
    rt.listening(local).context("announcing the listener")?;
    drop(rt);
    let redirect = match args.tls_redirect_port {
        Some(port) => {
            let addr = SocketAddr::new(common.bind, port);
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (SHOP_TLS_REDIRECT_PORT)"))?;
            Some(l)
        }
        None => None,
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("JWKS HTTP client")?;
    let auth = Authenticator::new(auth_config(&args), http);
    let table = RouteTable::new(&cfg);
    let mut buckets = vec![cfg.rate_limit.client; cfg.routes.len()];
    for r in table.routes() {
        if let Some(slot) = buckets.get_mut(r.index) {
            *slot = r.bucket;
        }
    }
    let limits = RateLimits::new(&cfg.rate_limit, &buckets);
    let gw = Arc::new(
        Gateway::new(GatewayParts {
            table,
            auth,
            limits,
            discovery: discovery.clone(),
            breaker: BreakerConfig {
                open_wait: Duration::from_secs(args.breaker_open_secs.max(1)),
                ..BreakerConfig::default()
            },
            metrics: metrics.clone(),
            proxy: cfg.proxy.clone(),
            cors: cfg.cors.clone(),
            tracing_enabled: common.zipkin_endpoint.is_some(),
        })
        .with_storefront(
            args.storefront
                .then(|| crate::storefront::Storefront::new(args.status_file.clone())),
        ),
    );
    discovery.spawn_refresh(shutdown.clone());
    {
        let gw = gw.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => gw.limits().sweep_now(),
                    () = stop.cancelled() => break,
                }
            }
        });
    }
    if let Some((store, _)) = &tls {
        let every = Duration::from_secs(args.tls_reload_secs.max(1));
        tokio::spawn(store.clone().poll(every, shutdown.clone()));
        tracing::info!(
            cert = %store.files().cert.display(),
            key = %store.files().key.display(),
            reload_secs = every.as_secs(),
            "TLS on: serving TLS 1.3 and 1.2 only"
        );
    }
    if let Some(l) = redirect {
        let to = args.tls_redirect_https_port.unwrap_or(local.port());
        let plain = l.local_addr().context("local address")?;
        tracing::info!(%plain, https_port = to, "redirecting plain HTTP to https");
        tokio::spawn(crate::redirect::serve_redirect(
            l,
            to,
            Duration::from_millis(cfg.proxy.header_timeout_ms),
            shutdown.clone(),
        ));
    }
    tracing::info!(%local, routes = cfg.routes.len(), tls = tls.is_some(), "gateway listening");
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    tracing::info!(workers, "server workers");
    let limits = ConnLimits {
        max_connections: cfg.proxy.max_connections,
        header_timeout: Duration::from_millis(cfg.proxy.header_timeout_ms),
        http2_max_streams: cfg
            .proxy
            .http2
            .then_some(cfg.proxy.http2_max_concurrent_streams),
    };
    serve_workers(
        listener,
        workers,
        limits,
        tls.map(|(_, config)| config),
        gw,
        Admin { readiness, metrics },
        shutdown,
        common.shutdown_grace(),
    )
    .await
    .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}
