//! The Helm chart with the real helm binary (built by `hack/stack.sh up`): lint, render, install
//! into the real control plane, and the real `shop-operator` binary running with the chart's RBAC.
//!
//! The chart's pods are placed on the kwok fake node (`common::kwok_helm_values`), which runs no
//! containers, so the chart's operator pod never executes. The test therefore runs
//! the operator binary on the host *as the chart's ServiceAccount*: it asks the TokenRequest API
//! for a token of `<release>-shopkeeper` and hands the binary a kubeconfig with that token. Every
//! API call the operator makes is then authorised by exactly the chart's ClusterRole.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;
use shop_operator::Shop;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/shopkeeper")
}

fn helm(args: &[&str]) -> Output {
    let bin = shop_testkit::helm_path();
    Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", shop_testkit::kubeconfig_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm at {}: {e}", bin.display()))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn helm_lint_is_clean_and_the_schema_refuses_two_replicas_without_leader_election() {
    let c = chart();
    let c = c.to_str().unwrap();
    for extra in [
        vec![],
        vec!["--set", "replicaCount=2,leaderElection.enabled=true"],
        vec![
            "--set",
            "watchNamespace=shops,sampleShop.enabled=true,crds.install=false",
        ],
    ] {
        let mut args = vec!["lint", "--strict", c];
        args.extend(extra.iter().copied());
        let o = helm(&args);
        let out = text(&o);
        assert!(
            o.status.success() && !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm {args:?}:\n{out}"
        );
    }
    let o = helm(&["lint", c, "--set", "replicaCount=2"]);
    assert!(
        !o.status.success(),
        "two replicas without leader election must be refused"
    );
    assert!(text(&o).contains("leaderElection/enabled"), "{}", text(&o));
}

#[test]
fn rendered_chart_carries_the_generated_crd_and_every_rbac_rule_is_commented() {
    let c = chart();
    let o = helm(&[
        "template",
        "r1",
        c.to_str().unwrap(),
        "--kube-version",
        "1.36.0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let docs: Vec<serde_json::Value> =
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&o.stdout))
            .filter_map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).ok()?).ok())
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect();
    let crd = docs
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .expect("CRD rendered");
    let generated = serde_json::to_value(Shop::crd()).unwrap();
    assert!(
        normalize(&crd["spec"]) == normalize(&generated["spec"]),
        "the chart's CRD differs from the code"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole when watching all namespaces");
    // Secrets: the operator reads them by name only (its `<shop>-stores` credentials, and the
    // existence of an external store's urlSecretRef). A list or watch would hand it every
    // Secret's value in scope, and delete could destroy credentials of kept volumes.
    let secret_verbs: Vec<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "secrets" || x == "*")
        })
        .flat_map(|r| r["verbs"].as_array().unwrap().iter())
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        secret_verbs,
        vec!["get", "create", "patch"],
        "Secrets by name only: never list, watch or delete"
    );
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deploy["spec"]["strategy"]["type"], "Recreate",
        "one replica without election never overlaps"
    );

    // Each rule of the RBAC template is preceded by a comment saying why.
    let src = std::fs::read_to_string(c.join("templates/rbac.yaml")).unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let mut rules = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "rule without a comment: {l}"
            );
        }
    }
    assert_eq!(rules, 13);
}

use serde::Deserialize;

/// YAML round trips turn `100.0` into `100`: compare numbers by value.
fn normalize(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => json!(f as i64),
            _ => v.clone(),
        },
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(normalize).collect()),
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

async fn sa_kubeconfig(client: &Client, ns: &str, sa: &str, dir: &Path) -> PathBuf {
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(shop_testkit::kubeconfig_path()).unwrap())
            .unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa}}],
        "current-context": "sa",
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}

fn start_binary(kubeconfig: &Path, ns: &str) -> (shop_testkit::Service, u16) {
    let port = shop_testkit::free_port();
    let admin = format!("127.0.0.1:{port}");
    let svc = shop_testkit::Service::start(
        "shop-operator",
        &[
            "run",
            "--watch-namespace",
            ns,
            "--admin-addr",
            &admin,
            "--log-format",
            "text",
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUST_LOG", "info"),
        ],
        port,
    );
    (svc, port)
}

#[tokio::test]
async fn helm_install_and_upgrade_then_the_operator_with_the_chart_rbac_reconciles_the_sample_shop()
{
    let client = client().await;
    ensure_crd(&client).await;
    let ns = TestNs::new(&client, "op-helm-").await;
    let release = shop_testkit::fresh_name("rel-");
    // The CRD is shared by every test of the control plane; let this release adopt it, as a
    // cluster that had it installed by hand would (Helm refuses to take over unlabelled objects).
    let adopt = json!({"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns.name}}});
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        shop_operator::crd::CRD_NAME,
        &PatchParams::default(),
        &Patch::Merge(&adopt),
    )
    .await
    .unwrap();

    let c = chart();
    let dir = tempfile::tempdir().unwrap();
    let kwok = kwok_helm_values(dir.path());
    let kwok = kwok.to_str().unwrap();
    let o = helm(&[
        "install",
        &release,
        c.to_str().unwrap(),
        "-n",
        &ns.name,
        "-f",
        kwok,
        "--set",
        "crds.install=true,sampleShop.enabled=true",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(o.status.success(), "helm install failed:\n{}", text(&o));
    assert!(text(&o).contains("Bring a shop up"), "NOTES.txt printed");
    let deploy = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get(&format!("{release}-shopkeeper"))
        .await
        .unwrap();
    assert_eq!(
        deploy
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .service_account_name
            .as_deref(),
        Some(format!("{release}-shopkeeper").as_str())
    );
    let shops: Api<Shop> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        shops.get_opt("demo").await.unwrap().is_some(),
        "sample Shop created by the post-install hook"
    );

    let demo = shops.get("demo").await.unwrap();
    assert_eq!(
        demo.spec.placement,
        shop_operator::crd::PlacementSpec::kwok(),
        "values merged into the sample Shop"
    );

    // The operator binary, authenticated as the chart's ServiceAccount.
    let kc = sa_kubeconfig(
        &client,
        &ns.name,
        &format!("{release}-shopkeeper"),
        dir.path(),
    )
    .await;
    let sa_client = kubeconfig_client(&kc).await;
    let forbidden = Api::<Secret>::namespaced(sa_client.clone(), &ns.name)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref e)) if e.code == 403),
        "the chart's RBAC must not allow reading Secrets: {forbidden:?}"
    );
    // The sample Shop's external stores point at `shop-backing`: without it the operator
    // reports SecretMissing and the Shop is not Available.
    ensure_secret(
        &client,
        &ns.name,
        "shop-backing",
        &["mysql-url", "mongodb-url"],
    )
    .await;
    let (mut op, port) = start_binary(&kc, &ns.name);
    let http = reqwest_client();
    let n = ns.name.clone();
    eventually(
        30,
        "sample Shop Available, reconciled by the binary with the chart's RBAC",
        || {
            let (c, n) = (client.clone(), n.clone());
            async move { shop_phase(&c, &n, "demo").await.as_deref() == Some("Available") }
        },
    )
    .await;
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("shop_operator_reconciles_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("reason=\"apply\""),
        "no apply failure under the chart's RBAC:\n{metrics}"
    );

    // helm upgrade re-applies the CRD from templates/ (the upgrade path) and the release stays healthy.
    let o = helm(&[
        "upgrade",
        &release,
        c.to_str().unwrap(),
        "-n",
        &ns.name,
        "-f",
        kwok,
        "--set",
        "crds.install=true,sampleShop.enabled=true,concurrency=4,writesInFlight=8",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(o.status.success(), "helm upgrade failed:\n{}", text(&o));
    let crd = crds.get(shop_operator::crd::CRD_NAME).await.unwrap();
    assert_eq!(
        crd.metadata
            .annotations
            .unwrap()
            .get("meta.helm.sh/release-name"),
        Some(&release)
    );
    assert!(op.terminate(), "operator exits cleanly on SIGTERM");

    // Uninstall keeps the CRD (and every Shop in the cluster).
    let o = helm(&["uninstall", &release, "-n", &ns.name, "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        crds.get_opt(shop_operator::crd::CRD_NAME)
            .await
            .unwrap()
            .is_some(),
        "CRD kept on uninstall"
    );
    ns.delete().await;
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_operator_without_rbac_refuses_to_start_and_names_the_missing_permission() {
    let client = client().await;
    ensure_crd(&client).await;
    let ns = TestNs::new(&client, "op-norbac-").await;
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("nobody".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = sa_kubeconfig(&client, &ns.name, "nobody", dir.path()).await;
    let out = Command::new(shop_testkit::binary_path("shop-operator"))
        .args([
            "run",
            "--watch-namespace",
            &ns.name,
            "--admin-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", &kc)
        .output()
        .unwrap();
    assert!(!out.status.success(), "must exit non-zero");
    let all = text(&out);
    assert!(all.contains("not allowed to list Shop"), "{all}");
    ns.delete().await;
}

/// Where the Prometheus Operator is installed, the chart renders a PrometheusRule and a
/// ServiceMonitor; `helm install` then fails if the CRDs' own schemas refuse them. The other
/// tests install those CRDs into the shared cluster (operator/tests/monitoring.rs), so this is
/// also what keeps every later install on this cluster working. Server-side dry run: validated
/// by the real CRD schema, nothing stored.
#[tokio::test]
async fn the_charts_prometheus_objects_pass_the_prometheus_operators_own_crd_schemas() {
    let (client, ns) = setup("helm-prom-").await;
    let dir = tool_dir("prometheus-crds");
    install_crds(
        &client,
        &["servicemonitors", "prometheusrules"]
            .map(|k| dir.join(format!("monitoring.coreos.com_{k}.yaml"))),
    )
    .await;
    let c = chart();
    let o = helm(&[
        "template",
        "shop",
        c.to_str().unwrap(),
        "--kube-version",
        "1.36.0",
        "--namespace",
        &ns.name,
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--set",
        "networkPolicy.scrapeNamespace=monitoring,monitoring.prometheusRule.labels.release=prom",
    ]);
    assert!(o.status.success(), "helm template: {}", text(&o));
    let rendered = String::from_utf8(o.stdout).unwrap();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&rendered) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        if !matches!(kind.as_str(), "PrometheusRule" | "ServiceMonitor") {
            continue;
        }
        let obj: kube::core::DynamicObject = serde_json::from_value(v).unwrap();
        let gvk = kube::core::GroupVersionKind::gvk("monitoring.coreos.com", "v1", &kind);
        let ar = kube::core::ApiResource::from_gvk(&gvk);
        let api: Api<kube::core::DynamicObject> =
            Api::namespaced_with(client.clone(), &ns.name, &ar);
        let name = obj.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("shop-helm-test").dry_run(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("the {kind} CRD refuses the chart's {name}: {e}"));
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(kinds, ["PrometheusRule", "ServiceMonitor"], "{rendered}");
    ns.delete().await;
}
