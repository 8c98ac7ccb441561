//! The operator against the REAL control plane of the local stack: what is refused, and how the
//! user learns why — the API server's CEL messages, a spec the operator cannot build, an apply the
//! API server refuses (reported, retried with backoff, recovered), a nodePort outside the range,
//! contradictory backing. Each test gets its own namespace and in-process operator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use shop_operator::Shop;
use shop_operator::crd::Phase;

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
