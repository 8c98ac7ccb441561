//! Gateway configuration: the routes file (YAML), its defaults and the env overrides.
//!
//! Exists so that every tunable of the gateway (routes, per-route auth rules, rate limits, timeouts,
//! body limits, CORS) is described in one serde type that is validated once at start-up, with an
//! error naming the offending field, instead of being discovered broken on the first request.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded; each variant names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The routes file could not be read.
    #[error("cannot read routes file {path}: {source}")]
    Read {
        /// Path given with `--routes`.
        path: String,
        /// Underlying IO error.
        source: std::io::Error,
    },
    /// The routes file is not valid YAML for [`GatewayConfig`].
    #[error("routes file {path} is invalid: {source}")]
    Parse {
        /// Path given with `--routes`.
        path: String,
        /// Underlying parse error (carries line and column).
        source: serde_yaml::Error,
    },
    /// A value is present but unusable.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `routes[2].prefix`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Who may call a route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AuthRule {
    /// Reads (GET, HEAD, OPTIONS) are public, everything else needs a valid token.
    #[default]
    Default,
    /// No token needed (a token that is sent must still be valid).
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token carrying this scope (`scope`/`scp` claim).
    Scope(String),
    /// A valid token carrying this role (`roles` or `realm_access.roles` claim).
    Role(String),
}

impl TryFrom<String> for AuthRule {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let v = value.trim();
        match v {
            "default" => Ok(Self::Default),
            "public" => Ok(Self::Public),
            "authenticated" => Ok(Self::Authenticated),
            _ => {
                if let Some(s) = v.strip_prefix("scope:").filter(|s| !s.is_empty()) {
                    Ok(Self::Scope(s.to_owned()))
                } else if let Some(r) = v.strip_prefix("role:").filter(|s| !s.is_empty()) {
                    Ok(Self::Role(r.to_owned()))
                } else {
                    Err(format!(
                        "unknown auth rule `{v}`: expected default, public, authenticated, scope:<name> or role:<name>"
                    ))
                }
            }
        }
    }
}

impl From<AuthRule> for String {
    fn from(value: AuthRule) -> Self {
        match value {
            AuthRule::Default => "default".into(),
            AuthRule::Public => "public".into(),
            AuthRule::Authenticated => "authenticated".into(),
            AuthRule::Scope(s) => format!("scope:{s}"),
            AuthRule::Role(r) => format!("role:{r}"),
        }
    }
}

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Sustained rate, tokens per second (> 0).
    pub per_second: f64,
    /// Bucket size: how many requests may arrive at once (>= 1).
    pub burst: u32,
}

/// What to do when a limit cannot be checked (the keyed state is at capacity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Reject with 503 (default: an attacker flooding keys must not switch limits off).
    #[default]
    Closed,
    /// Let the request through without a limit.
    Open,
}

/// Rate limiting for all routes; a route may override `client`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Off entirely when false.
    pub enabled: bool,
    /// Bucket per client (token subject, else IP) and route.
    pub client: Bucket,
    /// Optional bucket per route shared by all clients.
    pub route: Option<Bucket>,
    /// Most client keys tracked at once; beyond it a new client's limit cannot be checked.
    pub max_keys: usize,
    /// Behaviour when a limit cannot be checked.
    pub on_unavailable: FailMode,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            client: Bucket {
                per_second: 100.0,
                burst: 200,
            },
            route: None,
            max_keys: 100_000,
            on_unavailable: FailMode::Closed,
        }
    }
}

/// CORS policy; off unless origins are listed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Allowed origins (`*` for any).
    pub allowed_origins: Vec<String>,
    /// Allowed methods; empty means GET, POST, PUT, PATCH, DELETE, OPTIONS.
    pub allowed_methods: Vec<String>,
    /// Allowed request headers; empty means authorization, content-type, x-request-id.
    pub allowed_headers: Vec<String>,
    /// Whether credentials are allowed (not with `*`).
    pub allow_credentials: bool,
    /// Preflight cache, seconds.
    pub max_age_secs: u64,
}

/// One route: which requests it takes and where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Stable id (used in metrics, rate-limit keys and logs).
    pub id: String,
    /// Path prefix, matched on segment boundaries (`/api/product` takes `/api/product/1`, not `/api/products`).
    pub prefix: String,
    /// Service name resolved through the registry (round-robin over UP instances, DNS fallback).
    #[serde(default)]
    pub service: Option<String>,
    /// Static upstream base URLs instead of a service (round-robin, refused ones skipped).
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Only these methods (empty: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Only this Host (without port; empty: any).
    #[serde(default)]
    pub host: Option<String>,
    /// Replace the matched prefix with this path (e.g. `/eureka/web` -> `/`).
    #[serde(default)]
    pub rewrite: Option<String>,
    /// Time allowed until the upstream's response headers arrive, milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Who may call it.
    #[serde(default)]
    pub auth: AuthRule,
    /// Overrides the global per-client bucket.
    #[serde(default)]
    pub rate_limit: Option<Bucket>,
    /// Overrides the global request body limit, bytes.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// What the upstream speaks: `http1` (HTTP/1.1), or `h2c` (HTTP/2 with prior knowledge, one
    /// multiplexed connection per upstream and worker; what gRPC servers need, trailers kept).
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
}

/// The protocol a route's upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 on pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 without TLS, prior knowledge.
    H2c,
}

impl RouteConfig {
    pub(crate) fn to_service(id: &str, prefix: &str, service: &str) -> Self {
        Self {
            id: id.into(),
            prefix: prefix.into(),
            service: Some(service.into()),
            upstreams: vec![],
            methods: vec![],
            host: None,
            rewrite: None,
            timeout_ms: None,
            auth: AuthRule::Default,
            rate_limit: None,
            max_body_bytes: None,
            upstream_protocol: UpstreamProtocol::Http1,
        }
    }
}

/// Proxy limits and timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Largest request body accepted, bytes (413 beyond).
    pub max_body_bytes: u64,
    /// Default time until upstream response headers, milliseconds (504 beyond).
    pub timeout_ms: u64,
    /// TCP connect timeout to an upstream, milliseconds.
    pub connect_timeout_ms: u64,
    /// Extra attempts on another instance (idempotent methods, or connect failures of replayable requests).
    pub retries: u32,
    /// Request bodies up to this size with a known length are held so they can be replayed on a
    /// refused connection; larger ones stream straight through.
    pub replay_buffer_bytes: u64,
    /// Idle pooled upstream connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// Client connections open at once (split evenly over the server workers). At the limit the
    /// gateway stops accepting: new connections wait in the listen backlog until one closes,
    /// instead of each taking memory and a file descriptor.
    pub max_connections: usize,
    /// Time a client has to send a request head, milliseconds, counted from when the gateway
    /// starts waiting for it (so it is also the idle keep-alive timeout); the connection is then
    /// closed. Slow-header clients cannot hold connections for longer. Enforced in ticks of one
    /// second (or a tenth of the timeout, if shorter), so it may fire up to a tick late.
    pub header_timeout_ms: u64,
    /// Peers (addresses or CIDR blocks, e.g. a TLS-terminating load balancer) whose
    /// `X-Forwarded-Proto` is passed on. From anyone else the gateway, being the edge, sets it
    /// itself: a client must not tell the services it came over https.
    pub trusted_proxies: Vec<String>,
    /// Serve HTTP/2 to clients that ask for it: `h2` through ALPN on TLS, prior-knowledge h2c on
    /// plain ports. HTTP/1.1 is always served.
    pub http2: bool,
    /// Requests one HTTP/2 connection may have in flight at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub http2_max_concurrent_streams: u32,
}

/// An address block of [`ProxyConfig::trusted_proxies`]: `10.0.0.0/8`, `fd00::/8` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as the IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(ip, V4),
            v4 @ V4(_) => v4,
        };
        // The prefix's leading ones (a shift by the whole width, prefix 0, leaves none).
        let host_bits = |width: u8| u32::from(width.saturating_sub(self.prefix));
        match (self.addr, ip) {
            (V4(net), V4(a)) => {
                let m = u32::MAX.checked_shl(host_bits(32)).unwrap_or(0);
                u32::from(net) & m == u32::from(a) & m
            }
            (V6(net), V6(a)) => {
                let m = u128::MAX.checked_shl(host_bits(128)).unwrap_or(0);
                u128::from(net) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            timeout_ms: 30_000,
            connect_timeout_ms: 1_000,
            retries: 2,
            replay_buffer_bytes: 64 * 1024,
            pool_max_idle_per_host: 256,
            max_connections: 10_000,
            header_timeout_ms: 30_000,
            trusted_proxies: Vec::new(),
            http2: true,
            http2_max_concurrent_streams: 128,
        }
    }
}

/// The whole file given with `--routes`. Every section is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Routes; when the file has none, [`GatewayConfig::default_routes`] apply.
    pub routes: Vec<RouteConfig>,
    /// Rate limiting.
    pub rate_limit: RateLimitConfig,
    /// CORS.
    pub cors: CorsConfig,
    /// Proxy limits.
    pub proxy: ProxyConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            routes: Self::default_routes(),
            rate_limit: RateLimitConfig::default(),
            cors: CorsConfig::default(),
            proxy: ProxyConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// The shop's routes: the four APIs, the Eureka REST API and the registry dashboard.
    pub fn default_routes() -> Vec<RouteConfig> {
        let mut dashboard =
            RouteConfig::to_service("registry-dashboard", "/eureka/web", "registry");
        dashboard.rewrite = Some("/".into());
        let mut routes = vec![
            RouteConfig::to_service("product", "/api/product", "product"),
            RouteConfig::to_service("order", "/api/order", "order"),
            RouteConfig::to_service("inventory", "/api/inventory", "inventory"),
            RouteConfig::to_service("notification", "/api/notifications", "notification"),
            dashboard,
            RouteConfig::to_service("registry", "/eureka", "registry"),
        ];
        routes.extend(crate::openapi::openapi_routes());
        routes
    }

    /// Reads the YAML file at `path`; a file without `routes:` keeps the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses YAML text; an empty document gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut cfg: Self = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<inline>".into(),
            source,
        })?;
        if cfg.routes.is_empty() {
            cfg.routes = Self::default_routes();
        }
        Ok(cfg)
    }

    /// Applies `SHOP_GATEWAY_ROUTES`: a comma list of `prefix=target`, target being a service name
    /// or `|`-separated base URLs. An entry replaces the route with the same prefix, or is added.
    pub fn apply_env_routes(&mut self, spec: &str) -> Result<(), ConfigError> {
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let field = format!("SHOP_GATEWAY_ROUTES[{i}]");
            let (prefix, target) = entry
                .split_once('=')
                .ok_or_else(|| invalid(&field, format!("`{entry}` is not prefix=target")))?;
            let (prefix, target) = (prefix.trim(), target.trim());
            let id = prefix.trim_matches('/').replace('/', "-");
            let id = if id.is_empty() { "root".to_owned() } else { id };
            let mut route = RouteConfig::to_service(&id, prefix, target);
            if target.starts_with("http://") || target.starts_with("https://") {
                route.service = None;
                route.upstreams = target.split('|').map(|u| u.trim().to_owned()).collect();
            }
            if let Some(existing) = self.routes.iter_mut().find(|r| r.prefix == prefix) {
                route.id = existing.id.clone();
                route.auth = existing.auth.clone();
                route.rate_limit = existing.rate_limit;
                *existing = route;
            } else {
                self.routes.push(route);
            }
        }
        Ok(())
    }

    /// Checks every field that serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = BTreeMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            let f = |name: &str| format!("routes[{i}].{name}");
            if r.id.trim().is_empty() {
                return Err(invalid(f("id"), "must not be empty"));
            }
            if ids.insert(r.id.clone(), i).is_some() {
                return Err(invalid(f("id"), format!("duplicate route id `{}`", r.id)));
            }
            if !r.prefix.starts_with('/') {
                return Err(invalid(f("prefix"), "must start with `/`"));
            }
            match (&r.service, r.upstreams.is_empty()) {
                (Some(_), false) => {
                    return Err(invalid(
                        f("service"),
                        "give either `service` or `upstreams`, not both",
                    ));
                }
                (None, true) => {
                    return Err(invalid(
                        f("service"),
                        "one of `service` or `upstreams` is required",
                    ));
                }
                (Some(s), true) if s.trim().is_empty() => {
                    return Err(invalid(f("service"), "must not be empty"));
                }
                _ => {}
            }
            for (j, u) in r.upstreams.iter().enumerate() {
                let ok = u
                    .parse::<http::Uri>()
                    .ok()
                    .filter(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
                if ok.is_none() {
                    return Err(invalid(
                        f(&format!("upstreams[{j}]")),
                        format!("`{u}` is not an http:// base URL"),
                    ));
                }
            }
            for (j, m) in r.methods.iter().enumerate() {
                if http::Method::from_bytes(m.as_bytes()).is_err() {
                    return Err(invalid(
                        f(&format!("methods[{j}]")),
                        format!("`{m}` is not an HTTP method"),
                    ));
                }
            }
            if let Some(rw) = &r.rewrite
                && !rw.starts_with('/')
            {
                return Err(invalid(f("rewrite"), "must start with `/`"));
            }
            if r.timeout_ms == Some(0) {
                return Err(invalid(f("timeout_ms"), "must be > 0"));
            }
            if let Some(b) = &r.rate_limit {
                check_bucket(b, &f("rate_limit"))?;
            }
        }
        check_bucket(&self.rate_limit.client, "rate_limit.client")?;
        if let Some(b) = &self.rate_limit.route {
            check_bucket(b, "rate_limit.route")?;
        }
        if self.rate_limit.max_keys == 0 {
            return Err(invalid("rate_limit.max_keys", "must be >= 1"));
        }
        if self.proxy.timeout_ms == 0 {
            return Err(invalid("proxy.timeout_ms", "must be > 0"));
        }
        if self.proxy.connect_timeout_ms == 0 {
            return Err(invalid("proxy.connect_timeout_ms", "must be > 0"));
        }
        if self.proxy.http2_max_concurrent_streams == 0 {
            return Err(invalid(
                "proxy.http2_max_concurrent_streams",
                "must be >= 1",
            ));
        }
        if self.proxy.header_timeout_ms == 0 {
            return Err(invalid("proxy.header_timeout_ms", "must be >= 1"));
        }
        if self.proxy.max_connections == 0 {
            return Err(invalid("proxy.max_connections", "must be >= 1"));
        }
        for (i, t) in self.proxy.trusted_proxies.iter().enumerate() {
            if Cidr::parse(t).is_none() {
                return Err(invalid(
                    format!("proxy.trusted_proxies[{i}]"),
                    format!("`{t}` is not an IP address or CIDR block"),
                ));
            }
        }
        if self.cors.allow_credentials && self.cors.allowed_origins.iter().any(|o| o == "*") {
            return Err(invalid(
                "cors.allow_credentials",
                "cannot be combined with origin `*`",
            ));
        }
        Ok(())
    }
}

fn check_bucket(b: &Bucket, field: &str) -> Result<(), ConfigError> {
    if !(b.per_second.is_finite() && b.per_second > 0.0) {
        return Err(invalid(
            format!("{field}.per_second"),
            "must be a positive number",
        ));
    }
    if b.burst == 0 {
        return Err(invalid(format!("{field}.burst"), "must be >= 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxy_blocks_parse_and_match() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")), "mapped");
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(!c("fd00::/8").contains(ip("fe80::1")));
        assert!(c("::1").contains(ip("::1")));
        assert!(!c("10.0.0.0/8").contains(ip("fd00::1")), "families differ");
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
        let mut cfg = GatewayConfig::default();
        cfg.proxy.trusted_proxies = vec!["10.0.0.0/8".into(), "lb.local".into()];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("proxy.trusted_proxies[1]"), "{err}");
    }

    #[test]
    fn empty_file_gives_shop_routes() {
        let cfg = GatewayConfig::from_yaml("").unwrap();
        let prefixes: Vec<_> = cfg.routes.iter().map(|r| r.prefix.as_str()).collect();
        assert!(prefixes.contains(&"/api/inventory"));
        assert!(prefixes.contains(&"/api/notifications"));
        assert!(prefixes.contains(&"/eureka"));
        cfg.validate().unwrap();
    }

    #[test]
    fn parses_rules_and_buckets() {
        let cfg = GatewayConfig::from_yaml(
            r#"
routes:
  - id: orders
    prefix: /api/order
    service: order
    auth: scope:orders.write
    rate_limit: { per_second: 5, burst: 10 }
  - id: admin
    prefix: /admin
    upstreams: [http://127.0.0.1:9000, http://127.0.0.1:9001]
    methods: [GET]
    auth: role:admin
rate_limit:
  on_unavailable: open
  max_keys: 10
"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.routes[0].auth, AuthRule::Scope("orders.write".into()));
        assert_eq!(cfg.routes[1].auth, AuthRule::Role("admin".into()));
        assert_eq!(cfg.routes[0].rate_limit.unwrap().burst, 10);
        assert_eq!(cfg.rate_limit.on_unavailable, FailMode::Open);
        assert_eq!(cfg.rate_limit.max_keys, 10);
    }

    #[test]
    fn unknown_rule_is_rejected_with_its_text() {
        let err = GatewayConfig::from_yaml(
            "routes:\n  - {id: a, prefix: /a, service: a, auth: everyone}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("everyone"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut cfg = GatewayConfig::default();
        cfg.routes[2].prefix = "api".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("routes[2].prefix"), "{err}");

        let mut cfg = GatewayConfig::default();
        cfg.routes[0].upstreams = vec!["ftp://x".into()];
        cfg.routes[0].service = None;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("routes[0].upstreams[0]"), "{err}");

        let mut cfg = GatewayConfig::default();
        cfg.rate_limit.client.per_second = 0.0;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("rate_limit.client.per_second")
        );

        let mut cfg = GatewayConfig::default();
        cfg.proxy.header_timeout_ms = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("proxy.header_timeout_ms"), "{err}");
    }

    #[test]
    fn env_routes_replace_and_add() {
        let mut cfg = GatewayConfig::default();
        cfg.apply_env_routes("/api/product=http://127.0.0.1:1|http://127.0.0.1:2, /x=xsvc")
            .unwrap();
        cfg.validate().unwrap();
        let p = cfg
            .routes
            .iter()
            .find(|r| r.prefix == "/api/product")
            .unwrap();
        assert_eq!(p.id, "product");
        assert_eq!(p.upstreams.len(), 2);
        assert!(p.service.is_none());
        let x = cfg.routes.iter().find(|r| r.prefix == "/x").unwrap();
        assert_eq!(x.service.as_deref(), Some("xsvc"));
        assert!(cfg.apply_env_routes("nonsense").is_err());
    }
}
