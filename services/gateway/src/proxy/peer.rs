//! The client side of a downstream connection, as the proxy's phases see it: its address (for
//! `X-Forwarded-For`), its per-IP rate-limit key and whether it came over TLS.
//!
//! Exists so that what is computed once per connection, not per request, has one home.

use std::net::SocketAddr;

use http::{HeaderValue, header::HeaderValue as HV};

/// The client side of one downstream connection: its address (for `X-Forwarded-For` and per-IP
/// limits), with the address as a header value computed once per connection, not per request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) ip: HeaderValue,
    /// The client's key for per-IP rate limits (built once per connection, not per request).
    pub(crate) limit_key: String,
    /// Whether the connection came over TLS (`X-Forwarded-Proto: https`).
    pub(crate) tls: bool,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HV::from_static("unknown"));
        Self {
            addr,
            ip,
            limit_key: limit_key(addr.ip()),
            tls: false,
        }
    }

    /// The peer at `addr` of a connection that came over TLS.
    pub fn over_tls(addr: SocketAddr) -> Self {
        Self {
            tls: true,
            ..Self::new(addr)
        }
    }

    /// The peer's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The per-IP rate-limit key of a client address. An IPv6 client is keyed by its /64, the
/// smallest prefix a site is given: keyed by the full address, one client could rotate through
/// its 2^64 addresses to get a fresh bucket each time and fill the limiter's key table (which
/// then refuses new clients). An IPv4-mapped IPv6 address counts as the IPv4 address.
fn limit_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit_keys_group_an_ipv6_site_and_unmap_ipv4() {
        let key = |s: &str| Peer::new(s.parse().unwrap()).limit_key;
        assert_eq!(key("192.0.2.7:4000"), "ip:192.0.2.7");
        assert_eq!(key("[::ffff:192.0.2.7]:4000"), "ip:192.0.2.7");
        assert_eq!(
            key("[2001:db8:1:2:aaaa::1]:4000"),
            key("[2001:db8:1:2:ffff:1:2:3]:5000"),
            "one /64, one bucket"
        );
        assert_eq!(key("[2001:db8:1:2::1]:4000"), "ip6:2001:db8:1:2::/64");
        assert_ne!(key("[2001:db8:1:2::1]:1"), key("[2001:db8:1:3::1]:1"));
    }
}
