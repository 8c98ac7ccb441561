//! The operator against the REAL control plane of the local stack (kube-apiserver,
//! kube-controller-manager with its garbage collector, kube-scheduler, kwok making pods Ready).
//! Each test gets its own namespace and its own in-process operator watching only it. Every Shop
//! comes from `common::sample_shop`, which places it on the tainted kwok node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use shop_operator::Shop;
use shop_operator::build::shop_selector;
use shop_operator::crd::Phase;

async fn count<K>(client: &Client, ns: &str, shop: &str) -> usize
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&shop_selector(shop)))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

#[tokio::test]
async fn applied_shop_gets_every_child_and_becomes_available() {
    let (client, ns) = setup("op-apply-").await;
    let op = start_operator(&client, &ns.name);
    let shop = sample_shop("mall", "  components:\n    gateway: {replicas: 2}\n");
    create_shop(&client, &ns.name, &shop).await;

    let n = ns.name.clone();
    eventually(
        20,
        "6 Deployments, 7 Services, 7 ConfigMaps (6 + faults), 6 SAs/NetworkPolicies, 1 PDB",
        || {
            let (c, n) = (client.clone(), n.clone());
            async move {
                count::<Deployment>(&c, &n, "mall").await == 6
                    && count::<Service>(&c, &n, "mall").await == 7
                    && count::<ConfigMap>(&c, &n, "mall").await == 7
                    && count::<ServiceAccount>(&c, &n, "mall").await == 6
                    && count::<NetworkPolicy>(&c, &n, "mall").await == 6
                    && count::<PodDisruptionBudget>(&c, &n, "mall").await == 1
            }
        },
    )
    .await;

    // The objects carry what the services need.
    let d = deployment(&client, &ns.name, "mall-order").await.unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/shops/shop-order:1.0.0")
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8082);
    assert!(c.env.as_ref().unwrap().iter().any(|e| e.name == "POD_IP"));
    let owner = &d.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Shop", Some(true))
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("mall-order")
        .await
        .unwrap();
    let data = cm.data.unwrap();
    assert_eq!(
        data["SHOP_REGISTRY_URL"],
        format!("http://mall-registry.{}.svc:8761/eureka", ns.name)
    );
    assert_eq!(data["SHOP_PORT"], "8082");
    let peers = Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("mall-registry-peers")
        .await
        .unwrap();
    assert_eq!(peers.spec.unwrap().cluster_ip.as_deref(), Some("None"));

    // spec.placement reached every pod template, so the scheduler put every pod on kwok.
    assert_eq!(
        pod.node_selector.as_ref().map(|s| s["type"].as_str()),
        Some("kwok")
    );
    let n = ns.name.clone();
    eventually(20, "7 pods scheduled, all on the kwok node", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            let pods = Api::<Pod>::namespaced(c, &n)
                .list(&ListParams::default().labels("app.kubernetes.io/instance=mall"))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            pods.len() == 7
                && pods.iter().all(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("kwok-node-0")
                })
        }
    })
    .await;

    // kwok makes the pods Ready; the Shop reports Available with the right generation.
    let n = ns.name.clone();
    eventually(25, "Shop phase Available", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "mall").await.as_deref() == Some("Available") }
    })
    .await;
    let s = Api::<Shop>::namespaced(client.clone(), &ns.name)
        .get("mall")
        .await
        .unwrap();
    let st = s.status.unwrap();
    assert_eq!(st.observed_generation, s.metadata.generation);
    assert_eq!(st.ready_components.as_deref(), Some("6/6"));
    let avail = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(avail.status, "True");
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.status, "False");
    let gw = st.components.iter().find(|c| c.name == "gateway").unwrap();
    assert_eq!((gw.desired, gw.ready), (2, 2));

    // An Event tells what happened.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &ns.name);
    let n = ns.name.clone();
    eventually(10, "an Available event for the Shop", || {
        let events = events.clone();
        let _ = &n;
        async move {
            events
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .any(|e| e.reason.as_deref() == Some("Available"))
                })
                .unwrap_or(false)
        }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn spec_changes_are_followed_and_disabled_components_removed() {
    let (client, ns) = setup("op-change-").await;
    let op = start_operator(&client, &ns.name);
    create_shop(&client, &ns.name, &sample_shop("deli", "")).await;
    let n = ns.name.clone();
    eventually(20, "6 Deployments", || {
        let (c, n) = (client.clone(), n.clone());
        async move { count::<Deployment>(&c, &n, "deli").await == 6 }
    })
    .await;

    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"spec": {"image": {"tag": "2.0.0"}, "components": {"product": {"replicas": 3}, "notification": {"enabled": false}}}});
    shops
        .patch("deli", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    let n = ns.name.clone();
    eventually(
        20,
        "product at 3 replicas with the 2.0.0 image, notification gone, product PDB",
        || {
            let (c, n) = (client.clone(), n.clone());
            async move {
                let Some(p) = deployment(&c, &n, "deli-product").await else {
                    return false;
                };
                let spec = p.spec.unwrap();
                let image = spec.template.spec.unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default();
                spec.replicas == Some(3)
                    && image == "registry.example/shops/shop-product:2.0.0"
                    && deployment(&c, &n, "deli-notification").await.is_none()
                    && Api::<ConfigMap>::namespaced(c.clone(), &n)
                        .get_opt("deli-notification")
                        .await
                        .unwrap()
                        .is_none()
                    && Api::<Service>::namespaced(c.clone(), &n)
                        .get_opt("deli-notification")
                        .await
                        .unwrap()
                        .is_none()
                    && Api::<NetworkPolicy>::namespaced(c.clone(), &n)
                        .get_opt("deli-notification")
                        .await
                        .unwrap()
                        .is_none()
                    && Api::<ServiceAccount>::namespaced(c.clone(), &n)
                        .get_opt("deli-notification")
                        .await
                        .unwrap()
                        .is_none()
                    && Api::<PodDisruptionBudget>::namespaced(c.clone(), &n)
                        .get_opt("deli-product")
                        .await
                        .unwrap()
                        .is_some()
            }
        },
    )
    .await;
    let n = ns.name.clone();
    eventually(25, "Available with 5/5 after the change", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            let s = Api::<Shop>::namespaced(c, &n).get("deli").await.unwrap();
            let st = s.status.unwrap_or_default();
            st.phase == Some(Phase::Available)
                && st.ready_components.as_deref() == Some("5/5")
                && st.observed_generation == s.metadata.generation
        }
    })
    .await;
    // Back to one replica: the PDB goes away.
    shops
        .patch(
            "deli",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"components": {"product": {"replicas": 1}}}})),
        )
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(20, "product PDB removed at 1 replica", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            Api::<PodDisruptionBudget>::namespaced(c, &n)
                .get_opt("deli-product")
                .await
                .unwrap()
                .is_none()
        }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn deleted_or_hand_edited_children_are_restored() {
    let (client, ns) = setup("op-heal-").await;
    let op = start_operator(&client, &ns.name);
    create_shop(&client, &ns.name, &sample_shop("kiosk", "")).await;
    let n = ns.name.clone();
    eventually(20, "inventory Deployment exists", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            deployment(&c, &n, "kiosk-inventory").await.is_some()
                && count::<Service>(&c, &n, "kiosk").await == 7
        }
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let old_uid = deployments.get("kiosk-inventory").await.unwrap().uid();
    deployments
        .delete("kiosk-inventory", &DeleteParams::foreground())
        .await
        .unwrap();

    // A hand edit by someone else (another field manager, forced) of fields the operator owns.
    let edit = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}});
    deployments
        .patch(
            "kiosk-product",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(&edit),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    services
        .delete("kiosk-order", &DeleteParams::default())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.patch(
        "kiosk-order",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"SHOP_PORT": "9999"}})),
    )
    .await
    .unwrap();

    let n = ns.name.clone();
    eventually(
        20,
        "inventory re-created, product back to 1 replica, order Service and config restored",
        || {
            let (c, n, old_uid) = (client.clone(), n.clone(), old_uid.clone());
            async move {
                let inv = deployment(&c, &n, "kiosk-inventory").await;
                let recreated = inv
                    .is_some_and(|d| d.uid() != old_uid && d.metadata.deletion_timestamp.is_none());
                let product = deployment(&c, &n, "kiosk-product")
                    .await
                    .and_then(|d| d.spec?.replicas);
                let svc = Api::<Service>::namespaced(c.clone(), &n)
                    .get_opt("kiosk-order")
                    .await
                    .unwrap()
                    .is_some();
                let port = Api::<ConfigMap>::namespaced(c.clone(), &n)
                    .get("kiosk-order")
                    .await
                    .unwrap()
                    .data
                    .unwrap()["SHOP_PORT"]
                    .clone();
                recreated && product == Some(1) && svc && port == "8082"
            }
        },
    )
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn deleting_the_shop_garbage_collects_every_child() {
    let (client, ns) = setup("op-gc-").await;
    let op = start_operator(&client, &ns.name);
    create_shop(
        &client,
        &ns.name,
        &sample_shop("popup", "  components:\n    registry: {replicas: 2}\n"),
    )
    .await;
    let n = ns.name.clone();
    eventually(20, "all children", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            count::<Deployment>(&c, &n, "popup").await == 6
                && count::<PodDisruptionBudget>(&c, &n, "popup").await == 1
        }
    })
    .await;
    Api::<Shop>::namespaced(client.clone(), &ns.name)
        .delete("popup", &DeleteParams::background())
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(
        25,
        "every child garbage-collected by the controller-manager",
        || {
            let (c, n) = (client.clone(), n.clone());
            async move {
                count::<Deployment>(&c, &n, "popup").await
                    + count::<Service>(&c, &n, "popup").await
                    + count::<ConfigMap>(&c, &n, "popup").await
                    + count::<ServiceAccount>(&c, &n, "popup").await
                    + count::<NetworkPolicy>(&c, &n, "popup").await
                    + count::<PodDisruptionBudget>(&c, &n, "popup").await
                    == 0
            }
        },
    )
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn invalid_shops_are_refused_by_the_api_server_with_the_cel_message() {
    let (client, ns) = setup("op-cel-").await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    let mut bad = sample_shop("bad", "  components:\n    order: {replicas: -1}\n");
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.components.order.replicas")
            && err.contains("greater than or equal to 0"),
        "{err}"
    );

    bad = sample_shop("bad", "  components:\n    product: {image: \"\"}\n");
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image override must be a non-empty image reference"),
        "{err}"
    );

    bad = sample_shop("bad", "");
    bad.spec.image.repository = "  ".into();
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("image.repository must not be empty"), "{err}");

    bad = sample_shop(&"x".repeat(49), "");
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 48 characters"), "{err}");

    bad = sample_shop("bad", "  components:\n    gateway: {jwt: {issuer: me}}\n");
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("jwt needs exactly one of secretRef"), "{err}");

    bad = sample_shop(
        "bad",
        "  components:\n    gateway: {tls: {secretName: 'Shop Cert'}}\n",
    );
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gateway.tls.secretName must be a Secret name"),
        "{err}"
    );

    // spec.placement: what the pod template would refuse is refused with the Shop's field path.
    for (placement, expected) in [
        (
            "{tolerations: [{operator: Equal, value: x}]}",
            "a toleration without a key must use operator Exists",
        ),
        (
            "{tolerations: [{key: a, operator: Exists, value: x}]}",
            "a toleration with operator Exists must not have a value",
        ),
        (
            "{tolerations: [{key: a, operator: Exists, effect: NoSchedule, tolerationSeconds: 5}]}",
            "tolerationSeconds needs effect NoExecute",
        ),
        (
            "{tolerations: [{key: 'a b', operator: Exists}]}",
            "toleration key must be a label key",
        ),
        (
            "{nodeSelector: {'-pool': a}}",
            "placement.nodeSelector keys must be label keys",
        ),
        (
            "{nodeSelector: {pool: 'a b'}}",
            "placement.nodeSelector values must be label values",
        ),
    ] {
        bad = sample_shop("bad", &format!("  placement: {placement}\n"));
        let err = shops
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{placement}: {err}");
    }
    // An operator the Rust type cannot even hold, sent as raw JSON: the schema's enum refuses it.
    let mut raw = serde_json::to_value(sample_shop("bad", "")).unwrap();
    raw["spec"]["placement"]["tolerations"][0]["operator"] = json!("In");
    let err = shops
        .patch(
            "bad",
            &PatchParams::apply("shop-operator-tests"),
            &Patch::Apply(&raw),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.placement.tolerations[0].operator: Unsupported value: \"In\""),
        "{err}"
    );
    bad = sample_shop("bad", "  components:\n    gateway: {nodePort: 0}\n");
    let err = shops
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.components.gateway.nodePort")
            && err.contains("greater than or equal to 1"),
        "{err}"
    );

    assert!(
        shops
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing half-created"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_spec_the_operator_cannot_build_is_reported_and_other_shops_still_reconcile() {
    let (client, ns) = setup("op-invalid-").await;
    let op = start_operator(&client, &ns.name);
    // Valid for the API server (CEL cannot compare list items), but order's env has a
    // variable twice.
    let broken = sample_shop(
        "broken",
        "  components:\n    order:\n      env: [{name: A, value: '1'}, {name: A, value: '2'}]\n",
    );
    create_shop(&client, &ns.name, &broken).await;
    create_shop(&client, &ns.name, &sample_shop("fine", "")).await;
    let n = ns.name.clone();
    eventually(
        25,
        "broken is Invalid with a Degraded condition naming the field; fine is Available",
        || {
            let (c, n) = (client.clone(), n.clone());
            async move {
                let s = Api::<Shop>::namespaced(c.clone(), &n)
                    .get("broken")
                    .await
                    .unwrap()
                    .status
                    .unwrap_or_default();
                let degraded = s.conditions.iter().any(|c| {
                    c.type_ == "Degraded"
                        && c.status == "True"
                        && c.message
                            .contains("spec.components.order.env has \"A\" more than once")
                });
                s.phase == Some(Phase::Invalid)
                    && degraded
                    && shop_phase(&c, &n, "fine").await.as_deref() == Some("Available")
            }
        },
    )
    .await;
    assert_eq!(
        count::<Deployment>(&client, &ns.name, "broken").await,
        0,
        "nothing half-applied for an invalid spec"
    );
    // Fixing the spec brings it up.
    Api::<Shop>::namespaced(client.clone(), &ns.name)
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"components": {"order": {"env": [{"name": "A", "value": "1"}]}}}}),
            ),
        )
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(25, "fixed Shop becomes Available", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "broken").await.as_deref() == Some("Available") }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn a_paused_shop_is_left_alone() {
    let (client, ns) = setup("op-pause-").await;
    let op = start_operator(&client, &ns.name);
    create_shop(&client, &ns.name, &sample_shop("quiet", "  paused: true\n")).await;
    let n = ns.name.clone();
    eventually(15, "phase Paused", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "quiet").await.as_deref() == Some("Paused") }
    })
    .await;
    assert_eq!(count::<Deployment>(&client, &ns.name, "quiet").await, 0);
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing() {
    let (client, ns) = setup("op-restart-").await;
    let op = start_operator(&client, &ns.name);
    create_shop(
        &client,
        &ns.name,
        &sample_shop("steady", "  components:\n    order: {replicas: 2}\n"),
    )
    .await;
    let n = ns.name.clone();
    eventually(30, "Available", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "steady").await.as_deref() == Some("Available") }
    })
    .await;
    // Let trailing watch events settle, then snapshot every resourceVersion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = resource_versions(&client, &ns.name, "steady").await;
    op.stop().await;

    let op = start_operator(&client, &ns.name);
    let n = ns.name.clone();
    let m = &op;
    eventually(15, "the new operator reconciled the Shop", || {
        let _ = &n;
        async move { m.counter("shop_operator_reconciles_total", "") >= 1.0 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = resource_versions(&client, &ns.name, "steady").await;
    // Services, ConfigMaps/SAs/NetworkPolicies per component, Deployments, the faults ConfigMap,
    // the PDB, the Shop.
    assert_eq!(before.len(), 7 + 6 * 3 + 6 + 1 + 1 + 1, "{before:?}");
    assert_eq!(before, after, "a restart must not change any object");
    assert_eq!(
        op.counter("shop_operator_api_writes_total", "verb=\"status\""),
        0.0,
        "no status write"
    );
    assert_eq!(
        op.counter("shop_operator_api_writes_total", "verb=\"delete\""),
        0.0,
        "no delete"
    );
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    use shop_operator::lease::LeaseSettings;
    use std::sync::atomic::Ordering;
    let (client, ns) = setup("op-lease-").await;
    let with_lease = |identity: &str| {
        let mut s = test_settings(&ns.name);
        s.lease = Some(LeaseSettings {
            name: "shop-operator".into(),
            namespace: ns.name.clone(),
            identity: identity.into(),
            duration: Duration::from_secs(4),
            renew_every: Duration::from_millis(500),
        });
        s
    };
    let a = start_operator_with(&client, with_lease("a"));
    let a_ready = a.ready.clone();
    eventually(10, "a becomes leader", || {
        let r = a_ready.clone();
        async move { r.load(Ordering::Relaxed) }
    })
    .await;
    let b = start_operator_with(&client, with_lease("b"));
    create_shop(&client, &ns.name, &sample_shop("duo", "")).await;
    let n = ns.name.clone();
    eventually(25, "Available (reconciled by a)", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "duo").await.as_deref() == Some("Available") }
    })
    .await;
    assert!(
        !b.ready.load(Ordering::Relaxed),
        "the standby must not reconcile"
    );
    assert_eq!(b.counter("shop_operator_reconciles_total", ""), 0.0);

    // The leader stops (releasing the Lease); the standby takes over and follows a change.
    a.stop().await;
    let b_ready = b.ready.clone();
    eventually(10, "b becomes leader", || {
        let r = b_ready.clone();
        async move { r.load(Ordering::Relaxed) }
    })
    .await;
    Api::<Shop>::namespaced(client.clone(), &ns.name)
        .patch(
            "duo",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"components": {"order": {"replicas": 2}}}})),
        )
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(20, "order scaled to 2 by the new leader", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            deployment(&c, &n, "duo-order")
                .await
                .and_then(|d| d.spec?.replicas)
                == Some(2)
        }
    })
    .await;
    b.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn foreign_annotations_cost_no_writes_but_a_removed_label_is_restored() {
    let (client, ns) = setup("op-quiet-").await;
    let op = start_operator(&client, &ns.name);
    create_shop(&client, &ns.name, &sample_shop("calm", "")).await;
    let n = ns.name.clone();
    eventually(30, "Available", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "calm").await.as_deref() == Some("Available") }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = op.counter("shop_operator_api_writes_total", "verb=\"apply\"");
    let reconciles = op.counter("shop_operator_reconciles_total", "");
    // Someone else annotates a Deployment: a watch event, a reconcile, but nothing to write.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .patch(
            "calm-product",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"team": "catalog"}}})),
        )
        .await
        .unwrap();
    let m = &op;
    eventually(10, "the annotation triggered a reconcile", || async move {
        m.counter("shop_operator_reconciles_total", "") > reconciles
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // (The Deployment's generation moves with its annotations, so status may flip to
    // Progressing and back while the Deployment controller catches up; children are not touched.)
    assert_eq!(
        op.counter("shop_operator_api_writes_total", "verb=\"apply\""),
        writes,
        "an unrelated change must not re-apply children"
    );

    // Removing one of the operator's labels (no generation bump) is still noticed and undone.
    deployments
        .patch(
            "calm-product",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app.kubernetes.io/part-of": null}}})),
        )
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(15, "label restored", || {
        let (c, n) = (client.clone(), n.clone());
        async move {
            deployment(&c, &n, "calm-product").await.is_some_and(|d| {
                d.labels()
                    .get("app.kubernetes.io/part-of")
                    .map(String::as_str)
                    == Some("shopkeeper")
            })
        }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

/// Waits until Shop `name` is `Degraded` with reason `ApplyFailed`, its message passing
/// `message`, and the operator has counted at least two failed applies (it retries).
async fn wait_apply_failed(
    client: &Client,
    ns: &str,
    name: &str,
    op: &common::RunningOperator,
    secs: u64,
    what: &str,
    message: impl Fn(&str) -> bool,
) {
    let message = &message;
    eventually(secs, what, || {
        let (c, n) = (client.clone(), ns.to_owned());
        async move {
            let s = Api::<Shop>::namespaced(c, &n)
                .get(name)
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            let degraded = s.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && c.reason == "ApplyFailed"
                    && message(&c.message)
            });
            degraded
                && s.phase == Some(Phase::Degraded)
                && op.counter("shop_operator_reconcile_failures_total", "reason=\"apply\"") >= 2.0
        }
    })
    .await;
}

#[tokio::test]
async fn a_failing_apply_is_reported_retried_with_backoff_and_recovers() {
    let (client, ns) = setup("op-fail-").await;
    // Hold a node port with a foreign Service so the registry's Service cannot get it.
    let port = 30000
        + (u32::from_str_radix(&shop_testkit::fresh_name("")[..4], 16).unwrap() % 2700) as i32;
    let blocker: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "blocker"},
        "spec": {"type": "NodePort", "selector": {"x": "y"}, "ports": [{"port": 1, "nodePort": port}]}
    }))
    .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    services
        .create(&PostParams::default(), &blocker)
        .await
        .unwrap();
    let op = start_operator(&client, &ns.name);
    create_shop(
        &client,
        &ns.name,
        &sample_shop(
            "stuck",
            &format!("  components:\n    registry: {{nodePort: {port}}}\n"),
        ),
    )
    .await;
    wait_apply_failed(
        &client,
        &ns.name,
        "stuck",
        &op,
        20,
        "Degraded with the API server's message, retried",
        |m| m.contains("stuck-registry"),
    )
    .await;
    // Nothing after the registry stage was applied.
    assert!(
        deployment(&client, &ns.name, "stuck-gateway")
            .await
            .is_none()
    );
    services
        .delete("blocker", &DeleteParams::default())
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(25, "recovered to Available once the port is free", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "stuck").await.as_deref() == Some("Available") }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn a_node_port_outside_the_clusters_range_is_reported_naming_the_field() {
    let (client, ns) = setup("op-nodeport-").await;
    let op = start_operator(&client, &ns.name);
    // The schema takes any TCP port; only the API server knows its --service-node-port-range
    // (8000-32767 on the local cluster, 30000-32767 by default), and 1 is outside every range.
    create_shop(
        &client,
        &ns.name,
        &sample_shop("edge", "  components:\n    gateway: {nodePort: 1}\n"),
    )
    .await;
    wait_apply_failed(
        &client,
        &ns.name,
        "edge",
        &op,
        25,
        "Degraded, the message naming spec.components.gateway.nodePort and the valid range",
        |m| {
            m.starts_with("spec.components.gateway.nodePort 1 was refused by the API server: ")
                && m.contains("range of valid ports")
        },
    )
    .await;
    let s = Api::<Shop>::namespaced(client.clone(), &ns.name)
        .get("edge")
        .await
        .unwrap();
    let message = &s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(
        !message.contains("Status {"),
        "the API server's message, not a debug dump: {message}"
    );
    // The components before the gateway were applied; the gateway's Service was not created.
    assert!(deployment(&client, &ns.name, "edge-order").await.is_some());
    assert!(
        Api::<Service>::namespaced(client.clone(), &ns.name)
            .get_opt("edge-gateway")
            .await
            .unwrap()
            .is_none()
    );
    // Dropping the fixed port fixes it.
    Api::<Shop>::namespaced(client.clone(), &ns.name)
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"components": {"gateway": {"nodePort": null}}}})),
        )
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(25, "Available once the node port is gone", || {
        let (c, n) = (client.clone(), n.clone());
        async move { shop_phase(&c, &n, "edge").await.as_deref() == Some("Available") }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

/// A Shop with the given `spec.backing` (YAML lines indented four spaces), on the kwok node.
fn shop_with_backing(name: &str, backing: &str) -> Shop {
    let yaml = format!(
        "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {{name: {name}}}\nspec:\n  image: {{repository: registry.example/shops, tag: \"1.0.0\"}}\n  backing:\n{backing}"
    );
    let mut shop: Shop = serde_yaml::from_str(&yaml).unwrap();
    shop.spec.placement = shop_operator::crd::PlacementSpec::kwok();
    shop
}

fn condition(
    shop: &Shop,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    shop.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

#[tokio::test]
async fn contradictory_backing_is_refused_by_the_api_server_naming_the_field() {
    let (client, ns) = setup("op-cel-backing-").await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    for (backing, field, message) in [
        (
            "    mysql: {mode: managed, urlSecretRef: {name: db, key: url}}\n",
            "spec.backing.mysql",
            "urlSecretRef cannot be combined with mode: managed",
        ),
        (
            "    mongodb: {mode: external}\n",
            "spec.backing.mongodb",
            "mode: external needs urlSecretRef",
        ),
        (
            "    kafka: {bootstrapServers: 'k:9092', image: 'x/kafka:1'}\n",
            "spec.backing.kafka",
            "only apply to mode: managed",
        ),
        (
            "    zipkin: {storage: {size: 1Gi}}\n",
            "spec.backing.zipkin.storage",
            "zipkin.storage is not supported",
        ),
        (
            "    zipkin: {mode: external}\n",
            "spec.backing.zipkin",
            "mode: external needs endpoint",
        ),
    ] {
        let err = shops
            .create(&PostParams::default(), &shop_with_backing("bad", backing))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains(message),
            "{backing}: {err}"
        );
    }
    // A Shop written before the modes existed is still accepted unchanged.
    shops
        .create(&PostParams::default(), &sample_shop("legacy", ""))
        .await
        .unwrap();
    ns.delete().await;
}

#[tokio::test]
async fn an_external_store_whose_secret_is_missing_is_reported_and_recovers_when_it_appears() {
    let (client, ns) = setup("op-secret-").await;
    let op = start_operator(&client, &ns.name);
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    // Created directly: `create_shop` would create the Secrets.
    shops
        .create(&PostParams::default(), &sample_shop("wait", ""))
        .await
        .unwrap();
    let n = ns.name.clone();
    eventually(
        25,
        "Degraded with MysqlReady=False SecretMissing naming db",
        || {
            let (shops, _n) = (shops.clone(), n.clone());
            async move {
                let s = shops.get("wait").await.unwrap();
                let mysql = condition(&s, "MysqlReady");
                s.status.as_ref().and_then(|s| s.phase) == Some(Phase::Degraded)
                    && mysql.is_some_and(|c| {
                        c.status == "False"
                            && c.reason == "SecretMissing"
                            && c.message.contains("\"db\"")
                            && c.message.contains("spec.backing.mysql.urlSecretRef")
                    })
            }
        },
    )
    .await;
    ensure_secret(&client, &ns.name, "db", &["url"]).await;
    ensure_secret(&client, &ns.name, "mongo", &["url"]).await;
    eventually(
        25,
        "Available once the Secrets exist (no edit of the Shop)",
        || {
            let (c, n) = (client.clone(), n.clone());
            async move { shop_phase(&c, &n, "wait").await.as_deref() == Some("Available") }
        },
    )
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn managed_stores_are_applied_under_restricted_keep_their_credentials_and_their_data() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
    let (client, ns) = setup("op-stores-").await;
    // The namespace enforces the restricted Pod Security Standard: a store pod that breaks it
    // is never created.
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await
        .unwrap();
    let op = start_operator(&client, &ns.name);
    // MySQL managed; the others external so that only MySQL needs a volume.
    let shop = shop_with_backing(
        "own",
        "    mysql: {mode: managed}\n    mongodb: {urlSecretRef: {name: mongo, key: url}}\n    kafka: {bootstrapServers: 'k:9092'}\n    zipkin: {mode: managed}\n",
    );
    create_shop(&client, &ns.name, &shop).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let n = ns.name.clone();
    eventually(
        30,
        "StatefulSets, Services and the stores Secret exist",
        || {
            let (sets, secrets, c, n) = (sets.clone(), secrets.clone(), client.clone(), n.clone());
            async move {
                sets.get_opt("own-mysql").await.unwrap().is_some()
                    && sets.get_opt("own-zipkin").await.unwrap().is_some()
                    && secrets.get_opt("own-stores").await.unwrap().is_some()
                    && Api::<Service>::namespaced(c, &n)
                        .get_opt("own-mysql")
                        .await
                        .unwrap()
                        .is_some()
            }
        },
    )
    .await;
    // Zipkin has no volume: its pod runs on kwok (so it passed restricted admission) and the
    // Shop reports ZipkinReady.
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    eventually(30, "own-zipkin-0 admitted and ZipkinReady=True", || {
        let (pods, shops) = (pods.clone(), shops.clone());
        async move {
            pods.get_opt("own-zipkin-0").await.unwrap().is_some()
                && condition(&shops.get("own").await.unwrap(), "ZipkinReady")
                    .is_some_and(|c| c.status == "True")
        }
    })
    .await;
    let s = shops.get("own").await.unwrap();
    assert!(
        condition(&s, "MysqlReady").is_some(),
        "one condition per store in use"
    );
    let password = |s: &Secret| s.data.as_ref().unwrap()["mysql-password"].0.clone();
    let first = secrets.get("own-stores").await.unwrap();
    assert!(
        first.metadata.owner_references.is_none(),
        "credentials of kept data outlive the Shop"
    );
    // Another reconcile (a spec change) never rotates the credentials.
    shops
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"components": {"order": {"replicas": 2}}}})),
        )
        .await
        .unwrap();
    let n2 = ns.name.clone();
    eventually(20, "order scaled", || {
        let (c, n) = (client.clone(), n2.clone());
        async move {
            Api::<Deployment>::namespaced(c, &n)
                .get("own-order")
                .await
                .ok()
                .and_then(|d| d.spec?.replicas)
                == Some(2)
        }
    })
    .await;
    assert_eq!(
        password(&secrets.get("own-stores").await.unwrap()),
        password(&first)
    );
    // The StatefulSet controller made the volume claim; switching MySQL to external deletes
    // the StatefulSet and keeps the claim and the credentials.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    eventually(20, "the claim data-own-mysql-0 exists", || {
        let pvcs = pvcs.clone();
        async move { pvcs.get_opt("data-own-mysql-0").await.unwrap().is_some() }
    })
    .await;
    ensure_secret(&client, &ns.name, "db", &["url"]).await;
    shops
        .patch(
            "own",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"backing": {"mysql": {
                "mode": "external", "urlSecretRef": {"name": "db", "key": "url"}}}}})),
        )
        .await
        .unwrap();
    eventually(20, "own-mysql StatefulSet deleted", || {
        let sets = sets.clone();
        async move { sets.get_opt("own-mysql").await.unwrap().is_none() }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pvcs.get_opt("data-own-mysql-0").await.unwrap().is_some(),
        "keepData (default true): the volume stays"
    );
    assert_eq!(
        password(&secrets.get("own-stores").await.unwrap()),
        password(&first),
        "the credentials the kept volume was initialised with stay too"
    );
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn a_missing_gateway_tls_secret_is_named_in_the_status_until_it_appears_whole() {
    use k8s_openapi::api::core::v1::Secret;
    let (client, ns) = setup("op-tls-").await;
    let op = start_operator(&client, &ns.name);
    let shop = sample_shop(
        "tls",
        "  components:\n    gateway: {tls: {secretName: shop-cert}}\n",
    );
    create_shop(&client, &ns.name, &shop).await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    let tls_condition = |reason: &'static str, status: &'static str| {
        let shops = shops.clone();
        move || {
            let shops = shops.clone();
            async move {
                let s = shops.get("tls").await.unwrap();
                condition(&s, "GatewayTlsReady").is_some_and(|c| {
                    c.status == status && c.reason == reason && c.message.contains("\"shop-cert\"")
                })
            }
        }
    };
    eventually(
        25,
        "GatewayTlsReady=False SecretMissing naming shop-cert",
        tls_condition("SecretMissing", "False"),
    )
    .await;
    let s = shops.get("tls").await.unwrap();
    assert!(
        condition(&s, "GatewayTlsReady")
            .unwrap()
            .message
            .contains("spec.components.gateway.tls.secretName"),
        "the message names the field"
    );

    // Half a certificate: named as such.
    ensure_secret(&client, &ns.name, "shop-cert", &["tls.crt"]).await;
    eventually(
        25,
        "GatewayTlsReady=False SecretKeyMissing",
        tls_condition("SecretKeyMissing", "False"),
    )
    .await;

    // The whole Secret: found, without an edit of the Shop.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .delete("shop-cert", &Default::default())
        .await
        .unwrap();
    ensure_secret(&client, &ns.name, "shop-cert", &["tls.crt", "tls.key"]).await;
    eventually(
        25,
        "GatewayTlsReady=True SecretFound",
        tls_condition("SecretFound", "True"),
    )
    .await;
    op.stop().await;
    ns.delete().await;
}
