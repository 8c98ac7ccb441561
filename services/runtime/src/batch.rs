//! Group commit for request handlers. Many concurrent requests that each need a short database
//! transaction cost one round trip per statement and one commit each; under load the database's
//! per-statement overhead, not the work, sets the ceiling. A [`Batcher`] queues the requests and
//! hands whatever has queued up to one handler call, which writes them in one transaction with
//! multi-row statements and answers each request separately.
//!
//! There is no linger: a worker takes the first waiting request at once and only adds the ones
//! already queued behind it, so an idle service answers as fast as without batching and batches grow
//! only when requests really wait for each other. Several workers let one batch be gathered while
//! another is being written.
//!
//! Tracing: the handler runs inside the span of the batch's first request, so the calls it makes
//! (an HTTP call to another service, with trace headers) continue that request's trace; a request
//! alone in its batch keeps its whole trace. The others of a batch log their own spans up to the
//! hand-over.

use std::{future::Future, sync::Arc};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

/// How a [`Batcher`] groups requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most requests handed to one handler call.
    pub max_batch: usize,
    /// Handler calls that may run at the same time.
    pub workers: usize,
    /// Requests that may wait in the queue; [`Batcher::submit`] waits for room beyond that.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            workers: 2,
            queue: 4096,
        }
    }
}

/// Why a request got no answer from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The workers have stopped (shutdown), or the handler gave no answer for this request.
    #[error("the batch writer stopped before answering")]
    Closed,
}

type Job<Req, Resp> = (Req, oneshot::Sender<Resp>, tracing::Span);

/// Queues requests for a batch handler. Cheap to clone; the workers stop when the last clone is
/// dropped and the queue is empty.
#[derive(Debug)]
pub struct Batcher<Req, Resp> {
    tx: mpsc::Sender<Job<Req, Resp>>,
    sizes: Histogram,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            sizes: self.sizes.clone(),
        }
    }
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts `config.workers` workers on the current tokio runtime. `handler` gets the requests of
    /// one batch in arrival order and must return one answer per request, in the same order; a
    /// request left without an answer gets [`BatchError::Closed`].
    pub fn spawn<F, Fut>(config: BatchConfig, handler: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Job<Req, Resp>>(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let handler = Arc::new(handler);
        let max_batch = config.max_batch.max(1);
        let sizes = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        for _ in 0..config.workers.max(1) {
            let rx = rx.clone();
            let handler = handler.clone();
            let sizes = sizes.clone();
            tokio::spawn(async move {
                loop {
                    let mut jobs = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        match rx.recv().await {
                            Some(job) => jobs.push(job),
                            None => return,
                        }
                        while jobs.len() < max_batch {
                            match rx.try_recv() {
                                Ok(job) => jobs.push(job),
                                Err(_) => break,
                            }
                        }
                    }
                    sizes.observe(jobs.len() as f64);
                    let span = jobs
                        .first()
                        .map_or_else(tracing::Span::none, |j| j.2.clone());
                    let (reqs, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                        jobs.into_iter().map(|(r, tx, _)| (r, tx)).unzip();
                    let answers = handler(reqs).instrument(span).await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // The caller may have gone away; its work is done all the same.
                        let _ = reply.send(answer);
                    }
                }
            });
        }
        Self { tx, sizes }
    }

    /// Requests per handler call, for the service's /metrics (how much the grouping saves).
    pub fn batch_sizes(&self) -> Histogram {
        self.sizes.clone()
    }

    /// Queues `req` and waits for its answer.
    pub async fn submit(&self, req: Req) -> Result<Resp, BatchError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply, tracing::Span::current()))
            .await
            .map_err(|_| BatchError::Closed)?;
        answer.await.map_err(|_| BatchError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_lone_request_is_answered_at_once() {
        let b = Batcher::spawn(BatchConfig::default(), |xs: Vec<u32>| async move {
            xs.into_iter().map(|x| x * 2).collect::<Vec<_>>()
        });
        let answer = tokio::time::timeout(Duration::from_secs(1), b.submit(21)).await;
        assert_eq!(answer, Ok(Ok(42)));
    }

    #[tokio::test]
    async fn waiting_requests_share_a_batch_and_each_gets_its_own_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let (c, l) = (calls.clone(), largest.clone());
        let b = Batcher::spawn(
            BatchConfig {
                max_batch: 16,
                workers: 1,
                queue: 1024,
            },
            move |xs: Vec<u32>| {
                let (c, l) = (c.clone(), l.clone());
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    l.fetch_max(xs.len(), Ordering::SeqCst);
                    // A slow write, so the next requests queue up behind this one.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    xs.into_iter().map(|x| x + 1000).collect::<Vec<_>>()
                }
            },
        );
        let answers = futures::future::join_all((0..100u32).map(|i| {
            let b = b.clone();
            async move { (i, b.submit(i).await) }
        }))
        .await;
        for (i, a) in answers {
            assert_eq!(a, Ok(i + 1000), "request {i} got another request's answer");
        }
        let calls = calls.load(Ordering::SeqCst);
        assert!(
            calls < 100,
            "100 waiting requests took {calls} handler calls"
        );
        assert!(largest.load(Ordering::SeqCst) <= 16, "max_batch exceeded");
    }

    #[tokio::test]
    async fn a_request_the_handler_does_not_answer_gets_an_error_not_a_hang() {
        let b = Batcher::spawn(BatchConfig::default(), |_xs: Vec<u32>| async move {
            Vec::<u32>::new()
        });
        let answer = tokio::time::timeout(Duration::from_secs(1), b.submit(1)).await;
        assert_eq!(answer, Ok(Err(BatchError::Closed)));
    }
}
