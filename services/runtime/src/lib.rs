//! Shared runtime for the six shopkeeper services: config, logs, tracing, health, metrics, shutdown,
//! registry client and resilient HTTP client — so each service's `main` is a few lines.
//!
//! Start with [`Runtime`]; its docs show a complete `main`.

pub mod batch;
pub mod breaker;
pub mod client;
pub mod config;
pub mod discovery;
pub mod eureka;
pub mod faults;
pub mod filewatch;
pub mod health;
pub mod kafka;
pub mod metrics;
#[cfg(feature = "mongo")]
pub mod mongo;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod openapi;
pub mod problem;
pub mod retry;
mod server;
pub mod telemetry;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use client::{CallBuilder, CallError, ClientConfig, ServiceClient};
pub use config::{CommonArgs, LogFormat};
pub use discovery::{Discovery, DiscoveryConfig, DiscoveryError, Picked};
pub use health::Readiness;
pub use metrics::Metrics;
pub use problem::{ApiJson, ApiQuery, Json, Problem, Query};
pub use server::{ARRIVALS_MAX_WAIT, ARRIVALS_QUIET, Arrivals, REQUEST_ID};

use discovery::Registrar;
use eureka::InstanceInfo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors starting or running a service.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bound port could not be written to `SHOP_PORT_FILE`.
    #[error("cannot write the bound port to {path}: {source}")]
    PortFile {
        /// The file asked for.
        path: std::path::PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Telemetry setup failed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// One running service: telemetry, health, metrics, discovery and shutdown wiring, and the server
/// loop over a listener it is handed.
///
/// Set-up ([`Runtime::init`]) is apart from binding ([`Runtime::bind`]) and serving
/// ([`Runtime::serve`] takes the bound listener), as in mini-redis's `server::run(listener, …)`:
/// a test can serve on a listener it bound itself on port 0, and a service that serves with its
/// own connection loop (the gateway) uses the rest of the runtime without a listener to drop.
///
/// ```no_run
/// use clap::Parser;
/// use shop_runtime::{CommonArgs, Runtime};
///
/// #[derive(Parser)]
/// struct Args {
///     #[command(flatten)]
///     common: CommonArgs,
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), shop_runtime::RuntimeError> {
///     let args = Args::parse();
///     let rt = Runtime::init("product", &args.common).await?;
///     let listener = rt.bind(8081).await?;
///     rt.readiness().add("mysql", || async { Ok(()) });
///     let router = axum::Router::new().route("/api/product", axum::routing::get(|| async { "[]" }));
///     rt.serve(listener, router).await
/// }
/// ```
#[derive(Debug)]
pub struct Runtime {
    app: &'static str,
    args: CommonArgs,
    metrics: Metrics,
    readiness: Readiness,
    discovery: Discovery,
    client: ServiceClient,
    shutdown: CancellationToken,
}

impl Runtime {
    /// Sets up logging (JSON by default) and tracing, metrics, discovery and a SIGTERM/SIGINT
    /// handler. Binds nothing: see [`Runtime::bind`].
    pub async fn init(app: &'static str, args: &CommonArgs) -> Result<Runtime, RuntimeError> {
        telemetry::init(
            app,
            args.log_format,
            args.log_filter.as_deref(),
            args.zipkin_endpoint.as_deref(),
        )?;
        let metrics = Metrics::new();
        let discovery = Discovery::new(DiscoveryConfig {
            registry_urls: args.registry_urls(),
            dns_pattern: args.dns_pattern.clone(),
            fetch_interval: args.registry_fetch(),
            ..DiscoveryConfig::default()
        });
        let client =
            ServiceClient::new(discovery.clone(), metrics.clone(), ClientConfig::default());
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone()).map_err(RuntimeError::Signal)?;
        Ok(Runtime {
            app,
            args: args.clone(),
            metrics,
            readiness: Readiness::default(),
            discovery,
            client,
            shutdown,
        })
    }

    /// Binds `--bind`:`--port` (`default_port` when no port is given; 0 picks a free one) and
    /// announces it (see [`Runtime::listening`]).
    pub async fn bind(&self, default_port: u16) -> Result<TcpListener, RuntimeError> {
        let addr = SocketAddr::new(self.args.bind, self.args.port.unwrap_or(default_port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| RuntimeError::Bind { addr, source })?;
        self.listening(local_addr)?;
        Ok(listener)
    }

    /// Announces the address the service accepts on: the `listening` log line, and the port
    /// written to `SHOP_PORT_FILE` when set, so whoever started the process with port 0 (the
    /// tests) learns the port the OS picked. For a listener bound elsewhere than
    /// [`Runtime::bind`].
    pub fn listening(&self, local_addr: SocketAddr) -> Result<(), RuntimeError> {
        tracing::info!(app = self.app, %local_addr, "listening");
        match &self.args.port_file {
            Some(path) => config::write_port_file(path, local_addr.port()).map_err(|source| {
                RuntimeError::PortFile {
                    path: path.clone(),
                    source,
                }
            }),
            None => Ok(()),
        }
    }

    /// Client for calls to other services.
    pub fn client(&self) -> ServiceClient {
        self.client.clone()
    }

    /// Service lookup.
    pub fn discovery(&self) -> Discovery {
        self.discovery.clone()
    }

    /// Readiness checks (add yours before [`Runtime::serve`]).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Metrics registry.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Cancelled on SIGTERM/SIGINT; background tasks should stop on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancelled `SHOP_SHUTDOWN_DELAY_SECS` after SIGTERM/SIGINT: when a server should stop
    /// accepting. At the signal itself readiness already fails (and [`Runtime::serve`]
    /// deregisters), so callers stop choosing this instance while it still answers them.
    pub fn stop_accepting_token(&self) -> CancellationToken {
        let stop = CancellationToken::new();
        let (signal, readiness) = (self.shutdown.clone(), self.readiness.clone());
        let (delay, done) = (self.args.shutdown_delay(), stop.clone());
        tokio::spawn(async move {
            signal.cancelled().await;
            readiness.set_draining();
            if !delay.is_zero() {
                tracing::info!(?delay, "shutdown signal received; unready, still serving");
                tokio::time::sleep(delay).await;
            }
            done.cancel();
        });
        stop
    }

    /// The instance this process announces to the registry, serving on `port`.
    pub fn instance_info(&self, port: u16) -> InstanceInfo {
        let id = self
            .args
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}:{}", self.args.advertise_host, self.app, port));
        let mut info = InstanceInfo::new(self.app, &id, &self.args.advertise_host, port);
        info.lease_info.renewal_interval_in_secs = self.args.lease_renewal_secs.max(1);
        info.lease_info.duration_in_secs = self.args.lease_duration_secs.max(1);
        info.metadata.extend(self.args.metadata_pairs());
        info
    }

    /// Serves `router` plus health and metrics until SIGTERM/SIGINT (or the shutdown token), registering
    /// with the registry while listening. On shutdown: readiness fails, the instance deregisters, it
    /// keeps serving for the shutdown delay (see [`Runtime::stop_accepting_token`]) and until no new
    /// connection arrived for a second (see [`Arrivals`]), then the listener
    /// stops accepting, in-flight requests drain within the grace period, spans are flushed.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: axum::Router,
    ) -> Result<(), RuntimeError> {
        let port = listener.local_addr().map_err(RuntimeError::Serve)?.port();
        let state = server::ServerState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        };
        let app = server::wrap(router, state);
        let stop_background = CancellationToken::new();
        self.discovery.spawn_refresh(stop_background.clone());
        let registrar = (!self.discovery.registry_urls().is_empty()).then(|| Registrar {
            http: self.discovery.http().clone(),
            registry_urls: self.discovery.registry_urls().to_vec(),
            instance: self.instance_info(port),
            renewal: self.args.lease_renewal(),
        });
        let reg_task = registrar
            .clone()
            .map(|r| tokio::spawn(r.run(stop_background.clone())));

        let shutdown = self.shutdown.clone();
        let stop_accepting = self.stop_accepting_token();
        let drain_started = CancellationToken::new();
        let drain_signal = drain_started.clone();
        let registrar_for_stop = registrar.clone();
        let stop_bg = stop_background.clone();
        let arrivals = Arrivals::new();
        let (watch_arrivals, tap) = (arrivals.clone(), arrivals);
        let graceful = async move {
            shutdown.cancelled().await;
            stop_bg.cancel();
            if let Some(r) = registrar_for_stop {
                let _ = tokio::time::timeout(Duration::from_secs(2), r.deregister()).await;
            }
            stop_accepting.cancelled().await;
            // Late arrivals (a caller's stale view of the Service) are still served, then closed.
            watch_arrivals
                .quiet(server::ARRIVALS_QUIET, server::ARRIVALS_MAX_WAIT)
                .await;
            tracing::info!("draining");
            drain_signal.cancel();
        };
        let listener = {
            use axum::serve::ListenerExt;
            listener.tap_io(move |_| tap.arrived())
        };
        let server =
            axum::serve(listener, app.into_make_service()).with_graceful_shutdown(graceful);
        let grace = self.args.shutdown_grace();
        let server = tokio::spawn(async move { server.await });
        let result = {
            let mut server = server;
            tokio::select! {
                r = &mut server => r,
                _ = async {
                    drain_started.cancelled().await;
                    tokio::time::sleep(grace + Duration::from_secs(2)).await;
                } => {
                    tracing::warn!(?grace, "in-flight requests did not drain within the grace period; closing");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        };
        stop_background.cancel();
        if let Some(t) = reg_task {
            let _ = t.await;
        }
        let _ = tokio::task::spawn_blocking(telemetry::flush_spans).await;
        tracing::info!("stopped");
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RuntimeError::Serve(e)),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(RuntimeError::Serve(std::io::Error::other(e))),
        }
    }
}

fn spawn_signal_handler(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = token.cancelled() => return,
        }
        token.cancel();
    });
    Ok(())
}
