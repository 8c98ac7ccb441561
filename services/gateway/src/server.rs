//! The gateway's HTTP/1.1 server: accepts connections (keeping each peer address for
//! `X-Forwarded-For` and per-IP limits), answers `/health/*` and `/metrics` itself, hands everything
//! else to the proxy, and shuts down gracefully (not ready, stop accepting, drain within the grace).
//!
//! Exists because the shared runtime's axum server does not expose peer addresses and adds a
//! per-request router and middleware stack the hot path of a proxy does not need. Like nginx, it
//! runs one worker per core: each worker thread has its own single-threaded runtime, its own
//! `SO_REUSEPORT` listener on the same address and its own upstream connection pool, so a request
//! never hops threads.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use shop_runtime::{Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::{Gateway, Peer, ProxyBody};

/// What the built-in endpoints need.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Readiness checks (and the draining flag).
    pub readiness: Readiness,
    /// Metrics registry rendered at `/metrics`.
    pub metrics: Metrics,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// What one connection's requests share. Built per connection from the worker's own handles, so
/// the per-request reference count it costs is on this thread's memory only (cloning the shared
/// `Gateway`/`Admin` handles per request made both workers bounce the same cache lines).
struct Conn {
    gw: Arc<Gateway>,
    admin: Arc<Admin>,
    peer: Peer,
}

async fn dispatch(conn: Arc<Conn>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Conn { gw, admin, peer } = &*conn;
    match req.uri().path() {
        "/health/live" => text(
            StatusCode::OK,
            "application/json",
            r#"{"status":"UP"}"#.to_owned(),
        ),
        "/health/ready" => {
            let report = admin.readiness.check().await;
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "application/json", report.body.to_string())
        }
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            admin.metrics.render(),
        ),
        _ => gw.handle(req, peer).await,
    }
}

/// Binds a `SO_REUSEPORT` listener on `addr` (several workers may bind the same address).
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// Runs `workers` server threads (each a single-threaded runtime with its own listener on the
/// address of `first`) until `shutdown`, then drains each for at most `grace`.
pub async fn serve_workers(
    first: TcpListener,
    workers: usize,
    gw: Arc<Gateway>,
    admin: Admin,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let addr = first.local_addr()?;
    let mut first = Some(first.into_std()?);
    let mut done = Vec::new();
    for i in 0..workers.max(1) {
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let std_listener = first.take();
        let (gw, admin, shutdown) = (gw.clone(), admin.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("gateway-worker-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async move {
                            let listener = match std_listener {
                                Some(l) => TcpListener::from_std(l)?,
                                None => bind_reuseport(addr)?,
                            };
                            serve(listener, gw, admin, shutdown, grace).await
                        })
                    });
                let _ = tx.send(result);
            })?;
        done.push(rx);
    }
    let mut result = Ok(());
    for rx in done {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // One worker failing (e.g. cannot bind) stops all of them.
                shutdown.cancel();
                result = Err(e);
            }
            Err(_) => {
                shutdown.cancel();
                result = Err(std::io::Error::other("a server worker thread died"));
            }
        }
    }
    let _ = tokio::task::spawn_blocking(shop_runtime::telemetry::flush_spans).await;
    result
}

/// Serves one listener until `shutdown` is cancelled, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    admin: Admin,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    // Cloned per connection (not per request, see `Conn`); this worker's idle upstream
    // connections are swept periodically.
    let admin = Arc::new(admin);
    {
        let (gw, stop) = (gw.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tokio::select! {
                    _ = tick.tick() => gw.sweep_idle_upstreams(),
                    () = stop.cancelled() => break,
                }
            }
        });
    }
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        // Small writes are copied into one buffer and sent with one `send`; cheaper than a
        // `writev` of head + body for the typical API response.
        .writev(false);
    // Note: no `max_headers` above hyper's default (100): a larger limit makes hyper allocate its
    // header parsing arrays on the heap for every request.
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Arc::new(Conn { gw: gw.clone(), admin: admin.clone(), peer: Peer::new(peer) });
                let svc = service_fn(move |req| {
                    let conn = conn.clone();
                    async move { Ok::<_, Infallible>(dispatch(conn, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                });
            }
            () = shutdown.cancelled() => break,
        }
    }
    tracing::info!("shutdown signal received; draining");
    admin.readiness.set_draining();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "in-flight requests did not drain within the grace period"),
    }
    Ok(())
}
