//! Phase *rate limit*: takes a token from the client's bucket on the route (keyed by the token's
//! subject, else the client's IP).
//!
//! Exists after *authenticate* because the key depends on who the client is; the limits
//! themselves live in `ratelimit`.

use http::{StatusCode, header};

use super::{
    Gateway, RequestCtx,
    problem::{Problem, too_many_requests},
};
use crate::{ratelimit::Decision, routes::Route};

impl Gateway {
    /// Phase *rate limit*: on an allowed request, the limit's state for the response headers is
    /// kept in `ctx.rate`. Short-circuits with 429 over the limit and with 503 when the limiter
    /// cannot check (full, failing closed). The key is built only when limits are on.
    #[inline]
    pub(super) fn rate_limit(
        &self,
        route: &Route,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<(), Problem> {
        if !self.limits.enabled() {
            return Ok(());
        }
        let decision = match ctx.principal.as_ref() {
            Some(p) => self
                .limits
                .check(route.index, &format!("sub:{}", p.subject)),
            None => self.limits.check(route.index, &ctx.peer.limit_key),
        };
        match decision {
            Decision::Allowed(i) => {
                ctx.rate = Some(i);
                Ok(())
            }
            Decision::Limited { info, retry_after } => {
                Err(too_many_requests(route, &info, retry_after))
            }
            Decision::Unavailable => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Rate limit unavailable",
                "the rate limit cannot be checked right now (limiter at capacity); failing closed",
            )
            .header(header::RETRY_AFTER, "1")),
            Decision::Unchecked | Decision::Disabled => Ok(()),
        }
    }
}
