//! Prometheus metrics shared by all services: the HTTP server metrics every service exposes on `/metrics`,
//! the circuit-breaker state gauge, and access to the registry so a service can add its own metrics.

use parking_lot::{Mutex, MutexGuard};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Labels of the per-request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// Matched route template (e.g. `/api/product/{id}`), or `unmatched`.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of the in-flight gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// Matched route template.
    pub route: String,
}

/// Labels naming a target service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Target app name (lower case).
    pub service: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Handle to the process's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// `http_server_requests_total{method,route,status}`.
    pub requests: Family<HttpLabels, Counter>,
    /// `http_server_request_duration_seconds{method,route,status}`.
    pub latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// `http_server_requests_in_flight{method,route}`.
    pub in_flight: Family<RouteLabels, Gauge>,
    /// `circuit_breaker_state{service}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<ServiceLabels, Gauge>,
    /// `http_client_requests_total{service,outcome}` is kept simple: per-service call failures.
    pub client_failures: Family<ServiceLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the standard metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let in_flight = Family::<RouteLabels, Gauge>::default();
        let breaker_state = Family::<ServiceLabels, Gauge>::default();
        let client_failures = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "http_server_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_server_request_duration_seconds",
            "HTTP request latency in seconds, by method, route and status",
            latency.clone(),
        );
        registry.register(
            "http_server_requests_in_flight",
            "HTTP requests being served now",
            in_flight.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state per target service: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        registry.register(
            "http_client_failures",
            "Failed calls to other services (transport errors, timeouts, 5xx, short-circuits)",
            client_failures.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            latency,
            in_flight,
            breaker_state,
            client_failures,
        }
    }

    /// Locks the registry to register custom metrics (keep the guard short-lived).
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock()
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_and_custom_metrics() {
        let m = Metrics::new();
        let labels = HttpLabels {
            method: "GET".into(),
            route: "/x/{id}".into(),
            status: 200,
        };
        m.requests.get_or_create(&labels).inc();
        m.latency.get_or_create(&labels).observe(0.003);
        let c = Counter::<u64>::default();
        m.registry()
            .register("orders_placed", "Orders placed", c.clone());
        c.inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"http_server_requests_total{method="GET",route="/x/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("http_server_request_duration_seconds_bucket"));
        assert!(text.contains("orders_placed_total 1"));
    }
}
