//! Upstream connection pooling, whichever client made the connection: one [`Pool`] of idle
//! connections (checkout of the most recently used, put back with a bound and expiry, sweep),
//! the pool's settings, and the lease that takes a connection home once its response is complete.
//!
//! Exists so that hyper's HTTP/1.1 client and the lean client in `h1` keep their idle connections
//! by the same rules, written once: a client only says what [`Reusable`] asks (is the connection
//! closed, can it carry a request now). The response body types (`body`) hand a connection back
//! through a [`Lease`] without importing the clients in `upstream`, which import those body types:
//! the lease carries the function that returns the connection, and nothing else of the client.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

/// How upstream connections are made and kept.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// TCP connect timeout (name resolution included).
    pub connect_timeout: Duration,
    /// Idle connections kept per upstream base URL and worker (0: no keep-alive reuse).
    pub max_idle_per_host: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
}

/// Returns a connection to the pool of the endpoint `key` (or drops it).
pub type Home<C> = fn(C, Arc<str>, PoolConfig);

/// A connection that goes back to its pool once its response is complete.
#[derive(Debug)]
pub struct Lease<C> {
    conn: C,
    key: Arc<str>,
    cfg: PoolConfig,
    home: Home<C>,
}

impl<C> Lease<C> {
    /// `conn`, to be given to `home` with the endpoint `key` when released.
    pub fn new(conn: C, key: Arc<str>, cfg: PoolConfig, home: Home<C>) -> Self {
        Self {
            conn,
            key,
            cfg,
            home,
        }
    }

    /// Hands the connection back (the response on it is complete).
    pub fn release(self) {
        (self.home)(self.conn, self.key, self.cfg);
    }
}

/// What the pool asks of a connection, whichever client made it.
pub trait Reusable {
    /// Whether the connection is known to be closed, without I/O (asked when it is put back and
    /// when idle connections are swept).
    fn is_closed(&self) -> bool;
    /// Whether it can carry a request now (asked when it is checked out; may look at the socket).
    fn is_usable(&mut self) -> bool;
}

/// The idle connections of one client to one upstream endpoint, on one worker thread, with when
/// each became idle (oldest first).
#[derive(Debug)]
pub struct Pool<C> {
    idle: VecDeque<(C, Instant)>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self {
            idle: VecDeque::new(),
        }
    }
}

impl<C: Reusable> Pool<C> {
    /// The most recently used idle connection that is usable (it is the least likely to have been
    /// closed by the upstream); unusable ones met on the way are dropped, and all of them when the
    /// most recent is past `idle_timeout` (so are the others). `now` is read only if one is idle.
    #[inline]
    pub fn checkout(&mut self, now: impl Fn() -> Instant, idle_timeout: Duration) -> Option<C> {
        let mut at = None;
        while let Some((mut conn, since)) = self.idle.pop_back() {
            let now = *at.get_or_insert_with(&now);
            if now.saturating_duration_since(since) >= idle_timeout {
                self.idle.clear();
                return None;
            }
            if conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` as idle since `now`, after dropping the oldest ones while they are expired or
    /// closed; drops `conn` instead when it is closed or `max_idle_per_host` are idle already.
    #[inline]
    pub fn put(&mut self, conn: C, now: Instant, cfg: &PoolConfig) {
        if cfg.max_idle_per_host == 0 || conn.is_closed() {
            return;
        }
        while self.idle.front().is_some_and(|(c, since)| {
            c.is_closed() || now.saturating_duration_since(*since) >= cfg.idle_timeout
        }) {
            self.idle.pop_front();
        }
        if self.idle.len() < cfg.max_idle_per_host {
            self.idle.push_back((conn, now));
        }
    }

    /// Drops the idle connections that are closed or past `idle_timeout`.
    pub fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        self.idle.retain(|(c, since)| {
            !c.is_closed() && now.saturating_duration_since(*since) < idle_timeout
        });
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// Whether none is idle.
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection known by a number, closed or unusable as the test says.
    #[derive(Debug, PartialEq)]
    struct Fake {
        id: u32,
        closed: bool,
        usable: bool,
    }

    fn fake(id: u32) -> Fake {
        Fake {
            id,
            closed: false,
            usable: true,
        }
    }

    impl Reusable for Fake {
        fn is_closed(&self) -> bool {
            self.closed
        }
        fn is_usable(&mut self) -> bool {
            self.usable
        }
    }

    fn cfg(max: usize) -> PoolConfig {
        PoolConfig {
            connect_timeout: Duration::from_secs(1),
            max_idle_per_host: max,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn checkout_takes_the_most_recent_usable_connection() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.put(fake(1), t0, &cfg(8));
        pool.put(fake(2), t0, &cfg(8));
        pool.put(
            Fake {
                usable: false,
                ..fake(3)
            },
            t0,
            &cfg(8),
        );
        let got = pool.checkout(|| t0, Duration::from_secs(60));
        assert_eq!(
            got.map(|c| c.id),
            Some(2),
            "3 is unusable and dropped, 2 is newest"
        );
        assert_eq!(pool.len(), 1);
        assert_eq!(
            pool.checkout(|| t0, Duration::from_secs(60)).map(|c| c.id),
            Some(1)
        );
        assert!(
            pool.checkout(
                || panic!("no clock read when nothing is idle"),
                Duration::ZERO
            )
            .is_none()
        );
    }

    #[test]
    fn expired_connections_are_never_handed_out() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.put(fake(1), t0, &cfg(8));
        pool.put(fake(2), t0 + Duration::from_secs(30), &cfg(8));
        let later = t0 + Duration::from_secs(91);
        assert!(pool.checkout(|| later, Duration::from_secs(60)).is_none());
        assert!(pool.is_empty(), "the newest expired, so did the others");
    }

    #[test]
    fn put_keeps_at_most_the_limit_and_drops_closed_and_expired_ones() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.put(fake(1), t0, &cfg(0));
        assert!(pool.is_empty(), "no keep-alive reuse at 0");
        pool.put(
            Fake {
                closed: true,
                ..fake(1)
            },
            t0,
            &cfg(2),
        );
        assert!(pool.is_empty(), "a closed connection is not kept");
        pool.put(fake(1), t0, &cfg(2));
        pool.put(fake(2), t0, &cfg(2));
        pool.put(fake(3), t0, &cfg(2));
        assert_eq!(pool.len(), 2, "full: the third is dropped");
        let later = t0 + Duration::from_secs(61);
        pool.put(fake(4), later, &cfg(2));
        assert_eq!(pool.len(), 1, "the expired ones made room");
        assert_eq!(
            pool.checkout(|| later, Duration::from_secs(60))
                .map(|c| c.id),
            Some(4)
        );
    }

    #[test]
    fn sweep_drops_closed_and_expired_connections() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.put(fake(1), t0, &cfg(8));
        pool.put(fake(2), t0 + Duration::from_secs(50), &cfg(8));
        pool.put(fake(3), t0 + Duration::from_secs(50), &cfg(8));
        if let Some((c, _)) = pool.idle.back_mut() {
            c.closed = true;
        }
        pool.sweep(t0 + Duration::from_secs(70), Duration::from_secs(60));
        assert_eq!(
            pool.checkout(|| t0, Duration::from_secs(60)).map(|c| c.id),
            Some(2)
        );
        assert!(pool.is_empty());
    }
}
