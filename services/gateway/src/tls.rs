//! TLS termination on the gateway's listener (rustls): the certificate chain and private key come
//! from PEM files, and a renewed certificate is picked up without a restart.
//!
//! Exists so the gateway can be a shop's TLS edge by itself (no sidecar, no TLS-terminating load
//! balancer in front) and so that a rotated certificate (a renewed Kubernetes Secret, cert-manager,
//! a cron job with certbot) is served to new connections within seconds while existing ones go on.
//! The rustls [`ServerConfig`] is built once; it asks [`CertStore`] for the current certificate at
//! every handshake, and a poller swaps that certificate when the files change (mtime, size or
//! inode: a Secret volume replaces its files through a symlink swap). A reload that fails keeps the
//! certificate that was being served.
//!
//! Only TLS 1.2 and 1.3 with rustls' default (modern, AEAD-only) cipher suites are offered. ALPN
//! announces `h2` then `http/1.1` ([`ALPN_H2`], or [`ALPN_HTTP1`] alone with HTTP/2 off); the
//! server serves each connection with the protocol it negotiated (see `server`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
// The file-change rule (mtime, size, inode) shared with the fault flags.
use shop_runtime::filewatch::FileStamp as Stamp;
use tokio_util::sync::CancellationToken;

/// Application protocols offered through ALPN with HTTP/2 on, most preferred first.
pub const ALPN_H2: &[&[u8]] = &[b"h2", b"http/1.1"];
/// Application protocols offered through ALPN with HTTP/2 off.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// Why TLS could not be set up, or a certificate could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the certificate and the key was configured.
    #[error(
        "TLS needs both SHOP_TLS_CERT_FILE (--tls-cert-file) and SHOP_TLS_KEY_FILE (--tls-key-file); only {given} is set"
    )]
    Incomplete {
        /// The setting that was given.
        given: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying IO error.
        source: std::io::Error,
    },
    /// A file was read but holds no usable PEM item.
    #[error("TLS {what} file {path} is invalid: {reason}")]
    Parse {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key cannot be used, or does not belong to the certificate.
    #[error("TLS private key {key} cannot be used with the certificate {cert}: {source}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// rustls refused the server configuration.
    #[error("TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate chain and the private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (`CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// Private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The TLS files from the two settings: both (TLS on), neither (TLS off), or an error naming
    /// the one that is missing.
    pub fn from_settings(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        // An empty value (`SHOP_TLS_CERT_FILE=`) counts as unset, as for the other settings.
        let cert = cert.filter(|p| !p.as_os_str().is_empty());
        let key = key.filter(|p| !p.as_os_str().is_empty());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete {
                given: "SHOP_TLS_CERT_FILE",
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                given: "SHOP_TLS_KEY_FILE",
            }),
        }
    }
}

/// The crypto provider of the gateway's TLS: aws-lc-rs (the workspace's rustls backend) with its
/// default cipher suites and key exchange groups. Named explicitly: with both ring and aws-lc-rs
/// in the dependency tree rustls cannot pick a process default by itself.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads the certificate chain and key of `files` and checks that they belong together.
pub fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let parse = |what: &'static str, path: &Path, reason: String| TlsError::Parse {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse("certificate", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(parse(
            "certificate",
            &files.cert,
            "no CERTIFICATE block found".to_owned(),
        ));
    }
    let key_pem = read("private key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".to_owned(),
            other => other.to_string(),
        };
        parse("private key", &files.key, reason)
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

/// Stamps of the certificate and the key files.
type Stamps = (Option<Stamp>, Option<Stamp>);

fn stamps(files: &TlsFiles) -> Stamps {
    (Stamp::of(&files.cert), Stamp::of(&files.key))
}

/// The outcome of one look at the files.
#[derive(Debug)]
pub enum Reload {
    /// Neither file changed since the last look.
    Unchanged,
    /// A file changed and the new certificate is served from now on.
    Reloaded,
    /// A file changed but the new contents cannot be used; the previous certificate stays.
    Failed(TlsError),
}

/// The certificate served to new connections, and the files it came from.
///
/// rustls calls [`ResolvesServerCert::resolve`] once per handshake: it costs one atomic load.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The stamps of the files at the last look (loaded or not).
    seen: Mutex<Stamps>,
}

impl CertStore {
    /// Loads the certificate from `files`; an error names the file at fault.
    pub fn load(files: TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        // Stamped before reading: a change while reading is seen again at the next look.
        let seen = stamps(&files);
        let key = load_certified_key(&files, &provider)?;
        Ok(Self {
            files,
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        })
    }

    /// The files the certificate comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The leaf certificate served now (DER).
    pub fn current_leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }

    /// Loads the files again when their stamps differ from the last look. A failed load is not
    /// retried until a file changes again, so a broken file is reported once, not every poll.
    pub fn reload_if_changed(&self) -> Reload {
        let now = stamps(&self.files);
        {
            let mut seen = self.seen.lock();
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match load_certified_key(&self.files, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Looks at the files every `interval` (on a blocking thread: file system calls) until
    /// `stop`, logging each reload (info) and each failed one (warning).
    pub async fn poll(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the files were just loaded.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            let store = self.clone();
            let outcome = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
            let (cert, key) = (self.files.cert.display(), self.files.key.display());
            match outcome {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Reloaded) => {
                    tracing::info!(%cert, %key, "TLS certificate reloaded; new connections get it");
                }
                Ok(Reload::Failed(e)) => tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but cannot be loaded; still serving the previous certificate"
                ),
                Err(e) => tracing::warn!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configuration over `store`: TLS 1.3 and 1.2, the provider's default cipher
/// suites, no client certificates, `alpn` offered (see [`ALPN_H2`]).
pub fn server_config(store: Arc<CertStore>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(store.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["shop.test".to_owned()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn files_with(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.key, key).unwrap();
        std::fs::write(&files.cert, cert).unwrap();
        files
    }

    #[test]
    fn both_files_or_neither() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(TlsFiles::from_settings(None, None).unwrap(), None);
        assert_eq!(TlsFiles::from_settings(p(""), p("")).unwrap(), None);
        assert!(TlsFiles::from_settings(p("c"), p("k")).unwrap().is_some());
        let e = TlsFiles::from_settings(p("c"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only SHOP_TLS_CERT_FILE is set"), "{e}");
        let e = TlsFiles::from_settings(p(""), p("k"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("only SHOP_TLS_KEY_FILE is set"), "{e}");
    }

    #[test]
    fn errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_with(dir.path(), &leaf("one"));
        let provider = provider();
        assert!(load_certified_key(&files, &provider).is_ok());

        let missing = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: files.key.clone(),
        };
        let e = load_certified_key(&missing, &provider).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Read {
                    what: "certificate",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("nope.crt"), "{e}");

        let key_as_cert = TlsFiles {
            cert: files.key.clone(),
            key: files.key.clone(),
        };
        let e = load_certified_key(&key_as_cert, &provider).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE block"), "{e}");

        let cert_as_key = TlsFiles {
            cert: files.cert.clone(),
            key: files.cert.clone(),
        };
        let e = load_certified_key(&cert_as_key, &provider).unwrap_err();
        assert!(
            matches!(
                e,
                TlsError::Parse {
                    what: "private key",
                    ..
                }
            ),
            "{e}"
        );

        let other_key = dir.path().join("other.key");
        std::fs::write(&other_key, leaf("two").1).unwrap();
        let mismatched = TlsFiles {
            cert: files.cert.clone(),
            key: other_key,
        };
        let e = load_certified_key(&mismatched, &provider).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
    }

    #[test]
    fn reloads_a_changed_file_and_keeps_the_old_certificate_when_the_new_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_with(dir.path(), &leaf("one"));
        let store = CertStore::load(files.clone(), provider()).unwrap();
        let first = store.current_leaf().unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Unchanged));

        files_with(dir.path(), &leaf("two-with-a-longer-name"));
        assert!(matches!(store.reload_if_changed(), Reload::Reloaded));
        let second = store.current_leaf().unwrap();
        assert_ne!(first, second);
        assert!(matches!(store.reload_if_changed(), Reload::Unchanged));

        std::fs::write(&files.cert, "garbage").unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Failed(_)));
        assert_eq!(store.current_leaf().unwrap(), second, "the old one stays");
        assert!(
            matches!(store.reload_if_changed(), Reload::Unchanged),
            "a broken file is reported once, not at every look"
        );
    }

    #[test]
    fn announces_h2_first_or_only_http11() {
        let dir = tempfile::tempdir().unwrap();
        let files = files_with(dir.path(), &leaf("one"));
        let store = Arc::new(CertStore::load(files, provider()).unwrap());
        let cfg = server_config(store.clone(), ALPN_H2).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let cfg = server_config(store, ALPN_HTTP1).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
