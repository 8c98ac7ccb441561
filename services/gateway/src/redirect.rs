//! The optional plain-HTTP listener of a TLS gateway (`SHOP_TLS_REDIRECT_PORT`): answers every
//! request with `308 Permanent Redirect` to the same host and path over https.
//!
//! Exists so that `http://shop.example/...` links and typed addresses still land on the shop
//! once the gateway only serves TLS, without proxying anything in the clear: nothing behind the
//! gateway is reachable through this port. 308 (not 301) keeps the method and body of a request
//! that a client repeats. It runs on the main runtime, apart from the workers: it sees little
//! traffic, bounds its connections and the time to send a request head, and never keeps a
//! connection alive.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header, uri::Authority};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

/// Connections the redirect listener serves at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Where a request to the plain port is sent: `https://<host>[:<https_port>]<path and query>`,
/// the port left out when it is 443. None when the request names no usable host.
pub fn location(req: &Request<impl Sized>, https_port: u16) -> Option<String> {
    // An absolute-form target (`GET http://host/path`) names the host itself; otherwise `Host`.
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            let host = hosts.next()?;
            if hosts.next().is_some() {
                return None;
            }
            Authority::try_from(host.as_bytes()).ok()?
        }
    };
    // The authority must be a bare host[:port]: no user info.
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host();
    if host.is_empty() {
        return None;
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    // `*` (OPTIONS *) or anything that is not an origin-form path is sent to the root.
    let path = if path.starts_with('/') { path } else { "/" };
    Some(if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    })
}

fn answer(req: &Request<Incoming>, https_port: u16) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    match location(req, https_port).and_then(|l| HeaderValue::try_from(l).ok()) {
        Some(loc) => {
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        None => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// Serves redirects on `listener` to port `https_port` until `shutdown`; a connection must send
/// its request head within `header_timeout`.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(16 * 1024)
        .keep_alive(false);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "redirect listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let svc = service_fn(move |req: Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(answer(&req, https_port)))
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "redirect connection ended with error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn redirects_to_the_same_host_and_path_on_the_tls_port() {
        assert_eq!(
            location(&req("/api/product?q=a", Some("shop.example:8080")), 8443).as_deref(),
            Some("https://shop.example:8443/api/product?q=a")
        );
        assert_eq!(
            location(&req("/x", Some("shop.example")), 443).as_deref(),
            Some("https://shop.example/x")
        );
        assert_eq!(
            location(&req("/", Some("[::1]:80")), 8443).as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(
            location(&req("http://other.example/p", Some("shop.example")), 443).as_deref(),
            Some("https://other.example/p"),
            "an absolute-form target names the host"
        );
    }

    #[test]
    fn refuses_requests_without_a_usable_host() {
        assert_eq!(location(&req("/x", None), 443), None);
        assert_eq!(location(&req("/x", Some("a b")), 443), None);
        assert_eq!(location(&req("/x", Some("evil@shop.example")), 443), None);
        let mut two = req("/x", Some("a.example"));
        two.headers_mut()
            .append(header::HOST, HeaderValue::from_static("b.example"));
        assert_eq!(location(&two, 443), None, "two Host headers are ambiguous");
    }
}
