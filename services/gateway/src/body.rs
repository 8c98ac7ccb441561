//! The body types the proxy moves: the request body sent upstream ([`ProxyBody`]), the upstream's
//! response body ([`PooledBody`], which hands its connection back to the pool when it ends) and the
//! gateway's response body ([`ResponseBody`], which records the request's metrics when it is done).
//!
//! Exists as a leaf under both `proxy` (which builds responses) and `upstream` (which makes the
//! bodies from its clients), so that neither imports the other's internals: `proxy` uses
//! `upstream`, `upstream` uses only this module, `pool` and `h1`.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use shop_runtime::Metrics;

use crate::{h1, pool::Lease};

/// Boxed error of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of requests sent upstream: streamed, never collected.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete request body.
pub fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// No request body.
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A connection of hyper's HTTP/1.1 client.
pub type Sender = SendRequest<ProxyBody>;

/// Body of the gateway's responses: an upstream's streamed body or a small one of the gateway's
/// own, without boxing. The request's metrics are recorded when it is dropped, i.e. when the
/// body has been sent (or the client went away), so the duration covers the whole response.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    done: Option<Done>,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream(PooledBody),
}

/// What is recorded when a response is finished.
#[derive(Debug)]
pub(crate) struct Done {
    /// The route id (the metrics' `route` label).
    pub(crate) route: &'static str,
    /// The request's method (extension methods already folded into one value).
    pub(crate) method: Method,
    /// The response status.
    pub(crate) status: u16,
    /// When the request arrived.
    pub(crate) start: Instant,
}

impl ResponseBody {
    /// A complete body.
    pub fn full(b: Bytes) -> Self {
        Self {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
            done: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            done: None,
        }
    }

    /// An upstream's streamed body.
    pub(crate) fn upstream(b: PooledBody) -> Self {
        Self {
            kind: Kind::Upstream(b),
            done: None,
        }
    }

    /// Records the request as `done` once this body has been sent (or dropped).
    pub(crate) fn record_when_done(&mut self, done: Done) {
        self.done = Some(done);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(p) => Pin::new(p).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(p) => p.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(p) => p.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(d) = self.done.take() {
            record(d);
        }
    }
}

type MetricKey = (&'static str, Method, u16);

/// This worker thread's metrics: the registry's families and the handles already resolved.
#[derive(Default)]
struct Recorder {
    metrics: Option<Metrics>,
    handles: std::collections::HashMap<
        MetricKey,
        (
            prometheus_client::metrics::counter::Counter,
            prometheus_client::metrics::histogram::Histogram,
        ),
        // rustc-hash's FxHash: the per-thread caches looked up on every request (metric handles,
        // upstream pools) have a handful of short keys from the config (route ids, methods,
        // status codes, upstream base URLs), for which SipHash cost more than the rest of the
        // lookup. Not for keys a client controls.
        rustc_hash::FxBuildHasher,
    >,
}

thread_local! {
    static RECORDER: std::cell::RefCell<Recorder> = std::cell::RefCell::new(Recorder::default());
}

/// Counts a finished request in `http_server_requests` / `..._duration_seconds`. The metric
/// handles are cached per worker thread, so this takes no shared lock and allocates nothing
/// once a (route, method, status) was seen.
fn record(d: Done) {
    let secs = d.start.elapsed().as_secs_f64();
    let _ = RECORDER.try_with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else {
            return;
        };
        let Recorder { metrics, handles } = &mut *r;
        let Some(metrics) = metrics else { return };
        let (counter, hist) = handles
            .entry((d.route, d.method.clone(), d.status))
            .or_insert_with(|| {
                let labels = shop_runtime::metrics::HttpLabels {
                    method: d.method.to_string(),
                    route: d.route.to_owned(),
                    status: d.status,
                };
                (
                    metrics.requests.get_or_create(&labels).clone(),
                    metrics.latency.get_or_create(&labels).clone(),
                )
            });
        counter.inc();
        hist.observe(secs);
    });
}

/// Gives this worker thread's metric recorder the registry (once per thread).
pub(crate) fn bind_recorder(metrics: &Metrics) {
    let _ = RECORDER.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut()
            && r.metrics.is_none()
        {
            r.metrics = Some(metrics.clone());
        }
    });
}

/// The upstream's response body; hands the connection back to the pool when it ends.
#[derive(Debug)]
pub struct PooledBody(Inner);

#[derive(Debug)]
enum Inner {
    /// From hyper's client.
    Hyper {
        inner: Incoming,
        lease: Option<Lease<Sender>>,
    },
    /// From the lean client (which returns its connection itself).
    Lean(h1::Body),
    /// From an HTTP/2 upstream (its connection is shared, nothing to hand back).
    H2(Incoming),
}

impl PooledBody {
    /// A body of hyper's HTTP/1.1 client, whose connection `lease` goes home when it ends.
    pub fn hyper(inner: Incoming, lease: Lease<Sender>) -> Self {
        let end = inner.is_end_stream();
        let mut b = Self(Inner::Hyper {
            inner,
            lease: Some(lease),
        });
        if end {
            b.release();
        }
        b
    }

    /// A body of the lean client (which returns its connection itself).
    pub fn lean(body: h1::Body) -> Self {
        Self(Inner::Lean(body))
    }

    /// A body of an HTTP/2 upstream (its connection is shared: nothing to hand back).
    pub fn h2(body: Incoming) -> Self {
        Self(Inner::H2(body))
    }

    fn release(&mut self) {
        if let Inner::Hyper { lease, .. } = &mut self.0
            && let Some(l) = lease.take()
        {
            l.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.0 {
            Inner::Lean(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            Inner::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            Inner::Hyper { inner, lease } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => this.release(),
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => this.release(),
                    // A broken body: the connection is not reusable.
                    Poll::Ready(Some(Err(_))) => *lease = None,
                    _ => {}
                }
                polled.map(|f| f.map(|r| r.map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Hyper { inner, .. } | Inner::H2(inner) => inner.is_end_stream(),
            Inner::Lean(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Hyper { inner, .. } | Inner::H2(inner) => inner.size_hint(),
            Inner::Lean(b) => b.size_hint(),
        }
    }
}
