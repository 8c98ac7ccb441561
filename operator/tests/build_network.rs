//! Pure tests of how traffic reaches a Shop's pods as the build step renders it: who may
//! connect to whom (NetworkPolicies), node ports, the gateway exposed through an Ingress or a
//! Gateway API HTTPRoute (golden snapshots of both), and the gateway serving TLS from a Secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rendered::{SAMPLE, component, pod_spec, render};
use shop_operator::Shop;
use shop_operator::build::{self, Resources, labels};
use shop_operator::component::Component;
use shop_operator::exposure::ExposureObject;
use shop_operator::validate::validate;

/// What is rendered for SAMPLE with `exposure` (YAML) added to its gateway's section.
fn render_exposed(exposure: &str) -> Resources {
    render(&SAMPLE.replace(
        "      rateLimit: {requestsPerSecond: 50, burst: 100}\n",
        &format!("      rateLimit: {{requestsPerSecond: 50, burst: 100}}\n      {exposure}\n"),
    ))
}

#[test]
fn network_policies_only_let_the_gateway_take_outside_traffic() {
    let res = render(SAMPLE);
    for cr in &res.components {
        let spec = cr.network_policy.spec.as_ref().unwrap();
        let rule = &spec.ingress.as_ref().unwrap()[0];
        match cr.component {
            Component::Gateway => assert!(rule.from.is_none(), "gateway must accept anyone"),
            c => {
                let from = rule
                    .from
                    .as_ref()
                    .expect("non-gateway ingress must be restricted");
                let sel = from[0].pod_selector.as_ref().unwrap();
                assert_eq!(
                    sel.match_labels.as_ref().unwrap()[labels::INSTANCE],
                    "corner"
                );
                let allowed = sel.match_expressions.as_ref().unwrap()[0]
                    .values
                    .clone()
                    .unwrap();
                let expected: Vec<String> = match c {
                    Component::Inventory => {
                        vec!["gateway".into(), "order".into(), "product".into()]
                    }
                    Component::Registry => {
                        let mut v: Vec<String> = Component::ALL
                            .iter()
                            .map(|c| c.name().to_string())
                            .collect();
                        v.sort();
                        v
                    }
                    _ => vec!["gateway".into()],
                };
                assert_eq!(allowed, expected, "{c}");
            }
        }
    }
}

#[test]
fn a_fixed_node_port_makes_the_service_a_node_port_and_duplicates_are_refused() {
    let yaml = SAMPLE.replace(
        "registry: {replicas: 2}",
        "registry: {replicas: 2, nodePort: 30761}",
    );
    let res = render(&yaml);
    let svc = res.components[0].service.spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("NodePort"));
    assert_eq!(svc.ports.as_ref().unwrap()[0].node_port, Some(30761));
    let peers = res.components[0]
        .peer_service
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        peers.ports.as_ref().unwrap()[0].node_port,
        None,
        "headless Services take no node port"
    );
    let dup = yaml.replace("replicas: 3\n", "replicas: 3\n      nodePort: 30761\n");
    let shop: Shop = serde_yaml::from_str(&dup).unwrap();
    let err = validate(&shop).unwrap_err().to_string();
    assert_eq!(
        err,
        "spec.components.gateway.nodePort 30761 is already used by another component"
    );
}

#[test]
fn an_ingress_routes_every_path_on_its_host_to_the_gateway_service_with_tls() {
    let res = render_exposed(
        "ingress: {className: nginx, host: shop.example.com, tlsSecretName: shop-tls, annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 8m}}",
    );
    let Some(ExposureObject::Ingress(ing)) = &res.exposure else {
        panic!("expected an Ingress, got {:?}", res.exposure)
    };
    insta::assert_yaml_snapshot!("gateway-ingress", ing);
    assert_eq!(ing.metadata.name.as_deref(), Some("corner-gateway"));
    assert_eq!(ing.metadata.namespace.as_deref(), Some("retail"));
    let gateway = component(&res, Component::Gateway);
    assert_eq!(ing.metadata.labels, gateway.service.metadata.labels);
    assert_eq!(
        ing.metadata.owner_references,
        gateway.service.metadata.owner_references
    );
    assert_eq!(
        ing.metadata.annotations.as_ref().unwrap()["nginx.ingress.kubernetes.io/proxy-body-size"],
        "8m"
    );
    let spec = ing.spec.as_ref().unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rules = spec.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].host.as_deref(), Some("shop.example.com"));
    let paths = &rules[0].http.as_ref().unwrap().paths;
    assert_eq!(
        (paths[0].path.as_deref(), paths[0].path_type.as_str()),
        (Some("/"), "Prefix")
    );
    let backend = paths[0].backend.service.as_ref().unwrap();
    // The backend is the gateway's Service and one of its ports.
    assert_eq!(
        Some(backend.name.as_str()),
        gateway.service.metadata.name.as_deref()
    );
    let port = backend.port.as_ref().unwrap().number.unwrap();
    assert!(
        gateway
            .service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.port == port),
        "Ingress port {port} is not a port of the gateway Service"
    );
    let tls = spec.tls.as_ref().unwrap();
    assert_eq!(tls[0].secret_name.as_deref(), Some("shop-tls"));
    assert_eq!(
        tls[0].hosts.as_deref(),
        Some(&["shop.example.com".to_string()][..])
    );

    // Without a Secret there is no TLS section, and no annotations means none on the object.
    let res = render_exposed("ingress: {host: shop.example.com}");
    let Some(ExposureObject::Ingress(ing)) = &res.exposure else {
        panic!("expected an Ingress")
    };
    assert_eq!(ing.spec.as_ref().unwrap().tls, None);
    assert_eq!(ing.spec.as_ref().unwrap().ingress_class_name, None);
    assert_eq!(ing.metadata.annotations, None);
}

#[test]
fn an_http_route_attaches_to_its_gateways_and_sends_everything_to_the_gateway_service() {
    let res = render_exposed(
        "httpRoute: {parentRefs: [{name: public, namespace: infra, sectionName: https}, {name: internal}], hostnames: [shop.example.com, '*.shop.example.com']}",
    );
    let Some(ExposureObject::HttpRoute(route)) = &res.exposure else {
        panic!("expected an HTTPRoute, got {:?}", res.exposure)
    };
    insta::assert_yaml_snapshot!("gateway-httproute", route);
    let v = serde_json::to_value(route).unwrap();
    assert_eq!(v["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(v["kind"], "HTTPRoute");
    assert_eq!(v["metadata"]["name"], "corner-gateway");
    assert_eq!(v["metadata"]["labels"][labels::COMPONENT], "gateway");
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Shop");
    assert_eq!(
        v["spec"]["parentRefs"],
        serde_json::json!([
            {"name": "public", "namespace": "infra", "sectionName": "https"},
            {"name": "internal"}
        ])
    );
    assert_eq!(
        v["spec"]["hostnames"],
        serde_json::json!(["shop.example.com", "*.shop.example.com"])
    );
    assert_eq!(
        v["spec"]["rules"],
        serde_json::json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "corner-gateway", "port": 8080}]
        }])
    );
}

#[test]
fn no_exposure_is_rendered_unless_asked_and_it_changes_the_desired_state() {
    let plain = render(SAMPLE);
    assert!(plain.exposure.is_none());
    let exposed = render_exposed("ingress: {host: shop.example.com}");
    assert_ne!(
        build::desired_hash(&plain),
        build::desired_hash(&exposed),
        "adding an Ingress must make the operator apply"
    );
    let other_host = render_exposed("ingress: {host: other.example.com}");
    assert_ne!(
        build::desired_hash(&exposed),
        build::desired_hash(&other_host)
    );
    // Nothing else changes: the gateway's own objects are the same.
    assert_eq!(plain.components, exposed.components);
}

#[test]
fn gateway_tls_mounts_the_secret_sets_the_files_and_probes_over_https() {
    let res =
        render_exposed("tls: {secretName: shop-cert}\n      ingress: {host: shop.example.com}");
    let gateway = component(&res, Component::Gateway);
    let pod = pod_spec(&gateway.deployment);
    let c = &pod.containers[0];

    // The Secret, read-only, readable by the pod's group only, where the gateway reads it.
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "tls")
        .expect("a tls volume");
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("shop-cert"));
    assert_eq!(secret.default_mode, Some(0o440));
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "tls")
        .unwrap();
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        (build::TLS_MOUNT_PATH, Some(true))
    );
    let data = gateway.config_map.data.as_ref().unwrap();
    assert_eq!(data["SHOP_TLS_CERT_FILE"], "/etc/shop/tls/tls.crt");
    assert_eq!(data["SHOP_TLS_KEY_FILE"], "/etc/shop/tls/tls.key");

    // Probes speak https (the port serves nothing else); the Service says so too.
    for p in [&c.startup_probe, &c.liveness_probe, &c.readiness_probe] {
        let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let ports = gateway
        .service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap();
    assert!(
        ports
            .iter()
            .all(|p| p.app_protocol.as_deref() == Some("https"))
    );
    // ingress-nginx is told to speak https to the gateway.
    let Some(ExposureObject::Ingress(ing)) = &res.exposure else {
        panic!("expected an Ingress")
    };
    assert_eq!(
        ing.metadata.annotations.as_ref().unwrap()["nginx.ingress.kubernetes.io/backend-protocol"],
        "HTTPS"
    );

    // Nothing changes for the other components, nor for a gateway without TLS.
    for cr in res
        .components
        .iter()
        .filter(|c| c.component != Component::Gateway)
    {
        let pod = pod_spec(&cr.deployment);
        // `/tmp`, plus the fault flags for the three services that read them.
        let live = matches!(
            cr.component,
            Component::Inventory | Component::Order | Component::Notification
        );
        assert_eq!(
            pod.volumes.as_ref().unwrap().len(),
            1 + usize::from(live),
            "{}",
            cr.component
        );
        let probe = pod.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.http_get.as_ref().unwrap().scheme.as_deref(),
            Some("HTTP")
        );
        assert!(
            !cr.config_map
                .data
                .as_ref()
                .unwrap()
                .contains_key("SHOP_TLS_CERT_FILE")
        );
    }
    let plain = render(SAMPLE);
    let pod = pod_spec(&component(&plain, Component::Gateway).deployment);
    assert!(
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.name != "tls")
    );
}
