//! The operator against the REAL control plane of the local stack (kube-apiserver,
//! kube-controller-manager with its garbage collector, kube-scheduler, kwok making pods Ready):
//! a Shop's lifecycle — every child applied and Available, spec changes followed, children restored
//! and garbage-collected, a paused Shop left alone, no writes at rest or after a restart, the lease.
//! Refusals are in `cluster_refusals.rs`, stores and Secrets in `cluster_stores.rs`. Each test gets
//! its own namespace and its own in-process operator watching only it. Every Shop comes from
//! `common::sample_shop`, which places it on the tainted kwok node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use shop_operator::Shop;
use shop_operator::crd::Phase;

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

    // At rest, a reconcile reads the children from the watches' indexes, not the API server:
    // someone annotates the Shop (an event, a reconcile, nothing to do).
    let (store, list, reconciles) = (
        op.counter("shop_operator_observations_total", "source=\"store\""),
        op.counter("shop_operator_observations_total", "source=\"list\""),
        op.counter("shop_operator_reconciles_total", ""),
    );
    Api::<Shop>::namespaced(client.clone(), &ns.name)
        .patch(
            "steady",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"team": "ops"}}})),
        )
        .await
        .unwrap();
    let m = &op;
    eventually(10, "the annotation reconciled", || async move {
        m.counter("shop_operator_reconciles_total", "") > reconciles
    })
    .await;
    assert!(
        op.counter("shop_operator_observations_total", "source=\"store\"") > store,
        "the children were read from the indexes"
    );
    assert_eq!(
        op.counter("shop_operator_observations_total", "source=\"list\""),
        list,
        "nothing was listed"
    );
    let mut now = resource_versions(&client, &ns.name, "steady").await;
    let mut children = after.clone();
    // The Shop itself was annotated; its children are untouched.
    now.remove("Shop/steady");
    children.remove("Shop/steady");
    assert_eq!(children, now, "no child changed");
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
