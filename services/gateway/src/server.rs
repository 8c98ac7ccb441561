//! The gateway's HTTP/1.1 and HTTP/2 server: accepts connections (keeping each peer address for
//! `X-Forwarded-For` and per-IP limits), answers `/health/*` and `/metrics` itself, hands everything
//! else to the proxy, and shuts down gracefully (not ready, stop accepting, drain within the grace).
//!
//! Exists because the shared runtime's axum server does not expose peer addresses and adds a
//! per-request router and middleware stack the hot path of a proxy does not need. Like nginx, it
//! runs one worker per core: each worker thread has its own single-threaded runtime, its own
//! `SO_REUSEPORT` listener on the same address and its own upstream connection pool, so a request
//! never hops threads. With TLS on (see `tls`), each worker also runs the handshakes of its own
//! connections, bounded by the head timeout, before serving them like plain ones. A connection is
//! served with HTTP/2 when ALPN picked `h2` or a plain one starts with the h2c preface (see
//! `serve_connection`), with hyper's HTTP/2 server bounded by [`h2_limits`]; HTTP/2 requests take
//! the same `dispatch` as HTTP/1.1 ones.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use shop_runtime::{ARRIVALS_MAX_WAIT, ARRIVALS_QUIET, Arrivals, Metrics, Readiness};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    body::ResponseBody,
    proxy::{Gateway, Peer},
    timer::CoarseTimer,
};

/// Largest request head (request line and headers) accepted, bytes: room for large tokens and
/// cookies, like nginx's default header buffers.
const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once, over all workers.
    pub max_connections: usize,
    /// Time to send a request head, counted from when the worker starts waiting for it (hyper
    /// starts the timer then, so it is also the idle keep-alive timeout); then the connection is
    /// closed.
    pub header_timeout: Duration,
    /// HTTP/2 on (ALPN `h2` over TLS, prior-knowledge h2c on a plain port) with at most this many
    /// streams in flight per connection; None: HTTP/1.1 only.
    pub http2_max_streams: Option<u32>,
}

/// What the built-in endpoints need.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Readiness checks (and the draining flag).
    pub readiness: Readiness,
    /// Metrics registry rendered at `/metrics`.
    pub metrics: Metrics,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from(body)));
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

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
)]
fn dispatch(
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> {
    async move {
        let Conn { gw, admin, peer } = &*conn;
        match req.uri().path() {
            path @ ("/health/live"
            | "/health/ready"
            | "/metrics"
            | shop_runtime::openapi::OPENAPI_PATH)
                if !matches!(*req.method(), Method::GET | Method::HEAD) =>
            {
                method_not_allowed(req.method(), path)
            }
            "/health/live" => text(
                StatusCode::OK,
                "application/json",
                r#"{"status":"UP"}"#.to_owned(),
            ),
            "/health/ready" => {
                // Boxed: keeps the per-request future (copied on every request) small.
                let report = Box::pin(admin.readiness.check()).await;
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
            shop_runtime::openapi::OPENAPI_PATH => own_document(),
            _ => {
                // HTTP/2 has no `Connection` header: a draining server tells its clients with GOAWAY.
                let h1 = req.version() < http::Version::HTTP_2;
                let mut resp = gw.handle(req, peer).await;
                if h1 {
                    close_when_draining(&admin.readiness, &mut resp);
                }
                resp
            }
        }
    }
}

/// The 405 of the gateway's own endpoints, which are read-only: a problem document with `Allow`,
/// like every other 4xx of the shop (a `TRACE /metrics` used to be answered with the metrics).
fn method_not_allowed(method: &Method, path: &str) -> Response<ResponseBody> {
    let problem = shop_runtime::Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        .detail(format!("{path} answers only GET and HEAD, not {method}"));
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        shop_runtime::problem::PROBLEM_JSON,
        problem.body().to_string(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// The gateway's own OpenAPI document (`GET /openapi.json`).
fn own_document() -> Response<ResponseBody> {
    use utoipa::OpenApi;
    match shop_runtime::openapi::render(&crate::openapi::GatewayDoc::openapi()) {
        Ok(doc) => text(StatusCode::OK, "application/json", doc),
        Err(e) => {
            tracing::error!(error = %e, "OpenAPI document cannot be rendered");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                shop_runtime::problem::PROBLEM_JSON,
                shop_runtime::Problem::opaque_internal().body().to_string(),
            )
        }
    }
}

/// While the gateway drains (after SIGTERM, before it stops accepting), every answer says
/// `Connection: close`: a client's kept-alive connection to this pod then ends after a request it
/// sent, instead of being closed idle at the end of the delay, where a request the client sends at
/// that instant fails (found by a rolling update under a steady client).
fn close_when_draining(readiness: &Readiness, resp: &mut Response<ResponseBody>) {
    if readiness.is_draining() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Limits of an HTTP/2 connection besides its stream count; each is what nginx or Envoy would
/// bound, chosen so that one connection cannot take much more memory than a few HTTP/1.1 ones.
mod h2_limits {
    use std::time::Duration;

    /// Largest header list of one request (HPACK-decoded), like the HTTP/1.1 head limit (hyper's
    /// default is 16 MiB).
    pub const MAX_HEADER_LIST_BYTES: u32 = super::MAX_REQUEST_HEAD_BYTES as u32;
    /// Flow-control window of one request body: how much of an upload may be in flight (buffered
    /// here) before the gateway has passed it on.
    pub const STREAM_WINDOW: u32 = 256 * 1024;
    /// Flow-control window of a whole connection.
    pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
    /// Response bytes buffered per stream for a client that reads slowly.
    pub const MAX_SEND_BUFFER: usize = 256 * 1024;
    /// Streams a client may open and reset before the gateway has answered them (the "rapid
    /// reset" attack, CVE-2023-44487): beyond this the connection is closed with GOAWAY.
    pub const MAX_PENDING_RESETS: usize = 20;
    /// Streams the gateway may reset for a client's protocol errors before it closes the connection.
    pub const MAX_ERROR_RESETS: usize = 256;
    /// A connection with no request for this long gets a PING; without an answer it is closed.
    pub const PING_INTERVAL: Duration = Duration::from_secs(20);
    /// Time allowed for a PING's answer.
    pub const PING_TIMEOUT: Duration = Duration::from_secs(20);
}

/// The HTTP/1.1 and HTTP/2 connection builders of one worker, and the head timeout both enforce.
struct Protocols {
    h1: http1::Builder,
    /// None: HTTP/2 off.
    h2: Option<http2::Builder<TokioExecutor>>,
    header_timeout: Duration,
}

impl Protocols {
    fn new(head_timer: CoarseTimer, header_timeout: Duration, h2_streams: Option<u32>) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(head_timer)
            .header_read_timeout(header_timeout)
            // A request head (line and headers) larger than this is answered 431 here; without it
            // hyper took heads up to its buffer size (about 400 KiB) and passed them on upstream.
            .max_header_size(MAX_REQUEST_HEAD_BYTES)
            .keep_alive(true)
            // Small writes are copied into one buffer and sent with one `send`; cheaper than a
            // `writev` of head + body for the typical API response.
            .writev(false);
        // Note: no `max_headers` above hyper's default (100): a larger limit makes hyper allocate
        // its header parsing arrays on the heap for every request.
        let h2 = h2_streams.map(|streams| {
            use h2_limits::*;
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(streams)
                .max_header_list_size(MAX_HEADER_LIST_BYTES)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .adaptive_window(false)
                .max_send_buf_size(MAX_SEND_BUFFER)
                .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
                .max_local_error_reset_streams(MAX_ERROR_RESETS)
                .keep_alive_interval(PING_INTERVAL)
                .keep_alive_timeout(PING_TIMEOUT);
            b
        });
        Self {
            h1,
            h2,
            header_timeout,
        }
    }

    /// Serves `io` with HTTP/2 (`h2`) or HTTP/1.1 until it ends or the worker's drain closes it.
    async fn serve<I>(&self, io: I, h2: bool, conn: Arc<Conn>, watcher: Watcher)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let peer = conn.peer.addr();
        let ended = match (&self.h2, h2) {
            (Some(builder), true) => {
                let activity = Arc::new(Activity::default());
                let counted = activity.clone();
                let svc = service_fn(move |req| {
                    let stream = StreamGuard::new(&counted);
                    dispatch(conn.clone(), req).map(move |r| {
                        Ok::<_, Infallible>(r.map(|body| Counted {
                            body,
                            _stream: stream,
                        }))
                    })
                });
                tokio::select! {
                    ended = watcher.watch(builder.serve_connection(io, svc)) => ended,
                    () = activity.idle(self.header_timeout) => {
                        tracing::debug!(%peer, "idle HTTP/2 connection closed");
                        Ok(())
                    }
                }
            }
            _ => {
                // `map`, not an `async move` block around `dispatch`: the block would hold the
                // request once more next to `dispatch`'s own future, and this future is moved on
                // every request.
                let svc =
                    service_fn(move |req| dispatch(conn.clone(), req).map(Ok::<_, Infallible>));
                watcher.watch(self.h1.serve_connection(io, svc)).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, error = %e, "connection ended with error");
        }
    }
}

/// Serves one accepted connection to its end in a task of its own: the TLS handshake first (with
/// TLS on), then HTTP/2 when the client asked for it (ALPN `h2`, or the h2c connection preface on
/// a plain port), else HTTP/1.1. The handshake and the first bytes are waited for no longer than
/// a request head: a client that connects and says nothing holds a connection slot no longer
/// than a slow request head would.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    _open: OpenConn,
    tls: Option<Arc<rustls::ServerConfig>>,
    protocols: Arc<Protocols>,
    conn: Arc<Conn>,
    watcher: Watcher,
) {
    let timeout = protocols.header_timeout;
    match tls {
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(stream);
            let stream = match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(s)) => s,
                // Scanners, plain-HTTP clients, old protocol versions: not the gateway's error.
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            protocols
                .serve(TokioIo::new(stream), h2, conn, watcher)
                .await;
        }
        None => {
            let h2 = if protocols.h2.is_some() {
                match tokio::time::timeout(timeout, is_h2c(&stream)).await {
                    Ok(Ok(h2)) => h2,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection failed before a request");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, ?timeout, "no request within the head timeout");
                        return;
                    }
                }
            } else {
                false
            };
            protocols
                .serve(TokioIo::new(stream), h2, conn, watcher)
                .await;
        }
    }
}

/// Whether a plain connection starts with the HTTP/2 connection preface (`PRI * HTTP/2.0...`, h2c
/// with prior knowledge), by peeking at its first bytes without taking them: `PR` can begin
/// nothing else (HTTP/1.1 methods starting with `P` are POST, PUT and PATCH). The preface itself
/// is checked by the HTTP/2 server. A closed connection reads as HTTP/1.1 (which then ends it).
async fn is_h2c(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 2];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut first).await?;
        match first.get(..n) {
            // Only one byte has arrived: peeking again returns at once, so wait instead of
            // spinning (rare: clients send the request line in one segment). The pause doubles up
            // to 64 ms, so a client that sends one byte and stalls costs a few dozen wake-ups until
            // the head timeout, not one per millisecond.
            Some([b'P']) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(64));
            }
            Some(b) => return Ok(b == b"PR"),
            None => return Ok(false),
        }
    }
}

/// Requests of one HTTP/2 connection: how many are in flight, and a count of requests started
/// and finished (which changes whenever something happened).
#[derive(Debug, Default)]
struct Activity {
    open: AtomicUsize,
    events: AtomicUsize,
}

impl Activity {
    /// Resolves once the connection has had no request in flight, and none started or finished,
    /// for a whole `after` (checked every `after`, so between one and two of them after the last
    /// request ended).
    /// HTTP/1.1 gets the same from hyper's head timeout between requests; hyper's HTTP/2 server
    /// has no idle timeout, so a client could otherwise keep idle connections (and their slots)
    /// open forever by answering PINGs.
    async fn idle(&self, after: Duration) {
        let mut seen = self.events.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(after).await;
            let now = self.events.load(Ordering::Relaxed);
            if now == seen && self.open.load(Ordering::Relaxed) == 0 {
                return;
            }
            seen = now;
        }
    }
}

/// One request of an HTTP/2 connection in flight, until its response body is dropped.
struct StreamGuard(Arc<Activity>);

impl StreamGuard {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::Relaxed);
        activity.events.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body on an HTTP/2 connection, counted in flight while it lives.
struct Counted {
    body: ResponseBody,
    _stream: StreamGuard,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection handed over to another worker, already counted as that worker's.
type Handoff = (std::net::TcpStream, SocketAddr, OpenConn);

/// Keeps the workers' shares of connections even.
///
/// Each worker accepts on its own `SO_REUSEPORT` listener, where the kernel assigns a connection
/// by a hash of its addresses: with few long-lived connections (keep-alive clients, a load
/// balancer in front) that easily leaves one worker with a third more connections than another,
/// and that worker's core becomes the limit while the other idles. A worker that accepts a
/// connection while it already serves more than one connection more than the least-loaded
/// worker hands the connection over to that worker (once per connection, never per request).
///
/// It also enforces the connection limit: each worker holds at most its share of
/// `proxy.max_connections` and stops accepting while it is full, woken when one of its
/// connections closes.
#[derive(Debug)]
struct Balance {
    open: Vec<AtomicUsize>,
    /// Per worker: signalled when one of its connections closes.
    closed: Vec<Notify>,
    /// Most connections one worker holds.
    per_worker: usize,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Balance {
    /// A balance over `workers` workers sharing `max_connections`, with each worker's inbox of
    /// handed-over connections.
    fn new(
        workers: usize,
        max_connections: usize,
    ) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, rx): (Vec<_>, Vec<_>) = (0..workers.max(1))
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let open = (0..inboxes.len()).map(|_| AtomicUsize::new(0)).collect();
        let closed = (0..inboxes.len()).map(|_| Notify::new()).collect();
        let per_worker = max_connections.div_ceil(inboxes.len()).max(1);
        (
            Arc::new(Self {
                open,
                closed,
                per_worker,
                inboxes,
            }),
            rx,
        )
    }

    /// Whether worker `me` holds its share of the connection limit.
    fn full(&self, me: usize) -> bool {
        self.open
            .get(me)
            .is_some_and(|n| n.load(Ordering::Relaxed) >= self.per_worker)
    }

    /// The worker that should take a connection accepted by worker `me`, if not `me`.
    fn elsewhere(&self, me: usize) -> Option<usize> {
        let mine = self.open.get(me)?.load(Ordering::Relaxed);
        let (least, n) = self
            .open
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.load(Ordering::Relaxed)))
            .min_by_key(|&(_, n)| n)?;
        (least != me && mine > n + 1).then_some(least)
    }
}

/// Counts one open connection of a worker while it lives.
struct OpenConn(Arc<Balance>, usize);

impl OpenConn {
    fn new(balance: &Arc<Balance>, worker: usize) -> Self {
        if let Some(n) = balance.open.get(worker) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        Self(balance.clone(), worker)
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        if let Some(n) = self.0.open.get(self.1) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(closed) = self.0.closed.get(self.1) {
            closed.notify_one();
        }
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
/// address of `first`) until `shutdown`, then drains each for at most `grace`. With `tls`, every
/// connection is served over TLS with that configuration.
#[expect(
    clippy::too_many_arguments,
    reason = "the start-up wiring of the workers, called once from `app::run`"
)]
pub async fn serve_workers(
    first: TcpListener,
    workers: usize,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    gw: Arc<Gateway>,
    admin: Admin,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let addr = first.local_addr()?;
    let mut first = Some(first.into_std()?);
    let mut done = Vec::new();
    let (balance, inboxes) = Balance::new(workers, limits.max_connections);
    // One view of arrivals for all workers: their listeners close together, once none gets any.
    let arrivals = Arrivals::new();
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let std_listener = first.take();
        let (gw, admin, shutdown) = (gw.clone(), admin.clone(), shutdown.clone());
        let worker = Worker {
            index: i,
            header_timeout: limits.header_timeout,
            balance: balance.clone(),
            inbox,
            tls: tls.clone(),
            http2_max_streams: limits.http2_max_streams,
            arrivals: arrivals.clone(),
        };
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
                            serve(listener, worker, gw, admin, shutdown, grace).await
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

/// One worker's place among the others: its index, the shared balance and its inbox.
#[derive(Debug)]
struct Worker {
    /// Index into the balance.
    index: usize,
    /// See [`ConnLimits::header_timeout`].
    header_timeout: Duration,
    /// Shared connection counts and inboxes.
    balance: Arc<Balance>,
    /// Connections handed over to this worker.
    inbox: mpsc::UnboundedReceiver<Handoff>,
    /// TLS on the listener: every connection's handshake first.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// See [`ConnLimits::http2_max_streams`].
    http2_max_streams: Option<u32>,
    /// Connections accepted by any worker, for when to stop accepting (see [`Arrivals`]).
    arrivals: Arrivals,
}

/// Serves one listener (and the connections other workers hand over) until `shutdown` is
/// cancelled and no connection arrived for a second (late arrivals, from a kube-proxy that has
/// not yet seen this pod leave its Service, are served with `Connection: close`; see
/// [`Arrivals`]), then drains for at most `grace`.
async fn serve(
    listener: TcpListener,
    mut worker: Worker,
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
    // hyper arms the header-read timer for every request head: a coarse per-worker timer (ticks
    // of 1 s, or a tenth of a shorter timeout) keeps that off tokio's timer wheel (see `timer`).
    // The ticker runs through the drain too, and ends with this worker's runtime.
    let head_timer = CoarseTimer::new((worker.header_timeout / 10).min(Duration::from_secs(1)));
    tokio::spawn(head_timer.clone().run());
    let graceful = GracefulShutdown::new();
    let protocols = Arc::new(Protocols::new(
        head_timer,
        worker.header_timeout,
        worker.http2_max_streams,
    ));
    let closing = {
        let (shutdown, arrivals) = (shutdown.clone(), worker.arrivals.clone());
        async move {
            shutdown.cancelled().await;
            arrivals.quiet(ARRIVALS_QUIET, ARRIVALS_MAX_WAIT).await;
        }
    };
    tokio::pin!(closing);
    'accept: loop {
        // At its share of the connection limit the worker leaves new connections in the listen
        // backlog (and to the other workers' listeners) until one of its own closes.
        while worker.balance.full(worker.index) {
            let Some(closed) = worker.balance.closed.get(worker.index) else {
                break;
            };
            tokio::select! {
                () = closed.notified() => {}
                () = &mut closing => break 'accept,
            }
        }
        let (stream, peer, open) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match worker.balance.elsewhere(worker.index) {
                    Some(to) => match hand_over(&worker.balance, to, stream, peer) {
                        None => continue,
                        Some(back) => (back, peer, OpenConn::new(&worker.balance, worker.index)),
                    },
                    None => (stream, peer, OpenConn::new(&worker.balance, worker.index)),
                },
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            Some((std_stream, peer, open)) = worker.inbox.recv() => match TcpStream::from_std(std_stream) {
                Ok(s) => (s, peer, open),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "handed-over connection lost");
                    continue;
                }
            },
            () = &mut closing => break,
        };
        worker.arrivals.arrived();
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            gw: gw.clone(),
            admin: admin.clone(),
            peer: if worker.tls.is_some() {
                Peer::over_tls(peer)
            } else {
                Peer::new(peer)
            },
        });
        tokio::spawn(serve_connection(
            stream,
            peer,
            open,
            worker.tls.clone(),
            protocols.clone(),
            conn,
            graceful.watcher(),
        ));
    }
    tracing::info!("shutdown signal received; draining");
    worker.inbox.close();
    admin.readiness.set_draining();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "in-flight requests did not drain within the grace period"),
    }
    Ok(())
}

/// Sends a just-accepted connection to worker `to`. Gives the connection back when that worker is
/// gone (to be served here); None when it was handed over (or lost on the way, logged).
fn hand_over(
    balance: &Arc<Balance>,
    to: usize,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TcpStream> {
    let Some(inbox) = balance.inboxes.get(to) else {
        return Some(stream);
    };
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot hand over a connection");
            return None;
        }
    };
    // Counted as the target's right away, so a burst of accepts is not all sent to one worker.
    let Err(back) = inbox.send((std_stream, peer, OpenConn::new(balance, to))) else {
        return None;
    };
    // Still non-blocking (tokio's `into_std` keeps the mode); registered here again.
    match TcpStream::from_std(back.0.0) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection lost in hand-over");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_hands_over_only_when_a_worker_is_ahead_by_more_than_one() {
        let (b, _rx) = Balance::new(2, 100);
        assert_eq!(b.elsewhere(0), None);
        b.open[0].store(1, Ordering::Relaxed);
        assert_eq!(b.elsewhere(0), None, "one ahead is balanced enough");
        b.open[0].store(2, Ordering::Relaxed);
        assert_eq!(b.elsewhere(0), Some(1));
        assert_eq!(
            b.elsewhere(1),
            None,
            "the least-loaded worker keeps its connections"
        );
        let (one, _rx) = Balance::new(1, 100);
        one.open[0].store(10, Ordering::Relaxed);
        assert_eq!(one.elsewhere(0), None);
    }

    #[test]
    fn each_worker_holds_its_share_of_the_connection_limit() {
        let (b, _rx) = Balance::new(2, 5);
        assert_eq!(
            b.per_worker, 3,
            "rounded up: the limit is never below what was asked"
        );
        let held: Vec<OpenConn> = (0..3).map(|_| OpenConn::new(&b, 0)).collect();
        assert!(b.full(0));
        assert!(!b.full(1), "the other worker's share is its own");
        drop(held);
        assert!(!b.full(0), "closing connections frees the share");
    }
}
