//! Rate limiting: a governor (GCRA) token bucket per client and route, an optional bucket per route,
//! the `X-RateLimit-*` figures, and an explicit policy for when a limit cannot be checked.
//!
//! Exists because the original gateway's limiter fails open silently. Here the client-key state is
//! bounded (`max_keys`): when it is full and a new client arrives, that client's limit cannot be
//! checked, and the configured [`FailMode`] decides (closed, i.e. 503, by default). Idle buckets
//! (refilled to full) are swept, because dropping a full bucket loses nothing.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use dashmap::{DashMap, mapref::entry::Entry};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed},
};

use crate::config::{Bucket, FailMode, RateLimitConfig};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Figures for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Bucket size (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Tokens left (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`X-RateLimit-Reset`).
    pub reset_secs: u64,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the limit.
    Allowed(RateInfo),
    /// Over the limit: 429 with `Retry-After`.
    Limited {
        /// Header figures.
        info: RateInfo,
        /// Wait before the next request can pass.
        retry_after: Duration,
    },
    /// The limit could not be checked and the policy is fail-closed: 503.
    Unavailable,
    /// The limit could not be checked and the policy is fail-open: passes without headers.
    Unchecked,
    /// Limiting is off.
    Disabled,
}

struct ClientEntry {
    limiter: Limiter,
    last_seen_ms: AtomicU64,
}

struct RouteState {
    quota: Quota,
    idle_after_ms: u64,
    clients: DashMap<String, ClientEntry>,
    shared: Option<(Limiter, Quota)>,
}

/// All limiters, indexed by route index.
pub struct RateLimits {
    enabled: bool,
    routes: Vec<RouteState>,
    max_keys: usize,
    keys: AtomicUsize,
    on_unavailable: FailMode,
    clock: DefaultClock,
    epoch: Instant,
    last_sweep_ms: AtomicU64,
    sweep_every_ms: u64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.enabled)
            .field("routes", &self.routes.len())
            .field("keys", &self.keys.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

/// A governor quota for a bucket (validated: rate > 0, burst >= 1).
pub fn quota(b: &Bucket) -> Quota {
    let burst = NonZeroU32::new(b.burst).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(1.0 / b.per_second).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl RateLimits {
    /// Limiters for routes whose per-client buckets are `route_buckets` (index = route index).
    pub fn new(cfg: &RateLimitConfig, route_buckets: &[Bucket]) -> Self {
        let clock = DefaultClock::default();
        let routes = route_buckets
            .iter()
            .map(|b| {
                let q = quota(b);
                let fill = q.replenish_interval().saturating_mul(q.burst_size().get());
                RouteState {
                    quota: q,
                    idle_after_ms: u64::try_from(fill.as_millis()).unwrap_or(u64::MAX).max(1),
                    clients: DashMap::new(),
                    shared: cfg.route.as_ref().map(|rb| {
                        let rq = quota(rb);
                        (
                            RateLimiter::direct_with_clock(rq, clock.clone()).with_middleware(),
                            rq,
                        )
                    }),
                }
            })
            .collect();
        Self {
            enabled: cfg.enabled,
            routes,
            max_keys: cfg.max_keys,
            keys: AtomicUsize::new(0),
            on_unavailable: cfg.on_unavailable,
            clock,
            epoch: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
            sweep_every_ms: 1_000,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether limiting is on (when off, [`RateLimits::check`] is always `Disabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Client keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Checks (and consumes one token of) `client`'s bucket on route `route`.
    pub fn check(&self, route: usize, client: &str) -> Decision {
        if !self.enabled {
            return Decision::Disabled;
        }
        let Some(rs) = self.routes.get(route) else {
            return self.cannot_check();
        };
        let now_ms = self.now_ms();
        let outcome = match rs.clients.get(client) {
            Some(e) => {
                e.last_seen_ms.store(now_ms, Ordering::Relaxed);
                e.limiter.check()
            }
            None => {
                if self.keys.load(Ordering::Relaxed) >= self.max_keys {
                    self.sweep(now_ms, false);
                    if self.keys.load(Ordering::Relaxed) >= self.max_keys {
                        tracing::warn!(
                            route = route,
                            max_keys = self.max_keys,
                            "rate-limit key table full"
                        );
                        return self.cannot_check();
                    }
                }
                match rs.clients.entry(client.to_owned()) {
                    Entry::Occupied(e) => e.get().limiter.check(),
                    Entry::Vacant(v) => {
                        self.keys.fetch_add(1, Ordering::Relaxed);
                        let e = v.insert(ClientEntry {
                            limiter: RateLimiter::direct_with_clock(rs.quota, self.clock.clone())
                                .with_middleware(),
                            last_seen_ms: AtomicU64::new(now_ms),
                        });
                        e.limiter.check()
                    }
                }
            }
        };
        let decision = self.decide(outcome, rs.quota);
        if let (Decision::Allowed(_), Some((shared, sq))) = (&decision, &rs.shared) {
            let d2 = self.decide(shared.check(), *sq);
            if matches!(d2, Decision::Limited { .. }) {
                return d2;
            }
        }
        decision
    }

    fn cannot_check(&self) -> Decision {
        match self.on_unavailable {
            FailMode::Closed => Decision::Unavailable,
            FailMode::Open => Decision::Unchecked,
        }
    }

    fn decide(
        &self,
        outcome: Result<
            governor::middleware::StateSnapshot,
            governor::NotUntil<<DefaultClock as Clock>::Instant>,
        >,
        q: Quota,
    ) -> Decision {
        let limit = q.burst_size().get();
        match outcome {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let missing = limit.saturating_sub(remaining);
                let reset = q.replenish_interval().saturating_mul(missing);
                Decision::Allowed(RateInfo {
                    limit,
                    remaining,
                    reset_secs: ceil_secs(reset),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let full = q.replenish_interval().saturating_mul(limit);
                Decision::Limited {
                    info: RateInfo {
                        limit,
                        remaining: 0,
                        reset_secs: ceil_secs(full),
                    },
                    retry_after: wait,
                }
            }
        }
    }

    /// Drops buckets idle long enough to be full again. Runs at most once a second unless forced.
    pub fn sweep(&self, now_ms: u64, force: bool) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if !force && now_ms.saturating_sub(last) < self.sweep_every_ms && last != 0 {
            return;
        }
        self.last_sweep_ms.store(now_ms.max(1), Ordering::Relaxed);
        for rs in &self.routes {
            let before = rs.clients.len();
            rs.clients.retain(|_, e| {
                now_ms.saturating_sub(e.last_seen_ms.load(Ordering::Relaxed)) < rs.idle_after_ms
            });
            let removed = before.saturating_sub(rs.clients.len());
            if removed > 0 {
                self.keys.fetch_sub(removed, Ordering::Relaxed);
            }
        }
    }

    /// Periodic sweep entry point for a background task.
    pub fn sweep_now(&self) {
        self.sweep(self.now_ms(), true);
    }
}

/// Whole seconds, rounded up, at least 1 for any non-zero duration.
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 { s + 1 } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(burst: u32, per_second: f64, max_keys: usize, mode: FailMode) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            client: Bucket { per_second, burst },
            route: None,
            max_keys,
            on_unavailable: mode,
        }
    }

    #[test]
    fn burst_then_limited_with_retry_after() {
        let c = cfg(3, 1.0, 10, FailMode::Closed);
        let rl = RateLimits::new(&c, &[c.client]);
        let mut remaining = vec![];
        for _ in 0..3 {
            match rl.check(0, "alice") {
                Decision::Allowed(i) => {
                    assert_eq!(i.limit, 3);
                    remaining.push(i.remaining);
                }
                d => panic!("expected allowed, got {d:?}"),
            }
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        match rl.check(0, "alice") {
            Decision::Limited { info, retry_after } => {
                assert_eq!(info.remaining, 0);
                assert!(
                    retry_after > Duration::from_millis(500)
                        && retry_after <= Duration::from_secs(1)
                );
            }
            d => panic!("expected limited, got {d:?}"),
        }
        // Another client has its own bucket.
        assert!(matches!(rl.check(0, "bob"), Decision::Allowed(_)));
    }

    #[test]
    fn key_table_full_fails_closed_by_default() {
        let c = cfg(5, 1.0, 2, FailMode::Closed);
        let rl = RateLimits::new(&c, &[c.client]);
        assert!(matches!(rl.check(0, "a"), Decision::Allowed(_)));
        assert!(matches!(rl.check(0, "b"), Decision::Allowed(_)));
        assert_eq!(rl.check(0, "c"), Decision::Unavailable);
        // Known clients are still checked normally.
        assert!(matches!(rl.check(0, "a"), Decision::Allowed(_)));
        assert_eq!(rl.tracked_keys(), 2);
    }

    #[test]
    fn key_table_full_fails_open_when_configured() {
        let c = cfg(5, 1.0, 1, FailMode::Open);
        let rl = RateLimits::new(&c, &[c.client]);
        assert!(matches!(rl.check(0, "a"), Decision::Allowed(_)));
        assert_eq!(rl.check(0, "b"), Decision::Unchecked);
    }

    #[test]
    fn idle_full_buckets_are_swept_freeing_capacity() {
        // 1000/s with burst 1: a bucket is full again after 1 ms.
        let c = cfg(1, 1000.0, 1, FailMode::Closed);
        let rl = RateLimits::new(&c, &[c.client]);
        assert!(matches!(rl.check(0, "a"), Decision::Allowed(_)));
        std::thread::sleep(Duration::from_millis(20));
        rl.sweep_now();
        assert_eq!(rl.tracked_keys(), 0);
        assert!(matches!(rl.check(0, "b"), Decision::Allowed(_)));
    }

    #[test]
    fn shared_route_bucket_limits_all_clients_together() {
        let mut c = cfg(100, 1.0, 100, FailMode::Closed);
        c.route = Some(Bucket {
            per_second: 1.0,
            burst: 2,
        });
        let rl = RateLimits::new(&c, &[c.client]);
        assert!(matches!(rl.check(0, "a"), Decision::Allowed(_)));
        assert!(matches!(rl.check(0, "b"), Decision::Allowed(_)));
        assert!(matches!(rl.check(0, "c"), Decision::Limited { .. }));
    }

    #[test]
    fn disabled_and_ceil() {
        let mut c = cfg(1, 1.0, 1, FailMode::Closed);
        c.enabled = false;
        let rl = RateLimits::new(&c, &[c.client]);
        assert_eq!(rl.check(0, "a"), Decision::Disabled);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
