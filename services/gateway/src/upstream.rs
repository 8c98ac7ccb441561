//! Per-worker pools of HTTP/1.1 keep-alive connections to upstreams, on hyper's connection API.
//!
//! Exists because hyper-util's legacy `Client` cost the proxy's hot path, per request, a boxed
//! future of more than 1 KiB, a spawned task to wait until the connection is idle again, a pool
//! behind a mutex keyed by an allocated (scheme, authority), an absolute URI rebuilt into origin
//! form and an allocated `Host` value. Here every server worker thread (one single-threaded runtime
//! each, see `server`) owns its pool: a request takes an idle connection of its own thread, sends
//! an origin-form request with a `Host` value computed once per upstream, and the connection goes
//! back to the pool when the response body ends (or is dropped unfinished: then it is closed, like
//! HTTP/1.1 requires). A pooled connection that turns out closed before the request was written is
//! replaced by a fresh one transparently, as the legacy client did.
//!
//! Idempotent requests without a body (most reads) take the lean client in `h1` instead, on raw
//! connections pooled by the same rules (each endpoint has one `pool::Pool` per client): one task
//! and no channel hops per request. Routes whose upstream speaks HTTP/2 (h2c: gRPC servers) share
//! one multiplexed connection per upstream and worker instead (`send_h2`).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::Either;
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub use crate::pool::PoolConfig;
use crate::{
    body::{PooledBody, ProxyBody, Sender},
    h1,
    outgoing::Outgoing,
    pool::{Lease, Pool, Reusable},
};

/// Response header and body of an upstream; the body hands the connection back when it ends.
pub type UpstreamResponse = Response<PooledBody>;

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The base URL is not `http://host[:port]`.
    #[error("unsupported upstream base URL `{0}` (http://host[:port] expected)")]
    BadBase(String),
    /// No TCP connection could be made.
    #[error("connect to {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    /// The TCP connection was not made within the connect timeout.
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    /// The base URL's path and the request target do not form a valid URI.
    #[error("invalid request target for upstream `{0}`")]
    BadTarget(String),
    /// The HTTP exchange failed (the request may have been sent).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The exchange on the lean client failed (the request may have been sent).
    #[error(transparent)]
    Lean(#[from] h1::H1Error),
}

impl UpstreamError {
    /// Whether the request was certainly not sent because no connection could be made.
    pub fn is_connect(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Http(_) | UpstreamError::Lean(_) | UpstreamError::BadTarget(_)
        )
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<ProxyBody>;

/// How to reach one upstream base URL; computed once per worker and base.
#[derive(Clone)]
struct Dial {
    host: Arc<str>,
    port: u16,
    addr: Option<SocketAddr>,
}

struct Endpoint {
    key: Arc<str>,
    host_header: HeaderValue,
    /// The base URL's path (`http://h/ctx` -> `/ctx`), prepended to every request target.
    path_prefix: Option<Arc<str>>,
    dial: Dial,
    /// Idle connections of hyper's client.
    hyper: Pool<Sender>,
    /// Idle connections of the lean client.
    lean: Pool<h1::Conn>,
    /// The HTTP/2 connection (routes with an h2c upstream): one, shared by all requests.
    h2: Option<H2Sender>,
}

impl Endpoint {
    fn parse(base: &str) -> Result<Self, UpstreamError> {
        let bad = || UpstreamError::BadBase(base.to_owned());
        let uri: Uri = base.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let auth = uri.authority().ok_or_else(bad)?;
        let port = auth.port_u16().unwrap_or(80);
        let host_header = match auth.port_u16() {
            Some(p) if p != 80 => HeaderValue::from_str(&format!("{}:{p}", auth.host())),
            _ => HeaderValue::from_str(auth.host()),
        }
        .map_err(|_| bad())?;
        let path = uri.path().trim_end_matches('/');
        let path_prefix = (!path.is_empty()).then(|| Arc::from(path));
        let bare = auth.host().trim_start_matches('[').trim_end_matches(']');
        let addr = bare
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Ok(Self {
            key: Arc::from(base),
            host_header,
            path_prefix,
            dial: Dial {
                host: Arc::from(bare),
                port,
                addr,
            },
            hyper: Pool::default(),
            lean: Pool::default(),
            h2: None,
        })
    }

    /// What a request needs of this endpoint, with the idle connection it got (if any).
    fn checkout<C>(&self, idle: Option<C>) -> Checkout<C> {
        Checkout {
            dial: idle.is_none().then(|| self.dial.clone()),
            idle,
            host: self.host_header.clone(),
            key: self.key.clone(),
            path_prefix: self.path_prefix.clone(),
        }
    }
}

/// Runs `f` on this worker's endpoint for `base` (parsed on first use; one lookup afterwards).
fn with_endpoint<R>(base: &str, f: impl FnOnce(&mut Endpoint) -> R) -> Result<R, UpstreamError> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let ep = match pool.get_mut(base) {
            Some(ep) => ep,
            None => {
                let ep = Endpoint::parse(base)?;
                pool.entry(ep.key.clone()).or_insert(ep)
            }
        };
        Ok(f(ep))
    })
}

thread_local! {
    static POOL: RefCell<HashMap<Arc<str>, Endpoint, BuildFx>> = RefCell::new(HashMap::default());
    /// This worker's pool clock: set by each idle sweep, so the idle times of pooled connections
    /// are measured to a sweep period without a clock read per request (None: no sweeper on this
    /// thread, read the clock).
    static POOL_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// FxHash (see the metric handle cache in `proxy`): keys are upstream base URLs from the config.
type BuildFx = rustc_hash::FxBuildHasher;

/// Now, to the pool's (coarse) clock.
fn pool_now() -> Instant {
    POOL_NOW
        .try_with(Cell::get)
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now)
}

struct Checkout<C> {
    /// An idle connection of this worker, or None: connect with `dial`.
    idle: Option<C>,
    host: HeaderValue,
    key: Arc<str>,
    path_prefix: Option<Arc<str>>,
    dial: Option<Dial>,
}

/// Which of an endpoint's pools holds a client's connections.
type PoolOf<C> = fn(&mut Endpoint) -> &mut Pool<C>;

fn hyper_pool(ep: &mut Endpoint) -> &mut Pool<Sender> {
    &mut ep.hyper
}

fn lean_pool(ep: &mut Endpoint) -> &mut Pool<h1::Conn> {
    &mut ep.lean
}

/// Takes an idle connection of this worker for `base` from the pool `of` picks (None in the
/// checkout: connect with its dial).
fn checkout<C: Reusable>(
    base: &str,
    cfg: &PoolConfig,
    of: PoolOf<C>,
) -> Result<Checkout<C>, UpstreamError> {
    with_endpoint(base, |ep| {
        let idle = of(ep).checkout(pool_now, cfg.idle_timeout);
        ep.checkout(idle)
    })
}

fn dial_of(key: &str) -> Result<Dial, UpstreamError> {
    POOL.with(|pool| match pool.borrow().get(key) {
        Some(ep) => Ok(ep.dial.clone()),
        None => Endpoint::parse(key).map(|ep| ep.dial),
    })
}

/// Puts an idle connection back into the pool `of` picks of this thread's endpoint for `key` (or
/// drops it, see [`Pool::put`]).
fn put_idle<C: Reusable>(key: &str, conn: C, cfg: &PoolConfig, of: PoolOf<C>) {
    if cfg.max_idle_per_host == 0 {
        return;
    }
    // `try_with`: a body dropped while the thread's locals are torn down just closes its connection.
    let _ = POOL.try_with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            return;
        };
        if let Some(ep) = pool.get_mut(key) {
            of(ep).put(conn, pool_now(), cfg);
        }
    });
}

impl Reusable for Sender {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }

    fn is_usable(&mut self) -> bool {
        self.is_ready() && !SendRequest::is_closed(self)
    }
}

impl Reusable for h1::Conn {
    /// Not known without a look at the socket, which [`h1::Conn::is_quiet`] takes at checkout.
    fn is_closed(&self) -> bool {
        false
    }

    fn is_usable(&mut self) -> bool {
        self.is_quiet()
    }
}

/// Takes a connection of hyper's client home once its response is complete (see [`Lease`]).
fn release_hyper(mut sender: Sender, key: Arc<str>, cfg: PoolConfig) {
    if sender.is_closed() {
        return;
    }
    if sender.is_ready() {
        put_idle(&key, sender, &cfg, hyper_pool);
    } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
        // Rare: the connection has not finished its exchange yet (e.g. a request body still
        // being sent); return it once it is ready, on this same worker runtime.
        rt.spawn(async move {
            if sender.ready().await.is_ok() {
                put_idle(&key, sender, &cfg, hyper_pool);
            }
        });
    }
}

/// Closes this worker's idle connections that are past the idle timeout or closed by the upstream.
pub fn sweep_idle(idle_timeout: Duration) {
    let now = Instant::now();
    let _ = POOL_NOW.try_with(|c| c.set(Some(now)));
    let _ = POOL.try_with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut() {
            for ep in pool.values_mut() {
                ep.hyper.sweep(now, idle_timeout);
                ep.lean.sweep(now, idle_timeout);
            }
        }
    });
}

async fn connect_tcp(
    dial: &Dial,
    cfg: &PoolConfig,
) -> Result<tokio::net::TcpStream, UpstreamError> {
    let name = || format!("{}:{}", dial.host, dial.port);
    let tcp = async {
        let addrs: Vec<SocketAddr> = match dial.addr {
            Some(a) => vec![a],
            None => tokio::net::lookup_host((&*dial.host, dial.port))
                .await?
                .collect(),
        };
        let mut last = None;
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address resolved")
        }))
    };
    let stream = tokio::time::timeout(cfg.connect_timeout, tcp)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(name()))?
        .map_err(|e| UpstreamError::Connect(name(), e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| UpstreamError::Connect(name(), e))?;
    Ok(stream)
}

async fn connect(dial: &Dial, cfg: &PoolConfig) -> Result<Sender, UpstreamError> {
    let stream = connect_tcp(dial, cfg).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// What [`send`] resolves to.
pub type Sent = Result<UpstreamResponse, UpstreamError>;
/// [`send`]'s future for requests with a body (hyper's client).
pub type BoxedSend<'a> = Pin<Box<dyn Future<Output = Sent> + Send + 'a>>;

/// Sends `method uri` (origin-form URI; its `Host` is set here) with `body` to the upstream at
/// `base` (`http://host[:port]`), on a pooled connection of this worker when one is idle.
///
/// A plain function choosing between two futures, not an `async fn` awaiting one of them: the
/// request's future is moved (copied) several times per request, and each byte of it is copied
/// each time. The lean path's future is the one held inline; hyper's path (requests with a body)
/// is boxed.
pub fn send<'a>(
    base: &'a str,
    method: &'a Method,
    uri: &'a Uri,
    body: ProxyBody,
    headers: &'a Outgoing<'a>,
    cfg: &'a PoolConfig,
    h2c: bool,
) -> Either<impl Future<Output = Sent> + 'a, BoxedSend<'a>> {
    if h2c {
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        Either::Right(Box::pin(send_h2(base, req, headers, cfg)))
    } else if h1::eligible(method, body.is_end_stream()) {
        Either::Left(send_lean(base, method, uri, headers, cfg))
    } else {
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        Either::Right(Box::pin(send_hyper(base, req, headers, cfg)))
    }
}

/// `send` on hyper's client.
async fn send_hyper(
    base: &str,
    mut req: Request<ProxyBody>,
    headers: &Outgoing<'_>,
    cfg: &PoolConfig,
) -> Result<UpstreamResponse, UpstreamError> {
    let co = checkout(base, cfg, hyper_pool)?;
    *req.headers_mut() = headers.to_map();
    req.headers_mut().insert(header::HOST, co.host);
    if let Some(prefix) = &co.path_prefix {
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *req.uri_mut() = format!("{prefix}{pq}")
            .parse()
            .map_err(|_| UpstreamError::BadTarget(base.to_owned()))?;
    }
    let key = co.key;
    let (mut sender, mut reused) = match (co.idle, co.dial) {
        (Some(s), _) => (s, true),
        // Boxed: connecting is the cold path; its future would otherwise enlarge (and be copied
        // with) every request's future.
        (None, Some(dial)) => (Box::pin(connect(&dial, cfg)).await?, false),
        (None, None) => (Box::pin(connect(&dial_of(&key)?, cfg)).await?, false),
    };
    loop {
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let lease = Lease::new(sender, key, *cfg, release_hyper);
                return Ok(resp.map(|body| PooledBody::hyper(body, lease)));
            }
            Err(mut e) => match e.take_message() {
                // A kept-alive connection closed before the request was written: use a new one.
                Some(r) if reused => {
                    req = r;
                    sender = Box::pin(connect(&dial_of(&key)?, cfg)).await?;
                    reused = false;
                }
                _ => return Err(UpstreamError::Http(e.into_error())),
            },
        }
    }
}

/// `send` to an HTTP/2 upstream (h2c, prior knowledge) on this worker's one connection to it,
/// made on first use and again when the upstream has closed it. Requests are multiplexed on it
/// (up to the upstream's stream limit, beyond which they wait for a free stream); bodies stream
/// both ways and trailers pass through (gRPC's status travels in them).
async fn send_h2(
    base: &str,
    mut req: Request<ProxyBody>,
    headers: &Outgoing<'_>,
    cfg: &PoolConfig,
) -> Result<UpstreamResponse, UpstreamError> {
    let (live, host, prefix, dial) = with_endpoint(base, |ep| {
        let live = ep.h2.as_ref().filter(|s| !s.is_closed()).cloned();
        (
            live,
            ep.host_header.clone(),
            ep.path_prefix.clone(),
            ep.dial.clone(),
        )
    })?;
    let bad = || UpstreamError::BadTarget(base.to_owned());
    // HTTP/2 carries the authority in `:authority`, so the URI is absolute.
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let target = format!(
        "http://{}{}{pq}",
        host.to_str().map_err(|_| bad())?,
        prefix.as_deref().unwrap_or("")
    );
    *req.uri_mut() = target.parse().map_err(|_| bad())?;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = headers.to_map();
    if headers.takes_trailers() {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let mut sender = match live {
        Some(s) => s,
        None => {
            let s = Box::pin(connect_h2(&dial, cfg)).await?;
            with_endpoint(base, |ep| ep.h2 = Some(s.clone()))?;
            s
        }
    };
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    Ok(resp.map(PooledBody::h2))
}

/// A new HTTP/2 connection (prior knowledge) to an upstream, driven by a task of this worker.
async fn connect_h2(dial: &Dial, cfg: &PoolConfig) -> Result<H2Sender, UpstreamError> {
    let stream = connect_tcp(dial, cfg).await?;
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(stream))
            .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// `send` for a request the lean client carries (see `h1::eligible`). A pooled connection that
/// fails before any byte of a response arrives (closed by the upstream while idle) is replaced by
/// a new one and the request sent again: it is idempotent and has no body.
async fn send_lean(
    base: &str,
    method: &Method,
    uri: &Uri,
    headers: &Outgoing<'_>,
    cfg: &PoolConfig,
) -> Result<UpstreamResponse, UpstreamError> {
    let co = checkout(base, cfg, lean_pool)?;
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let prefixed;
    let target = match &co.path_prefix {
        Some(prefix) => {
            prefixed = format!("{prefix}{pq}");
            prefixed.as_str()
        }
        None => pq,
    };
    let key = co.key;
    let (mut conn, mut reused) = match (co.idle, co.dial) {
        (Some(c), _) => (c, true),
        (None, Some(dial)) => (
            h1::Conn::new(Box::pin(connect_tcp(&dial, cfg)).await?),
            false,
        ),
        (None, None) => (
            h1::Conn::new(Box::pin(connect_tcp(&dial_of(&key)?, cfg)).await?),
            false,
        ),
    };
    loop {
        let head = |buf: &mut Vec<u8>| {
            h1::request_line(buf, method, target);
            h1::header_line(buf, &header::HOST, &co.host);
            headers.for_each(|n, v| h1::header_line(buf, n, v));
            buf.extend_from_slice(b"\r\n");
        };
        match h1::exchange(&mut conn, *method == Method::HEAD, head).await {
            Ok(head) => {
                let cfg = *cfg;
                let body = h1::body(conn, head.framing, head.reusable, move |c| {
                    put_idle(&key, c, &cfg, lean_pool);
                });
                return Ok(head.response.map(|()| PooledBody::lean(body)));
            }
            Err(e) if reused && e.nothing_received() => {
                tracing::debug!(error = %e, "pooled upstream connection was closed; reconnecting");
                conn = h1::Conn::new(Box::pin(connect_tcp(&dial_of(&key)?, cfg)).await?);
                reused = false;
            }
            Err(e) => return Err(UpstreamError::Lean(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_host_header_and_literal_address() {
        let ep = Endpoint::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(ep.host_header, "127.0.0.1:8081");
        assert_eq!(ep.dial.addr, Some("127.0.0.1:8081".parse().unwrap()));
        assert!(ep.path_prefix.is_none());
        let ep = Endpoint::parse("http://10.0.0.1:8081/ctx/").unwrap();
        assert_eq!(ep.path_prefix.as_deref(), Some("/ctx"));
        let ep = Endpoint::parse("http://product").unwrap();
        assert_eq!(ep.host_header, "product");
        assert_eq!((ep.dial.addr, ep.dial.port), (None, 80));
        let ep = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(ep.host_header, "[::1]:9000");
        assert_eq!(ep.dial.addr, Some("[::1]:9000".parse().unwrap()));
        assert!(Endpoint::parse("https://secure:443").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
