//! `spec.monitoring` against the REAL local kube-apiserver with the Prometheus Operator's real
//! ServiceMonitor CRD installed (`hack/tools.sh prometheus-crds`, a test tool): the operator
//! creates the ServiceMonitor the Shop asks for (the CRD's own schema validates it), reports
//! `Monitored`, lets every component's NetworkPolicy admit the scrape namespace, and deletes the
//! ServiceMonitor when the Shop drops the section. "API missing" cannot be produced once the CRD
//! is installed in the shared cluster, so it is unit-tested in `monitoring::plan`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use shop_operator::Shop;
use shop_operator::monitoring::ServiceMonitor;

async fn install_prometheus_crds(client: &Client) {
    let dir = tool_dir("prometheus-crds");
    install_crds(
        client,
        &["servicemonitors", "prometheusrules"]
            .map(|k| dir.join(format!("monitoring.coreos.com_{k}.yaml"))),
    )
    .await;
}

async fn condition(client: &Client, ns: &str, shop: &str, type_: &str) -> Option<(String, String)> {
    let s = Api::<Shop>::namespaced(client.clone(), ns)
        .get(shop)
        .await
        .ok()?;
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason))
}

/// Whether the NetworkPolicy admits pods of namespace `scrapers` on some rule.
fn admits_namespace(np: &NetworkPolicy, scrapers: &str) -> bool {
    np.spec
        .as_ref()
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten())
        .any(|peer| {
            peer.namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .and_then(|l| l.get("kubernetes.io/metadata.name"))
                .is_some_and(|n| n == scrapers)
        })
}

#[tokio::test]
async fn a_service_monitor_is_created_scrapes_are_admitted_and_both_go_with_the_section() {
    let (client, ns) = setup("op-monitor-").await;
    install_prometheus_crds(&client).await;
    let op = start_operator(&client, &ns.name);
    let shop = sample_shop(
        "watched",
        "  monitoring:\n    scrapeNamespace: monitoring\n    serviceMonitor: {interval: 30s, labels: {release: kube-prometheus-stack}}\n",
    );
    create_shop(&client, &ns.name, &shop).await;
    let n = ns.name.clone();
    let monitors: Api<ServiceMonitor> = Api::namespaced(client.clone(), &n);

    eventually(30, "the ServiceMonitor exists", || async {
        monitors.get_opt("watched").await.unwrap().is_some()
    })
    .await;
    let sm = monitors.get("watched").await.unwrap();
    assert_eq!(
        sm.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("release"))
            .map(String::as_str),
        Some("kube-prometheus-stack")
    );
    assert_eq!(sm.spec.endpoints[0].path, "/metrics");
    assert_eq!(sm.spec.endpoints[0].interval.as_deref(), Some("30s"));
    // The real CRD kept the relabelings the dashboards' `shop`/`component` labels come from.
    assert_eq!(sm.spec.endpoints[0].relabelings.len(), 2);
    assert!(sm.spec.endpoints[0].honor_labels);
    eventually(30, "Monitored=True", || async {
        condition(&client, &n, "watched", "Monitored").await
            == Some(("True".into(), "ServiceMonitorReady".into()))
    })
    .await;

    // Every component's policy admits the scrape namespace on its port.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &n);
    for c in [
        "registry",
        "gateway",
        "product",
        "inventory",
        "order",
        "notification",
    ] {
        let np = policies.get(&format!("watched-{c}")).await.unwrap();
        assert!(admits_namespace(&np, "monitoring"), "{c}: {np:?}");
    }

    // Dropping the section removes the monitor and the scrape rules.
    Api::<Shop>::namespaced(client.clone(), &n)
        .patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"monitoring": null}})),
        )
        .await
        .unwrap();
    eventually(
        30,
        "the ServiceMonitor and the scrape rule are gone",
        || async {
            monitors.get_opt("watched").await.unwrap().is_none()
                && !admits_namespace(&policies.get("watched-order").await.unwrap(), "monitoring")
        },
    )
    .await;
    eventually(
        30,
        "the Monitored condition is gone with the section",
        || async {
            condition(&client, &n, "watched", "Monitored")
                .await
                .is_none()
        },
    )
    .await;

    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn a_bad_interval_or_scrape_namespace_is_refused_naming_the_field() {
    let (client, ns) = setup("op-monitor-bad-").await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    for (section, message) in [
        (
            "{serviceMonitor: {interval: soon}}",
            "monitoring.serviceMonitor.interval must be a Prometheus duration",
        ),
        (
            "{scrapeNamespace: Monitoring_NS}",
            "monitoring.scrapeNamespace must be a namespace name",
        ),
    ] {
        let shop = sample_shop("refused", &format!("  monitoring: {section}\n"));
        let e = shops
            .create(&Default::default(), &shop)
            .await
            .expect_err(section);
        assert!(e.to_string().contains(message), "{section}: {e}");
    }
    ns.delete().await;
}
