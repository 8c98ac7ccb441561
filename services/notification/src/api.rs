//! HTTP API of shop-notification: the stored list and the live server-sent-events stream.
//!
//! Exists so notifications are visible to people and programs: `GET /api/notifications` pages
//! through what is stored (newest first, optional `orderNumber` filter; bare JSON array, total in
//! `X-Total-Count`), and `GET /api/notifications/stream` pushes each new notification as an SSE
//! `notification` event (id = event id) with keep-alive comments. The stream starts with a
//! `: connected` comment so a client knows it is subscribed, and ends on shutdown so graceful
//! draining is not held up by idle subscribers.

// `Problem` (the runtime's RFC 9457 response) is large; it is only built on cold error paths.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use shop_runtime::Problem;
use shop_runtime::Query;
use shop_runtime::openapi::{BadRequest, ProblemComponents, ServiceUnavailable};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::store::{Notification, NotificationStore};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Largest page size.
pub const MAX_PAGE_SIZE: u64 = 500;

/// The service's OpenAPI 3.1 document (served at `/openapi.json`, committed as `docs/openapi/notification.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "shop-notification", description = "Notifications of placed orders: stored list and live stream."),
    paths(list, stream),
    components(schemas(Notification)),
    modifiers(&ProblemComponents),
    tags((name = "notification", description = "Notifications"))
)]
pub struct ApiDoc;

/// Handler state.
pub struct AppState {
    /// Storage.
    pub store: NotificationStore,
    /// New notifications, fanned out to stream subscribers.
    pub tx: broadcast::Sender<Notification>,
    /// Cancelled at shutdown; ends open streams.
    pub shutdown: CancellationToken,
    /// Interval of keep-alive comments on the stream.
    pub keep_alive: Duration,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/stream", get(stream))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    page: Option<String>,
    size: Option<String>,
    #[serde(rename = "orderNumber")]
    order_number: Option<String>,
}

/// Stored notifications, newest first; the total is in `X-Total-Count`.
#[utoipa::path(
    get,
    path = "/api/notifications",
    tag = "notification",
    params(
        ("page" = Option<u64>, Query, description = "Page index from 0 (default 0)"),
        ("size" = Option<u64>, Query, minimum = 1, maximum = 500, description = "Page size, 1..=500 (default 20)"),
        ("orderNumber" = Option<String>, Query, description = "Only this order's notifications")
    ),
    responses(
        (status = 200, description = "One page of notifications", body = Vec<Notification>,
            headers(("X-Total-Count" = u64, description = "Notifications in all pages"))),
        (status = 400, response = BadRequest),
        (status = 503, response = ServiceUnavailable)
    )
)]
async fn list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    let page = shop_runtime::problem::int64_param("page", q.page.as_deref(), 0)?;
    let size = shop_runtime::problem::int64_param("size", q.size.as_deref(), DEFAULT_PAGE_SIZE)?;
    if size == 0 || size > MAX_PAGE_SIZE {
        return Err(Problem::bad_request(
            "size",
            format!("size must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let order = q.order_number.as_deref().filter(|o| !o.is_empty());
    let (items, total) = st.store.list(order, page, size).await.map_err(|e| {
        tracing::error!(error = %e, "listing notifications failed");
        Problem::service_unavailable(
            Duration::from_secs(1),
            "the notification database is unavailable",
        )
    })?;
    let mut resp = axum::Json(items).into_response();
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        resp.headers_mut().insert("x-total-count", v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    #[serde(rename = "orderNumber")]
    order_number: Option<String>,
}

/// Server-sent events: a `: connected` comment, then one `notification` event (id = event id, data = a
/// `Notification` as JSON) per new notification, `lagged` events (data = how many were missed) and
/// keep-alive comments.
#[utoipa::path(
    get,
    path = "/api/notifications/stream",
    tag = "notification",
    params(("orderNumber" = Option<String>, Query, description = "Only this order's notifications")),
    responses(
        (status = 200, description = "An endless `text/event-stream`; each `notification` event's data is a `Notification`",
            content_type = "text/event-stream", body = String)
    )
)]
async fn stream(
    State(st): State<Arc<AppState>>,
    Query(q): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.tx.subscribe();
    let filter = q.order_number.filter(|o| !o.is_empty());
    let events = BroadcastStream::new(rx).filter_map(move |item| {
        let filter = filter.clone();
        async move {
            match item {
                Ok(n) => {
                    if filter.as_ref().is_some_and(|f| f != &n.order_number) {
                        return None;
                    }
                    let ev = Event::default()
                        .event("notification")
                        .id(n.event_id.clone())
                        .json_data(&n)
                        .unwrap_or_else(|_| {
                            Event::default().comment("unserialisable notification")
                        });
                    Some(Ok(ev))
                }
                // A slow subscriber missed some: say so (the list endpoint has them all).
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    Some(Ok(Event::default().event("lagged").data(n.to_string())))
                }
            }
        }
    });
    let hello = futures::stream::once(async { Ok(Event::default().comment("connected")) });
    let shutdown = st.shutdown.clone().cancelled_owned();
    let body = hello.chain(events).take_until(shutdown);
    Sse::new(body).keep_alive(KeepAlive::new().interval(st.keep_alive).text("keep-alive"))
}

#[cfg(test)]
mod openapi_tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path =
            shop_runtime::openapi::committed_path(env!("CARGO_MANIFEST_DIR"), "notification");
        shop_runtime::openapi::check_committed(&ApiDoc::openapi(), &path).unwrap();
    }
}
