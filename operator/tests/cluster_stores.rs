//! The operator against the REAL control plane of the local stack: a Shop's stores and Secrets —
//! an external store whose Secret is missing until it appears, managed stores under the restricted
//! Pod Security level keeping their credentials and data, a gateway TLS Secret named in the status
//! until it appears whole. Each test gets its own namespace and in-process operator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use shop_operator::Shop;
use shop_operator::crd::Phase;

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
