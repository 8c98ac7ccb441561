//! Prometheus metrics of the operator: how many reconciles ran, how many failed and why, how long
//! they took, and how many writes it sent to the API server (the steady-state goal is zero).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the failures counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `Error::metric_label()` or `invalid_object`.
    pub reason: String,
}

/// Label of the writes counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    /// Object kind.
    pub kind: String,
    /// apply, delete or status.
    pub verb: String,
}

/// Label of the observations counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `store` (the watches' stores showed what was applied) or `list` (the API server was asked).
    pub source: String,
}

/// All metrics, registered once.
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles failed, by reason.
    pub failures: Family<ReasonLabel, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// Write requests sent to the API server.
    pub writes: Family<WriteLabel, Counter>,
    /// 1 while this instance may reconcile (leader or no election).
    pub leader: Gauge,
    /// Looks at an applied Shop's children, by where they were read.
    pub observations: Family<SourceLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shop_operator");
        let reconciles = Counter::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let writes = Family::<WriteLabel, Counter>::default();
        let leader = Gauge::default();
        let observations = Family::<SourceLabel, Counter>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "api_writes",
            "Write requests sent to the API server, by kind and verb",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 when this instance is allowed to reconcile",
            leader.clone(),
        );
        registry.register(
            "observations",
            "Looks at an applied Shop's children: from the watches' stores, or listed from the API server",
            observations.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            writes,
            leader,
            observations,
        }
    }
}

impl Metrics {
    /// Counts one look at an applied Shop's children (`store` or `list`).
    pub fn observed(&self, source: &str) {
        self.observations
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc();
    }

    /// Counts one write.
    pub fn write(&self, kind: &str, verb: &str) {
        self.writes
            .get_or_create(&WriteLabel {
                kind: kind.to_string(),
                verb: verb.to_string(),
            })
            .inc();
    }

    /// Counts one failure.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_exposition() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.failure("apply");
        m.write("Deployment", "apply");
        let text = m.encode();
        assert!(text.contains("shop_operator_reconciles_total 1"), "{text}");
        assert!(
            text.contains("shop_operator_reconcile_failures_total{reason=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shop_operator_api_writes_total{kind=\"Deployment\",verb=\"apply\"} 1"),
            "{text}"
        );
    }
}
