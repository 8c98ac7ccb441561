//! A Shop whose gateway terminates TLS, on the real node: the certificate comes from a Secret the
//! Shop names (`spec.components.gateway.tls`), the gateway pods become Ready through https probes,
//! clients get HTTP/2 through ALPN and the routes behind it, plain HTTP is refused, and a renewed
//! Secret is served to new connections without a restart of the pods.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::{Client, StatusCode};
use serde_json::json;
use shop_testkit::cluster::{self, TestShop, require_real_node};
use shop_testkit::wait_until;

/// How long a test Shop may take to become Available (debug images on 2 cores).
const SHOP_UP: Duration = Duration::from_secs(240);
/// The name the certificates are issued for; the client resolves it to the gateway's ClusterIP.
const HOST: &str = "shop-tls.test";

/// A test CA and a way to issue leaf certificates for [`HOST`] (PEM certificate and key).
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "real-node test CA");
        Ca(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    fn leaf(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        (
            p.signed_by(&key, &self.0).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    /// A client trusting only this CA, resolving [`HOST`] to `addr`, on a connection of its own
    /// (so each client sees the certificate served at the time it connects).
    fn client(&self, addr: SocketAddr) -> Client {
        Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.0.pem().as_bytes()).unwrap()])
            .tls_info(true)
            .resolve(HOST, addr)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

/// The common name of the certificate a fresh connection to `url` gets.
async fn served_cn(ca: &Ca, addr: SocketAddr, url: &str) -> Option<String> {
    let r = ca.client(addr).get(url).send().await.ok()?;
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()?
        .peer_certificate()?
        .to_vec();
    // The CN is the only place the test's leaves differ; find it in the DER as text.
    ["gateway-one", "gateway-two"]
        .into_iter()
        .find(|cn| der.windows(cn.len()).any(|w| w == cn.as_bytes()))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_shop_gateway_serves_tls_from_its_secret_with_http2_and_picks_up_a_renewed_one() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let ca = Ca::new();
    let (cert, key) = ca.leaf("gateway-one");
    let shop = TestShop::new(&client, "tls-").await;
    let secret = shop
        .create_secret("cert", json!({"tls.crt": cert, "tls.key": key}))
        .await;
    // The registry and the gateway are enough: the gateway's routes to the registry show the
    // proxying behind TLS.
    shop.apply(
        "dev",
        json!({
            "gateway": {"tls": {"secretName": secret}},
            "product": {"enabled": false}, "inventory": {"enabled": false},
            "order": {"enabled": false}, "notification": {"enabled": false},
        }),
    )
    .await;
    // Available means every gateway pod passed its readiness probe, which now speaks https.
    shop.wait_available(SHOP_UP).await;

    let plain = shop.url("gateway").await;
    let addr: SocketAddr = plain.trim_start_matches("http://").parse().unwrap();
    let base = format!("https://{HOST}:{}", addr.port());
    let https = ca.client(addr);
    // Ready pods reach the Service's ClusterIP once kube-proxy has their endpoints (a second or
    // two after the Shop turned Available), and the gateway routes to the registry once its
    // discovery has seen it (503 with Retry-After until then).
    let apps = format!("{base}/eureka/apps");
    let routed = wait_until(Duration::from_secs(60), || async {
        https
            .get(&apps)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(routed, "the gateway never routed to the registry over TLS");
    let r = https
        .get(&apps)
        .header("accept", "application/json")
        .send()
        .await
        .expect("the gateway over TLS");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "ALPN h2 with a client that offers it"
    );
    let apps = r.text().await.unwrap();
    assert!(
        apps.contains("\"REGISTRY\""),
        "the registry answers behind the gateway: {apps}"
    );

    let refused = Client::new()
        .get(format!("{plain}/health/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "plain HTTP to the TLS port: {refused:?}");

    // A renewed certificate in the Secret: the kubelet updates the mounted files, the gateway
    // reloads them, new connections get it, and no pod restarted for it.
    assert_eq!(
        served_cn(&ca, addr, &format!("{base}/health/live"))
            .await
            .as_deref(),
        Some("gateway-one")
    );
    let restarts = |pods: Vec<k8s_openapi::api::core::v1::Pod>| -> i32 {
        pods.iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    };
    let before = restarts(shop.pods(Some("gateway")).await);
    let (cert, key) = ca.leaf("gateway-two");
    cluster::replace_secret_data(
        &client,
        &shop.namespace,
        &secret,
        json!({"tls.crt": cert, "tls.key": key}),
    )
    .await;
    let url = format!("{base}/health/live");
    let renewed = wait_until(Duration::from_secs(180), || async {
        served_cn(&ca, addr, &url).await.as_deref() == Some("gateway-two")
    })
    .await;
    assert!(
        renewed,
        "the renewed certificate was not served within 180 s"
    );
    assert_eq!(
        restarts(shop.pods(Some("gateway")).await),
        before,
        "no gateway container restarted for the new certificate"
    );
    shop.delete().await;
}
