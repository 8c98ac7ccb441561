//! The Eureka REST API under `/eureka` (the shapes of local-stack.md §8), the peer batch endpoint, and the
//! mapping of bad input to 400 problem documents that name the field.

use crate::dashboard;
use crate::replication::{self, Batch, BatchResponse, Event, Replicator};
use crate::store::{RegisterError, RenewOutcome, Store, application_json, instance_json};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::Value;
use shop_runtime::Problem;
use shop_runtime::eureka::{Applications, InstanceInfo, InstanceStatus, REPLICATION_HEADER};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Shared handler state.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Registry contents.
    pub store: Arc<Store>,
    /// Peer fan-out.
    pub replicator: Replicator,
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn value_response(v: &Value) -> Response {
    json_response(StatusCode::OK, Bytes::from(v.to_string()))
}

fn apps_response(a: &Applications) -> Response {
    json_response(StatusCode::OK, Bytes::from(a.to_json_bytes()))
}

fn is_replicated(h: &HeaderMap) -> bool {
    h.get(REPLICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn unknown(app: &str, id: &str) -> Problem {
    Problem::not_found(format!("instance {id} of {app} is not registered"))
}

fn body_problem(e: BytesRejection) -> Problem {
    Problem::new(e.status(), "Unreadable body")
        .field("body")
        .detail(e.body_text())
}

async fn register(
    State(st): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, Problem> {
    let body = body.map_err(body_problem)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("body", format!("body is not JSON: {e}")))?;
    let info = InstanceInfo::from_register_body(&v)
        .map_err(|e| Problem::bad_request(e.field.clone(), e.to_string()))?;
    if !info.app.eq_ignore_ascii_case(&app) {
        return Err(Problem::bad_request(
            "instance.app",
            format!(
                "instance.app {} does not match the path app {app}",
                info.app
            ),
        ));
    }
    let event = Event::register(&info);
    st.store.register(info).map_err(|e| match e {
        RegisterError::Full { .. } => {
            Problem::service_unavailable(Duration::from_secs(30), e.to_string())
        }
    })?;
    if !is_replicated(&headers) {
        st.replicator.replicate(event);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn renew(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let last_dirty = match q.get("lastDirtyTimestamp") {
        Some(s) if !s.is_empty() => Some(s.parse::<i64>().map_err(|_| {
            Problem::bad_request("lastDirtyTimestamp", "must be milliseconds since the epoch")
        })?),
        _ => None,
    };
    match st.store.renew(&app, &id, last_dirty) {
        RenewOutcome::Renewed => {
            if !is_replicated(&headers) {
                st.replicator.replicate(Event::Heartbeat {
                    app: app.to_ascii_uppercase(),
                    id,
                });
            }
            Ok(StatusCode::OK)
        }
        RenewOutcome::NotFound => Err(unknown(&app, &id)),
    }
}

async fn cancel(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    if !st.store.cancel(&app, &id) {
        return Err(unknown(&app, &id));
    }
    if !is_replicated(&headers) {
        st.replicator.replicate(Event::Cancel {
            app: app.to_ascii_uppercase(),
            id,
        });
    }
    Ok(StatusCode::OK)
}

async fn full(State(st): State<AppState>) -> Response {
    json_response(StatusCode::OK, st.store.full_json())
}

async fn delta(State(st): State<AppState>) -> Response {
    json_response(StatusCode::OK, st.store.delta_json())
}

async fn one_app(State(st): State<AppState>, Path(app): Path<String>) -> Result<Response, Problem> {
    st.store
        .application(&app)
        .map(|a| value_response(&application_json(&a)))
        .ok_or_else(|| Problem::not_found(format!("application {app} is not registered")))
}

async fn one_instance(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    st.store
        .instance(&app, &id)
        .map(|i| value_response(&instance_json(&i)))
        .ok_or_else(|| unknown(&app, &id))
}

async fn instance_by_id(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    st.store
        .instance_by_id(&id)
        .map(|i| value_response(&instance_json(&i)))
        .ok_or_else(|| Problem::not_found(format!("instance {id} is not registered")))
}

async fn set_status(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let raw = q
        .get("value")
        .ok_or_else(|| Problem::bad_request("value", "query parameter value is required"))?;
    let status = InstanceStatus::parse(raw).ok_or_else(|| {
        Problem::bad_request(
            "value",
            "must be one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN",
        )
    })?;
    if !st.store.set_override(&app, &id, status) {
        return Err(unknown(&app, &id));
    }
    if !is_replicated(&headers) {
        st.replicator.replicate(Event::StatusUpdate {
            app: app.to_ascii_uppercase(),
            id,
            status: Some(status.as_str().to_owned()),
            value: None,
        });
    }
    Ok(StatusCode::OK)
}

async fn delete_status(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let value = match q.get("value") {
        Some(v) => Some(InstanceStatus::parse(v).ok_or_else(|| {
            Problem::bad_request(
                "value",
                "must be one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN",
            )
        })?),
        None => None,
    };
    if !st.store.delete_override(&app, &id, value) {
        return Err(unknown(&app, &id));
    }
    if !is_replicated(&headers) {
        st.replicator.replicate(Event::StatusUpdate {
            app: app.to_ascii_uppercase(),
            id,
            status: None,
            value: value.map(|v| v.as_str().to_owned()),
        });
    }
    Ok(StatusCode::OK)
}

async fn metadata(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    if let Some((k, _)) = q.iter().find(|(k, _)| k.is_empty() || k.len() > 256) {
        return Err(Problem::bad_request(
            "metadata",
            format!("invalid metadata key {k:?}"),
        ));
    }
    if !st.store.set_metadata(&app, &id, &q) {
        return Err(unknown(&app, &id));
    }
    if !is_replicated(&headers) {
        st.replicator.replicate(Event::Metadata {
            app: app.to_ascii_uppercase(),
            id,
            pairs: q,
        });
    }
    Ok(StatusCode::OK)
}

async fn vip(State(st): State<AppState>, Path(vip): Path<String>) -> Response {
    apps_response(&st.store.by_vip(&vip, false))
}

async fn svip(State(st): State<AppState>, Path(vip): Path<String>) -> Response {
    apps_response(&st.store.by_vip(&vip, true))
}

async fn batch(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(body_problem)?;
    let batch: Batch = shop_runtime::problem::parse_json(&body)?;
    let statuses = batch
        .events
        .iter()
        .map(|ev| replication::apply(&st.store, ev))
        .collect();
    Ok(value_response(
        &serde_json::to_value(BatchResponse { statuses }).unwrap_or_default(),
    ))
}

async fn not_json() -> Problem {
    Problem::not_found("no such Eureka resource")
}

/// The registry's routes (Eureka API, peer batch, dashboard) with a body limit of `max_body` bytes.
pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/eureka/apps", get(full))
        .route("/eureka/apps/", get(full))
        .route("/eureka/apps/delta", get(delta))
        .route("/eureka/apps/{app}", get(one_app).post(register))
        .route(
            "/eureka/apps/{app}/{id}",
            get(one_instance).put(renew).delete(cancel),
        )
        .route(
            "/eureka/apps/{app}/{id}/status",
            put(set_status).delete(delete_status),
        )
        .route("/eureka/apps/{app}/{id}/metadata", put(metadata))
        .route("/eureka/instances/{id}", get(instance_by_id))
        .route("/eureka/vips/{vip}", get(vip))
        .route("/eureka/svips/{svip}", get(svip))
        .route("/eureka/peerreplication/batch", post(batch))
        .route("/eureka/{*rest}", get(not_json))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
