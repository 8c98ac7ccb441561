//! `spec.faults` and the status file against the REAL local kube-apiserver: a Production Shop
//! is refused fault flags by the API server (CEL) unless it allows them; a Development Shop's
//! flags land in `<shop>-faults` as the services read them, are reported in `FaultsActive`, and
//! changing them changes that file only, never a pod template (nothing restarts). The Shop's
//! status is published to `<shop>-status` for the gateway's admin page. The services' side (the
//! flags acting on requests, the breaker opening) is tested in tests/e2e/tests/fault_flags.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use shop_operator::Shop;

async fn file(client: &Client, ns: &str, name: &str, key: &str) -> Option<Value> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()?;
    serde_json::from_str(cm.data?.get(key)?).ok()
}

async fn faults_condition(client: &Client, ns: &str, shop: &str) -> Option<(String, String)> {
    let s = Api::<Shop>::namespaced(client.clone(), ns)
        .get(shop)
        .await
        .ok()?;
    s.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "FaultsActive")
        .map(|c| (c.status, c.message))
}

async fn generation(client: &Client, ns: &str, name: &str) -> Option<i64> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()?
        .metadata
        .generation
}

#[tokio::test]
async fn fault_flags_reach_a_file_not_the_pods_and_production_refuses_them() {
    let (client, ns) = setup("op-faults-").await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);

    // A Production Shop (the default) is refused flags, naming the way out.
    let prod = sample_shop("prod", "  faults: {inventoryErrorRatio: 0.5}\n");
    let e = shops.create(&Default::default(), &prod).await.unwrap_err();
    assert!(
        e.to_string().contains("only a Development Shop")
            && e.to_string().contains("allowInProduction"),
        "{e}"
    );
    let e = shops
        .create(
            &Default::default(),
            &sample_shop(
                "ratio",
                "  environment: Development\n  faults: {inventoryErrorRatio: 1.5}\n",
            ),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("inventoryErrorRatio"), "{e}");

    let op = start_operator(&client, &ns.name);
    let shop = sample_shop(
        "drill",
        "  environment: Development\n  faults: {inventoryErrorRatio: 1, inventoryLatencyMs: 150}\n",
    );
    create_shop(&client, &ns.name, &shop).await;
    let n = ns.name.clone();
    eventually(30, "the flags are in drill-faults", || async {
        file(&client, &n, "drill-faults", "faults.json").await
            == Some(json!({"inventoryErrorRatio": 1.0, "inventoryLatencyMs": 150}))
    })
    .await;
    eventually(30, "FaultsActive names the flags", || async {
        faults_condition(&client, &n, "drill")
            .await
            .is_some_and(|(s, m)| s == "True" && m.contains("inventoryErrorRatio=1"))
    })
    .await;
    // The gateway's copy of the status follows the Shop's own.
    eventually(30, "drill-status holds the Shop's phase", || async {
        let Some(body) = file(&client, &n, "drill-status", "status.json").await else {
            return false;
        };
        let shop = shops.get("drill").await.unwrap();
        body["name"] == "drill"
            && body["status"]["phase"] == json!(shop.status.and_then(|s| s.phase))
    })
    .await;

    // Changing the flags changes the file and nothing the pods are made from.
    let before = generation(&client, &n, "drill-inventory").await.unwrap();
    shops
        .patch(
            "drill",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"faults": {"inventoryErrorRatio": null, "notificationConsumerPaused": true}}})),
        )
        .await
        .unwrap();
    eventually(30, "the new flags are in drill-faults", || async {
        file(&client, &n, "drill-faults", "faults.json").await
            == Some(json!({"inventoryLatencyMs": 150, "notificationConsumerPaused": true}))
    })
    .await;
    for c in ["inventory", "order", "notification", "gateway"] {
        let name = format!("drill-{c}");
        let g = generation(&client, &n, &name).await.unwrap();
        if c == "inventory" {
            assert_eq!(g, before, "a flag change rolled {name}");
        }
        let d = Api::<Deployment>::namespaced(client.clone(), &n)
            .get(&name)
            .await
            .unwrap();
        let vols = d.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        let want = if c == "gateway" {
            "drill-status"
        } else {
            "drill-faults"
        };
        assert!(
            vols.iter()
                .any(|v| v.config_map.as_ref().is_some_and(|cm| cm.name == want)),
            "{name} mounts {want}"
        );
    }

    // Dropping the section empties the file (still mounted) and the condition goes.
    shops
        .patch(
            "drill",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"faults": null}})),
        )
        .await
        .unwrap();
    eventually(30, "no flags and no FaultsActive", || async {
        file(&client, &n, "drill-faults", "faults.json").await == Some(json!({}))
            && faults_condition(&client, &n, "drill").await.is_none()
    })
    .await;
    assert_eq!(
        generation(&client, &n, "drill-inventory").await.unwrap(),
        before
    );

    op.stop().await;
    ns.delete().await;
}
