//! Phase *authenticate*: verifies the bearer token (if any) and applies the route's security rule.
//!
//! Exists as its own phase because a refusal here still costs the client a rate-limit token (by
//! IP): otherwise missing or bad tokens could be sent without limit.

use http::{Request, header};
use hyper::body::Incoming;

use super::{
    Gateway, RequestCtx,
    problem::{Problem, auth_problem, too_many_requests},
};
use crate::{
    auth::{AuthError, Principal, authorize, bearer},
    ratelimit::Decision,
    routes::Route,
};

impl Gateway {
    /// Phase *authenticate*: the request's principal (None: anonymous, which the route allows),
    /// kept in `ctx.principal`. Short-circuits with 401/403 (or 503 when the token keys cannot be
    /// fetched); with 429 instead once the client's IP is over the route's limit.
    pub(super) async fn authenticate(
        &self,
        req: &Request<Incoming>,
        route: &Route,
        ctx: &mut RequestCtx<'_>,
    ) -> Result<(), Problem> {
        match self.verify(req, route).await {
            Ok(p) => {
                ctx.principal = p;
                Ok(())
            }
            Err(refused) => {
                // A refused request still costs its client (by IP) a token, so missing or bad
                // tokens cannot be sent without limit; once over it, 429 instead of 401/403.
                if self.limits.enabled()
                    && let Decision::Limited { info, retry_after } =
                        self.limits.check(route.index, &ctx.peer.limit_key)
                {
                    return Err(too_many_requests(route, &info, retry_after));
                }
                Err(refused)
            }
        }
    }

    async fn verify(
        &self,
        req: &Request<Incoming>,
        route: &Route,
    ) -> Result<Option<Principal>, Problem> {
        let authz = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = match authz.and_then(bearer) {
            Some(token) if self.auth.enabled() => {
                // Boxed: token verification (possibly a JWKS fetch) is a large future that would
                // otherwise be carried, and copied, by every request's future.
                Some(
                    Box::pin(self.auth.verify(token))
                        .await
                        .map_err(auth_problem)?,
                )
            }
            Some(_) => {
                return Err(auth_problem(AuthError::Invalid(
                    "token verification is not configured".into(),
                )));
            }
            None => None,
        };
        authorize(&route.auth, req.method(), principal.as_ref()).map_err(auth_problem)?;
        Ok(principal)
    }
}
