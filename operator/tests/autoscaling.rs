//! `spec.components.<c>.autoscaling` against the REAL local control plane, whose
//! kube-controller-manager runs the real HorizontalPodAutoscaler controller: the operator creates
//! the HPA, the HPA (not the operator) sets the Deployment's count, the operator does not take
//! it back on later reconciles nor spend writes on it, a deleted HPA comes back, and dropping
//! the section deletes the HPA and hands the count back to `replicas`.
//!
//! There is no metrics-server on the local cluster, so the HPA never sees CPU: what moves the
//! count here is the HPA's own floor (`minReplicas` above the current count), which the
//! controller enforces before it reads any metric. Scaling on load needs metrics-server (CPU) or
//! a custom-metrics adapter (`metric`), as on any cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use shop_operator::Shop;

async fn replicas(client: &Client, ns: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()?
        .spec?
        .replicas
}

async fn hpa(client: &Client, ns: &str, name: &str) -> Option<HorizontalPodAutoscaler> {
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// Whether the operator's field manager owns `spec.replicas` of the Deployment.
async fn operator_owns_replicas(client: &Client, ns: &str, name: &str) -> bool {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(shop_operator::apply::FIELD_MANAGER)
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
    })
}

/// The status' `ready/desired` count of one component.
async fn status_desired(client: &Client, ns: &str, shop: &str, component: &str) -> Option<i32> {
    let s = Api::<Shop>::namespaced(client.clone(), ns)
        .get(shop)
        .await
        .ok()?;
    s.status?
        .components
        .into_iter()
        .find(|c| c.name == component)
        .map(|c| c.desired)
}

#[tokio::test]
async fn the_hpa_owns_the_count_the_operator_does_not_fight_it_and_hands_it_back() {
    let (client, ns) = setup("op-hpa-").await;
    let op = start_operator(&client, &ns.name);
    let shop = sample_shop(
        "scaly",
        "  components:\n    product:\n      replicas: 1\n      autoscaling: {minReplicas: 2, maxReplicas: 4, targetCPUUtilization: 60}\n",
    );
    create_shop(&client, &ns.name, &shop).await;
    let n = ns.name.clone();

    // The operator creates the HPA, aimed at the product Deployment.
    eventually(30, "the product HPA exists", || async {
        hpa(&client, &n, "scaly-product").await.is_some()
    })
    .await;
    let h = hpa(&client, &n, "scaly-product").await.unwrap();
    assert_eq!(h.spec.scale_target_ref.name, "scaly-product");
    assert_eq!((h.spec.min_replicas, h.spec.max_replicas), (Some(2), 4));
    assert!(
        h.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Shop" && o.name == "scaly" && o.controller == Some(true)),
        "the HPA is the Shop's child: {:?}",
        h.metadata.owner_references
    );
    assert!(
        hpa(&client, &n, "scaly-order").await.is_none(),
        "no HPA where none is asked for"
    );

    // The real HPA controller raises the count to its floor; the operator never applies one.
    eventually(90, "the HPA controller scales product to 2", || async {
        replicas(&client, &n, "scaly-product").await == Some(2)
    })
    .await;
    assert!(
        !operator_owns_replicas(&client, &n, "scaly-product").await,
        "the operator must not own spec.replicas of an autoscaled Deployment"
    );
    assert!(operator_owns_replicas(&client, &n, "scaly-order").await);
    eventually(30, "the status expects the HPA's count", || async {
        status_desired(&client, &n, "scaly", "product").await == Some(2)
    })
    .await;

    // Not fighting: the Deployment's status churn (pods created, ready) triggers reconciles, and
    // none of them writes the Deployment again or lowers the count.
    let deployment_writes = || op.counter("shop_operator_api_writes_total", "Deployment");
    let before = deployment_writes();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(replicas(&client, &n, "scaly-product").await, Some(2));
    assert_eq!(
        deployment_writes(),
        before,
        "the operator re-applied a Deployment although only the HPA changed it"
    );

    // A changed bound reaches the HPA.
    Api::<Shop>::namespaced(client.clone(), &n)
        .patch(
            "scaly",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"components": {"product": {"autoscaling": {"maxReplicas": 5}}}}}),
            ),
        )
        .await
        .unwrap();
    eventually(30, "the HPA's maximum follows the Shop", || async {
        hpa(&client, &n, "scaly-product")
            .await
            .is_some_and(|h| h.spec.max_replicas == 5)
    })
    .await;

    // A hand-deleted HPA comes back (owned watch).
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &n)
        .delete("scaly-product", &DeleteParams::default())
        .await
        .unwrap();
    eventually(30, "the deleted HPA is re-created", || async {
        hpa(&client, &n, "scaly-product")
            .await
            .is_some_and(|h| h.metadata.deletion_timestamp.is_none())
    })
    .await;

    // Dropping the section: the HPA goes and `replicas` (1) is the operator's again.
    Api::<Shop>::namespaced(client.clone(), &n)
        .patch(
            "scaly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"components": {"product": {"autoscaling": null}}}})),
        )
        .await
        .unwrap();
    eventually(
        30,
        "the HPA is deleted and the count is 1 again",
        || async {
            hpa(&client, &n, "scaly-product").await.is_none()
                && replicas(&client, &n, "scaly-product").await == Some(1)
        },
    )
    .await;
    assert!(operator_owns_replicas(&client, &n, "scaly-product").await);

    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn an_autoscaler_the_hpa_could_not_follow_is_refused_by_the_api_server() {
    let (client, ns) = setup("op-hpa-bad-").await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    for (section, message) in [
        (
            "{minReplicas: 5, maxReplicas: 2, targetCPUUtilization: 60}",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "{minReplicas: 1, maxReplicas: 2}",
            "autoscaling needs targetCPUUtilization or metric",
        ),
        (
            "{maxReplicas: 2, metric: {name: 'in flight', averageValue: '20'}}",
            "autoscaling.metric.name must be a Prometheus metric name",
        ),
        (
            "{maxReplicas: 2, metric: {name: inflight, averageValue: lots}}",
            "autoscaling.metric.averageValue must be a quantity",
        ),
    ] {
        let shop = sample_shop(
            "refused",
            &format!("  components:\n    order:\n      autoscaling: {section}\n"),
        );
        let e = shops
            .create(&Default::default(), &shop)
            .await
            .expect_err(section);
        let text = e.to_string();
        assert!(text.contains(message), "{section}: {text}");
    }
    ns.delete().await;
}
