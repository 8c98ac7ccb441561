//! TLS termination of the real `shop-gateway` process: a CA and server certificates made in the test
//! (rcgen), requests routed over TLS (reqwest trusting that CA), the protocol versions and ALPN it
//! negotiates, what a plain-HTTP or silent client gets, the redirect listener, start-up errors,
//! and a certificate replaced on disk that new connections get without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Upstream, header};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use shop_testkit::{Service, binary_path, free_port};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// The name the server certificates are issued for; the clients resolve it to 127.0.0.1.
const HOST: &str = "shop.test";

/// A test CA that issues server certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, PEM, and the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "shop-gateway test CA");
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for [`HOST`] with common name `cn` and a fresh key.
    fn leaf(&self, cn: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![HOST.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// The certificate and key files the gateway reads, in a directory of their own.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(leaf: &Leaf) -> Files {
        let f = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write(leaf);
        f
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }
    /// Overwrites both files in place (the key first).
    fn write(&self, leaf: &Leaf) {
        std::fs::write(self.key(), &leaf.key_pem).unwrap();
        std::fs::write(self.cert(), &leaf.cert_pem).unwrap();
    }
}

/// The gateway with TLS on its port.
struct TlsGateway {
    svc: Service,
    _routes: tempfile::NamedTempFile,
}

impl TlsGateway {
    /// Starts the gateway with `yaml` as routes, the TLS files and `envs`, and waits until it
    /// answers `/health/ready` over TLS.
    async fn start(yaml: &str, files: &Files, ca: &Ca, envs: &[(&str, &str)]) -> TlsGateway {
        use std::io::Write;
        let mut routes = tempfile::NamedTempFile::new().unwrap();
        routes.write_all(yaml.as_bytes()).unwrap();
        let (cert, key) = (files.cert(), files.key());
        let mut all = vec![
            ("SHOP_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("SHOP_TLS_KEY_FILE", key.to_str().unwrap()),
            ("SHOP_TLS_RELOAD_SECS", "1"),
        ];
        all.extend_from_slice(envs);
        // Port 0: `Service::launch` waits for the port the gateway reports once it listens.
        let svc = Service::launch(
            "shop-gateway",
            &["--routes", routes.path().to_str().unwrap()],
            &all,
            0,
        )
        .await;
        let gw = TlsGateway {
            svc,
            _routes: routes,
        };
        let http = https_client(ca, gw.addr());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http
                .get(gw.url("/health/ready"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the TLS gateway did not become ready within 30 s (its log is above): {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.svc.port()))
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.svc.port())
    }
}

/// A reqwest client that trusts only `ca` and resolves [`HOST`] to `addr` (offers h2 and
/// http/1.1 through ALPN, like a browser).
fn https_client(ca: &Ca, addr: SocketAddr) -> reqwest::Client {
    https_client_builder(ca, addr).build().unwrap()
}

fn https_client_builder(ca: &Ca, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .resolve(HOST, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
}

/// A rustls client trusting `ca`, limited to `versions`, offering `alpn`.
fn rustls_client(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(shop_gateway::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// What one TLS handshake with the gateway negotiated.
struct Handshake {
    leaf: CertificateDer<'static>,
    version: rustls::ProtocolVersion,
    alpn: Option<Vec<u8>>,
}

async fn handshake(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> Result<Handshake, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(HOST).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let (_, conn) = tls.get_ref();
    Ok(Handshake {
        leaf: conn.peer_certificates().unwrap()[0].clone(),
        version: conn.protocol_version().unwrap(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
    })
}

fn routes_to(product: &Upstream) -> String {
    format!(
        "routes:\n  - {{id: product, prefix: /api/product, upstreams: [\"{}\"]}}\nproxy: {{header_timeout_ms: 1000}}\n",
        product.url()
    )
}

/// A TLS 1.1 ClientHello (legacy version 3.2, no `supported_versions` extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend([0x42; 32]); // random
    body.push(0); // no session id
    // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend([0x00, 0x06, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f]);
    body.extend([0x01, 0x00]); // compression: null
    // signature_algorithms (ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256), as a
    // TLS 1.1-capable OpenSSL sends it: without it rustls refuses before looking at the version.
    body.extend([0x00, 0x0c, 0x00, 0x0d, 0x00, 0x08, 0x00, 0x06]);
    body.extend([0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    let mut hs = vec![0x01, 0x00];
    hs.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16::try_from(hs.len()).unwrap().to_be_bytes());
    record.extend(hs);
    record
}

#[tokio::test]
async fn routes_over_tls_1_2_and_1_3_with_h2_or_http11_alpn_and_refuses_the_rest() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf("gateway-one"));
    let product = Upstream::start("product").await;
    let gw = TlsGateway::start(&routes_to(&product), &files, &ca, &[]).await;

    // Routing works over TLS with HTTP/2 (ALPN h2, what browsers pick) and HTTP/1.1, and the
    // upstream is told the client came over https.
    let http = https_client(&ca, gw.addr());
    let h1 = https_client_builder(&ca, gw.addr())
        .http1_only()
        .build()
        .unwrap();
    for (client, version) in [
        (&http, reqwest::Version::HTTP_2),
        (&h1, reqwest::Version::HTTP_11),
    ] {
        let r = client
            .get(gw.url("/api/product/7?x=1"))
            .header("x-forwarded-proto", "http")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        assert!(!header(r.headers(), "x-request-id").is_empty());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["upstream"], "product");
        assert_eq!(body["path"], "/api/product/7?x=1");
        assert_eq!(
            body["headers"]["x-forwarded-proto"], "https",
            "a TLS connection is forwarded as https, whatever the client claims ({version:?})"
        );
        assert_eq!(
            body["headers"]["x-forwarded-host"],
            format!("{HOST}:{}", gw.addr().port()),
            "the host the client asked for (`:authority` in HTTP/2)"
        );
    }

    // TLS 1.3 by default; TLS 1.2 when the client offers only that. ALPN picks h2 when the
    // client prefers it, http/1.1 for a client that offers only that, and serves an h2-only one.
    let all = rustls_client(
        &ca,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &[b"h2", b"http/1.1"],
    );
    let h = handshake(gw.addr(), &all).await.unwrap();
    assert_eq!(h.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
    let only_h1 = rustls_client(&ca, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let h = handshake(gw.addr(), &only_h1).await.unwrap();
    assert_eq!(h.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let tls12 = rustls_client(&ca, &[&rustls::version::TLS12], &[]);
    let h = handshake(gw.addr(), &tls12).await.unwrap();
    assert_eq!(h.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(h.alpn, None, "no ALPN offered, none chosen");
    let only_h2 = rustls_client(&ca, &[&rustls::version::TLS13], &[b"h2"]);
    assert_eq!(
        handshake(gw.addr(), &only_h2)
            .await
            .unwrap()
            .alpn
            .as_deref(),
        Some(&b"h2"[..])
    );

    // TLS 1.1 (rustls has no client for it: a hand-made ClientHello) gets a protocol_version alert.
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply))
        .await
        .expect("the gateway answers a TLS 1.1 hello at once")
        .expect("an alert record, not a closed connection");
    assert_eq!(
        (reply[0], reply[5], reply[6]),
        (0x15, 2, 70),
        "fatal protocol_version alert expected, got {reply:02x?}"
    );

    // Plain HTTP to the TLS port fails.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://{}/api/product/1", gw.addr()))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP must not be served: {r:?}");
    assert_eq!(
        product.hits(),
        2,
        "only the TLS requests reached the upstream"
    );

    // A client that connects and says nothing is disconnected after the head timeout (1 s here).
    let mut silent = TcpStream::connect(gw.addr()).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("a silent client must not hold a connection beyond the handshake timeout");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the connection is closed: {n:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after the timeout, not at once: {:?}",
        started.elapsed()
    );

    // The gateway still serves after all that.
    let r = http.get(gw.url("/api/product")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_without_a_restart() {
    let ca = Ca::new();
    let one = ca.leaf("gateway-one");
    let files = Files::new(&one);
    let product = Upstream::start("product").await;
    let gw = TlsGateway::start(&routes_to(&product), &files, &ca, &[]).await;
    let pid = gw.svc.pid();
    let connector = rustls_client(&ca, &[&rustls::version::TLS13], &[]);
    assert_eq!(
        handshake(gw.addr(), &connector).await.unwrap().leaf,
        one.der
    );

    // A connection opened before the change is kept alive through it.
    let http = https_client(&ca, gw.addr());
    assert_eq!(
        http.get(gw.url("/api/product"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let two = ca.leaf("gateway-two");
    assert_ne!(one.der, two.der);
    files.write(&two);
    // Polled every second (SHOP_TLS_RELOAD_SECS=1): a new connection sees it within a few.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let leaf = handshake(gw.addr(), &connector).await.unwrap().leaf;
        if leaf == two.der {
            break;
        }
        assert_eq!(leaf, one.der, "only the old or the new certificate");
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 5 s of the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http.get(gw.url("/api/product"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "requests go on (over the kept connection or a new one)"
    );

    // A broken file keeps the certificate that is served, and the gateway running.
    std::fs::write(files.cert(), "not a certificate\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        handshake(gw.addr(), &connector).await.unwrap().leaf,
        two.der
    );
    let fresh = https_client(&ca, gw.addr());
    assert_eq!(
        fresh
            .get(gw.url("/api/product"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(gw.svc.pid(), pid, "the same process throughout");

    // Repaired: the next certificate is picked up again.
    let three = ca.leaf("gateway-three");
    files.write(&three);
    let deadline = Instant::now() + Duration::from_secs(5);
    while handshake(gw.addr(), &connector).await.unwrap().leaf != three.der {
        assert!(
            Instant::now() < deadline,
            "the repaired certificate was not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_http2_off_only_http11_is_offered_and_served() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf("gateway-one"));
    let product = Upstream::start("product").await;
    let routes = routes_to(&product).replace("proxy: {", "proxy: {http2: false, ");
    let gw = TlsGateway::start(&routes, &files, &ca, &[]).await;
    let all = rustls_client(&ca, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let h = handshake(gw.addr(), &all).await.unwrap();
    assert_eq!(h.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let only_h2 = rustls_client(&ca, &[&rustls::version::TLS13], &[b"h2"]);
    assert!(
        handshake(gw.addr(), &only_h2).await.is_err(),
        "a client that speaks only h2 is refused (no_application_protocol)"
    );
    let r = https_client(&ca, gw.addr())
        .get(gw.url("/api/product"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_redirect_port_sends_plain_http_to_https() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf("gateway-one"));
    let product = Upstream::start("product").await;
    // The redirect listener's port goes into the gateway's own settings, so it is chosen first.
    let redirect_port = free_port();
    let rp = redirect_port.to_string();
    let gw = TlsGateway::start(
        &routes_to(&product),
        &files,
        &ca,
        &[("SHOP_TLS_REDIRECT_PORT", &rp)],
    )
    .await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = plain
        .post(format!(
            "http://127.0.0.1:{redirect_port}/api/product/1?q=a%20b"
        ))
        .header("host", format!("{HOST}:{redirect_port}"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        header(r.headers(), "location"),
        format!("https://{HOST}:{}/api/product/1?q=a%20b", gw.svc.port())
    );
    assert_eq!(product.hits(), 0, "nothing is proxied in the clear");

    // Following it with a client that trusts the CA lands on the route.
    let follow = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .resolve(HOST, gw.addr())
        .build()
        .unwrap();
    let r = follow
        .get(format!("http://{HOST}:{redirect_port}/api/product/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().scheme(), "https");
}

/// Runs the gateway with `envs` and expects it to stop at start-up; returns its stderr.
fn start_fails(envs: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(binary_path("shop-gateway"));
    // It must fail before it listens, so any port does.
    cmd.env("SHOP_PORT", "0")
        .env("SHOP_BIND", "127.0.0.1")
        .env("SHOP_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "the gateway must exit non-zero");
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started with a broken TLS setting: {envs:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn broken_tls_settings_stop_the_gateway_at_start_naming_the_problem() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf("gateway-one"));
    let (cert, key) = (files.cert(), files.key());

    let err = start_fails(&[("SHOP_TLS_CERT_FILE", &cert)]);
    assert!(err.contains("SHOP_TLS_KEY_FILE"), "{err}");
    let err = start_fails(&[("SHOP_TLS_KEY_FILE", &key)]);
    assert!(err.contains("SHOP_TLS_CERT_FILE"), "{err}");

    let missing = files.dir.path().join("missing.crt");
    let err = start_fails(&[
        ("SHOP_TLS_CERT_FILE", &missing),
        ("SHOP_TLS_KEY_FILE", &key),
    ]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");

    let garbage = files.dir.path().join("garbage.key");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").unwrap();
    let err = start_fails(&[
        ("SHOP_TLS_CERT_FILE", &cert),
        ("SHOP_TLS_KEY_FILE", &garbage),
    ]);
    assert!(err.contains(garbage.to_str().unwrap()), "{err}");

    // A key of another certificate.
    let other = files.dir.path().join("other.key");
    std::fs::write(&other, ca.leaf("other").key_pem).unwrap();
    let err = start_fails(&[("SHOP_TLS_CERT_FILE", &cert), ("SHOP_TLS_KEY_FILE", &other)]);
    assert!(
        err.contains(other.to_str().unwrap()) && err.contains(cert.to_str().unwrap()),
        "{err}"
    );
}
