//! Pure tests of how many of a Shop's pods run and where, as the build step renders it:
//! PodDisruptionBudgets only where a pod can be spared, the registry's headless peers, an HPA
//! owning an autoscaled component's count (and the autoscaling sections refused), and the
//! Shop's placement in every pod template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rendered::{SAMPLE, component, pod_spec, render};
use shop_operator::Shop;
use shop_operator::build;
use shop_operator::component::Component;
use shop_operator::validate::validate;

/// SAMPLE with `lines` (YAML indented six spaces, each ending in a newline) added to the order
/// component's section.
fn with_order(lines: &str) -> String {
    SAMPLE.replace("    order:\n", &format!("    order:\n{lines}"))
}

#[test]
fn pdb_only_above_one_replica_and_registry_has_headless_peers() {
    let res = render(SAMPLE);
    for cr in &res.components {
        let replicas = cr.deployment.spec.as_ref().unwrap().replicas.unwrap();
        assert_eq!(cr.pdb.is_some(), replicas > 1, "{}", cr.component);
        assert!(cr.hpa.is_none(), "no autoscaling asked: no HPA");
        assert_eq!(
            cr.peer_service.is_some(),
            cr.component == Component::Registry
        );
    }
    let reg = &res.components[0];
    let peers = reg.peer_service.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peers.publish_not_ready_addresses, Some(true));
    let gw = res.components.last().unwrap();
    assert_eq!(
        gw.service.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );
}

#[test]
fn an_autoscaled_component_gets_an_hpa_and_its_deployment_no_replica_count() {
    let yaml = with_order(
        "      replicas: 5\n      autoscaling: {minReplicas: 2, maxReplicas: 6, targetCPUUtilization: 70, metric: {name: http_requests_in_flight, averageValue: \"20\"}}\n",
    );
    let res = render(&yaml);
    let order = component(&res, Component::Order);
    let d = &order.deployment;
    assert_eq!(
        d.spec.as_ref().unwrap().replicas,
        None,
        "the HPA owns the count: applying one would take it back"
    );
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(build::AUTOSCALED_ANNOTATION))
            .map(String::as_str),
        Some("true")
    );
    let hpa = order.hpa.as_ref().expect("an HPA for the autoscaled order");
    assert_eq!(hpa.metadata.name.as_deref(), Some("corner-order"));
    assert_eq!(hpa.metadata.owner_references, d.metadata.owner_references);
    assert_eq!(hpa.metadata.labels, d.metadata.labels);
    let spec = &hpa.spec;
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "corner-order");
    assert_eq!(
        spec.scale_target_ref.api_version.as_deref(),
        Some("apps/v1")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    let metrics = spec.metrics.as_ref().unwrap();
    assert_eq!(metrics.len(), 2);
    let cpu = metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        (cpu.name.as_str(), cpu.target.average_utilization),
        ("cpu", Some(70))
    );
    let pods = metrics[1].pods.as_ref().unwrap();
    assert_eq!(pods.metric.name, "http_requests_in_flight");
    assert_eq!(
        pods.target.average_value.as_ref().map(|q| q.0.as_str()),
        Some("20")
    );
    // min 2 > 1: a PDB, whatever `replicas` says.
    assert!(order.pdb.is_some());
    // Every other component keeps its count and has no HPA.
    for cr in res
        .components
        .iter()
        .filter(|c| c.component != Component::Order)
    {
        assert!(cr.hpa.is_none(), "{}", cr.component);
        assert!(cr.deployment.spec.as_ref().unwrap().replicas.is_some());
    }
}

#[test]
fn an_autoscaler_with_a_minimum_of_one_gets_no_pdb_and_bad_ones_are_refused() {
    let yaml = with_order(
        "      replicas: 3\n      autoscaling: {maxReplicas: 4, targetCPUUtilization: 50}\n",
    );
    let res = render(&yaml);
    let order = component(&res, Component::Order);
    assert_eq!(order.hpa.as_ref().unwrap().spec.min_replicas, Some(1));
    assert!(order.pdb.is_none(), "a minimum of one pod cannot spare one");

    for (section, problem) in [
        (
            "{minReplicas: 5, maxReplicas: 4, targetCPUUtilization: 50}",
            "minReplicas must not exceed maxReplicas",
        ),
        (
            "{minReplicas: 1, maxReplicas: 4}",
            "needs targetCPUUtilization or metric",
        ),
        (
            "{maxReplicas: 4, targetCPUUtilization: 150}",
            "targetCPUUtilization must be between 1 and 100",
        ),
    ] {
        let yaml = with_order(&format!("      autoscaling: {section}\n"));
        let shop: Shop = serde_yaml::from_str(&yaml).unwrap();
        let e = validate(&shop).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.components.order.autoscaling: ") && e.contains(problem),
            "{section}: {e}"
        );
    }
}

#[test]
fn placement_goes_into_every_pod_template_and_no_placement_asks_nothing() {
    let res = render(SAMPLE);
    assert_eq!(res.components.len(), 5);
    for cr in &res.components {
        let p = pod_spec(&cr.deployment);
        let sel = p.node_selector.as_ref().unwrap();
        assert_eq!(sel.len(), 2, "{}", cr.component);
        assert_eq!(sel["pool"], "shops");
        assert_eq!(sel["topology.kubernetes.io/zone"], "eu-1a");
        let t = p.tolerations.as_ref().unwrap();
        assert_eq!(t.len(), 2, "{}", cr.component);
        assert_eq!(
            (
                t[0].key.as_deref(),
                t[0].operator.as_deref(),
                t[0].value.as_deref(),
                t[0].effect.as_deref()
            ),
            (
                Some("dedicated"),
                Some("Equal"),
                Some("shops"),
                Some("NoSchedule")
            )
        );
        assert_eq!(t[1].toleration_seconds, Some(60));
    }
    // Without spec.placement the pod spec has neither field (the scheduler's defaults apply).
    let start = SAMPLE.find("  placement:").unwrap();
    let res = render(&SAMPLE[..start]);
    for cr in &res.components {
        let p = pod_spec(&cr.deployment);
        assert!(
            p.node_selector.is_none() && p.tolerations.is_none(),
            "{}",
            cr.component
        );
    }
}

#[test]
fn a_changed_placement_rolls_the_pods_and_nothing_else() {
    let a = render(SAMPLE);
    let b = render(&SAMPLE.replace("pool: shops", "pool: bigger"));
    for (x, y) in a.components.iter().zip(&b.components) {
        assert_ne!(x.deployment, y.deployment, "{}", x.component);
        assert_eq!(x.service, y.service);
        assert_eq!(x.config_map, y.config_map);
        assert_eq!(x.network_policy, y.network_policy);
    }
}
