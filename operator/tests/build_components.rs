//! Pure tests of what the build step renders for each component of a Shop: golden snapshots of
//! its ServiceAccount, ConfigMap, Service, NetworkPolicy and Deployment (and the fault flags'
//! ConfigMap), plus explicit assertions on what must never regress (order, labels, selectors,
//! owner reference, probes, security, environment, config-hash rollout, fault flags that roll
//! no pod). The stores, the network and the pod counts have their own `build_*.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rendered::{
    SAMPLE, assert_memory_bounded, assert_restricted, component, container, pod_spec, render,
    secret_ref,
};
use shop_operator::Shop;
use shop_operator::build::{self, Resources, labels};
use shop_operator::component::Component;
use shop_operator::validate::validate;

#[test]
fn every_rendered_object_matches_its_snapshot() {
    let res = render(SAMPLE);
    for cr in &res.components {
        let c = cr.component;
        insta::assert_yaml_snapshot!(format!("{c}-serviceaccount"), cr.service_account);
        insta::assert_yaml_snapshot!(format!("{c}-configmap"), cr.config_map);
        insta::assert_yaml_snapshot!(format!("{c}-service"), cr.service);
        insta::assert_yaml_snapshot!(format!("{c}-networkpolicy"), cr.network_policy);
        insta::assert_yaml_snapshot!(format!("{c}-deployment"), cr.deployment);
        if let Some(p) = &cr.peer_service {
            insta::assert_yaml_snapshot!(format!("{c}-peer-service"), p);
        }
        if let Some(p) = &cr.pdb {
            insta::assert_yaml_snapshot!(format!("{c}-pdb"), p);
        }
    }
    insta::assert_yaml_snapshot!("faults-configmap", res.faults);
}

#[test]
fn fault_flags_are_a_mounted_file_so_changing_them_changes_no_pod_template() {
    let dev = SAMPLE.replace(
        "  components:\n",
        "  environment: Development\n  components:\n",
    );
    let plain = render(&dev);
    let faulty = render(&dev.replace(
        "  environment: Development\n",
        "  environment: Development\n  faults: {inventoryErrorRatio: 0.5, inventoryLatencyMs: 200, notificationConsumerPaused: true}\n",
    ));
    let flags = |r: &Resources| -> serde_json::Value {
        serde_json::from_str(&r.faults.data.as_ref().unwrap()[build::FAULTS_KEY]).unwrap()
    };
    assert_eq!(flags(&plain), serde_json::json!({}));
    assert_eq!(
        flags(&faulty),
        serde_json::json!({"inventoryErrorRatio": 0.5, "inventoryLatencyMs": 200, "notificationConsumerPaused": true}),
        "the flags as the services read them, without allowInProduction"
    );
    assert_eq!(plain.faults.metadata.name.as_deref(), Some("corner-faults"));
    for (a, b) in plain.components.iter().zip(&faulty.components) {
        assert_eq!(
            a.deployment, b.deployment,
            "{}: a flag must not roll the pods",
            a.component
        );
        assert_eq!(a.config_map, b.config_map);
    }
    assert_ne!(build::desired_hash(&plain), build::desired_hash(&faulty));
    let pod = pod_spec(&component(&faulty, Component::Inventory).deployment);
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "faults")
        .unwrap();
    let cm = vol.config_map.as_ref().unwrap();
    assert_eq!(
        (cm.name.as_str(), cm.optional),
        ("corner-faults", Some(true))
    );
    // Production Shops refuse them unless allowed.
    let prod = SAMPLE.replace(
        "  components:\n",
        "  faults: {inventoryErrorRatio: 0.5}\n  components:\n",
    );
    let shop: Shop = serde_yaml::from_str(&prod).unwrap();
    assert!(
        validate(&shop)
            .unwrap_err()
            .to_string()
            .starts_with("spec.faults injects failures")
    );
    let allowed = prod.replace(
        "inventoryErrorRatio: 0.5}",
        "inventoryErrorRatio: 0.5, allowInProduction: true}",
    );
    let shop: Shop = serde_yaml::from_str(&allowed).unwrap();
    assert!(validate(&shop).unwrap().faults.is_some());
}

#[test]
fn registry_first_gateway_last_disabled_component_absent() {
    let res = render(SAMPLE);
    let order: Vec<Component> = res.components.iter().map(|c| c.component).collect();
    assert_eq!(
        order,
        vec![
            Component::Registry,
            Component::Product,
            Component::Inventory,
            Component::Order,
            Component::Gateway
        ]
    );
}

#[test]
fn labels_selectors_and_owner_reference() {
    let res = render(SAMPLE);
    for cr in &res.components {
        let d = &cr.deployment;
        let l = d.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::NAME], "shopkeeper");
        assert_eq!(l[labels::INSTANCE], "corner");
        assert_eq!(l[labels::COMPONENT], cr.component.name());
        assert_eq!(l[labels::MANAGED_BY], "shop-operator");
        assert_eq!(l[labels::VERSION], "1.2.3");
        let spec = d.spec.as_ref().unwrap();
        let sel = spec.selector.match_labels.as_ref().unwrap();
        // The selector must not contain the version (selectors are immutable; upgrades change it).
        assert_eq!(sel.len(), 3);
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in sel {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "pod template must match the selector"
            );
        }
        assert_eq!(
            cr.service.spec.as_ref().unwrap().selector.as_ref().unwrap(),
            sel
        );
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("Shop", "corner", Some(true))
        );
        assert_eq!(owner.uid, "6f1c3a9e-0000-4000-8000-000000000001");
        assert_eq!(
            d.metadata.name.as_deref(),
            Some(format!("corner-{}", cr.component).as_str())
        );
        assert_eq!(d.metadata.namespace.as_deref(), Some("retail"));
    }
}

#[test]
fn probes_ports_and_restricted_security_context() {
    let res = render(SAMPLE);
    for cr in &res.components {
        let pod = pod_spec(&cr.deployment);
        let c = &pod.containers[0];
        let what = cr.component.to_string();
        assert_eq!(
            c.ports.as_ref().unwrap()[0].container_port,
            cr.component.port()
        );
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&c.readiness_probe), "/health/ready");
        assert_eq!(path(&c.liveness_probe), "/health/live");
        assert_restricted(c, &what);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_memory_bounded(c, &what);
    }
}

#[test]
fn pods_get_registry_url_dns_pattern_pod_ip_and_secrets() {
    let res = render(SAMPLE);
    let order = component(&res, Component::Order);
    let data = order.config_map.data.as_ref().unwrap();
    assert_eq!(
        data["SHOP_REGISTRY_URL"],
        "http://corner-registry.retail.svc:8761/eureka"
    );
    assert_eq!(
        data["SHOP_DNS_PATTERN"],
        "http://corner-{service}.retail.svc:80"
    );
    assert_eq!(data["SHOP_PORT"], "8082");
    assert_eq!(data["SHOP_BIND"], "0.0.0.0");
    assert_eq!(data["SHOP_KAFKA_BOOTSTRAP"], "kafka-0.kafka:9092");
    assert_eq!(
        data["SHOP_ZIPKIN_ENDPOINT"],
        "http://zipkin.obs.svc:9411/api/v2/spans"
    );
    let c = container(&order.deployment);
    let env = c.env.as_ref().unwrap();
    let server = env
        .iter()
        .find(|e| e.name == "SHOP_MYSQL_SERVER_URL")
        .unwrap();
    let db = env.iter().find(|e| e.name == "DATABASE_URL").unwrap();
    let server_pos = env.iter().position(|e| e.name == "SHOP_MYSQL_SERVER_URL");
    let db_pos = env.iter().position(|e| e.name == "DATABASE_URL");
    assert!(
        server_pos < db_pos,
        "$(VAR) expansion needs the server URL defined first"
    );
    // Order gets its own database on the shared server.
    assert_eq!(
        db.value.as_deref(),
        Some("$(SHOP_MYSQL_SERVER_URL)/order_service")
    );
    assert_eq!(secret_ref(server), ("db".to_string(), "url".to_string()));
    // The user's override replaced POD_IP in place and the extra variable was appended.
    let pod_ip: Vec<_> = env.iter().filter(|e| e.name == "POD_IP").collect();
    assert_eq!(pod_ip.len(), 1);
    assert_eq!(pod_ip[0].value.as_deref(), Some("10.9.9.9"));
    assert!(
        env.iter()
            .any(|e| e.name == "SHOP_LOG_FORMAT" && e.value.as_deref() == Some("text"))
    );
    assert_eq!(
        c.env_from.as_ref().unwrap()[0]
            .config_map_ref
            .as_ref()
            .unwrap()
            .name,
        "corner-order"
    );
    // Product gets Mongo, not MySQL; the downward API gives the others their pod IP.
    let p = container(&component(&res, Component::Product).deployment);
    let penv = p.env.as_ref().unwrap();
    assert!(penv.iter().any(|e| e.name == "SHOP_MONGO_URL"));
    assert!(!penv.iter().any(|e| e.name == "DATABASE_URL"));
    let ip = penv.iter().find(|e| e.name == "POD_IP").unwrap();
    assert_eq!(
        ip.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
    assert_eq!(
        p.image.as_deref(),
        Some("registry.example/shops/shop-product:1.2.3")
    );
}

#[test]
fn a_config_change_changes_the_pod_template_hash_and_nothing_else_does() {
    let a = render(SAMPLE);
    let b = render(&SAMPLE.replace("kafka-0.kafka:9092", "kafka-1.kafka:9092"));
    let hash = |r: &Resources, c| {
        component(r, c)
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[build::CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(hash(&a, Component::Order), hash(&b, Component::Order));
    assert_eq!(hash(&a, Component::Product), hash(&b, Component::Product));
    assert_eq!(render(SAMPLE), a, "rendering is deterministic");
}
