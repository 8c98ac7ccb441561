//! The request body on its way upstream: refused when it is declared larger than the route allows,
//! read whole when it is small enough to be sent again on another instance (so a refused
//! connection can be retried), streamed once otherwise, with how far the client got with it.
//!
//! Exists between *rate limit* and *pick upstream* because what can be retried depends on it,
//! and a stalled or broken upload must be told apart from an upstream that failed.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{Gateway, problem::Problem};
use crate::{
    body::{BoxError, ProxyBody},
    routes::Route,
};

/// The request body to send upstream.
pub(super) enum Outbound {
    /// Replayable: no body, or a small body already read.
    Replayable(Option<Bytes>),
    /// Streamed once, with how far the client got with it.
    Stream(Option<ProxyBody>, Arc<Upload>),
}

/// How far a streamed request body has come from the client, so that an upstream call that timed
/// out or failed can be told apart from a client that stalled or broke off its upload (which is
/// not the upstream's failure, and must not count against its circuit breaker).
#[derive(Debug, Default)]
pub(super) struct Upload(AtomicU8);

impl Upload {
    /// Data was passed on (or nothing was asked for yet).
    pub(super) const MOVING: u8 = 0;
    /// The last read found nothing from the client yet.
    pub(super) const WAITING: u8 = 1;
    /// The body ended.
    pub(super) const DONE: u8 = 2;
    /// Reading from the client failed (connection lost, bad chunked framing).
    pub(super) const FAILED: u8 = 3;

    pub(super) fn is(&self, state: u8) -> bool {
        self.0.load(Ordering::Relaxed) == state
    }
}

/// The client's request body, recording its progress in an [`Upload`].
#[derive(Debug)]
struct ClientBody {
    inner: Incoming,
    upload: Arc<Upload>,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Pending => Upload::WAITING,
            Poll::Ready(None) => Upload::DONE,
            Poll::Ready(Some(Err(_))) => Upload::FAILED,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Upload::DONE,
            Poll::Ready(Some(Ok(_))) => Upload::MOVING,
        };
        this.upload.0.store(state, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Gateway {
    /// The request body to send upstream. Refuses (413) a body declared larger than the route's
    /// limit before anything is sent; reads a small one whole, within the route's timeout (408) and
    /// limit (413); streams a larger one (the limit then applies as it streams).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each by-value argument twice in its future, which is copied per request"
    )]
    pub(super) fn request_body<'a>(
        &'a self,
        route: &'a Route,
        headers: &'a HeaderMap,
        body: Incoming,
    ) -> impl Future<Output = Result<Outbound, Problem>> + 'a {
        async move {
            // Body size limit: reject declared oversize bodies before anything is sent upstream.
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > route.max_body_bytes) {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body too large",
                    format!(
                        "the body is larger than the limit of {} bytes",
                        route.max_body_bytes
                    ),
                )
                .field("body"));
            }
            let limit = usize::try_from(route.max_body_bytes).unwrap_or(usize::MAX);
            let outbound = if body.is_end_stream() || declared == Some(0) {
                Outbound::Replayable(None)
            } else if declared.is_some_and(|n| n <= self.proxy.replay_buffer_bytes) {
                // Bounded by the route's timeout: a client that announces a body and stalls must not
                // hold the request (and its connection) forever.
                let collected = tokio::time::timeout(
                    route.timeout,
                    Box::pin(Limited::new(body, limit).collect()),
                )
                .await
                .map_err(|_| {
                    Problem::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "Request body timeout",
                        format!(
                            "the announced body did not arrive within {} ms",
                            route.timeout.as_millis()
                        ),
                    )
                    .field("body")
                })?
                .map_err(|e| {
                    if has_length_limit_error(e.as_ref()) {
                        Problem::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Request body too large",
                            "body exceeds the limit",
                        )
                        .field("body")
                    } else {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "Request body unreadable",
                            e.to_string(),
                        )
                        .field("body")
                    }
                })?;
                Outbound::Replayable(Some(collected.to_bytes()))
            } else {
                let upload = Arc::new(Upload::default());
                let body = ClientBody {
                    inner: body,
                    upload: upload.clone(),
                };
                Outbound::Stream(
                    Some(
                        Limited::new(body, limit)
                            .map_err(BoxError::from)
                            .boxed_unsync(),
                    ),
                    upload,
                )
            };
            Ok(outbound)
        }
    }
}

/// Whether `e` (or an error it wraps) is the body limit's.
pub(super) fn has_length_limit_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}
