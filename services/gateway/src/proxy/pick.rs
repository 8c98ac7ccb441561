//! Phase *pick upstream*: the instance an attempt goes to (a static route's next live base URL, or
//! a discovered service's instance), and what the proxy learns about it when it fails.
//!
//! Exists so that instance choice, outlier ejection (`mark_down`) and the question the breaker
//! asks before counting a failure (is another instance left?) sit together, apart from the retry
//! loop in `forward` that uses them.

use http::{StatusCode, header};

use super::{Gateway, problem::Problem};
use crate::routes::{Route, Target};

/// Where one attempt goes.
#[derive(Debug)]
pub(super) enum Upstream<'a> {
    Static(&'a str),
    Discovered {
        base: String,
        instance: Option<String>,
    },
}

impl Upstream<'_> {
    pub(super) fn base(&self) -> &str {
        match self {
            Upstream::Static(b) => b,
            Upstream::Discovered { base, .. } => base,
        }
    }
}

impl Gateway {
    /// Phase *pick upstream*: short-circuits with 503 (and `Retry-After`) when the route has no
    /// live upstream or the service no instance.
    pub(super) async fn pick<'r>(&self, route: &'r Route) -> Result<Upstream<'r>, Problem> {
        match &route.target {
            Target::Static(pool) => pool.pick().map(Upstream::Static).ok_or_else(|| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No upstream",
                    "route has no upstream",
                )
                .header(header::RETRY_AFTER, "1")
            }),
            // Boxed, like the other rarely-suspending awaits: keeps every request's future small.
            Target::Service(name) => match Box::pin(self.discovery.pick_instance(name)).await {
                Ok(p) => Ok(Upstream::Discovered {
                    base: p.base_url.as_str().trim_end_matches('/').to_owned(),
                    instance: p.instance_id,
                }),
                Err(e) => Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No instance available",
                    format!("service {name}: {e}"),
                )
                .header(header::RETRY_AFTER, "1")),
            },
        }
    }

    /// Skips the instance `up` for a while (its connection failed).
    pub(super) fn mark_down(&self, route: &Route, up: &Upstream<'_>) {
        match (&route.target, up) {
            (Target::Static(pool), Upstream::Static(b)) => pool.mark_down(b),
            (
                _,
                Upstream::Discovered {
                    instance: Some(id), ..
                },
            ) => self.discovery.mark_down(id),
            _ => {}
        }
    }

    /// Whether an instance other than `up` could take this route's traffic now.
    pub(super) fn has_other_instance(&self, route: &Route, up: &Upstream<'_>) -> bool {
        match (&route.target, up) {
            (Target::Static(pool), Upstream::Static(b)) => pool.has_live_except(b),
            (
                Target::Service(name),
                Upstream::Discovered {
                    instance: Some(id), ..
                },
            ) => self.discovery.has_live_instance_except(name, id),
            // Reached through DNS (no instance identity): nothing to fail over to that we know of.
            _ => false,
        }
    }
}

/// The key of a route's circuit breaker: its upstream service, or the route for static upstreams.
pub(super) fn breaker_key(route: &Route) -> String {
    match &route.target {
        Target::Service(s) => s.clone(),
        Target::Static(_) => format!("route:{}", route.id),
    }
}
