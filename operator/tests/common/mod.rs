//! Shared helpers of the operator's integration tests: a client for the real control plane of the
//! local stack, the CRD installed, a fresh namespace per test and the operator run in-process,
//! scoped to that namespace so tests stay parallel-safe. Every Shop and chart pod they create is
//! placed on the kwok fake node (the cluster also has a real node, where they could not run).
//! The pure build tests need none of that: their fixtures are in [`rendered`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod rendered;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};
use shop_operator::Shop;
use shop_operator::controller::ReconcileSettings;
use shop_operator::crd::PlacementSpec;
use shop_operator::metrics::Metrics;
use shop_operator::operator::{self, Settings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Client of the local control plane (fails loudly naming `make up` when it is not there).
pub async fn client() -> Client {
    let path = shop_testkit::kubeconfig_path();
    kubeconfig_client(&path).await
}

/// Client from a kubeconfig file.
pub async fn kubeconfig_client(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

/// Installs (server-side applies) the CRD generated from the code and waits until it is Established.
pub async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        shop_operator::crd::CRD_NAME,
        &PatchParams::apply("shop-operator-tests").force(),
        &Patch::Apply(Shop::crd()),
    )
    .await
    .expect("the API server refused the generated CRD (is it structural?)");
    tokio::time::timeout(
        Duration::from_secs(20),
        await_condition(
            crds,
            shop_operator::crd::CRD_NAME,
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD not established within 20 s")
    .unwrap();
}

/// A client, the Shop CRD installed, and a fresh namespace named after `prefix`: what every
/// cluster test starts from.
pub async fn setup(prefix: &str) -> (Client, TestNs) {
    let client = client().await;
    ensure_crd(&client).await;
    let ns = TestNs::new(&client, prefix).await;
    (client, ns)
}

/// A fresh namespace; call `delete` at the end of the test.
pub struct TestNs {
    pub name: String,
    client: Client,
}

impl TestNs {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = shop_testkit::fresh_name(prefix);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        Self {
            name,
            client: client.clone(),
        }
    }

    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

/// The operator running in this process, watching one namespace.
pub struct RunningOperator {
    pub token: CancellationToken,
    pub handle: JoinHandle<Result<(), operator::RunError>>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

impl RunningOperator {
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("operator did not stop within 10 s")
            .unwrap()
            .unwrap();
    }

    /// Value of a counter in the metrics exposition (sum over label sets matching `filter`).
    pub fn counter(&self, name: &str, filter: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Test settings: one namespace, short backoff and debounce.
pub fn test_settings(ns: &str) -> Settings {
    Settings {
        namespace: Some(ns.to_string()),
        concurrency: 4,
        debounce: Duration::from_millis(100),
        reconcile: ReconcileSettings {
            requeue: Duration::from_secs(3600),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn start_operator(client: &Client, ns: &str) -> RunningOperator {
    start_operator_with(client, test_settings(ns))
}

pub fn start_operator_with(client: &Client, settings: Settings) -> RunningOperator {
    let token = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let handle = tokio::spawn(operator::run(
        client.clone(),
        settings,
        metrics.clone(),
        ready.clone(),
        token.clone(),
    ));
    RunningOperator {
        token,
        handle,
        metrics,
        ready,
    }
}

/// A Shop with every backing service external (no store of its own: kwok could not bind a
/// managed store's volume); [`create_shop`] creates the two Secrets it names.
///
/// It is placed on the kwok fake node ([`PlacementSpec::kwok`]) unless `extra_spec` sets
/// `placement`: kwok reports its pods Ready without running them, while on the cluster's real
/// node these images (which do not exist) would never become Ready and the test would hang.
pub fn sample_shop(name: &str, extra_spec: &str) -> Shop {
    let yaml = format!(
        r#"
apiVersion: shopkeeper.dev/v1alpha1
kind: Shop
metadata: {{name: {name}}}
spec:
  image: {{repository: registry.example/shops, tag: "1.0.0"}}
  backing:
    mysql: {{urlSecretRef: {{name: db, key: url}}}}
    mongodb: {{urlSecretRef: {{name: mongo, key: url}}}}
    kafka: {{bootstrapServers: "kafka:9092"}}
    zipkin: {{endpoint: "http://zipkin:9411/api/v2/spans"}}
{extra_spec}"#
    );
    let mut shop: Shop = serde_yaml::from_str(&yaml).unwrap();
    if shop.spec.placement.is_empty() {
        shop.spec.placement = PlacementSpec::kwok();
    }
    shop
}

/// Helm values that put the chart's pods on the kwok fake node too: the operator Deployment
/// (`nodeSelector`, `tolerations`) and the sample Shop (`sampleShop.spec.placement`; Helm merges
/// it into the chart's default sample spec). Written as JSON, which is YAML, into `dir`.
pub fn kwok_helm_values(dir: &std::path::Path) -> std::path::PathBuf {
    let placement = serde_json::to_value(PlacementSpec::kwok()).unwrap();
    let values = serde_json::json!({
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "sampleShop": {"spec": {"placement": placement}},
    });
    let path = dir.join("kwok-values.yaml");
    std::fs::write(&path, values.to_string()).unwrap();
    path
}

/// Creates a Secret holding `keys` (stand-in URLs), as a user does for an external store; an
/// existing one is left as it is.
pub async fn ensure_secret(client: &Client, ns: &str, name: &str, keys: &[&str]) {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(
            keys.iter()
                .map(|k| (k.to_string(), "stand-in://not-used-on-kwok".to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating Secret {name}: {e}"),
    }
}

/// Creates the Shop after the Secrets its external stores point at (the operator reports
/// `SecretMissing` and keeps the Shop from `Available` without them). Tests about a missing
/// Secret create their Shop with the API directly.
pub async fn create_shop(client: &Client, ns: &str, shop: &Shop) -> Shop {
    let b = &shop.spec.backing;
    let refs = [b.mysql.as_ref(), b.mongodb.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|d| d.url_secret_ref.clone());
    for r in refs {
        ensure_secret(client, ns, &r.name, &[r.key.as_str()]).await;
    }
    Api::<Shop>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), shop)
        .await
        .unwrap()
}

/// Polls until `check` holds, panicking with `what` otherwise. Healthy runs finish in a few
/// seconds; the deadline is twice `secs` because the shared 2-core machine running the whole
/// control plane can be saturated by parallel builds (load averages above 10 were seen), and a
/// slow API server is not what these tests are about.
pub async fn eventually<F, Fut>(secs: u64, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = secs * 2;
    assert!(
        shop_testkit::wait_until(Duration::from_secs(deadline), check).await,
        "timed out after {deadline} s waiting for: {what}"
    );
}

/// resourceVersion of every object carrying the Shop's labels, keyed by `Kind/name`.
pub async fn resource_versions(client: &Client, ns: &str, shop: &str) -> BTreeMap<String, String> {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::ResourceExt;
    let lp = kube::api::ListParams::default().labels(&shop_operator::build::shop_selector(shop));
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($k:ty, $kind:literal) => {
            for o in Api::<$k>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .unwrap()
            {
                out.insert(
                    format!("{}/{}", $kind, o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(Deployment, "Deployment");
    collect!(Service, "Service");
    collect!(ConfigMap, "ConfigMap");
    collect!(ServiceAccount, "ServiceAccount");
    collect!(NetworkPolicy, "NetworkPolicy");
    collect!(PodDisruptionBudget, "PodDisruptionBudget");
    collect!(StatefulSet, "StatefulSet");
    collect!(HorizontalPodAutoscaler, "HorizontalPodAutoscaler");
    let s = Api::<Shop>::namespaced(client.clone(), ns)
        .get(shop)
        .await
        .unwrap();
    out.insert(
        format!("Shop/{shop}"),
        s.resource_version().unwrap_or_default(),
    );
    out
}

pub async fn shop_phase(client: &Client, ns: &str, name: &str) -> Option<String> {
    Api::<Shop>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?
        .status?
        .phase
        .map(|p| p.to_string())
}

/// The folder a test tool of `hack/tools.sh <tool>` lives in (fetched into the tool cache when
/// missing), e.g. `gateway-api-crds`, `prometheus-crds`.
pub fn tool_dir(tool: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("bash")
        .arg(root.join("hack/tools.sh"))
        .arg(tool)
        .output()
        .unwrap_or_else(|e| panic!("cannot run hack/tools.sh {tool}: {e}"));
    assert!(
        out.status.success(),
        "hack/tools.sh {tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    dir
}

/// Installs CRDs from YAML files into the local API server (idempotent, server-side apply) and
/// waits until each is established.
pub async fn install_crds(client: &Client, files: &[std::path::PathBuf]) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for path in files {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("shop-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused {}: {e}", path.display()));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within 30 s"))
        .unwrap();
    }
}

/// How many objects of kind `K` carry Shop `shop`'s labels in `ns`.
pub async fn count<K>(client: &Client, ns: &str, shop: &str) -> usize
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&kube::api::ListParams::default().labels(&shop_operator::build::shop_selector(shop)))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// The Deployment `name` in `ns`, if it exists.
pub async fn deployment(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<k8s_openapi::api::apps::v1::Deployment> {
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// A Shop with the given `spec.backing` (YAML lines indented four spaces), on the kwok node.
pub fn shop_with_backing(name: &str, backing: &str) -> Shop {
    let yaml = format!(
        "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {{name: {name}}}\nspec:\n  image: {{repository: registry.example/shops, tag: \"1.0.0\"}}\n  backing:\n{backing}"
    );
    let mut shop: Shop = serde_yaml::from_str(&yaml).unwrap();
    shop.spec.placement = shop_operator::crd::PlacementSpec::kwok();
    shop
}

/// The Shop's condition of type `type_`, if it has one.
pub fn condition(
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
