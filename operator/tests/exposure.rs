//! The gateway's Ingress and Gateway API HTTPRoute against the REAL local kube-apiserver: created
//! with what the Shop asks for, reported in the `Exposed` condition, deleted when the Shop drops
//! the section. The HTTPRoute test installs the Gateway API CRDs (standard channel, fetched by
//! `hack/tools.sh gateway-api-crds`, a test tool) first. "API missing" cannot be produced on a
//! cluster that has them (and Ingress is always served), so that case is covered by the pure
//! unit tests of `exposure::plan` and `status::exposure_condition`, where the discovered APIs
//! are an input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use shop_operator::Shop;
use shop_operator::exposure::HttpRoute;

/// The `Exposed` condition of a Shop: (status, reason, message).
async fn exposed(client: &Client, ns: &str, name: &str) -> Option<(String, String, String)> {
    let shop = Api::<Shop>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    shop.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Exposed")
        .map(|c| (c.status, c.reason, c.message))
}

async fn drop_gateway_section(client: &Client, ns: &str, name: &str, field: &str) {
    Api::<Shop>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"components": {"gateway": {field: null}}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_ingress_is_created_for_the_gateway_and_deleted_when_the_shop_drops_it() {
    let (client, ns) = setup("op-ingress-").await;
    let op = start_operator(&client, &ns.name);
    let shop = sample_shop(
        "mall",
        "  components:\n    gateway:\n      ingress: {className: nginx, host: shop.example.com, tlsSecretName: shop-tls}\n",
    );
    create_shop(&client, &ns.name, &shop).await;

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns.name);
    let (c, n) = (client.clone(), ns.name.clone());
    eventually(20, "Ingress mall-gateway and Exposed=True", || {
        let (c, n, i) = (c.clone(), n.clone(), ingresses.clone());
        async move {
            i.get_opt("mall-gateway").await.ok().flatten().is_some()
                && exposed(&c, &n, "mall").await.is_some_and(|e| e.0 == "True")
        }
    })
    .await;
    let ing = ingresses.get("mall-gateway").await.unwrap();
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("shop.example.com"));
    let path = &rule.http.as_ref().unwrap().paths[0];
    assert_eq!(
        (path.path.as_deref(), path.path_type.as_str()),
        (Some("/"), "Prefix")
    );
    let backend = path.backend.service.as_ref().unwrap();
    assert_eq!(backend.name, "mall-gateway");
    assert_eq!(backend.port.as_ref().unwrap().number, Some(8080));
    let tls = &spec.tls.unwrap()[0];
    assert_eq!(tls.secret_name.as_deref(), Some("shop-tls"));
    let owner = &ing.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Shop", Some(true))
    );
    let (_, reason, message) = exposed(&client, &ns.name, "mall").await.unwrap();
    assert_eq!(reason, "IngressReady");
    assert!(message.contains("https://shop.example.com/"), "{message}");

    // A hand-deleted Ingress comes back (owned watch).
    ingresses
        .delete("mall-gateway", &Default::default())
        .await
        .unwrap();
    eventually(20, "deleted Ingress restored", || {
        let i = ingresses.clone();
        async move { i.get_opt("mall-gateway").await.ok().flatten().is_some() }
    })
    .await;

    // The Shop drops the section: the Ingress goes, and so does the condition.
    drop_gateway_section(&client, &ns.name, "mall", "ingress").await;
    eventually(20, "Ingress deleted and Exposed gone", || {
        let (c, n, i) = (c.clone(), n.clone(), ingresses.clone());
        async move {
            i.get_opt("mall-gateway").await.ok().flatten().is_none()
                && exposed(&c, &n, "mall").await.is_none()
        }
    })
    .await;
    // Nothing else was touched: the gateway Service is still there.
    assert!(
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns.name)
            .get_opt("mall-gateway")
            .await
            .unwrap()
            .is_some()
    );
    op.stop().await;
    ns.delete().await;
}

/// Installs the Gateway API's HTTPRoute and Gateway CRDs (standard channel, from
/// `hack/tools.sh gateway-api-crds`) into the local API server.
async fn install_gateway_api(client: &Client) {
    let dir = tool_dir("gateway-api-crds");
    install_crds(
        client,
        &["httproutes", "gateways"]
            .map(|k| dir.join(format!("gateway.networking.k8s.io_{k}.yaml"))),
    )
    .await;
}

#[tokio::test]
async fn with_the_gateway_api_installed_an_http_route_is_created_and_removed_with_the_section() {
    let (client, ns) = setup("op-route-").await;
    install_gateway_api(&client).await;
    // Started after the CRDs exist: it discovers them and watches HTTPRoutes.
    let op = start_operator(&client, &ns.name);
    let shop = sample_shop(
        "mall",
        "  components:\n    gateway:\n      httpRoute: {parentRefs: [{name: public, namespace: infra, sectionName: http}], hostnames: [shop.example.com]}\n",
    );
    create_shop(&client, &ns.name, &shop).await;

    let routes: Api<HttpRoute> = Api::namespaced(client.clone(), &ns.name);
    let (c, n) = (client.clone(), ns.name.clone());
    eventually(20, "HTTPRoute mall-gateway and Exposed=True", || {
        let (c, n, r) = (c.clone(), n.clone(), routes.clone());
        async move {
            r.get_opt("mall-gateway").await.ok().flatten().is_some()
                && exposed(&c, &n, "mall").await.is_some_and(|e| e.0 == "True")
        }
    })
    .await;
    let route = routes.get("mall-gateway").await.unwrap();
    let parent = &route.spec.parent_refs[0];
    assert_eq!(
        (
            parent.name.as_str(),
            parent.namespace.as_deref(),
            parent.section_name.as_deref()
        ),
        ("public", Some("infra"), Some("http"))
    );
    assert_eq!(route.spec.hostnames, vec!["shop.example.com".to_string()]);
    let backend = &route.spec.rules[0].backend_refs[0];
    assert_eq!(
        (backend.name.as_str(), backend.port),
        ("mall-gateway", Some(8080))
    );
    let (_, reason, message) = exposed(&client, &ns.name, "mall").await.unwrap();
    assert_eq!(reason, "HTTPRouteReady");
    assert!(message.contains("Gateway infra/public"), "{message}");
    // No Ingress for a Shop asking for a route.
    assert!(
        Api::<Ingress>::namespaced(client.clone(), &ns.name)
            .get_opt("mall-gateway")
            .await
            .unwrap()
            .is_none()
    );

    drop_gateway_section(&client, &ns.name, "mall", "httpRoute").await;
    eventually(20, "HTTPRoute deleted and Exposed gone", || {
        let (c, n, r) = (c.clone(), n.clone(), routes.clone());
        async move {
            r.get_opt("mall-gateway").await.ok().flatten().is_none()
                && exposed(&c, &n, "mall").await.is_none()
        }
    })
    .await;
    op.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn the_api_server_refuses_a_bad_exposure_with_the_schema_message() {
    let client = client().await;
    ensure_crd(&client).await;
    let ns = TestNs::new(&client, "op-expcel-").await;
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    let refused = |gateway: &'static str| {
        let shops = shops.clone();
        async move {
            let shop = sample_shop("bad", &format!("  components:\n    gateway: {gateway}\n"));
            match shops.create(&Default::default(), &shop).await {
                Err(kube::Error::Api(e)) => e.message,
                other => panic!("expected a refusal for {gateway}, got {other:?}"),
            }
        }
    };
    let m = refused("{ingress: {host: ''}}").await;
    assert!(m.contains("gateway.ingress.host must not be empty"), "{m}");
    let m = refused("{ingress: {host: 'Not A Host'}}").await;
    assert!(m.contains("gateway.ingress.host must be a DNS name"), "{m}");
    let m = refused("{ingress: {host: a.example}, httpRoute: {parentRefs: [{name: gw}]}}").await;
    assert!(
        m.contains("gateway.ingress and gateway.httpRoute cannot both be set"),
        "{m}"
    );
    let m = refused("{enabled: false, ingress: {host: a.example}}").await;
    assert!(m.contains("need the gateway enabled"), "{m}");
    let m = refused("{httpRoute: {parentRefs: []}}").await;
    assert!(m.contains("parentRefs"), "{m}");
    ns.delete().await;
}
