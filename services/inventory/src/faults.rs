//! The inventory side of the fault flags (`shop_runtime::faults`): a middleware on the API routes
//! that delays each call by `inventoryLatencyMs` and then answers a share `inventoryErrorRatio`
//! of them with a 503, without touching the store.
//!
//! Exists so a Shop's `spec.faults` can make inventory slow or failing on purpose and show what
//! its callers do about it (shop-order's deadline and circuit breaker, shop-product's stock
//! retries). Health, metrics and the OpenAPI document are not wrapped: a fault flag must not make
//! the pod unready or hide what is happening.

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
};
use shop_runtime::{
    Problem,
    faults::{Fault, Faults},
};

/// `router` with the fault middleware on every route it has now (add health, metrics and the
/// OpenAPI document afterwards).
pub fn wrap(router: Router, faults: Faults) -> Router {
    router.layer(middleware::from_fn_with_state(faults, inject))
}

async fn inject(State(faults): State<Faults>, req: Request, next: Next) -> Response {
    // One atomic load per request; both flags off is the usual case.
    let flags = faults.flags();
    if flags.inventory_latency_ms > 0 {
        faults.count(Fault::InventoryLatency);
        tokio::time::sleep(std::time::Duration::from_millis(flags.inventory_latency_ms)).await;
    }
    if faults.roll(Fault::InventoryError) {
        // The same status a real outage gives, so callers count it as a failure; the detail
        // names the flag so nobody hunts for a real outage.
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
            .detail("fault injected: inventoryErrorRatio")
            .into_response();
    }
    next.run(req).await
}
