//! How Prometheus reaches the components: a Prometheus Operator ServiceMonitor
//! (`monitoring.coreos.com/v1`) rendered from `spec.monitoring.serviceMonitor`, selecting every
//! component's Service and scraping `/metrics` on its `http` port.
//!
//! Like the gateway's HTTPRoute (see [`crate::exposure`]), the kind exists only where someone
//! installed the Prometheus Operator's CRDs, so asking for it must never fail the Shop: [`plan`]
//! takes whether the API is served (discovery, in the apply step) and drops the object from the
//! desired state when it is not, and the `Monitored` condition says so. The struct carries only
//! the fields the operator writes, rather than a crate of the Prometheus Operator's types, which
//! would pin other kube/k8s-openapi versions than the workspace's. The NetworkPolicies' scrape
//! rule (`spec.monitoring.scrapeNamespace`) is rendered with the policies in [`crate::build`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::build::{APP_NAME, MANAGED_BY, PORT_NAME, labels};
use crate::component::Component;
use crate::validate::ValidatedShop;

/// The Prometheus Operator's API group/version the operator writes.
pub const MONITORING_API_VERSION: &str = "monitoring.coreos.com/v1";
/// Value of `app.kubernetes.io/component` on the ServiceMonitor (it belongs to no one component).
pub const MONITORING_COMPONENT: &str = "monitoring";

/// The fields of a ServiceMonitor spec the operator sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorBody {
    /// Which Services' endpoints are scraped.
    pub selector: LabelSelector,
    /// How each is scraped.
    pub endpoints: Vec<Endpoint>,
}

/// `endpoints[]` of a ServiceMonitor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Service port name.
    pub port: String,
    /// HTTP path of the metrics.
    pub path: String,
    /// Scrape interval; Prometheus's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Labels copied from the Service onto every series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabelings: Vec<Relabeling>,
    /// The series' own labels win over target labels of the same name: the breaker metrics'
    /// `service` (the service called) would otherwise become `exported_service`, and the
    /// dashboards' breaker panels would show the Service scraped instead.
    #[serde(default)]
    pub honor_labels: bool,
}

/// `endpoints[].relabelings[]`: copies a target label (here a Service label) to a series label.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Relabeling {
    /// The discovered labels read.
    pub source_labels: Vec<String>,
    /// The series label written.
    pub target_label: String,
}

/// The series labels the chart's dashboards and alerts select by (`docs/observability.md`), and
/// the Service labels they come from.
pub const SERIES_LABELS: [(&str, &str); 2] = [
    (
        "__meta_kubernetes_service_label_app_kubernetes_io_instance",
        "shop",
    ),
    (
        "__meta_kubernetes_service_label_app_kubernetes_io_component",
        "component",
    ),
];

/// Renders the ServiceMonitor the Shop asks for, if any.
pub fn render(shop: &ValidatedShop) -> Option<ServiceMonitor> {
    let sm = shop.monitoring.service_monitor.as_ref()?;
    let mut obj_labels = crate::build::named_labels(shop, MONITORING_COMPONENT);
    // The user's labels (a Prometheus's selector) never replace the ones the operator selects by.
    for (k, v) in &sm.labels {
        obj_labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let endpoint = Endpoint {
        port: PORT_NAME.to_string(),
        path: "/metrics".to_string(),
        interval: sm.interval.clone(),
        relabelings: SERIES_LABELS
            .iter()
            .map(|(from, to)| Relabeling {
                source_labels: vec![from.to_string()],
                target_label: to.to_string(),
            })
            .collect(),
        honor_labels: true,
    };
    // Every component's Service names its port `http`. A gateway with TLS on its port speaks
    // only https there, with a certificate Prometheus has no reason to trust: it is left out
    // (scrape it with a ServiceMonitor of your own that carries the CA) rather than scraped with
    // verification silently off.
    let names: Vec<String> = Component::ALL
        .iter()
        .filter(|c| !(**c == Component::Gateway && shop.gateway.tls_secret.is_some()))
        .map(|c| c.name().to_string())
        .collect();
    let selector = LabelSelector {
        match_labels: Some(
            [
                (labels::NAME.to_string(), APP_NAME.to_string()),
                (labels::INSTANCE.to_string(), shop.name.clone()),
                (labels::MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ]
            .into(),
        ),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: labels::COMPONENT.to_string(),
            operator: "In".to_string(),
            values: Some(names),
        }]),
    };
    Some(ServiceMonitor {
        metadata: ObjectMeta {
            name: Some(shop.name.clone()),
            namespace: Some(shop.namespace.clone()),
            labels: Some(obj_labels),
            owner_references: Some(vec![shop.owner.clone()]),
            ..Default::default()
        },
        spec: ServiceMonitorBody {
            selector,
            endpoints: vec![endpoint],
        },
    })
}

/// What became of the ServiceMonitor the Shop asks for (the `Monitored` condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitoringState {
    /// The cluster does not serve `monitoring.coreos.com/v1` ServiceMonitors: nothing created.
    ApiMissing,
    /// Part of the desired state, named.
    Planned(String),
}

/// Removes the rendered ServiceMonitor from the desired state when its API is not served (the
/// rest of the Shop is applied as usual) and says what happened; `None` when none is asked for.
pub fn plan(sm: &mut Option<ServiceMonitor>, served: bool) -> Option<MonitoringState> {
    let name = sm.as_ref()?.metadata.name.clone().unwrap_or_default();
    if !served {
        *sm = None;
        return Some(MonitoringState::ApiMissing);
    }
    Some(MonitoringState::Planned(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Shop;
    use crate::validate::validate;

    fn shop(extra: &str) -> ValidatedShop {
        let yaml = format!(
            "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {{name: corner, namespace: retail, uid: u-1}}\nspec:\n  image: {{repository: r.example/s, tag: '1'}}\n  backing:\n    mysql: {{urlSecretRef: {{name: db, key: url}}}}\n    mongodb: {{urlSecretRef: {{name: m, key: url}}}}\n    kafka: {{bootstrapServers: 'k:9092'}}\n{extra}"
        );
        let s: Shop = serde_yaml::from_str(&yaml).unwrap();
        validate(&s).unwrap()
    }

    #[test]
    fn a_service_monitor_selects_every_components_service_and_keeps_the_operators_labels() {
        let v = shop(
            "  monitoring:\n    serviceMonitor: {interval: 15s, labels: {release: prom, app.kubernetes.io/instance: other}}\n",
        );
        let sm = render(&v).expect("asked for");
        assert_eq!(sm.metadata.name.as_deref(), Some("corner"));
        let labels = sm.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get("release").map(String::as_str), Some("prom"));
        // A user label never replaces one the operator lists its children by.
        assert_eq!(
            labels.get(labels::INSTANCE).map(String::as_str),
            Some("corner")
        );
        let sel = &sm.spec.selector;
        let values = sel.match_expressions.as_ref().unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert_eq!(values.len(), 6, "{values:?}");
        assert_eq!(
            sel.match_labels
                .as_ref()
                .unwrap()
                .get(labels::INSTANCE)
                .map(String::as_str),
            Some("corner")
        );
        let e = &sm.spec.endpoints[0];
        assert_eq!(
            (e.port.as_str(), e.path.as_str(), e.interval.as_deref()),
            ("http", "/metrics", Some("15s"))
        );
        // The dashboards select by `shop` and `component` (docs/observability.md).
        let targets: Vec<&str> = e
            .relabelings
            .iter()
            .map(|r| r.target_label.as_str())
            .collect();
        assert_eq!(targets, ["shop", "component"]);
        assert!(e.honor_labels, "the breakers' own `service` label must win");
        assert!(
            render(&shop("")).is_none(),
            "nothing asked, nothing rendered"
        );
    }

    #[test]
    fn a_tls_gateway_is_left_out_of_the_plain_scrape() {
        let v = shop(
            "  components:\n    gateway: {tls: {secretName: gw-tls}}\n  monitoring:\n    serviceMonitor: {}\n",
        );
        let sm = render(&v).unwrap();
        let values = sm.spec.selector.match_expressions.as_ref().unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert!(!values.contains(&"gateway".to_string()), "{values:?}");
        assert_eq!(values.len(), 5);
    }

    #[test]
    fn without_the_api_the_monitor_is_dropped_and_reported_missing() {
        let v = shop("  monitoring:\n    serviceMonitor: {}\n");
        let mut sm = render(&v);
        assert_eq!(plan(&mut sm, false), Some(MonitoringState::ApiMissing));
        assert!(sm.is_none());
        let mut sm = render(&v);
        assert_eq!(
            plan(&mut sm, true),
            Some(MonitoringState::Planned("corner".into()))
        );
        assert!(sm.is_some());
        assert_eq!(plan(&mut None, true), None);
    }
}
