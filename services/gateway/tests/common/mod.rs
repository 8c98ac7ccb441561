//! Support for the gateway's integration tests: real HTTP upstream servers on loopback (echo,
//! SSE, streamed upload/download, failing and slow endpoints, a gRPC-shaped one with trailers;
//! HTTP/1.1 and h2c), a JWKS server, and a helper that
//! starts the real `shop-gateway` binary with a routes file.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[macro_use]
pub mod cases;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use jsonwebtoken::jwk::JwkSet;
use parking_lot::Mutex;
use serde_json::{Value, json};
use shop_testkit::Service;
use tokio::{net::TcpListener, sync::Notify, task::JoinSet};

/// A real HTTP server on 127.0.0.1 that can be killed hard (listener and all connections dropped).
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub sse_next: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct UpState {
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    sse_next: Arc<Notify>,
}

async fn echo(State(st): State<UpState>, req: Request) -> Json<Value> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(v.to_str().unwrap_or("").to_owned()),
            )
        })
        .collect();
    let method = req.method().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Json(json!({
        "upstream": &*st.name,
        "method": method,
        "path": pq,
        "headers": headers,
        "body_len": body.len(),
    }))
}

async fn upload(State(st): State<UpState>, body: Body) -> Json<Value> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => n += c.len() as u64,
            Err(_) => return Json(json!({"received": n, "aborted": true})),
        }
    }
    Json(json!({"received": n}))
}

#[derive(serde::Deserialize)]
struct DownloadQ {
    bytes: u64,
}

async fn download(Query(q): Query<DownloadQ>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let total = q.bytes;
    let stream = futures::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(CHUNK as u64) as usize;
            Some((Ok::<_, std::io::Error>(chunk.slice(0..n)), sent + n as u64))
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn sse(State(st): State<UpState>) -> Response {
    let next = st.sse_next.clone();
    let stream = futures::stream::unfold(0u8, move |step| {
        let next = next.clone();
        async move {
            match step {
                0 => Some((
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: one\n\n")),
                    1,
                )),
                1 => {
                    // The second event is only produced once the test has seen the first one
                    // through the gateway: proves the gateway does not buffer the stream.
                    next.notified().await;
                    Some((Ok(Bytes::from_static(b"data: two\n\n")), 2))
                }
                _ => None,
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A gRPC-shaped endpoint: echoes the request body as the response message and ends with
/// `grpc-status` trailers; tells in headers which HTTP version and `TE` it got.
async fn grpc(State(st): State<UpState>, req: Request) -> Response {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let version = format!("{:?}", req.version());
    let te = header(req.headers(), "te").to_owned();
    let message = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "ok".parse().unwrap());
    let frames = futures::stream::iter([
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(message)),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    Response::builder()
        .header("content-type", "application/grpc")
        .header("x-upstream-version", version)
        .header("x-upstream-te", te)
        .body(Body::new(http_body_util::StreamBody::new(frames)))
        .unwrap()
}

async fn fail(State(st): State<UpState>) -> impl IntoResponse {
    st.hits.fetch_add(1, Ordering::SeqCst);
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

#[derive(serde::Deserialize)]
struct SlowQ {
    ms: Option<u64>,
}

async fn slow(State(st): State<UpState>, Query(q): Query<SlowQ>) -> impl IntoResponse {
    st.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.ms.unwrap_or(5_000))).await;
    "late"
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn start_on(name: &str, listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let st = UpState {
            name: Arc::from(name),
            hits: Arc::new(AtomicUsize::new(0)),
            sse_next: Arc::new(Notify::new()),
        };
        let app = Router::new()
            .route("/upload", any(upload))
            .route("/download", get(download))
            .route("/sse", get(sse))
            .route("/fail", any(fail))
            .route("/grpc/{*method}", any(grpc))
            .route("/slow", any(slow))
            .fallback(echo)
            .with_state(st.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_owned(),
            addr,
            hits: st.hits,
            sse_next: st.sse_next,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Dies hard: the listener and every open connection are dropped.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A JWKS endpoint whose key set can be swapped and whose fetches are counted.
pub struct JwksServer {
    pub url: String,
    pub keys: Arc<Mutex<JwkSet>>,
    pub fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: JwkSet) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                let k = k.clone();
                let f = f.clone();
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    Json(serde_json::to_value(&*k.lock()).unwrap())
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer {
            url: format!("http://{addr}/jwks.json"),
            keys,
            fetches,
            task,
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running `shop-gateway` process with its routes file.
pub struct Gateway {
    pub svc: Service,
    _routes: tempfile::NamedTempFile,
}

impl Gateway {
    pub async fn start(yaml: &str, envs: &[(&str, &str)]) -> Gateway {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        let path = f.path().to_str().unwrap().to_owned();
        // Port 0: the gateway binds, then reports the port it got (no race for a free port).
        let svc = Service::spawn("shop-gateway", &["--routes", &path], envs, 0).await;
        Gateway { svc, _routes: f }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.svc.base_url())
    }

    pub fn pid(&self) -> u32 {
        self.svc.pid().unwrap()
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}
