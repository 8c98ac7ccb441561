//! Upstream connection pooling that does not depend on which client made the connection: the
//! pool's settings and the lease that takes a connection home once its response is complete.
//!
//! Exists so that the response body types (`body`) can hand a connection back to its pool without
//! importing the clients in `upstream`, which import those body types: the lease carries the
//! function that returns the connection, and nothing else of the client.

use std::{sync::Arc, time::Duration};

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
