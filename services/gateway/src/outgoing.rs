//! The headers a proxied request carries upstream and the hop-by-hop ones neither direction passes
//! on (RFC 9110 §7.6.1).
//!
//! Exists as a leaf that both the proxy (which decides the forwarded values) and the upstream
//! clients (which write them, into a head or a map) use, without either importing the other.

use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{self, HeaderValue as HV},
};

/// Header carrying the authenticated subject downstream (client-sent copies are removed).
pub const USER_ID: &str = "x-user-id";
/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

pub(crate) const X_USER_ID: HeaderName = HeaderName::from_static(USER_ID);
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Number of [`HOP_BY_HOP`] names.
const HOP_BY_HOP_COUNT: usize = 9;
/// Hop-by-hop headers (RFC 9110 §7.6.1 and the usual non-standard ones), besides those named in
/// `Connection`.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (usually few) names first, so only the hop-by-hop headers present are
    // removed: a removal per possible name hashed and probed the map nine times per message.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // `Connection` values are cloned (reference counts, no copy) so the map can be edited while
    // their tokens are read; the usual `keep-alive`/`close` tokens need no lookup at all.
    let mut values = h.get_all(header::CONNECTION).iter();
    match (values.next().cloned(), values.next()) {
        (None, _) => {}
        (Some(only), None) => remove_named(h, &only),
        (Some(first), Some(_)) => {
            let all: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().cloned().collect();
            drop(first);
            for v in &all {
                remove_named(h, v);
            }
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
}

/// The header names one `Connection` value lists (its `keep-alive`/`close` options left out).
fn connection_named(connection: &HeaderValue) -> impl Iterator<Item = &str> {
    // The usual whole values name nothing: skip the validation and the split for them.
    let v = connection.as_bytes();
    let listed = if v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close") {
        ""
    } else {
        connection.to_str().unwrap_or_default()
    };
    listed.split(',').map(str::trim).filter(|t| {
        !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close")
    })
}

/// Removes the headers named in one `Connection` value.
fn remove_named(h: &mut HeaderMap, connection: &HeaderValue) {
    for token in connection_named(connection) {
        // `&str` names are looked up without allocating (unlike building a `HeaderName`).
        if HeaderName::from_bytes(token.as_bytes()).is_ok() {
            h.remove(token);
        }
    }
}

/// The headers a request carries upstream, without building a map for them: the client's, less
/// hop-by-hop ones (and any named in `Connection`), `Host`, `X-User-Id` and those the gateway sets,
/// then the gateway's own. The lean client writes them straight into the request head; hyper's
/// client gets them as a map (`to_map`), so both send the same headers.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub(crate) incoming: &'a HeaderMap,
    /// Whether the client sent `Connection`, whose tokens name more headers to drop.
    pub(crate) connection_named: bool,
    pub(crate) user: Option<HeaderValue>,
    pub(crate) forwarded_for: Option<HeaderValue>,
    /// Set `X-Forwarded-Proto` (`http`, or `https` when `tls`) in place of any the client sent
    /// (false: a trusted proxy's value is passed on).
    pub(crate) forwarded_proto: bool,
    /// The client connection came over TLS.
    pub(crate) tls: bool,
    pub(crate) forwarded_host: Option<HeaderValue>,
    pub(crate) request_id: HeaderValue,
    /// Trace context headers (tracing on), replacing the client's.
    pub(crate) trace: Option<HeaderMap>,
}

impl Outgoing<'_> {
    /// Whether a client header of this name is not passed on.
    fn drops(&self, name: &HeaderName) -> bool {
        if HOP_BY_HOP.contains(name)
            || *name == header::HOST
            || *name == X_USER_ID
            || *name == X_REQUEST_ID
            || (*name == X_FORWARDED_FOR && self.forwarded_for.is_some())
            || *name == X_FORWARDED_HOST
            || (*name == X_FORWARDED_PROTO && self.forwarded_proto)
            || self.trace.as_ref().is_some_and(|t| t.contains_key(name))
        {
            return true;
        }
        self.connection_named
            && self
                .incoming
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(connection_named)
                .any(|t| name.as_str().eq_ignore_ascii_case(t))
    }

    /// Calls `f` with every header to send, the client's kept ones first.
    pub fn for_each(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        for (name, value) in self.incoming {
            if !self.drops(name) {
                f(name, value);
            }
        }
        if let Some(v) = &self.user {
            f(&X_USER_ID, v);
        }
        if let Some(v) = &self.forwarded_for {
            f(&X_FORWARDED_FOR, v);
        }
        if self.forwarded_proto {
            let proto = if self.tls { "https" } else { "http" };
            f(&X_FORWARDED_PROTO, &HV::from_static(proto));
        }
        if let Some(v) = &self.forwarded_host {
            f(&X_FORWARDED_HOST, v);
        }
        f(&X_REQUEST_ID, &self.request_id);
        if let Some(t) = &self.trace {
            for (name, value) in t {
                f(name, value);
            }
        }
    }

    /// Whether the client said it takes trailers (`TE: trailers`, as gRPC clients do): `TE` is
    /// hop-by-hop, and an HTTP/2 upstream is told again.
    pub fn takes_trailers(&self) -> bool {
        self.incoming
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
    }

    /// The headers as a map (for hyper's client).
    pub fn to_map(&self) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(self.incoming.len() + 6);
        self.for_each(|n, v| {
            h.append(n.clone(), v.clone());
        });
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HV::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HV::from_static("1"));
        h.insert("keep-alive", HV::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HV::from_static("chunked"));
        h.insert(header::UPGRADE, HV::from_static("websocket"));
        h.insert("x-keep", HV::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("x-keep").unwrap(), "yes");
    }

    #[test]
    fn outgoing_headers_drop_hop_by_hop_and_forged_ones_and_add_the_gateways() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HV::from_static("shop.example"));
        h.insert(header::CONNECTION, HV::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HV::from_static("1"));
        h.insert(header::TE, HV::from_static("trailers"));
        h.insert(X_USER_ID, HV::from_static("forged"));
        h.insert(X_REQUEST_ID, HV::from_static("client-id"));
        h.insert(X_FORWARDED_FOR, HV::from_static("10.0.0.1"));
        h.insert(X_FORWARDED_PROTO, HV::from_static("https"));
        h.insert("traceparent", HV::from_static("00-client"));
        h.append(header::ACCEPT, HV::from_static("a/b"));
        h.append(header::ACCEPT, HV::from_static("c/d"));
        let out = Outgoing {
            incoming: &h,
            connection_named: true,
            user: Some(HV::from_static("alice")),
            forwarded_for: Some(HV::from_static("10.0.0.1, 127.0.0.1")),
            forwarded_proto: false,
            tls: false,
            forwarded_host: Some(HV::from_static("shop.example")),
            request_id: HV::from_static("gw-id"),
            trace: Some(HeaderMap::from_iter([(
                HeaderName::from_static("traceparent"),
                HV::from_static("00-gateway"),
            )])),
        };
        let m = out.to_map();
        let all =
            |n: &str| -> Vec<&str> { m.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        for gone in ["connection", "x-secret", "te", "host"] {
            assert!(all(gone).is_empty(), "{gone} is not forwarded");
        }
        assert_eq!(all("x-user-id"), ["alice"], "the client's copy is replaced");
        assert_eq!(all("x-request-id"), ["gw-id"]);
        assert_eq!(all("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
        assert_eq!(
            all("x-forwarded-proto"),
            ["https"],
            "a trusted proxy's proto is kept"
        );
        assert_eq!(all("x-forwarded-host"), ["shop.example"]);
        assert_eq!(all("traceparent"), ["00-gateway"]);
        assert_eq!(
            all("accept"),
            ["a/b", "c/d"],
            "repeated headers keep all values"
        );
        assert_eq!(m.len(), 8);

        // Only the gateway's own proto and request id over `incoming`.
        let own = |incoming| Outgoing {
            incoming,
            connection_named: false,
            user: None,
            forwarded_for: None,
            forwarded_proto: true,
            tls: false,
            forwarded_host: None,
            request_id: HV::from_static("gw-id"),
            trace: None,
        };
        let bare = HeaderMap::new();
        let m = own(&bare).to_map();
        assert_eq!(m.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert!(m.get(X_USER_ID).is_none());
        assert_eq!(m.len(), 2);

        let mut claimed = HeaderMap::new();
        claimed.insert(X_FORWARDED_PROTO, HV::from_static("https"));
        let m = own(&claimed).to_map();
        assert_eq!(
            m.get_all(X_FORWARDED_PROTO).iter().collect::<Vec<_>>(),
            [&HV::from_static("http")],
            "an untrusted client's claim is replaced, not repeated"
        );
    }
}
