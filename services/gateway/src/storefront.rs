//! The storefront and admin page, served by the gateway itself: a few static files (HTML, CSS and
//! a small vanilla JavaScript module, embedded into the binary at build time) at `/` (the store),
//! `/admin` (stock, registered instances, the Shop's status) and `/storefront/*` (their assets),
//! plus `/admin/status.json`, the Shop's status read from the file named by `SHOP_STATUS_FILE`.
//!
//! It exists so that a shop has a front a person can use without another deployment: the pages
//! talk to the shop's own APIs through this same gateway (same origin, so no CORS and the
//! gateway's JWT rules apply unchanged), and embedding them means the page a gateway serves always
//! matches the APIs of its release. The storefront only answers paths that no configured route
//! takes (the proxy asks it after the route table missed), so a routes file that maps `/` or
//! `/admin` elsewhere keeps working; `SHOP_STOREFRONT=false` switches it off.
//!
//! Every answer carries a strong `ETag` (a hash of the embedded bytes; a matching
//! `If-None-Match` gets a 304), `Cache-Control: no-cache` (revalidate, so a new release shows at
//! once) and a strict Content-Security-Policy: scripts, styles and requests only from this
//! origin, no inline script, no framing.

use std::{
    hash::Hasher as _,
    path::PathBuf,
    sync::{Arc, LazyLock},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use crate::body::ResponseBody;

/// The Content-Security-Policy of every storefront answer: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../storefront/index.html"),
    },
    Asset {
        path: "/admin",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../storefront/admin.html"),
    },
    Asset {
        path: "/storefront/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../storefront/style.css"),
    },
    Asset {
        path: "/storefront/common.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../storefront/common.js"),
    },
    Asset {
        path: "/storefront/store.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../storefront/store.js"),
    },
    Asset {
        path: "/storefront/admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../storefront/admin.js"),
    },
    Asset {
        path: "/storefront/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../storefront/favicon.svg"),
    },
];

/// Where the Shop's status is served.
pub const STATUS_PATH: &str = "/admin/status.json";

/// Largest status file served, bytes (a Shop's status is a few KiB).
const MAX_STATUS_BYTES: u64 = 256 * 1024;

/// The ETag of each asset, computed once: FxHash of the bytes (stable across runs and replicas of
/// one build, which is all an ETag needs).
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let mut h = rustc_hash::FxHasher::default();
            h.write(a.body);
            h.write_usize(a.body.len());
            HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The storefront: its embedded files and where the Shop's status comes from.
#[derive(Debug, Clone, Default)]
pub struct Storefront {
    status_file: Option<Arc<PathBuf>>,
}

impl Storefront {
    /// A storefront that serves the Shop's status from `status_file` (None: `/admin/status.json`
    /// answers 404).
    pub fn new(status_file: Option<PathBuf>) -> Self {
        Self {
            status_file: status_file.map(Arc::new),
        }
    }

    /// Whether `path` is one of the storefront's.
    pub fn owns(path: &str) -> bool {
        path == STATUS_PATH || ASSETS.iter().any(|a| a.path == path)
    }

    /// Total size of the embedded files, bytes.
    pub fn size() -> usize {
        ASSETS.iter().map(|a| a.body.len()).sum()
    }

    /// The answer for `path`, or None when the path is not the storefront's (the caller then
    /// answers its own 404).
    pub async fn respond(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response<ResponseBody>> {
        if !Self::owns(path) {
            return None;
        }
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Some(method_not_allowed(method, path));
        }
        let head = *method == Method::HEAD;
        if path == STATUS_PATH {
            return Some(self.status(head).await);
        }
        let (i, asset) = ASSETS.iter().enumerate().find(|(_, a)| a.path == path)?;
        let etag = ETAGS.get(i)?.clone();
        let fresh = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|v| etag_matches(v, &etag));
        let mut resp = if fresh {
            let mut r = Response::new(ResponseBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let body = if head {
                ResponseBody::empty()
            } else {
                ResponseBody::full(Bytes::from_static(asset.body))
            };
            let mut r = Response::new(body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            if head {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
            }
            r
        };
        let h = resp.headers_mut();
        h.insert(header::ETAG, etag);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        security_headers(h);
        Some(resp)
    }

    /// `/admin/status.json`: the status file as it is, when it holds JSON.
    async fn status(&self, head: bool) -> Response<ResponseBody> {
        let Some(file) = &self.status_file else {
            return problem(
                StatusCode::NOT_FOUND,
                "No Shop status",
                "this gateway has no Shop status: SHOP_STATUS_FILE is not set".to_owned(),
            );
        };
        let read = async {
            let meta = tokio::fs::metadata(file.as_path()).await?;
            if meta.len() > MAX_STATUS_BYTES {
                return Err(std::io::Error::other(format!(
                    "{} bytes, more than the {MAX_STATUS_BYTES} served",
                    meta.len()
                )));
            }
            tokio::fs::read(file.as_path()).await
        };
        let bytes = match read.await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "Shop status file unreadable");
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Shop status unavailable",
                    format!("the Shop status file cannot be read yet: {e}"),
                );
            }
        };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            tracing::warn!(file = %file.display(), "Shop status file is not JSON");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Shop status unavailable",
                "the Shop status file does not hold JSON".to_owned(),
            );
        }
        let len = bytes.len();
        let mut r = Response::new(if head {
            ResponseBody::empty()
        } else {
            ResponseBody::full(Bytes::from(bytes))
        });
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if head {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        security_headers(h);
        r
    }
}

/// Whether an `If-None-Match` value names `etag` (or is `*`); weak comparison, as RFC 9110 asks.
fn etag_matches(value: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(v) = value.to_str() else { return false };
    let Ok(want) = etag.to_str() else {
        return false;
    };
    v.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == want.strip_prefix("W/").unwrap_or(want)
    })
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
}

fn problem(status: StatusCode, title: &str, detail: String) -> Response<ResponseBody> {
    let body = shop_runtime::Problem::new(status, title).detail(detail);
    let mut r = Response::new(ResponseBody::full(Bytes::from(body.body().to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(shop_runtime::problem::PROBLEM_JSON),
    );
    r
}

fn method_not_allowed(method: &Method, path: &str) -> Response<ResponseBody> {
    let mut r = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{path} answers only GET and HEAD, not {method}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use http_body_util::BodyExt as _;

    use super::*;

    async fn get(sf: &Storefront, path: &str, headers: &[(&str, &str)]) -> Response<ResponseBody> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        sf.respond(&Method::GET, path, &h)
            .await
            .expect("a storefront path")
    }

    async fn body(r: Response<ResponseBody>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn hdr<'a>(r: &'a Response<ResponseBody>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn each_file_has_its_content_type() {
        let sf = Storefront::default();
        for (path, ct) in [
            ("/", "text/html; charset=utf-8"),
            ("/admin", "text/html; charset=utf-8"),
            ("/storefront/style.css", "text/css; charset=utf-8"),
            ("/storefront/store.js", "text/javascript; charset=utf-8"),
            ("/storefront/admin.js", "text/javascript; charset=utf-8"),
            ("/storefront/common.js", "text/javascript; charset=utf-8"),
            ("/storefront/favicon.svg", "image/svg+xml"),
        ] {
            let r = get(&sf, path, &[]).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(hdr(&r, "content-type"), ct, "{path}");
            assert_eq!(hdr(&r, "cache-control"), "no-cache", "{path}");
            assert_eq!(hdr(&r, "x-content-type-options"), "nosniff", "{path}");
            assert!(!body(r).await.is_empty(), "{path}");
        }
        let store = body(get(&sf, "/", &[]).await).await;
        assert!(
            store.contains("<main"),
            "the store page has a main landmark"
        );
        assert!(store.contains(r#"src="/storefront/store.js""#));
    }

    #[tokio::test]
    async fn a_matching_if_none_match_gets_a_304_and_a_stale_one_the_file() {
        let sf = Storefront::default();
        let first = get(&sf, "/storefront/style.css", &[]).await;
        let etag = hdr(&first, "etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        let again = get(&sf, "/storefront/style.css", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hdr(&again, "etag"), etag);
        assert!(body(again).await.is_empty());
        let weak = format!("\"x\", W/{etag}");
        let r = get(&sf, "/storefront/style.css", &[("if-none-match", &weak)]).await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let stale = get(&sf, "/storefront/style.css", &[("if-none-match", "\"0\"")]).await;
        assert_eq!(stale.status(), StatusCode::OK);
        // Each file has its own tag.
        let other = get(&sf, "/", &[]).await;
        assert_ne!(hdr(&other, "etag"), etag);
    }

    #[tokio::test]
    async fn the_pages_forbid_inline_script_and_framing() {
        let sf = Storefront::default();
        for path in ["/", "/admin"] {
            let r = get(&sf, path, &[]).await;
            let csp = hdr(&r, "content-security-policy");
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert_eq!(hdr(&r, "x-frame-options"), "DENY");
            let html = body(r).await;
            assert!(
                !html.contains("<script>") && !html.contains(" onclick="),
                "{path} has inline script, which the policy blocks"
            );
        }
    }

    #[tokio::test]
    async fn other_paths_are_not_the_storefronts_and_writes_are_refused() {
        let sf = Storefront::default();
        let none = HeaderMap::new();
        for path in [
            "/api/product",
            "/index.html",
            "/admin/",
            "/storefront/",
            "/x",
        ] {
            assert!(
                sf.respond(&Method::GET, path, &none).await.is_none(),
                "{path}"
            );
        }
        let r = sf.respond(&Method::POST, "/", &none).await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(hdr(&r, "allow"), "GET, HEAD");
        assert_eq!(hdr(&r, "content-type"), "application/problem+json");
        let head = sf.respond(&Method::HEAD, "/", &none).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert!(hdr(&head, "content-length").parse::<usize>().unwrap() > 0);
        assert!(body(head).await.is_empty());
    }

    #[tokio::test]
    async fn the_shop_status_is_the_files_json_or_a_problem() {
        let unset = get(&Storefront::default(), STATUS_PATH, &[]).await;
        assert_eq!(unset.status(), StatusCode::NOT_FOUND);
        assert_eq!(hdr(&unset, "content-type"), "application/problem+json");
        assert!(body(unset).await.contains("SHOP_STATUS_FILE"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status.json");
        let sf = Storefront::new(Some(file.clone()));
        let missing = get(&sf, STATUS_PATH, &[]).await;
        assert_eq!(missing.status(), StatusCode::SERVICE_UNAVAILABLE);

        std::fs::write(&file, r#"{"phase":"Ready","readyComponents":6}"#).unwrap();
        let ok = get(&sf, STATUS_PATH, &[]).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(hdr(&ok, "content-type"), "application/json");
        assert_eq!(hdr(&ok, "cache-control"), "no-store");
        assert!(body(ok).await.contains("\"Ready\""));

        std::fs::write(&file, "phase: Ready").unwrap();
        let bad = get(&sf, STATUS_PATH, &[]).await;
        assert_eq!(bad.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(bad).await.contains("does not hold JSON"));
    }

    #[test]
    fn the_whole_storefront_is_small() {
        assert!(
            Storefront::size() < 30 * 1024,
            "the storefront is {} bytes, over its 30 KiB budget",
            Storefront::size()
        );
    }
}
