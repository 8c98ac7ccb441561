//! Resilient HTTP client to other services by app name: discovery, per-call deadline, trace propagation,
//! bounded retries for idempotent calls, and one circuit breaker per target service.

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::discovery::{Discovery, DiscoveryError};
use crate::metrics::{Metrics, ServiceLabels};
use crate::telemetry;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The target's breaker is open.
    #[error("circuit breaker for {service} is open; retry after {retry_after:?}")]
    BreakerOpen {
        /// Target app.
        service: String,
        /// When trial calls resume.
        retry_after: Duration,
    },
    /// No instance to call.
    #[error("no instance of {service} available")]
    NoInstance {
        /// Target app.
        service: String,
    },
    /// The call did not finish within its deadline.
    #[error("call to {service} timed out after {timeout:?}")]
    Timeout {
        /// Target app.
        service: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Connection or protocol failure.
    #[error("call to {service} failed: {source}")]
    Transport {
        /// Target app.
        service: String,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// Request could not be built (bad path, body or header).
    #[error("invalid request to {service}: {reason}")]
    InvalidRequest {
        /// Target app.
        service: String,
        /// What is wrong.
        reason: String,
    },
}

impl CallError {
    /// Target app of the failed call.
    pub fn service(&self) -> &str {
        match self {
            Self::BreakerOpen { service, .. }
            | Self::NoInstance { service }
            | Self::Timeout { service, .. }
            | Self::Transport { service, .. }
            | Self::InvalidRequest { service, .. } => service,
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Default deadline of a call, retries included.
    pub timeout: Duration,
    /// Extra attempts for idempotent calls.
    pub retries: u32,
    /// First backoff (doubles each retry).
    pub backoff: Duration,
    /// Breaker settings for every target.
    pub breaker: BreakerConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            retries: 2,
            backoff: Duration::from_millis(50),
            breaker: BreakerConfig::default(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    discovery: Discovery,
    metrics: Metrics,
    config: ClientConfig,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

/// HTTP client to other services by name; cheap to clone.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

impl ServiceClient {
    /// A client using `discovery` for lookups and `metrics` for the breaker gauge.
    pub fn new(discovery: Discovery, metrics: Metrics, config: ClientConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1).min(config.timeout))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            inner: Arc::new(Inner {
                http,
                discovery,
                metrics,
                config,
                breakers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The breaker guarding calls to `service`.
    pub fn breaker(&self, service: &str) -> Arc<CircuitBreaker> {
        let key = service.to_ascii_lowercase();
        let mut map = self.inner.breakers.lock();
        map.entry(key.clone())
            .or_insert_with(|| {
                let gauge = self
                    .inner
                    .metrics
                    .breaker_state
                    .get_or_create_owned(&ServiceLabels { service: key });
                Arc::new(CircuitBreaker::new(self.inner.config.breaker, Some(gauge)))
            })
            .clone()
    }

    /// Starts a request with any method.
    pub fn request(&self, method: Method, service: &str, path: &str) -> CallBuilder {
        CallBuilder {
            client: self.clone(),
            method,
            service: service.to_ascii_lowercase(),
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: None,
            timeout: self.inner.config.timeout,
            error: None,
        }
    }

    /// GET `path` on `service`.
    pub fn get(&self, service: &str, path: &str) -> CallBuilder {
        self.request(Method::GET, service, path)
    }

    /// POST `path` on `service`.
    pub fn post(&self, service: &str, path: &str) -> CallBuilder {
        self.request(Method::POST, service, path)
    }

    /// PUT `path` on `service`.
    pub fn put(&self, service: &str, path: &str) -> CallBuilder {
        self.request(Method::PUT, service, path)
    }

    /// DELETE `path` on `service`.
    pub fn delete(&self, service: &str, path: &str) -> CallBuilder {
        self.request(Method::DELETE, service, path)
    }
}

/// One call being built; finish with [`CallBuilder::send`].
#[derive(Debug)]
pub struct CallBuilder {
    client: ServiceClient,
    method: Method,
    service: String,
    path: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    timeout: Duration,
    error: Option<String>,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

impl CallBuilder {
    /// JSON body (sets Content-Type).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(b) => {
                self.body = Some(Bytes::from(b));
                self.headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(e) => self.error = Some(format!("body is not serializable: {e}")),
        }
        self
    }

    /// Raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => self.error = Some(format!("invalid header {name}")),
        }
        self
    }

    /// Overrides the deadline of this call (retries included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the call. 2xx-4xx come back as `Ok`; 5xx too once retries are exhausted (counted as a breaker
    /// failure). Connection refusals are retried on another instance for every method, since nothing
    /// was sent; 5xx are retried only for idempotent methods.
    pub async fn send(self) -> Result<reqwest::Response, CallError> {
        let span = tracing::info_span!(
            "http.client",
            otel.name = %format!("{} {}", self.method, self.service),
            otel.kind = "client",
            peer.service = %self.service,
            http.method = %self.method,
            http.status_code = tracing::field::Empty,
        );
        let svc = self.service.clone();
        let client = self.client.clone();
        let result = self.send_inner(span.clone()).instrument(span).await;
        if result
            .as_ref()
            .map_or(true, |r| r.status().is_server_error())
        {
            client
                .inner
                .metrics
                .client_failures
                .get_or_create(&ServiceLabels { service: svc })
                .inc();
        }
        result
    }

    async fn send_inner(self, span: tracing::Span) -> Result<reqwest::Response, CallError> {
        let service = self.service.clone();
        if let Some(reason) = self.error {
            return Err(CallError::InvalidRequest { service, reason });
        }
        let inner = &self.client.inner;
        let breaker = self.client.breaker(&service);
        if let Err(rej) = breaker.try_acquire() {
            return Err(CallError::BreakerOpen {
                service,
                retry_after: rej.retry_after,
            });
        }
        let deadline = Instant::now() + self.timeout;
        let idempotent = is_idempotent(&self.method);
        let max_attempts = 1 + inner.config.retries;
        let mut backoff = inner.config.backoff;
        let mut headers = self.headers;
        telemetry::inject_headers(&span.context(), &mut headers);
        let path = self.path.trim_start_matches('/').to_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let picked = match inner.discovery.pick_instance(&service).await {
                Ok(p) => p,
                Err(DiscoveryError::NoInstance { .. })
                | Err(DiscoveryError::BadFallback { .. }) => {
                    breaker.on_failure();
                    return Err(CallError::NoInstance { service });
                }
            };
            let url = match picked.base_url.join(&path) {
                Ok(u) => u,
                Err(e) => {
                    breaker.record(true);
                    return Err(CallError::InvalidRequest {
                        service,
                        reason: format!("bad path {path}: {e}"),
                    });
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                breaker.on_failure();
                return Err(CallError::Timeout {
                    service,
                    timeout: self.timeout,
                });
            }
            let mut req = inner
                .http
                .request(self.method.clone(), url)
                .headers(headers.clone())
                .timeout(remaining);
            if let Some(b) = &self.body {
                req = req.body(b.clone());
            }
            let can_retry = attempt < max_attempts;
            match req.send().await {
                Ok(resp) if resp.status().is_server_error() && idempotent && can_retry => {
                    tracing::debug!(status = resp.status().as_u16(), attempt, "5xx; retrying");
                }
                Ok(resp) => {
                    span.record("http.status_code", resp.status().as_u16());
                    breaker.record(!resp.status().is_server_error());
                    return Ok(resp);
                }
                // Before the timeout arm: a connect timeout is both, and it is the instance that
                // failed (a deleted pod's address answers nothing), not the call. Nothing was
                // sent, so any method may go to another instance.
                Err(e) if e.is_connect() => {
                    if let Some(id) = &picked.instance_id {
                        inner.discovery.mark_down(id);
                    }
                    if !can_retry {
                        breaker.on_failure();
                        return Err(CallError::Transport { service, source: e });
                    }
                    tracing::debug!(error = %e, attempt, "connect failed; trying another instance");
                }
                Err(e) if e.is_timeout() => {
                    breaker.on_failure();
                    return Err(CallError::Timeout {
                        service,
                        timeout: self.timeout,
                    });
                }
                Err(e) => {
                    if !(idempotent && can_retry) {
                        breaker.on_failure();
                        return Err(CallError::Transport { service, source: e });
                    }
                    tracing::debug!(error = %e, attempt, "transport error; retrying");
                }
            }
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = backoff.saturating_mul(2);
        }
    }
}
