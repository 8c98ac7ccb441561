//! Optional webhook delivery of each new notification, with bounded retries and backoff.
//!
//! Exists because the original left "send out an email" as a TODO and, in v2, silently dropped a
//! record after nine instant retries. Here delivery is attempted a bounded number of times with
//! exponential backoff; the receiver gets an `Idempotency-Key` (the event id) so a redelivery after
//! a crash is harmless; and when retries are exhausted the caller dead-letters the record with the
//! reason instead of dropping it.

use std::time::Duration;

use crate::store::Notification;

/// Retry policy of the webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Target URL (POST).
    pub url: String,
    /// Attempts in total (≥ 1).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled each time.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

/// Outcome after all attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx on attempt `attempts`.
    Delivered {
        /// Attempts used.
        attempts: u32,
    },
    /// Gave up.
    Failed {
        /// Attempts used.
        attempts: u32,
        /// Last error.
        reason: String,
    },
}

/// Delay before attempt `n + 1` (n starting at 1): initial × 2^(n-1), capped.
pub fn backoff(cfg: &WebhookConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    cfg.initial_backoff
        .saturating_mul(factor)
        .min(cfg.max_backoff)
}

/// Posts notifications to the configured URL.
#[derive(Clone)]
pub struct Webhook {
    cfg: WebhookConfig,
    http: reqwest::Client,
}

impl Webhook {
    /// A webhook client for `cfg`.
    pub fn new(cfg: WebhookConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(Self { cfg, http })
    }

    /// Deliver with retries. 4xx other than 408/429 are not retried (the receiver refused it).
    pub async fn deliver(&self, n: &Notification) -> Outcome {
        let max = self.cfg.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .http
                .post(&self.cfg.url)
                .header("Idempotency-Key", &n.event_id)
                .json(n)
                .send()
                .await;
            let (retryable, reason) = match result {
                Ok(r) if r.status().is_success() => {
                    return Outcome::Delivered { attempts: attempt };
                }
                Ok(r) => {
                    let s = r.status();
                    let retryable = s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429;
                    (retryable, format!("webhook answered {s}"))
                }
                Err(e) => (true, format!("webhook unreachable: {e}")),
            };
            if !retryable || attempt >= max {
                return Outcome::Failed {
                    attempts: attempt,
                    reason,
                };
            }
            tracing::warn!(attempt, %reason, event_id = %n.event_id, "webhook delivery failed; retrying");
            tokio::time::sleep(backoff(&self.cfg, attempt)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cfg = WebhookConfig {
            url: String::new(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(backoff(&cfg, 1), Duration::from_millis(100));
        assert_eq!(backoff(&cfg, 2), Duration::from_millis(200));
        assert_eq!(backoff(&cfg, 3), Duration::from_millis(400));
        assert_eq!(backoff(&cfg, 4), Duration::from_millis(700));
        assert_eq!(backoff(&cfg, 40), Duration::from_millis(700));
    }
}
