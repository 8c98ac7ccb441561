//! What the gateway's protocol-matrix tests share: the client protocol ([`Proto`]) and `both!`,
//! which runs a case over HTTP/1.1 and over h2c, and the JWT helpers (HS256 secrets, RS/ES keys,
//! JWKs) of the routing and the auth tests.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

pub const SECRET: &str = "integration-test-secret-0123456789";

/// The protocol a case's client speaks to the gateway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Proto {
    Http1,
    /// HTTP/2 with prior knowledge on the plain port.
    H2c,
}

impl Proto {
    pub fn version(self) -> reqwest::Version {
        match self {
            Proto::Http1 => reqwest::Version::HTTP_11,
            Proto::H2c => reqwest::Version::HTTP_2,
        }
    }
}

/// Runs a case once over HTTP/1.1 and once over HTTP/2 (h2c): the gateway's routing, auth,
/// limits, breaker, streaming and SSE must not depend on the protocol a client speaks.
#[allow(unused_macros)] // used by the test files that import it, not by every one that has `mod common`
macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[tokio::test]
            async fn http1() {
                super::$case(super::Proto::Http1).await
            }
            #[tokio::test]
            async fn h2c() {
                super::$case(super::Proto::H2c).await
            }
        }
    };
}

pub fn client(proto: Proto) -> reqwest::Client {
    let b = reqwest::Client::builder().timeout(Duration::from_secs(20));
    match proto {
        Proto::Http1 => b.http1_only(),
        Proto::H2c => b.http2_prior_knowledge(),
    }
    .build()
    .unwrap()
}

pub fn claims(extra: Value) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let mut c = json!({"sub": "alice", "iss": "shop-test", "aud": "shop", "exp": now + 300, "scope": "orders.write"});
    if let (Some(c), Value::Object(e)) = (c.as_object_mut(), extra) {
        c.extend(e);
    }
    c
}

pub fn hs256(c: &Value, secret: &[u8]) -> String {
    shop_gateway::auth::install_crypto();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

pub fn signed(alg: Algorithm, kid: &str, key: &EncodingKey, c: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, c, key).unwrap()
}

pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(include_bytes!("../fixtures/rsa-private.pem")).unwrap()
}

pub fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    shop_gateway::auth::install_crypto();
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.to_owned());
    j
}

/// A gateway routing `/api/order` to an `orders` upstream and verifying tokens against a JWKS
/// server serving `keys`, started with `SHOP_JWKS_URL` plus `env`. The upstream and the JWKS server
/// are returned to live as long as the test (the keys can be rotated through the server).
pub async fn jwks_gateway(
    keys: jsonwebtoken::jwk::JwkSet,
    env: &[(&str, &str)],
) -> (super::Upstream, super::JwksServer, super::Gateway) {
    shop_gateway::auth::install_crypto();
    let up = super::Upstream::start("orders").await;
    let jwks = super::JwksServer::start(keys).await;
    let yaml = format!(
        "routes:\n  - {{id: order, prefix: /api/order, upstreams: [\"{}\"]}}\n",
        up.url()
    );
    let mut all = vec![("SHOP_JWKS_URL", jwks.url.as_str())];
    all.extend_from_slice(env);
    let gw = super::Gateway::start(&yaml, &all).await;
    (up, jwks, gw)
}

pub fn auth_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SHOP_JWT_SECRET", SECRET),
        ("SHOP_JWT_ISSUER", "shop-test"),
        ("SHOP_JWT_AUDIENCE", "shop"),
        ("SHOP_JWT_LEEWAY_SECS", "0"),
    ]
}

pub async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}
