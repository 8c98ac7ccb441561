//! JWT bearer security: token verification (HS256 shared secret; RS256/ES256 through a cached JWKS),
//! issuer/audience/expiry checks with leeway, and the per-route access rules.
//!
//! Exists so the gateway is the one place that decides who may call what. The key is chosen by the
//! token's algorithm family and never by the token alone: HMAC tokens are checked only against the
//! configured shared secret and asymmetric ones only against JWKS keys of the matching type, which
//! closes the HS/RS confusion attack; `alg: none` is never accepted.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use http::Method;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, decode,
    decode_header, encode,
    jwk::{AlgorithmParameters, Jwk, JwkSet},
};
use serde_json::Value;

use crate::config::AuthRule;

/// Verifier settings.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// HS256 shared secret; HMAC tokens are refused when absent.
    pub hs_secret: Option<Vec<u8>>,
    /// JWKS URL for RS256/ES256 keys; asymmetric tokens are refused when absent.
    pub jwks_url: Option<String>,
    /// Accepted issuers (`iss`); empty: not checked.
    pub issuers: Vec<String>,
    /// Accepted audiences (`aud`); empty: not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
    /// A JWKS is re-fetched after this long.
    pub jwks_ttl: Duration,
    /// At most one JWKS fetch per this interval (unknown `kid`s cannot force more).
    pub jwks_min_refresh: Duration,
}

/// Who made a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub` claim.
    pub subject: String,
    /// Scopes from `scope` (space separated) or `scp`.
    pub scopes: Vec<String>,
    /// Roles from `roles` or Keycloak's `realm_access.roles`.
    pub roles: Vec<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token on a route that needs one.
    #[error("a bearer token is required")]
    Missing,
    /// The token was rejected.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but lacks what the route requires.
    #[error("insufficient permissions: {0} required")]
    Forbidden(String),
    /// The JWKS could not be fetched, so the token cannot be checked now.
    #[error("token keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// The `WWW-Authenticate` value (RFC 6750) for this refusal.
    pub fn www_authenticate(&self) -> String {
        let esc = |s: &str| s.replace(['"', '\\'], "'");
        match self {
            AuthError::Missing => r#"Bearer realm="shop""#.to_owned(),
            AuthError::Invalid(d) | AuthError::KeysUnavailable(d) => {
                format!(
                    r#"Bearer realm="shop", error="invalid_token", error_description="{}""#,
                    esc(d)
                )
            }
            AuthError::Forbidden(need) => {
                let scope = need.strip_prefix("scope ").unwrap_or(need);
                format!(
                    r#"Bearer realm="shop", error="insufficient_scope", scope="{}""#,
                    esc(scope)
                )
            }
        }
    }
}

/// Verifies bearer tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    cfg: Arc<AuthConfig>,
    jwks: Option<Arc<JwksCache>>,
}

/// Installs the aws-lc crypto backend for jsonwebtoken once (idempotent).
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

impl Authenticator {
    /// A verifier for `cfg`; the JWKS (if any) is fetched on first use.
    pub fn new(cfg: AuthConfig, http: reqwest::Client) -> Self {
        install_crypto();
        let jwks = cfg.jwks_url.clone().map(|url| {
            Arc::new(JwksCache {
                url,
                http,
                ttl: cfg.jwks_ttl,
                min_refresh: cfg.jwks_min_refresh,
                keys: ArcSwapOption::empty(),
                last_fetch: parking_lot::Mutex::new(None),
                fetch_lock: tokio::sync::Mutex::new(()),
                fetches: std::sync::atomic::AtomicU64::new(0),
            })
        });
        Self {
            cfg: Arc::new(cfg),
            jwks,
        }
    }

    /// Whether any verification method is configured.
    pub fn enabled(&self) -> bool {
        self.cfg.hs_secret.is_some() || self.jwks.is_some()
    }

    /// Number of JWKS fetches attempted (for tests and metrics).
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks
            .as_ref()
            .map_or(0, |j| j.fetches.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Verifies `token` and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token ({e})")))?;
        let alg = header.alg;
        let key = match alg.family() {
            AlgorithmFamily::Hmac => {
                let secret = self.cfg.hs_secret.as_deref().ok_or_else(|| {
                    AuthError::Invalid(format!("{alg:?} tokens are not accepted"))
                })?;
                DecodingKey::from_secret(secret)
            }
            AlgorithmFamily::Rsa | AlgorithmFamily::Ec => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    AuthError::Invalid(format!("{alg:?} tokens are not accepted"))
                })?;
                jwks.key_for(header.kid.as_deref(), alg).await?
            }
            AlgorithmFamily::Ed => {
                return Err(AuthError::Invalid(format!(
                    "{alg:?} tokens are not accepted"
                )));
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = self.cfg.leeway_secs;
        let mut required = vec!["exp", "sub"];
        if self.cfg.issuers.is_empty() {
            v.iss = None;
        } else {
            v.set_issuer(&self.cfg.issuers);
            required.push("iss");
        }
        if self.cfg.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.cfg.audiences);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        v.validate_nbf = true;
        let data =
            decode::<Value>(token, &key, &v).map_err(|e| AuthError::Invalid(describe(&e)))?;
        principal_from(&data.claims)
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "token expired".into(),
        K::ImmatureSignature => "token not yet valid".into(),
        K::InvalidIssuer => "wrong issuer".into(),
        K::InvalidAudience => "wrong audience".into(),
        K::InvalidSignature => "bad signature".into(),
        K::InvalidAlgorithm => "algorithm does not match the key".into(),
        K::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        other => format!("{other:?}"),
    }
}

fn principal_from(claims: &Value) -> Result<Principal, AuthError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Invalid("missing claim `sub`".into()))?
        .to_owned();
    let mut scopes: Vec<String> = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(a)) => {
                scopes.extend(a.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    let mut roles: Vec<String> = Vec::new();
    let role_arrays = [claims.get("roles"), claims.pointer("/realm_access/roles")];
    for arr in role_arrays.into_iter().flatten() {
        if let Value::Array(a) = arr {
            roles.extend(a.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }
    Ok(Principal {
        subject,
        scopes,
        roles,
    })
}

/// Whether `method` only reads (public under [`AuthRule::Default`]).
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Applies a route rule to the (optional) verified principal.
pub fn authorize(
    rule: &AuthRule,
    method: &Method,
    principal: Option<&Principal>,
) -> Result<(), AuthError> {
    match rule {
        AuthRule::Public => Ok(()),
        AuthRule::Default if is_read(method) => Ok(()),
        AuthRule::Default | AuthRule::Authenticated => {
            principal.map(|_| ()).ok_or(AuthError::Missing)
        }
        AuthRule::Scope(s) => {
            let p = principal.ok_or(AuthError::Missing)?;
            if p.scopes.iter().any(|x| x == s) {
                Ok(())
            } else {
                Err(AuthError::Forbidden(format!("scope {s}")))
            }
        }
        AuthRule::Role(r) => {
            let p = principal.ok_or(AuthError::Missing)?;
            if p.roles.iter().any(|x| x == r) {
                Ok(())
            } else {
                Err(AuthError::Forbidden(format!("role {r}")))
            }
        }
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let t = token.trim();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

#[derive(Debug)]
struct JwksCache {
    url: String,
    http: reqwest::Client,
    ttl: Duration,
    min_refresh: Duration,
    keys: ArcSwapOption<(JwkSet, Instant)>,
    last_fetch: parking_lot::Mutex<Option<Instant>>,
    fetch_lock: tokio::sync::Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let cached = self.keys.load_full();
        let fresh = cached.as_ref().is_some_and(|c| c.1.elapsed() < self.ttl);
        if let Some(c) = &cached
            && let Some(k) = select(&c.0, kid, alg)?
        {
            if !fresh {
                // Stale but usable: refresh now if allowed, fall back to the stale key on failure.
                if self.refresh_allowed()
                    && let Ok(set) = self.fetch().await
                    && let Some(k2) = select(&set, kid, alg)?
                {
                    return Ok(k2);
                }
            }
            return Ok(k);
        }
        // Unknown kid (or nothing cached): fetch, at most once per min_refresh.
        if !self.refresh_allowed() {
            return Err(match cached {
                Some(_) => AuthError::Invalid("unknown signing key".into()),
                None => AuthError::KeysUnavailable("JWKS not fetched yet".into()),
            });
        }
        let set = self.fetch().await.map_err(|e| {
            if cached.is_some() {
                AuthError::Invalid("unknown signing key".into())
            } else {
                AuthError::KeysUnavailable(e)
            }
        })?;
        select(&set, kid, alg)?.ok_or_else(|| AuthError::Invalid("unknown signing key".into()))
    }

    fn refresh_allowed(&self) -> bool {
        let last = self.last_fetch.lock();
        last.is_none_or(|t| t.elapsed() >= self.min_refresh)
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let _guard = self.fetch_lock.lock().await;
        // Another task may have fetched while we waited.
        if let Some(t) = *self.last_fetch.lock()
            && t.elapsed() < self.min_refresh
            && let Some(c) = self.keys.load_full()
        {
            return Ok(c.0.clone());
        }
        *self.last_fetch.lock() = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if !resp.status().is_success() {
            return Err(format!("GET {}: status {}", self.url, resp.status()));
        }
        let set: JwkSet = resp
            .json()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        self.keys
            .store(Some(Arc::new((set.clone(), Instant::now()))));
        tracing::info!(url = %self.url, keys = set.keys.len(), "JWKS refreshed");
        Ok(set)
    }
}

/// Picks the JWK for `kid` whose key type fits `alg`; a JWK whose type does not fit is an error
/// (never "try it anyway").
fn select(
    set: &JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<DecodingKey>, AuthError> {
    let jwk: Option<&Jwk> = match kid {
        Some(k) => set.find(k),
        None => {
            let fitting: Vec<&Jwk> = set.keys.iter().filter(|j| fits(j, alg)).collect();
            if fitting.len() == 1 {
                fitting.first().copied()
            } else {
                None
            }
        }
    };
    let Some(jwk) = jwk else { return Ok(None) };
    if !fits(jwk, alg) {
        return Err(AuthError::Invalid(format!("key type does not fit {alg:?}")));
    }
    if let Some(ka) = jwk.common.key_algorithm
        && format!("{ka:?}") != format!("{alg:?}")
    {
        return Err(AuthError::Invalid(format!(
            "key is for {ka:?}, token says {alg:?}"
        )));
    }
    DecodingKey::from_jwk(jwk)
        .map(Some)
        .map_err(|e| AuthError::Invalid(format!("unusable JWK ({e})")))
}

fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    matches!(
        (&jwk.algorithm, alg.family()),
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), AlgorithmFamily::Ec)
    )
}

/// Claims of a development token.
#[derive(Debug, Clone, Default)]
pub struct DevToken {
    /// Subject.
    pub sub: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Issuer (omitted when None).
    pub issuer: Option<String>,
    /// Audience (omitted when None).
    pub audience: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
}

/// Mints an HS256 token signed with `secret` (the `mint-token` subcommand; also used by tests).
pub fn mint_hs256(secret: &[u8], t: &DevToken) -> Result<String, jsonwebtoken::errors::Error> {
    install_crypto();
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "sub": t.sub,
        "iat": now,
        "exp": now + t.ttl.as_secs(),
    });
    if !t.scopes.is_empty() {
        claims["scope"] = Value::String(t.scopes.join(" "));
    }
    if !t.roles.is_empty() {
        claims["roles"] = serde_json::json!(t.roles);
    }
    if let Some(i) = &t.issuer {
        claims["iss"] = Value::String(i.clone());
    }
    if let Some(a) = &t.audience {
        claims["aud"] = Value::String(a.clone());
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"test-secret-of-enough-length-123456";

    fn cfg() -> AuthConfig {
        AuthConfig {
            hs_secret: Some(SECRET.to_vec()),
            issuers: vec!["shop-dev".into()],
            audiences: vec!["shop".into()],
            leeway_secs: 5,
            jwks_ttl: Duration::from_secs(300),
            jwks_min_refresh: Duration::from_secs(10),
            ..Default::default()
        }
    }

    fn claims(extra: Value) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        let mut c = serde_json::json!({"sub": "alice", "iss": "shop-dev", "aud": "shop", "exp": now + 60, "scope": "orders.write read"});
        if let (Some(c), Value::Object(e)) = (c.as_object_mut(), extra) {
            c.extend(e);
        }
        c
    }

    fn hs(c: &Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn auth() -> Authenticator {
        Authenticator::new(cfg(), reqwest::Client::new())
    }

    #[tokio::test]
    async fn valid_hs256_yields_principal() {
        let p = auth()
            .verify(&hs(&claims(serde_json::json!({})), SECRET))
            .await
            .unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.scopes, vec!["orders.write", "read"]);
    }

    #[tokio::test]
    async fn rejects_expired_wrong_iss_aud_and_bad_signature() {
        let a = auth();
        let now = jsonwebtoken::get_current_timestamp();
        let cases = [
            (
                hs(&claims(serde_json::json!({"exp": now - 60})), SECRET),
                "expired",
            ),
            (
                hs(&claims(serde_json::json!({"iss": "evil"})), SECRET),
                "issuer",
            ),
            (
                hs(&claims(serde_json::json!({"aud": "other"})), SECRET),
                "audience",
            ),
            (
                hs(
                    &claims(serde_json::json!({})),
                    b"another-secret-another-secret-12",
                ),
                "signature",
            ),
        ];
        for (tok, want) in cases {
            let err = a.verify(&tok).await.unwrap_err();
            assert!(
                matches!(&err, AuthError::Invalid(m) if m.contains(want)),
                "{want}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn leeway_accepts_just_expired() {
        let now = jsonwebtoken::get_current_timestamp();
        let tok = hs(&claims(serde_json::json!({"exp": now - 2})), SECRET);
        assert!(auth().verify(&tok).await.is_ok());
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let c = b64.encode(claims(serde_json::json!({})).to_string());
        for tok in [format!("{h}.{c}."), format!("{h}.{c}")] {
            assert!(matches!(
                auth().verify(&tok).await,
                Err(AuthError::Invalid(_))
            ));
        }
    }

    #[tokio::test]
    async fn asymmetric_token_without_jwks_is_refused() {
        let key =
            EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/rsa-private.pem")).unwrap();
        let tok = encode(
            &Header::new(Algorithm::RS256),
            &claims(serde_json::json!({})),
            &key,
        )
        .unwrap();
        let err = auth().verify(&tok).await.unwrap_err();
        assert!(matches!(err, AuthError::Invalid(m) if m.contains("not accepted")));
    }

    #[test]
    fn rules() {
        let p = Principal {
            subject: "a".into(),
            scopes: vec!["orders.write".into()],
            roles: vec!["admin".into()],
        };
        assert!(authorize(&AuthRule::Default, &Method::GET, None).is_ok());
        assert_eq!(
            authorize(&AuthRule::Default, &Method::POST, None),
            Err(AuthError::Missing)
        );
        assert!(authorize(&AuthRule::Default, &Method::POST, Some(&p)).is_ok());
        assert!(authorize(&AuthRule::Public, &Method::DELETE, None).is_ok());
        assert_eq!(
            authorize(&AuthRule::Authenticated, &Method::GET, None),
            Err(AuthError::Missing)
        );
        assert!(
            authorize(
                &AuthRule::Scope("orders.write".into()),
                &Method::POST,
                Some(&p)
            )
            .is_ok()
        );
        assert!(matches!(
            authorize(
                &AuthRule::Scope("orders.admin".into()),
                &Method::POST,
                Some(&p)
            ),
            Err(AuthError::Forbidden(_))
        ));
        assert!(authorize(&AuthRule::Role("admin".into()), &Method::GET, Some(&p)).is_ok());
        assert!(authorize(&AuthRule::Role("root".into()), &Method::GET, Some(&p)).is_err());
    }

    #[test]
    fn keycloak_realm_roles_and_scp_array() {
        let p = principal_from(
            &serde_json::json!({"sub":"x","scp":["a","b"],"realm_access":{"roles":["r1"]}}),
        )
        .unwrap();
        assert_eq!(p.scopes, vec!["a", "b"]);
        assert_eq!(p.roles, vec!["r1"]);
    }

    #[test]
    fn www_authenticate_values() {
        assert_eq!(
            AuthError::Missing.www_authenticate(),
            r#"Bearer realm="shop""#
        );
        assert!(
            AuthError::Invalid("token expired".into())
                .www_authenticate()
                .contains(r#"error="invalid_token""#)
        );
        assert!(
            AuthError::Forbidden("scope orders.write".into())
                .www_authenticate()
                .contains(r#"scope="orders.write""#)
        );
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }

    #[tokio::test]
    async fn minted_dev_token_verifies() {
        let t = DevToken {
            sub: "alice".into(),
            scopes: vec!["orders.write".into()],
            issuer: Some("shop-dev".into()),
            audience: Some("shop".into()),
            ttl: Duration::from_secs(60),
            ..Default::default()
        };
        let p = auth()
            .verify(&mint_hs256(SECRET, &t).unwrap())
            .await
            .unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.scopes, vec!["orders.write"]);
    }
}
