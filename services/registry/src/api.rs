//! The Eureka REST API under `/eureka` (the shapes of local-stack.md §8), the peer batch endpoint, and the
//! mapping of bad input to 400 problem documents that name the field. [`ApiDoc`] is the OpenAPI 3.1
//! document of both (docs/api.md).

use crate::dashboard;
use crate::openapi as schema;
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
use shop_runtime::openapi::{
    BadRequest, NotFound, PayloadTooLarge, ProblemComponents, ServiceUnavailable,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// The registry's OpenAPI document (served at `/openapi.json`, committed as `docs/openapi/registry.json`):
/// the Eureka REST API and the peer batch endpoint. The dashboard (`GET /`), `/health/*` and `/metrics`
/// are left out.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop-registry",
        description = "Eureka-compatible discovery registry: the Eureka REST API under `/eureka` as \
            Spring Cloud's Eureka client uses it, and the batch endpoint peers replicate through.\n\n\
            Bodies are JSON only, in the Netflix server's JSON shapes (`{\"applications\":{...}}`, ports \
            as `{\"$\":8080,\"@enabled\":\"true\"}`, timestamps as strings). Unlike the Netflix server \
            it never answers XML: every body is `application/json` whatever the `Accept` header says \
            (Spring Cloud's client asks for JSON). Unlike the Netflix server, errors carry an \
            `application/problem+json` body naming the bad `field`; statuses are Eureka's.\n\n\
            App names are case-insensitive. Any other `GET /eureka/...` answers 404 (problem+json). \
            Mutating calls carrying `x-netflix-discovery-replication: true` come from a peer and are \
            not replicated again. Not described here: the HTML dashboard (`GET /`), `/health/live`, \
            `/health/ready` and `/metrics`."
    ),
    paths(
        full,
        delta,
        one_app,
        register,
        one_instance,
        renew,
        cancel,
        set_status,
        delete_status,
        metadata,
        instance_by_id,
        vip,
        svip,
        batch
    ),
    components(schemas(
        schema::Applications,
        schema::ApplicationBody,
        schema::InstanceBody,
        schema::RegisterBody,
        Batch,
        BatchResponse
    )),
    modifiers(&ProblemComponents),
    tags(
        (name = "eureka", description = "Eureka REST API (registration, heartbeats, discovery)"),
        (name = "replication", description = "Peer replication between registry replicas")
    )
)]
pub struct ApiDoc;

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

/// Registers (or re-registers) an instance.
#[utoipa::path(
    post,
    path = "/eureka/apps/{app}",
    tag = "eureka",
    params(("app" = String, Path, description = "Application name (case-insensitive); must match `instance.app`")),
    request_body(content = schema::RegisterBody, content_type = "application/json",
        description = "The Java client's registration body. The body is read as JSON whatever its `Content-Type`."),
    responses(
        (status = 204, description = "Registered"),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = ServiceUnavailable)
    )
)]
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

/// Renews an instance's lease (heartbeat). 404 tells the client to register again: the instance is
/// unknown, or `lastDirtyTimestamp` is newer than what the registry holds.
#[utoipa::path(
    put,
    path = "/eureka/apps/{app}/{id}",
    tag = "eureka",
    params(
        ("app" = String, Path, description = "Application name (case-insensitive)"),
        ("id" = String, Path, description = "Instance id"),
        ("status" = Option<String>, Query, description = "The client's status (accepted, not used)"),
        ("lastDirtyTimestamp" = Option<i64>, Query, description = "The client's last change, milliseconds since the epoch")
    ),
    responses(
        (status = 200, description = "Lease renewed"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound)
    )
)]
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

/// Cancels an instance's lease (deregisters it).
#[utoipa::path(
    delete,
    path = "/eureka/apps/{app}/{id}",
    tag = "eureka",
    params(
        ("app" = String, Path, description = "Application name (case-insensitive)"),
        ("id" = String, Path, description = "Instance id")
    ),
    responses(
        (status = 200, description = "Cancelled"),
        (status = 404, response = NotFound)
    )
)]
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

/// The whole registry. `GET /eureka/apps/` (the Java client's spelling) answers the same.
#[utoipa::path(
    get,
    path = "/eureka/apps",
    tag = "eureka",
    responses(
        (status = 200, description = "Every registered instance, by application", body = schema::Applications)
    )
)]
async fn full(State(st): State<AppState>) -> Response {
    json_response(StatusCode::OK, st.store.full_json())
}

/// Changes within the delta retention window, the latest per instance, each with its `actionType`;
/// `apps__hashcode` is the whole registry's, for the client's reconcile check.
#[utoipa::path(
    get,
    path = "/eureka/apps/delta",
    tag = "eureka",
    responses(
        (status = 200, description = "Recent changes", body = schema::Applications)
    )
)]
async fn delta(State(st): State<AppState>) -> Response {
    json_response(StatusCode::OK, st.store.delta_json())
}

/// One application with all its instances.
#[utoipa::path(
    get,
    path = "/eureka/apps/{app}",
    tag = "eureka",
    params(("app" = String, Path, description = "Application name (case-insensitive)")),
    responses(
        (status = 200, description = "The application", body = schema::ApplicationBody),
        (status = 404, response = NotFound)
    )
)]
async fn one_app(State(st): State<AppState>, Path(app): Path<String>) -> Result<Response, Problem> {
    st.store
        .application(&app)
        .map(|a| value_response(&application_json(&a)))
        .ok_or_else(|| Problem::not_found(format!("application {app} is not registered")))
}

/// One instance of an application.
#[utoipa::path(
    get,
    path = "/eureka/apps/{app}/{id}",
    tag = "eureka",
    params(
        ("app" = String, Path, description = "Application name (case-insensitive)"),
        ("id" = String, Path, description = "Instance id")
    ),
    responses(
        (status = 200, description = "The instance", body = schema::InstanceBody),
        (status = 404, response = NotFound)
    )
)]
async fn one_instance(
    State(st): State<AppState>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    st.store
        .instance(&app, &id)
        .map(|i| value_response(&instance_json(&i)))
        .ok_or_else(|| unknown(&app, &id))
}

/// One instance by its id, whatever its application.
#[utoipa::path(
    get,
    path = "/eureka/instances/{id}",
    tag = "eureka",
    params(("id" = String, Path, description = "Instance id")),
    responses(
        (status = 200, description = "The instance", body = schema::InstanceBody),
        (status = 404, response = NotFound)
    )
)]
async fn instance_by_id(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    st.store
        .instance_by_id(&id)
        .map(|i| value_response(&instance_json(&i)))
        .ok_or_else(|| Problem::not_found(format!("instance {id} is not registered")))
}

/// Sets an operator status override (e.g. `OUT_OF_SERVICE`); it survives re-registration.
#[utoipa::path(
    put,
    path = "/eureka/apps/{app}/{id}/status",
    tag = "eureka",
    params(
        ("app" = String, Path, description = "Application name (case-insensitive)"),
        ("id" = String, Path, description = "Instance id"),
        ("value" = schema::InstanceStatus, Query, description = "The override (case-insensitive)"),
        ("lastDirtyTimestamp" = Option<String>, Query, description = "Accepted, not used")
    ),
    responses(
        (status = 200, description = "Override set"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound)
    )
)]
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

/// Removes the status override, optionally setting the instance's own status.
#[utoipa::path(
    delete,
    path = "/eureka/apps/{app}/{id}/status",
    tag = "eureka",
    params(
        ("app" = String, Path, description = "Application name (case-insensitive)"),
        ("id" = String, Path, description = "Instance id"),
        ("value" = Option<schema::InstanceStatus>, Query, description = "The instance's status from now on (case-insensitive)"),
        ("lastDirtyTimestamp" = Option<String>, Query, description = "Accepted, not used")
    ),
    responses(
        (status = 200, description = "Override removed"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound)
    )
)]
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

/// Adds or replaces metadata entries: every query parameter is one `key=value` entry.
#[utoipa::path(
    put,
    path = "/eureka/apps/{app}/{id}/metadata",
    tag = "eureka",
    params(
        ("app" = String, Path, description = "Application name (case-insensitive)"),
        ("id" = String, Path, description = "Instance id"),
        ("metadata" = Option<HashMap<String, String>>, Query, style = Form, explode,
            description = "The entries, one query parameter each (`?zone=a&version=2`), each key once; keys are 1..=256 bytes")
    ),
    responses(
        (status = 200, description = "Metadata updated"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound)
    )
)]
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
    // One entry per key, as documented: `?zone=a&zone=b` said two things, and which one was kept
    // depended on the order (found by fuzzing).
    if let Some((k, _)) = q
        .iter()
        .enumerate()
        .find(|(i, (k, _))| q[..*i].iter().any(|(seen, _)| seen == k))
        .map(|(_, pair)| pair)
    {
        return Err(Problem::bad_request(
            "metadata",
            format!("metadata key {k:?} is given more than once"),
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

/// Instances whose `vipAddress` lists `vip` (case-insensitive); empty when none does.
#[utoipa::path(
    get,
    path = "/eureka/vips/{vip}",
    tag = "eureka",
    params(("vip" = String, Path, description = "VIP address")),
    responses(
        (status = 200, description = "Matching instances, by application", body = schema::Applications)
    )
)]
async fn vip(State(st): State<AppState>, Path(vip): Path<String>) -> Response {
    apps_response(&st.store.by_vip(&vip, false))
}

/// Instances whose `secureVipAddress` lists `svip` (case-insensitive); empty when none does.
#[utoipa::path(
    get,
    path = "/eureka/svips/{svip}",
    tag = "eureka",
    params(("svip" = String, Path, description = "Secure VIP address")),
    responses(
        (status = 200, description = "Matching instances, by application", body = schema::Applications)
    )
)]
async fn svip(State(st): State<AppState>, Path(vip): Path<String>) -> Response {
    apps_response(&st.store.by_vip(&vip, true))
}

/// Applies a batch of changes replicated by a peer, in order, without replicating them again.
#[utoipa::path(
    post,
    path = "/eureka/peerreplication/batch",
    tag = "replication",
    request_body(content = Batch, content_type = "application/json",
        description = "The events. The body is read as JSON whatever its `Content-Type`."),
    responses(
        (status = 200, description = "One HTTP-like status per event, in order: 200/204 applied, 400 malformed, 404 unknown instance, 503 registry full", body = BatchResponse),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge)
    )
)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = shop_runtime::openapi::committed_path(env!("CARGO_MANIFEST_DIR"), "registry");
        shop_runtime::openapi::check_committed(&ApiDoc::openapi(), &path).unwrap();
    }
}
