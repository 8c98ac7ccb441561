//! Count-window circuit breaker (Resilience4j semantics) so a failing downstream service is short-circuited
//! instead of tying up callers, then probed with a few trial calls and closed again when it recovers.

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Breaker tuning; defaults are the original system's Resilience4j settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Number of most recent calls the failure rate is computed over.
    pub window: usize,
    /// Failure rate (0..=1) at or above which the breaker opens once the window is full.
    pub failure_rate: f64,
    /// How long the breaker stays open before allowing trial calls.
    pub open_wait: Duration,
    /// Trial calls allowed while half-open.
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 5,
            failure_rate: 0.5,
            open_wait: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}

/// Breaker state; the metric value is in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow (0).
    Closed,
    /// Calls are rejected (1).
    Open,
    /// A few trial calls flow (2).
    HalfOpen,
}

impl BreakerState {
    /// Value of the `circuit_breaker_state` gauge.
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// Returned by [`CircuitBreaker::try_acquire`] while open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open, retry after {retry_after:?}")]
pub struct Rejected {
    /// Time until trial calls are allowed.
    pub retry_after: Duration,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    outcomes: VecDeque<bool>,
    opened_at: Instant,
    half_open_permits: usize,
    half_open_results: Vec<bool>,
    half_open_since: Instant,
}

/// One breaker, usually per target service. Call [`try_acquire`](Self::try_acquire) before a call and
/// [`record`](Self::record) with its outcome afterwards.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    gauge: Option<Gauge>,
}

impl CircuitBreaker {
    /// A closed breaker; `gauge` (if any) tracks its state.
    pub fn new(config: BreakerConfig, gauge: Option<Gauge>) -> Self {
        let config = BreakerConfig {
            window: config.window.max(1),
            half_open_calls: config.half_open_calls.max(1),
            ..config
        };
        if let Some(g) = &gauge {
            g.set(0);
        }
        Self {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                outcomes: VecDeque::with_capacity(config.window),
                opened_at: Instant::now(),
                half_open_permits: 0,
                half_open_results: Vec::new(),
                half_open_since: Instant::now(),
            }),
            gauge,
        }
    }

    /// Current state (an open breaker whose wait is over reports half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.inner.lock();
        self.advance(&mut inner);
        inner.state
    }

    fn set_state(&self, inner: &mut Inner, state: BreakerState) {
        inner.state = state;
        match state {
            BreakerState::Closed => inner.outcomes.clear(),
            BreakerState::Open => {
                inner.opened_at = Instant::now();
                inner.outcomes.clear();
            }
            BreakerState::HalfOpen => {
                inner.half_open_permits = self.config.half_open_calls;
                inner.half_open_results.clear();
                inner.half_open_since = Instant::now();
            }
        }
        if let Some(g) = &self.gauge {
            g.set(state.gauge_value());
        }
    }

    fn advance(&self, inner: &mut Inner) {
        if inner.state == BreakerState::Open && inner.opened_at.elapsed() >= self.config.open_wait {
            self.set_state(inner, BreakerState::HalfOpen);
        }
    }

    /// Asks permission for one call.
    pub fn try_acquire(&self) -> Result<(), Rejected> {
        let mut inner = self.inner.lock();
        self.advance(&mut inner);
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => Err(Rejected {
                retry_after: self
                    .config
                    .open_wait
                    .saturating_sub(inner.opened_at.elapsed()),
            }),
            BreakerState::HalfOpen => {
                // Trial calls whose outcome never came back (a cancelled caller) must not wedge the
                // breaker: after another open wait, grant a fresh set of trials.
                if inner.half_open_permits == 0
                    && inner.half_open_since.elapsed() >= self.config.open_wait
                {
                    self.set_state(&mut inner, BreakerState::HalfOpen);
                }
                if inner.half_open_permits > 0 {
                    inner.half_open_permits -= 1;
                    Ok(())
                } else {
                    Err(Rejected {
                        retry_after: Duration::from_millis(100),
                    })
                }
            }
        }
    }

    /// Records the outcome of a permitted call (`true` = success).
    pub fn record(&self, success: bool) {
        let mut inner = self.inner.lock();
        match inner.state {
            BreakerState::Closed => {
                if inner.outcomes.len() == self.config.window {
                    inner.outcomes.pop_front();
                }
                inner.outcomes.push_back(success);
                if inner.outcomes.len() == self.config.window
                    && failure_rate(inner.outcomes.iter().copied()) >= self.config.failure_rate
                {
                    self.set_state(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => {
                inner.half_open_results.push(success);
                if inner.half_open_results.len() >= self.config.half_open_calls {
                    let rate = failure_rate(inner.half_open_results.iter().copied());
                    if rate >= self.config.failure_rate {
                        self.set_state(&mut inner, BreakerState::Open);
                    } else {
                        self.set_state(&mut inner, BreakerState::Closed);
                    }
                }
            }
            // A call permitted before the breaker opened finished late: ignore it.
            BreakerState::Open => {}
        }
    }

    /// Records a success.
    pub fn on_success(&self) {
        self.record(true);
    }

    /// Records a failure.
    pub fn on_failure(&self) {
        self.record(false);
    }
}

fn failure_rate(outcomes: impl Iterator<Item = bool>) -> f64 {
    let (mut n, mut failed) = (0u32, 0u32);
    for ok in outcomes {
        n += 1;
        failed += u32::from(!ok);
    }
    if n == 0 {
        0.0
    } else {
        f64::from(failed) / f64::from(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_short_circuits_and_recovers() {
        let gauge = Gauge::default();
        let b = CircuitBreaker::new(BreakerConfig::default(), Some(gauge.clone()));
        // 2 failures in 5 = 40 %: stays closed.
        for ok in [true, false, true, false, true] {
            b.try_acquire().unwrap();
            b.record(ok);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // Window slides: last five = [false, true, false, true, false] -> 60 % -> open.
        b.try_acquire().unwrap();
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(gauge.get(), 1);
        let rej = b.try_acquire().unwrap_err();
        assert!(
            rej.retry_after <= Duration::from_secs(5) && rej.retry_after > Duration::from_secs(4)
        );

        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(gauge.get(), 2);
        for _ in 0..3 {
            b.try_acquire().unwrap();
        }
        assert!(
            b.try_acquire().is_err(),
            "only 3 trial calls while half-open"
        );
        b.record(true);
        b.record(false);
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_trial_calls_do_not_wedge_the_breaker() {
        let b = CircuitBreaker::new(BreakerConfig::default(), None);
        for _ in 0..5 {
            b.try_acquire().unwrap();
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..3 {
            b.try_acquire().unwrap(); // callers cancelled: outcomes never recorded
        }
        assert!(b.try_acquire().is_err());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            b.try_acquire().is_ok(),
            "fresh trials after another open wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_trials_reopen() {
        let b = CircuitBreaker::new(BreakerConfig::default(), None);
        for _ in 0..5 {
            b.try_acquire().unwrap();
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(6)).await;
        for ok in [false, false, true] {
            b.try_acquire().unwrap();
            b.record(ok);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn needs_a_full_window_before_opening() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = CircuitBreaker::new(BreakerConfig::default(), None);
            for _ in 0..4 {
                b.try_acquire().unwrap();
                b.record(false);
            }
            assert_eq!(b.state(), BreakerState::Closed);
        });
    }
}
