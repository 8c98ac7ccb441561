//! shop-echo: a tiny service built on shop_runtime, used by the runtime's integration tests and benchmarks
//! to exercise registration, discovery, the service client, breakers, tracing and graceful shutdown in a
//! real process.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use serde_json::json;
use shop_runtime::{CallError, CommonArgs, Problem, Runtime, ServiceClient};
use std::collections::HashMap;
use std::time::Duration;

/// Echo service for tests.
#[derive(Parser, Debug)]
#[command(name = "shop-echo", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// App name to register as.
    #[arg(long, env = "SHOP_ECHO_APP", default_value = "echo")]
    app: String,
}

#[derive(Clone)]
struct AppState {
    app: &'static str,
    port: u16,
    client: ServiceClient,
}

async fn hello(State(st): State<AppState>) -> Response {
    let ids = shop_runtime::telemetry::current_ids();
    tracing::info!("hello served");
    axum::Json(json!({
        "app": st.app,
        "port": st.port,
        "trace_id": ids.map(|(t, _)| t),
    }))
    .into_response()
}

async fn slow(Query(q): Query<HashMap<String, String>>) -> Response {
    let ms = q
        .get("ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1000)
        .min(20_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (StatusCode::OK, format!("slept {ms} ms")).into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(s) => (s, format!("status {code}")).into_response(),
        Err(_) => Problem::bad_request("code", "not an HTTP status").into_response(),
    }
}

async fn call(
    State(st): State<AppState>,
    Path((service, path)): Path<(String, String)>,
) -> Response {
    match st.client.get(&service, &path).send().await {
        Ok(resp) => {
            let code = resp.status();
            let body = resp.text().await.unwrap_or_default();
            (code, body).into_response()
        }
        Err(e) => {
            let kind = match &e {
                CallError::BreakerOpen { .. } => "breaker_open",
                CallError::NoInstance { .. } => "no_instance",
                CallError::Timeout { .. } => "timeout",
                CallError::Transport { .. } => "transport",
                CallError::InvalidRequest { .. } => "invalid_request",
            };
            Problem::new(StatusCode::BAD_GATEWAY, "Upstream call failed")
                .detail(e.to_string())
                .with("kind", json!(kind))
                .into_response()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Leaked once at startup: the runtime wants a 'static app name.
    let app: &'static str = Box::leak(args.app.to_ascii_lowercase().into_boxed_str());
    let rt = Runtime::init(app, &args.common).await?;
    let listener = rt.bind(0).await?;
    let state = AppState {
        app,
        port: listener.local_addr()?.port(),
        client: rt.client(),
    };
    let router = Router::new()
        .route("/hello", get(hello))
        .route("/slow", get(slow))
        .route("/status/{code}", get(status))
        .route("/call/{service}/{*path}", get(call))
        .with_state(state);
    rt.serve(listener, router).await?;
    Ok(())
}
