//! The routing table: which route takes a request (prefix on segment boundaries, method, host) and
//! how the path is rewritten for the upstream.
//!
//! Exists separately from the proxy so that matching is a pure, unit-tested function; the proxy
//! only asks "which route, and what path upstream".

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::Method;

use crate::config::{AuthRule, Bucket, GatewayConfig, RouteConfig};

/// Where a route's requests go.
#[derive(Debug)]
pub enum Target {
    /// A service name, resolved through the registry client.
    Service(String),
    /// A fixed list of base URLs.
    Static(StaticPool),
}

/// Round-robin over fixed base URLs, skipping ones that recently refused a connection.
#[derive(Debug)]
pub struct StaticPool {
    bases: Vec<String>,
    down_until_ms: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Instant,
}

/// How long a base URL that refused a connection is skipped.
pub const MARK_DOWN_FOR: Duration = Duration::from_secs(5);

impl StaticPool {
    /// A pool over these base URLs (already validated).
    pub fn new(bases: Vec<String>) -> Self {
        let down_until_ms = bases.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            bases: bases
                .into_iter()
                .map(|b| b.trim_end_matches('/').to_owned())
                .collect(),
            down_until_ms,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Next base URL in round-robin order that is not marked down; if all are down, the next one anyway.
    pub fn pick(&self) -> Option<&str> {
        let n = self.bases.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // The clock is read only once a base URL is found marked down (0: never was).
        let mut now = None;
        for k in 0..n {
            let i = (start + k) % n;
            let until = self.down_until_ms[i].load(Ordering::Relaxed);
            if until == 0 {
                return Some(&self.bases[i]);
            }
            if until <= *now.get_or_insert_with(|| self.now_ms()) {
                // Expired: back to "never marked", so later picks skip the clock again.
                let _ = self.down_until_ms[i].compare_exchange(
                    until,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                return Some(&self.bases[i]);
            }
        }
        Some(&self.bases[start % n])
    }

    /// Skips `base` for [`MARK_DOWN_FOR`].
    pub fn mark_down(&self, base: &str) {
        let until = self.now_ms() + u64::try_from(MARK_DOWN_FOR.as_millis()).unwrap_or(5_000);
        for (i, b) in self.bases.iter().enumerate() {
            if b == base {
                self.down_until_ms[i].store(until, Ordering::Relaxed);
            }
        }
    }

    /// Whether a base URL other than `except` is not marked down: where traffic can go when
    /// `except` fails.
    pub fn has_live_except(&self, except: &str) -> bool {
        let now = self.now_ms();
        self.bases
            .iter()
            .zip(&self.down_until_ms)
            .any(|(b, until)| b != except && until.load(Ordering::Relaxed) <= now)
    }

    /// Number of base URLs.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Position in the table (stable index for per-route state).
    pub index: usize,
    /// Route id from the config.
    pub id: String,
    /// Path prefix.
    pub prefix: String,
    methods: Vec<Method>,
    host: Option<String>,
    rewrite: Option<String>,
    /// Upstream.
    pub target: Target,
    /// Time to upstream response headers.
    pub timeout: Duration,
    /// Access rule.
    pub auth: AuthRule,
    /// Request body limit, bytes.
    pub max_body_bytes: u64,
    /// Per-client bucket.
    pub bucket: Bucket,
    /// The upstream speaks HTTP/2 (h2c).
    pub h2c: bool,
}

impl Route {
    /// Whether this route takes the request.
    pub fn matches(&self, method: &Method, host: Option<&str>, path: &str) -> bool {
        // HEAD is a GET without the body (upstreams answer it with their GET handler), so a
        // route for GET takes HEAD too: else HEAD fell through to another route's rules.
        let method_ok = self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET));
        if !method_ok {
            return false;
        }
        if let Some(want) = &self.host {
            // `shop.example.` (fully qualified) names the same host as `shop.example`.
            let got = host.map(|h| {
                h.rsplit_once(':')
                    .map_or(h, |(name, _)| name)
                    .trim_end_matches('.')
            });
            if !got.is_some_and(|g| g.eq_ignore_ascii_case(want)) {
                return false;
            }
        }
        prefix_matches(&self.prefix, path)
    }

    /// Whether the route rewrites the prefix (else the path goes upstream unchanged).
    pub fn rewrites(&self) -> bool {
        self.rewrite.is_some()
    }

    /// The path and query to send upstream for `path` (already matched) and `query`.
    pub fn upstream_path_and_query(&self, path: &str, query: Option<&str>) -> String {
        let mut out = match &self.rewrite {
            None => path.to_owned(),
            Some(rw) => {
                let rest = path
                    .get(self.prefix.trim_end_matches('/').len()..)
                    .unwrap_or("");
                let base = rw.trim_end_matches('/');
                let joined = format!("{base}{rest}");
                if joined.is_empty() {
                    "/".to_owned()
                } else {
                    joined
                }
            }
        };
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// `prefix` matches `path` on a segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    match path.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The byte a `%XX` escape at `i` stands for (None: no complete escape there).
fn percent_decoded(b: &[u8], i: usize) -> Option<u8> {
    let hex = |j: usize| b.get(j).and_then(|&h| char::from(h).to_digit(16));
    let (hi, lo) = hex(i + 1).zip(hex(i + 2))?;
    u8::try_from(hi * 16 + lo).ok()
}

/// The request target with percent-encoded unreserved characters of its path decoded (RFC 3986
/// §6.2.2.2: `%61dmin` and `admin` are the same path), or None when there are none, the usual
/// case. Routing and the upstream then see one spelling of the path, so an encoding cannot carry a
/// request past the route its decoded path belongs to; the query is left as it is.
pub fn normalize_unreserved(path_and_query: &str) -> Option<String> {
    // Most targets have no `%` at all: one plain scan decides that (this runs for every request).
    if !path_and_query.as_bytes().contains(&b'%') {
        return None;
    }
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let b = path.as_bytes();
    let unreserved_at = |i: usize| {
        percent_decoded(b, i)
            .filter(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
    };
    if !(0..b.len()).any(|i| b[i] == b'%' && unreserved_at(i).is_some()) {
        return None;
    }
    let mut out = String::with_capacity(path_and_query.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match (c, unreserved_at(i)) {
            (b'%', Some(d)) => {
                out.push(char::from(d));
                i += 3;
            }
            _ => {
                out.push(char::from(c));
                i += 1;
            }
        }
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

/// Why a request path is refused before routing, if it is: forms an upstream server may
/// normalise into another path than the one the route was chosen by (dot segments, empty
/// segments, back slashes, `;` path parameters, encoded slashes). Through them a public route's
/// prefix could carry a request to a protected route's path (`/api/product/x/../admin` reaching
/// `/api/product/admin`). Percent-encoded unreserved characters are decoded before this check
/// ([`normalize_unreserved`]), so `%2e%2e` is a dot segment here.
pub fn ambiguous_path(path: &str) -> Option<&'static str> {
    // One pass over the bytes (this runs for every request): characters refused anywhere win over
    // segment problems, which are noted as found and reported after the pass.
    let b = path.as_bytes();
    // Not origin-form (`*`): no segments to check.
    let origin_form = b.first() == Some(&b'/');
    let mut segment_problem = None;
    let mut segment_start = 1;
    let check_segment = |segment: &[u8], followed: bool| match segment {
        b"." | b".." => Some("a dot segment"),
        b"" if followed => Some("an empty segment (`//`)"),
        _ => None,
    };
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\\' => return Some("a back slash"),
            b';' => return Some("a path parameter (`;`)"),
            b'%' => {
                let Some(decoded) = percent_decoded(b, i) else {
                    continue;
                };
                if decoded == b'/' || decoded == b'\\' {
                    return Some("an encoded slash");
                }
                if decoded == b'.' {
                    // Only left when the caller did not normalise first.
                    return Some("an encoded dot");
                }
            }
            b'/' if origin_form && i > 0 => {
                if segment_problem.is_none() {
                    segment_problem = b.get(segment_start..i).and_then(|s| check_segment(s, true));
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    if origin_form && segment_problem.is_none() {
        segment_problem = b.get(segment_start..).and_then(|s| check_segment(s, false));
    }
    segment_problem
}

/// All routes, most specific first (host-bound before any-host, then longer prefixes).
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Compiles a validated config.
    pub fn new(cfg: &GatewayConfig) -> Self {
        let mut routes: Vec<Arc<Route>> = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| Arc::new(compile(index, r, cfg)))
            .collect();
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(
                    b.prefix
                        .trim_end_matches('/')
                        .len()
                        .cmp(&a.prefix.trim_end_matches('/').len()),
                )
                .then(a.methods.is_empty().cmp(&b.methods.is_empty()))
                .then(a.index.cmp(&b.index))
        });
        Self { routes }
    }

    /// The route for a request, if any.
    pub fn find(&self, method: &Method, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(method, host, path))
    }

    /// Every route (for per-route state).
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn compile(index: usize, r: &RouteConfig, cfg: &GatewayConfig) -> Route {
    let target = match &r.service {
        Some(s) => Target::Service(s.clone()),
        None => Target::Static(StaticPool::new(r.upstreams.clone())),
    };
    Route {
        index,
        id: r.id.clone(),
        prefix: r.prefix.clone(),
        methods: r
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .collect(),
        host: r.host.clone().filter(|h| !h.is_empty()),
        rewrite: r.rewrite.clone(),
        target,
        timeout: Duration::from_millis(r.timeout_ms.unwrap_or(cfg.proxy.timeout_ms)),
        auth: r.auth.clone(),
        max_body_bytes: r.max_body_bytes.unwrap_or(cfg.proxy.max_body_bytes),
        bucket: r.rate_limit.unwrap_or(cfg.rate_limit.client),
        h2c: r.upstream_protocol == crate::config::UpstreamProtocol::H2c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let cfg = GatewayConfig::from_yaml(yaml).unwrap();
        cfg.validate().unwrap();
        RouteTable::new(&cfg)
    }

    #[test]
    fn segment_boundaries() {
        assert!(prefix_matches("/api/product", "/api/product"));
        assert!(prefix_matches("/api/product", "/api/product/42"));
        assert!(!prefix_matches("/api/product", "/api/products"));
        assert!(prefix_matches("/api/product/", "/api/product/42"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn ambiguous_paths() {
        for ok in [
            "/",
            "/api/product/",
            "/api/a%20b",
            "/a/b.c/..d",
            "/%C3%A9",
            "*",
        ] {
            assert_eq!(ambiguous_path(ok), None, "{ok}");
        }
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a//b",
            "//a",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a;x=1",
            "/%2e%2e/b",
        ] {
            assert!(ambiguous_path(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_in_the_path_only() {
        assert_eq!(normalize_unreserved("/api/product/a%20b?q=%61"), None);
        assert_eq!(normalize_unreserved("/%C3%A9"), None, "not unreserved");
        assert_eq!(
            normalize_unreserved("/api/product/%61dmin?q=%61").as_deref(),
            Some("/api/product/admin?q=%61")
        );
        assert_eq!(
            normalize_unreserved("/u/%7Ejo%2Dx%2fy").as_deref(),
            Some("/u/~jo-x%2fy"),
            "an encoded slash stays encoded (and is refused by ambiguous_path)"
        );
        let dots = normalize_unreserved("/a/%2e%2E/b").unwrap();
        assert_eq!(dots, "/a/../b");
        assert!(ambiguous_path(&dots).is_some());
        assert_eq!(normalize_unreserved("/a%6").as_deref(), None, "cut short");
    }

    #[test]
    fn default_table_routes_shop_paths() {
        let t = table("");
        let id = |p: &str| t.find(&Method::GET, None, p).map(|r| r.id.clone());
        assert_eq!(id("/api/product/123").as_deref(), Some("product"));
        assert_eq!(id("/api/order").as_deref(), Some("order"));
        assert_eq!(id("/api/inventory").as_deref(), Some("inventory"));
        assert_eq!(id("/api/notifications/x").as_deref(), Some("notification"));
        assert_eq!(id("/eureka/apps/PRODUCT").as_deref(), Some("registry"));
        assert_eq!(id("/eureka/web").as_deref(), Some("registry-dashboard"));
        assert_eq!(id("/nothing"), None);
        assert_eq!(id("/api/productx"), None);
    }

    #[test]
    fn dashboard_rewrites_to_root() {
        let t = table("");
        let r = t.find(&Method::GET, None, "/eureka/web").unwrap();
        assert_eq!(r.upstream_path_and_query("/eureka/web", None), "/");
        assert_eq!(
            r.upstream_path_and_query("/eureka/web/x.css", Some("v=1")),
            "/x.css?v=1"
        );
        let api = t.find(&Method::GET, None, "/eureka/apps").unwrap();
        assert_eq!(
            api.upstream_path_and_query("/eureka/apps", Some("a=b")),
            "/eureka/apps?a=b"
        );
    }

    #[test]
    fn method_and_host_predicates() {
        let t = table(
            r#"
routes:
  - {id: any, prefix: /a, service: s1}
  - {id: posts, prefix: /a, service: s2, methods: [POST]}
  - {id: vhost, prefix: /a, service: s3, host: shop.example}
"#,
        );
        assert_eq!(t.find(&Method::GET, None, "/a").unwrap().id, "any");
        assert_eq!(t.find(&Method::POST, None, "/a/1").unwrap().id, "posts");
        assert_eq!(
            t.find(&Method::GET, Some("shop.example:8080"), "/a")
                .unwrap()
                .id,
            "vhost"
        );
        assert_eq!(t.find(&Method::GET, Some("other"), "/a").unwrap().id, "any");
        assert_eq!(
            t.find(&Method::GET, Some("shop.example.:80"), "/a")
                .unwrap()
                .id,
            "vhost"
        );
        let gets = table("routes:\n  - {id: gets, prefix: /a, service: s, methods: [GET]}\n");
        assert_eq!(t.find(&Method::HEAD, None, "/a").unwrap().id, "any");
        assert_eq!(gets.find(&Method::HEAD, None, "/a").unwrap().id, "gets");
        assert!(gets.find(&Method::POST, None, "/a").is_none());
    }

    #[test]
    fn static_pool_round_robin_skips_marked_down() {
        let p = StaticPool::new(vec!["http://a".into(), "http://b/".into()]);
        let first = p.pick().unwrap().to_owned();
        let second = p.pick().unwrap().to_owned();
        assert_ne!(first, second);
        assert!(second == "http://b" || first == "http://b");
        p.mark_down("http://a");
        for _ in 0..4 {
            assert_eq!(p.pick(), Some("http://b"));
        }
        p.mark_down("http://b");
        assert!(p.pick().is_some(), "all down still yields a candidate");
    }
}
