//! Pure tests of what the build step renders for a Shop's managed stores (MySQL, MongoDB, Kafka,
//! Zipkin): golden snapshots of their StatefulSets, Services, init ConfigMap and Secret, how the
//! components reach them, their pods under the restricted Pod Security Standard, which volumes
//! and credentials outlive the Shop, and that a rebuild never rotates a credential.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rendered::{
    SAMPLE, assert_memory_bounded, assert_restricted, component, container, render, secret_ref,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shop_operator::Shop;
use shop_operator::build::{self, Resources, labels};
use shop_operator::component::Component;
use shop_operator::stores::{Store, StoreCredentials, StoreResources};
use shop_operator::validate::validate;

/// A Shop that brings its stores: MySQL with a bigger volume on a named class, Kafka without
/// keeping its data, MongoDB and Zipkin left out (managed by default), placed like SAMPLE.
const MANAGED: &str = r#"
apiVersion: shopkeeper.dev/v1alpha1
kind: Shop
metadata:
  name: corner
  namespace: retail
  uid: 6f1c3a9e-0000-4000-8000-000000000001
  generation: 4
spec:
  image: {repository: registry.example/shops, tag: "1.2.3"}
  backing:
    mysql: {storage: {size: 2Gi, storageClassName: fast}}
    kafka: {mode: managed, keepData: false}
  placement:
    nodeSelector: {pool: shops}
    tolerations:
      - {key: dedicated, operator: Equal, value: shops, effect: NoSchedule}
"#;

/// Fixed credentials, as the apply step would read them back from `corner-stores`.
fn creds() -> StoreCredentials {
    StoreCredentials {
        mysql_root_password: "root-pw-for-snapshots".into(),
        mysql_password: "app-pw-for-snapshots".into(),
        kafka_cluster_id: "MkU3OEVBNTcwNTJENDM2Qg".into(),
    }
}

fn render_managed(yaml: &str, creds: &StoreCredentials) -> Resources {
    let shop: Shop = serde_yaml::from_str(yaml).unwrap();
    build::build_with_credentials(&validate(&shop).unwrap(), creds)
}

/// Store `s`'s objects.
fn store(res: &Resources, s: Store) -> &StoreResources {
    res.stores.iter().find(|r| r.store == s).unwrap()
}

#[test]
fn every_managed_store_object_matches_its_snapshot() {
    let res = render_managed(MANAGED, &creds());
    let order: Vec<Store> = res.stores.iter().map(|s| s.store).collect();
    assert_eq!(order, Store::ALL.to_vec());
    for sr in &res.stores {
        let s = sr.store;
        insta::assert_yaml_snapshot!(format!("store-{s}-statefulset"), sr.statefulset);
        insta::assert_yaml_snapshot!(format!("store-{s}-service"), sr.service);
        if let Some(cm) = &sr.config_map {
            insta::assert_yaml_snapshot!(format!("store-{s}-configmap"), cm);
        }
    }
    insta::assert_yaml_snapshot!("store-secret", res.store_secret.as_ref().unwrap().0);
}

#[test]
fn components_connect_to_the_managed_stores_through_the_stores_secret() {
    let res = render_managed(MANAGED, &creds());
    let env = |c: Component| {
        container(&component(&res, c).deployment)
            .env
            .clone()
            .unwrap()
    };
    for (c, db) in [
        (Component::Inventory, "inventory_service"),
        (Component::Order, "order_service"),
    ] {
        let env = env(c);
        let server = env
            .iter()
            .find(|e| e.name == "SHOP_MYSQL_SERVER_URL")
            .unwrap();
        assert_eq!(
            secret_ref(server),
            ("corner-stores".to_string(), "mysql-url".to_string())
        );
        let url = env.iter().find(|e| e.name == "DATABASE_URL").unwrap();
        assert_eq!(
            url.value.as_deref(),
            Some(format!("$(SHOP_MYSQL_SERVER_URL)/{db}").as_str())
        );
    }
    let mongo = env(Component::Product);
    let mongo = mongo.iter().find(|e| e.name == "SHOP_MONGO_URL").unwrap();
    assert_eq!(
        secret_ref(mongo),
        ("corner-stores".to_string(), "mongodb-url".to_string())
    );
    let order_cm = &component(&res, Component::Order).config_map;
    let data = order_cm.data.as_ref().unwrap();
    assert_eq!(data["SHOP_KAFKA_BOOTSTRAP"], "corner-kafka:9092");
    assert_eq!(
        data["SHOP_ZIPKIN_ENDPOINT"],
        "http://corner-zipkin:9411/api/v2/spans"
    );
    // The URL in the Secret uses the generated password and the store's Service.
    let secret = &res.store_secret.as_ref().unwrap().0;
    let url = &secret.data.as_ref().unwrap()["mysql-url"].0;
    assert_eq!(
        String::from_utf8_lossy(url),
        "mysql://shop:app-pw-for-snapshots@corner-mysql:3306"
    );
    let svc = store(&res, Store::Mysql).service.spec.as_ref().unwrap();
    assert_eq!(svc.ports.as_ref().unwrap()[0].port, 3306);
    let sts = store(&res, Store::Mysql).statefulset.spec.as_ref().unwrap();
    assert_eq!(
        svc.selector.as_ref(),
        sts.template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .map(|l| {
                l.iter()
                    .filter(|(k, _)| svc.selector.as_ref().unwrap().contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .as_ref(),
        "the Service selects the store's pod"
    );
}

#[test]
fn store_pods_pass_the_restricted_pod_security_standard_with_probes_and_resources() {
    let res = render_managed(MANAGED, &creds());
    for sr in &res.stores {
        let sts = &sr.statefulset;
        let l = sts.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::COMPONENT], sr.store.name());
        assert_eq!(l[labels::INSTANCE], "corner");
        assert_eq!(l[labels::MANAGED_BY], "shop-operator");
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Shop", Some(true))
        );
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.unwrap() > 0);
        assert_eq!(
            psc.fs_group, psc.run_as_user,
            "{}: the volume is writable",
            sr.store
        );
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "shops");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        for v in pod.volumes.iter().flatten() {
            assert!(v.host_path.is_none(), "no hostPath under restricted");
        }
        let c = &pod.containers[0];
        let what = format!("store {}", sr.store);
        assert_restricted(c, &what);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());
        let ready = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            ready.tcp_socket.as_ref().unwrap().port,
            IntOrString::Int(sr.store.port())
        );
        assert!(ready.exec.is_none());
        assert_memory_bounded(c, &what);
        assert_eq!(c.image.as_deref(), Some(sr.store.default_image()));
    }
}

#[test]
fn volumes_are_kept_unless_the_spec_says_otherwise_and_zipkin_has_none() {
    let res = render_managed(MANAGED, &creds());
    let spec = |s: Store| store(&res, s).statefulset.spec.clone().unwrap();
    let mysql = spec(Store::Mysql);
    let policy = mysql.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            policy.when_deleted.as_deref(),
            policy.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Retain"))
    );
    let claim = &mysql.volume_claim_templates.unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "2Gi"
    );
    assert!(
        claim.metadata.owner_references.is_none(),
        "a PVC never points at the Shop, so deleting the Shop keeps it"
    );
    let kafka = spec(Store::Kafka);
    assert_eq!(
        kafka
            .persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete"),
        "keepData: false"
    );
    let zipkin = spec(Store::Zipkin);
    assert!(zipkin.volume_claim_templates.is_none());
    assert!(zipkin.persistent_volume_claim_retention_policy.is_none());
    // MySQL and MongoDB keep data, so the credentials their volumes were initialised with
    // outlive the Shop too.
    let secret = &res.store_secret.as_ref().unwrap().0;
    assert!(secret.metadata.owner_references.is_none());
    let nothing_kept = MANAGED.replace(
        "    mysql: {storage: {size: 2Gi, storageClassName: fast}}\n",
        "    mysql: {keepData: false}\n    mongodb: {keepData: false}\n",
    );
    let res = render_managed(&nothing_kept, &creds());
    let owners = res
        .store_secret
        .unwrap()
        .0
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owners[0].kind, "Shop");
}

#[test]
fn credentials_come_only_from_the_input_so_a_rebuild_never_rotates_them() {
    let a = render_managed(MANAGED, &creds());
    assert_eq!(render_managed(MANAGED, &creds()), a, "deterministic");
    assert_eq!(
        build::desired_hash(&render_managed(MANAGED, &creds())),
        build::desired_hash(&a)
    );
    let mut other = creds();
    other.mysql_password = "another".into();
    let b = render_managed(MANAGED, &other);
    assert_ne!(build::desired_hash(&a), build::desired_hash(&b));
    let data = a.store_secret.as_ref().unwrap().0.data.clone().unwrap();
    assert_eq!(data["mysql-root-password"].0, b"root-pw-for-snapshots");
    assert_eq!(data["kafka-cluster-id"].0, b"MkU3OEVBNTcwNTJENDM2Qg");
    // Nothing the operator might log shows a credential.
    let shown = format!("{a:?}");
    assert!(
        !shown.contains("app-pw-for-snapshots") && !shown.contains("root-pw-for-snapshots"),
        "Debug of the rendered objects leaks a password"
    );
    // Only the apply step supplies credentials: `build` renders no Secret.
    let shop: Shop = serde_yaml::from_str(MANAGED).unwrap();
    assert!(
        build::build(&validate(&shop).unwrap())
            .store_secret
            .is_none()
    );
}

#[test]
fn shops_with_external_stores_render_no_store_objects() {
    let res = render(SAMPLE);
    assert!(res.stores.is_empty());
    assert!(res.store_secret.is_none());
    let zipkin_only = SAMPLE.replace(
        "    zipkin: {endpoint: \"http://zipkin.obs.svc:9411/api/v2/spans\"}\n",
        "",
    );
    let res = render_managed(&zipkin_only, &creds());
    let stores: Vec<Store> = res.stores.iter().map(|s| s.store).collect();
    assert_eq!(stores, vec![Store::Zipkin]);
    assert!(res.store_secret.is_none(), "Zipkin needs no credentials");
}
