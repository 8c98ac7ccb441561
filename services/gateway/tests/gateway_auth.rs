//! The gateway's authentication and rate limits, on the real `shop-gateway` process against real
//! upstreams on loopback: HS256 cases, RS256/ES256 through a JWKS server (and the algorithm
//! confusion attack), key rotation, a JWKS-only gateway refusing HS tokens, the `mint-token`
//! subcommand, 429s per client and a full key table. Each case runs over HTTP/1.1 and h2c.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::cases::*;
use common::{Gateway, Upstream, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use serde_json::json;
use shop_testkit::send;

both!(jwt_hs256_cases);
async fn jwt_hs256_cases(proto: Proto) {
    let up = Upstream::start("orders").await;
    let yaml = format!(
        r#"
routes:
  - {{id: order, prefix: /api/order, upstreams: ["{u}"]}}
  - {{id: admin, prefix: /api/admin, upstreams: ["{u}"], auth: "role:admin"}}
  - {{id: write, prefix: /api/write, upstreams: ["{u}"], auth: "scope:orders.admin"}}
  - {{id: private, prefix: /api/private, upstreams: ["{u}"], auth: authenticated}}
"#,
        u = up.url()
    );
    let gw = Gateway::start(&yaml, &auth_env()).await;
    let c = client(proto);
    let now = jsonwebtoken::get_current_timestamp();

    // Reads are public by default, mutations need a token.
    assert_eq!(
        c.get(gw.url("/api/order")).send().await.unwrap().status(),
        200
    );
    let r = c
        .post(gw.url("/api/order"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(r.headers(), "www-authenticate"),
        r#"Bearer realm="shop""#
    );
    assert_eq!(
        header(r.headers(), "content-type"),
        "application/problem+json"
    );
    assert_eq!(json_of(r).await["field"], "authorization");
    assert_eq!(
        c.get(gw.url("/api/private")).send().await.unwrap().status(),
        401
    );

    // Valid token: subject forwarded as X-User-Id.
    let good = hs256(&claims(json!({})), SECRET.as_bytes());
    let r = send(c.post(gw.url("/api/order")).bearer_auth(&good).body("{}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["headers"]["x-user-id"], "alice");

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims(json!({})).to_string())
    );
    let cases = [
        (
            "expired",
            hs256(&claims(json!({"exp": now - 10})), SECRET.as_bytes()),
        ),
        (
            "wrong issuer",
            hs256(&claims(json!({"iss": "evil"})), SECRET.as_bytes()),
        ),
        (
            "wrong audience",
            hs256(&claims(json!({"aud": "other"})), SECRET.as_bytes()),
        ),
        (
            "bad signature",
            hs256(&claims(json!({})), b"not-the-secret-not-the-secret-000"),
        ),
        ("alg none", none),
        ("garbage", "abc.def".to_owned()),
    ];
    let hits_before = up.hits();
    for (name, tok) in cases {
        // Invalid tokens are refused even on public reads.
        for req in [
            c.post(gw.url("/api/order")).body("{}"),
            c.get(gw.url("/api/order")),
        ] {
            let r = req.bearer_auth(&tok).send().await.unwrap();
            assert_eq!(r.status(), 401, "{name}");
            let www = header(r.headers(), "www-authenticate").to_owned();
            assert!(www.contains(r#"error="invalid_token""#), "{name}: {www}");
            assert_eq!(json_of(r).await["status"], 401, "{name}");
        }
    }
    assert_eq!(
        up.hits(),
        hits_before,
        "nothing reaches the upstream with a bad token"
    );

    // Missing scope / role: 403 with insufficient_scope.
    let r = c
        .post(gw.url("/api/write"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(header(r.headers(), "www-authenticate").contains(r#"scope="orders.admin""#));
    let r = send(c.get(gw.url("/api/admin")).bearer_auth(&good)).await;
    assert_eq!(r.status, 403);
    let admin = hs256(
        &claims(json!({"roles": ["admin"], "scope": "orders.admin"})),
        SECRET.as_bytes(),
    );
    assert_eq!(
        c.get(gw.url("/api/admin"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(gw.url("/api/write"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

both!(jwt_rs256_es256_via_jwks_and_confusion_attack);
async fn jwt_rs256_es256_via_jwks_and_confusion_attack(proto: Proto) {
    shop_gateway::auth::install_crypto();
    let rsa = rsa_key();
    let ec = EncodingKey::from_ec_pem(include_bytes!("fixtures/ec-private.pem")).unwrap();
    let mut env = auth_env();
    env.push(("SHOP_JWKS_MIN_REFRESH_SECS", "60"));
    let keys = vec![
        jwk(&rsa, Algorithm::RS256, "rsa-1"),
        jwk(&ec, Algorithm::ES256, "ec-1"),
    ];
    let (_up, jwks, gw) = jwks_gateway(JwkSet { keys }, &env).await;
    let c = client(proto);
    let post = |tok: String| {
        c.post(gw.url("/api/order"))
            .bearer_auth(tok)
            .body("{}")
            .send()
    };

    let r = post(signed(
        Algorithm::RS256,
        "rsa-1",
        &rsa,
        &claims(json!({"sub": "rs-user"})),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["headers"]["x-user-id"], "rs-user");
    let r = post(signed(
        Algorithm::ES256,
        "ec-1",
        &ec,
        &claims(json!({"sub": "ec-user"})),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["headers"]["x-user-id"], "ec-user");

    // HS/RS confusion: an HS256 token "signed" with the RSA public key as HMAC secret.
    let public_pem = include_bytes!("fixtures/rsa-public.pem");
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_secret(public_pem),
    )
    .unwrap();
    assert_eq!(post(forged).await.unwrap().status(), 401);
    // RS256 header with an EC key id: key type does not fit, refused.
    let wrong = signed(Algorithm::RS256, "ec-1", &rsa, &claims(json!({})));
    assert_eq!(post(wrong).await.unwrap().status(), 401);
    // Signed by a key that is not in the JWKS.
    let other =
        EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa-other-private.pem")).unwrap();
    assert_eq!(
        post(signed(
            Algorithm::RS256,
            "rsa-1",
            &other,
            &claims(json!({}))
        ))
        .await
        .unwrap()
        .status(),
        401
    );

    // Unknown key ids trigger at most one refetch per min-refresh interval.
    let fetched = jwks.fetches();
    for i in 0..5 {
        let r = post(signed(
            Algorithm::RS256,
            &format!("unknown-{i}"),
            &rsa,
            &claims(json!({})),
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert!(
        jwks.fetches() - fetched <= 1,
        "JWKS refetch is rate limited: {} fetches",
        jwks.fetches() - fetched
    );
}

both!(jwks_key_rotation_is_picked_up_on_unknown_kid);
async fn jwks_key_rotation_is_picked_up_on_unknown_kid(proto: Proto) {
    shop_gateway::auth::install_crypto();
    let rsa = rsa_key();
    let other =
        EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa-other-private.pem")).unwrap();
    let mut env = auth_env();
    env.push(("SHOP_JWKS_MIN_REFRESH_SECS", "0"));
    let keys = vec![jwk(&rsa, Algorithm::RS256, "old")];
    let (_up, jwks, gw) = jwks_gateway(JwkSet { keys }, &env).await;
    let c = client(proto);
    let tok_old = signed(Algorithm::RS256, "old", &rsa, &claims(json!({})));
    assert_eq!(
        c.post(gw.url("/api/order"))
            .bearer_auth(&tok_old)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    jwks.keys
        .lock()
        .keys
        .push(jwk(&other, Algorithm::RS256, "new"));
    let tok_new = signed(
        Algorithm::RS256,
        "new",
        &other,
        &claims(json!({"sub": "rotated"})),
    );
    let r = send(c.post(gw.url("/api/order")).bearer_auth(&tok_new)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["headers"]["x-user-id"], "rotated");
}

both!(hs_tokens_refused_when_only_jwks_is_configured);
async fn hs_tokens_refused_when_only_jwks_is_configured(proto: Proto) {
    let keys = vec![jwk(&rsa_key(), Algorithm::RS256, "rsa-1")];
    let (_up, _jwks, gw) = jwks_gateway(JwkSet { keys }, &[]).await;
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(include_bytes!("fixtures/rsa-public.pem")),
    )
    .unwrap();
    let r = send(client(proto).post(gw.url("/api/order")).bearer_auth(forged)).await;
    assert_eq!(r.status, 401);
    assert!(r.json["detail"].as_str().unwrap().contains("not accepted"));
}

both!(mint_token_subcommand_produces_a_token_the_gateway_accepts);
async fn mint_token_subcommand_produces_a_token_the_gateway_accepts(proto: Proto) {
    let up = Upstream::start("orders").await;
    let out = std::process::Command::new(shop_testkit::binary_path("shop-gateway"))
        .args(["mint-token", "--sub", "bob", "--scope", "orders.write"])
        .env("SHOP_JWT_SECRET", SECRET)
        .env("SHOP_JWT_ISSUER", "shop-test")
        .env("SHOP_JWT_AUDIENCE", "shop")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let yaml = format!(
        "routes:\n  - {{id: order, prefix: /api/order, upstreams: [\"{}\"], auth: \"scope:orders.write\"}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml, &auth_env()).await;
    let r = send(client(proto).post(gw.url("/api/order")).bearer_auth(&token)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["headers"]["x-user-id"], "bob");
}

both!(rate_limit_429_with_headers_per_client);
async fn rate_limit_429_with_headers_per_client(proto: Proto) {
    let up = Upstream::start("p").await;
    let yaml = format!(
        r#"
routes:
  - {{id: p, prefix: /api/p, upstreams: ["{u}"], auth: public, rate_limit: {{per_second: 0.2, burst: 3}}}}
"#,
        u = up.url()
    );
    let gw = Gateway::start(&yaml, &auth_env()).await;
    let c = client(proto);
    let alice = hs256(&claims(json!({})), SECRET.as_bytes());
    let bob = hs256(&claims(json!({"sub": "bob"})), SECRET.as_bytes());
    for expect_remaining in [2, 1, 0] {
        let r = send(c.get(gw.url("/api/p")).bearer_auth(&alice)).await;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r.headers, "x-ratelimit-limit"), "3");
        assert_eq!(
            header(&r.headers, "x-ratelimit-remaining"),
            expect_remaining.to_string()
        );
        assert!(
            header(&r.headers, "x-ratelimit-reset")
                .parse::<u64>()
                .unwrap()
                >= 1
        );
    }
    let r = send(c.get(gw.url("/api/p")).bearer_auth(&alice)).await;
    assert_eq!(r.status, 429);
    let retry: u64 = header(&r.headers, "retry-after").parse().unwrap();
    assert!((1..=5).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&r.headers, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&r.headers, "content-type"),
        "application/problem+json"
    );
    // Bob (another subject) and an anonymous caller (keyed by IP) have their own buckets.
    assert_eq!(
        c.get(gw.url("/api/p"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(c.get(gw.url("/api/p")).send().await.unwrap().status(), 200);
    assert_eq!(up.hits(), 5);
}

both!(rate_limit_fails_closed_when_keys_are_at_capacity_and_open_when_configured);
async fn rate_limit_fails_closed_when_keys_are_at_capacity_and_open_when_configured(proto: Proto) {
    let up = Upstream::start("p").await;
    let c = client(proto);
    let alice = hs256(&claims(json!({})), SECRET.as_bytes());
    let bob = hs256(&claims(json!({"sub": "bob"})), SECRET.as_bytes());
    for (mode, expect) in [("closed", 503u16), ("open", 200u16)] {
        let yaml = format!(
            r#"
routes:
  - {{id: p, prefix: /api/p, upstreams: ["{u}"], auth: public}}
rate_limit: {{max_keys: 1, client: {{per_second: 0.01, burst: 100}}}}
"#,
            u = up.url()
        );
        let mut env = auth_env();
        env.push(("SHOP_RATE_LIMIT_FAIL", mode));
        let gw = Gateway::start(&yaml, &env).await;
        assert_eq!(
            c.get(gw.url("/api/p"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let r = send(c.get(gw.url("/api/p")).bearer_auth(&bob)).await;
        assert_eq!(r.status.as_u16(), expect, "mode {mode}");
        if expect == 503 {
            assert_eq!(header(&r.headers, "retry-after"), "1");
            assert_eq!(r.json["title"], "Rate limit unavailable");
        } else {
            assert!(
                r.headers.get("x-ratelimit-limit").is_none(),
                "unchecked request has no limit headers"
            );
        }
        // The tracked client keeps being limited normally.
        assert_eq!(
            c.get(gw.url("/api/p"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}
