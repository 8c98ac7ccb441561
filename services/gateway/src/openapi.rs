//! The gateway's OpenAPI 3.1 document and the routes that make every service's document reachable
//! through the gateway.
//!
//! The gateway has few endpoints of its own (`/health/*`, `/metrics`, `/openapi.json`); everything else
//! is proxied. Each service's own document is forwarded from `GET /openapi/<service>.json` to that
//! service's `/openapi.json` by ordinary, public routes ([`openapi_routes`]), so the documents travel
//! the same path (discovery, breakers, limits) as the APIs they describe. The `/openapi/` prefix is
//! used by no service, so these routes cannot shadow an API route.

use shop_runtime::openapi::ProblemComponents;
use utoipa::OpenApi;

use crate::config::{AuthRule, RouteConfig};

/// The services whose documents the gateway forwards, as `/openapi/<service>.json`.
pub const DOCUMENTED_SERVICES: &[&str] =
    &["product", "inventory", "order", "notification", "registry"];

/// One route per documented service: `GET /openapi/<service>.json` -> the service's `/openapi.json`.
pub fn openapi_routes() -> Vec<RouteConfig> {
    DOCUMENTED_SERVICES
        .iter()
        .map(|service| {
            let mut route = RouteConfig::to_service(
                &format!("{service}-openapi"),
                &format!("/openapi/{service}.json"),
                service,
            );
            route.rewrite = Some(shop_runtime::openapi::OPENAPI_PATH.to_owned());
            route.methods = vec!["GET".to_owned()];
            route.auth = AuthRule::Public;
            route
        })
        .collect()
}

/// The gateway's own document (served at `/openapi.json`, committed as `docs/openapi/gateway.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop-gateway",
        description = "The shop's single entry point. Its own endpoints are listed here; the services' \
                       APIs are proxied under their prefixes (`/api/product`, `/api/order`, \
                       `/api/inventory`, `/api/notifications`, `/eureka`) and described by their own \
                       documents, forwarded at `/openapi/<service>.json`."
    ),
    paths(live, ready, metrics, own_document, service_document),
    components(schemas(ServiceName)),
    modifiers(&ProblemComponents),
    tags((name = "gateway", description = "The gateway's own endpoints"))
)]
pub struct GatewayDoc;

/// Liveness: always `{"status":"UP"}` while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "gateway",
    responses((status = 200, description = "Alive", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn live() {}

/// Readiness: 503 while draining or before the first discovery fetch.
#[utoipa::path(get, path = "/health/ready", tag = "gateway",
    responses(
        (status = 200, description = "Ready; a per-check report", body = Object, content_type = "application/json"),
        (status = 503, description = "Not ready; a per-check report", body = Object, content_type = "application/json")
    ))]
#[allow(dead_code)]
fn ready() {}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "gateway",
    responses((status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text")))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "gateway",
    responses((status = 200, description = "The gateway's OpenAPI document", body = Object, content_type = "application/json")))]
#[allow(dead_code)]
fn own_document() {}

/// The services whose documents the gateway forwards ([`DOCUMENTED_SERVICES`]).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ServiceName {
    Product,
    Inventory,
    Order,
    Notification,
    Registry,
}

/// A service's own OpenAPI document, forwarded from that service's `/openapi.json`. Like every
/// path through the gateway, one that upstream servers could read differently (an encoded slash,
/// a dot segment, ...) is refused with 400.
#[utoipa::path(get, path = "/openapi/{service}.json", tag = "gateway",
    params(("service" = ServiceName, Path, description = "product, inventory, order, notification or registry")),
    responses(
        (status = 200, description = "The service's OpenAPI document", body = Object, content_type = "application/json"),
        (status = 400, response = shop_runtime::openapi::BadRequest),
        (status = 404, response = shop_runtime::openapi::NotFound),
        (status = 503, response = shop_runtime::openapi::ServiceUnavailable)
    ))]
#[allow(dead_code)]
fn service_document() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_committed() {
        let path = shop_runtime::openapi::committed_path(env!("CARGO_MANIFEST_DIR"), "gateway");
        shop_runtime::openapi::check_committed(&GatewayDoc::openapi(), &path).unwrap();
    }

    #[test]
    fn document_routes_rewrite_to_the_services_document() {
        let routes = openapi_routes();
        let inv = routes
            .iter()
            .find(|r| r.prefix == "/openapi/inventory.json")
            .unwrap();
        assert_eq!(inv.service.as_deref(), Some("inventory"));
        assert_eq!(inv.rewrite.as_deref(), Some("/openapi.json"));
        assert_eq!(inv.auth, AuthRule::Public);
    }
}
