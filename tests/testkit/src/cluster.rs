//! The real node of the local cluster, for the tests that run the platform as pods: a client of the
//! control plane, a loud failure when the node is missing, Shops of the tests' own applied and
//! waited for, and the addresses of Services (kube-proxy makes every ClusterIP reachable from the
//! host, as from a pod).
//!
//! Nothing here fakes the cluster: `make up` (or `make test`) starts it, and a test that needs it
//! panics with the command to run when it is not there.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::stack::kubeconfig_path;

/// Name of the real node `hack/node.sh` runs.
pub const NODE: &str = "shop-node";
/// Namespace and name of the Shop `make up` applies (examples/shop.yaml).
pub const DEMO_NAMESPACE: &str = "shop";
/// The example Shop's name.
pub const DEMO_SHOP: &str = "demo";
/// Where `make up` serves the example Shop's gateway (node port 8080 on loopback).
pub const DEMO_GATEWAY: &str = "http://127.0.0.1:8080";
/// The development JWT secret of `make up` (examples/shop.yaml, examples/backing-secret.yaml).
pub const DEV_JWT_SECRET: &str = "shopkeeper-dev-secret-change-me-0123456789";
/// Field manager of the tests' server-side applies.
const MANAGER: &str = "shop-tests";

/// A client of the local control plane (admin kubeconfig).
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kc =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    Client::try_from(cfg).unwrap_or_else(|e| panic!("kube client: {e}"))
}

/// Panics unless the real node is registered and Ready.
pub async fn require_real_node(client: &Client) {
    let node = Api::<Node>::all(client.clone()).get_opt(NODE).await;
    let ready = matches!(&node, Ok(Some(n)) if n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")));
    assert!(
        ready,
        "the real node {NODE} is not Ready ({node:?}). Start it with `make up` (or `hack/node.sh up`)."
    );
}

/// The Shop API resource (group shopkeeper.dev, version v1alpha1).
pub fn shops(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("shopkeeper.dev", "v1alpha1", "Shop");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A Shop of a test's own in the example Shop's namespace (the operator `make up` installs watches
/// that namespace only), with its own copy of the development backing Secret. Delete it with
/// [`TestShop::delete`]; its children go with it (owner references).
pub struct TestShop {
    /// The Shop's name (also the prefix of its children's names).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    client: Client,
}

/// Label on every Secret a [`TestShop`] creates, so dropping the TestShop deletes them all.
const TEST_SHOP_LABEL: &str = "shopkeeper.dev/test-shop";

impl TestShop {
    /// Creates the backing Secret; apply the Shop itself with [`TestShop::apply`].
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let shop = Self {
            name: crate::fresh_name(prefix),
            namespace: DEMO_NAMESPACE.to_owned(),
            client: client.clone(),
        };
        shop.create_secret(
            "backing",
            json!({
                "mysql-url": "mysql://shop:shop@10.244.0.1:3306",
                "mongodb-url": "mongodb://10.244.0.1:27017/shop?directConnection=true",
                "jwt-secret": DEV_JWT_SECRET,
            }),
        )
        .await;
        shop
    }

    /// Creates the Secret `<shop>-<suffix>` with `string_data`; deleted with the TestShop.
    pub async fn create_secret(&self, suffix: &str, string_data: Value) -> String {
        let name = format!("{}-{suffix}", self.name);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {TEST_SHOP_LABEL: self.name}},
            "stringData": string_data,
        }))
        .unwrap_or_else(|e| panic!("secret object: {e}"));
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"));
        name
    }

    /// Applies the Shop: the locally built images with `tag`, the host's stack, one replica of
    /// everything with a ClusterIP gateway, and `components` merged over that.
    pub async fn apply(&self, tag: &str, components: Value) {
        self.apply_with_backing(tag, components, json!({})).await;
    }

    /// Like [`TestShop::apply`], with some stores replaced: each key of `backing` (`mysql`,
    /// `mongodb`, `kafka`, `zipkin`) replaces that store's whole entry, e.g.
    /// `{"mysql": {"mode": "managed", "image": ..., "keepData": false}}`.
    pub async fn apply_with_backing(&self, tag: &str, components: Value, backing: Value) {
        let secret = format!("{}-backing", self.name);
        let mut c = json!({
            "gateway": {"jwt": {"secretRef": {"name": secret, "key": "jwt-secret"}},
                        "rateLimit": {"requestsPerSecond": 1000, "burst": 2000}},
        });
        merge(&mut c, components);
        let mut stores = json!({
            "mysql": {"urlSecretRef": {"name": secret, "key": "mysql-url"}},
            "mongodb": {"urlSecretRef": {"name": secret, "key": "mongodb-url"}},
            "kafka": {"bootstrapServers": "10.244.0.1:9094"},
            "zipkin": {"endpoint": "http://10.244.0.1:9411/api/v2/spans"}
        });
        if let (Value::Object(stores), Value::Object(replace)) = (&mut stores, backing) {
            stores.extend(replace);
        }
        let spec = json!({
            "image": {"repository": "shopkeeper.local", "tag": tag, "pullPolicy": "Never"},
            "components": c,
            "backing": stores,
        });
        apply_shop(&self.client, &self.namespace, &self.name, spec).await;
    }

    /// The Shop's `status.conditions`, by type (empty before its first status).
    pub async fn conditions(&self) -> BTreeMap<String, Value> {
        let Ok(Some(shop)) = shops(&self.client, &self.namespace)
            .get_opt(&self.name)
            .await
        else {
            return BTreeMap::new();
        };
        shop.data["status"]["conditions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| Some((c["type"].as_str()?.to_owned(), c.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until it is Available at its current generation.
    pub async fn wait_available(&self, timeout: Duration) {
        wait_shop_available(&self.client, &self.namespace, &self.name, timeout).await;
    }

    /// `http://<ClusterIP>:<port>` of one of its components' Service.
    pub async fn url(&self, component: &str) -> String {
        service_url(
            &self.client,
            &self.namespace,
            &format!("{}-{component}", self.name),
        )
        .await
    }

    /// Its pods (all components, or one).
    pub async fn pods(&self, component: Option<&str>) -> Vec<Pod> {
        let selector = match component {
            Some(c) => component_selector(&self.name, c),
            None => format!("app.kubernetes.io/instance={}", self.name),
        };
        pods(&self.client, &self.namespace, &selector).await
    }

    /// `name phase ready restarts` of its pods.
    pub async fn summary(&self) -> Vec<String> {
        let mine = self.pods(None).await;
        pod_summary(&self.client, &self.namespace)
            .await
            .into_iter()
            .filter(|l| {
                mine.iter()
                    .any(|p| p.metadata.name.as_deref() == l.split(' ').next())
            })
            .collect()
    }

    /// Deletes the Shop (its children go with it) and its Secret. Also done when the TestShop is
    /// dropped, so a failing test leaves nothing running behind it.
    pub async fn delete(self) {
        drop(self);
    }
}

impl Drop for TestShop {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and it also runs while a failed test unwinds.
        let kubeconfig = kubeconfig_path();
        let label = format!("{TEST_SHOP_LABEL}={}", self.name);
        for what in [
            ["shop.shopkeeper.dev", self.name.as_str()],
            ["secret", "-l"],
        ] {
            let mut cmd = std::process::Command::new("kubectl");
            cmd.arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["delete", "-n", &self.namespace])
                .args(what);
            if what[1] == "-l" {
                cmd.arg(&label);
            }
            let _ = cmd.args(["--wait=false", "--ignore-not-found"]).output();
        }
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Server-side applies a Shop `name` with `spec` in `ns`.
pub async fn apply_shop(client: &Client, ns: &str, name: &str, spec: Value) {
    let shop = json!({
        "apiVersion": "shopkeeper.dev/v1alpha1", "kind": "Shop",
        "metadata": {"name": name}, "spec": spec
    });
    shops(client, ns)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&shop),
        )
        .await
        .unwrap_or_else(|e| panic!("applying Shop {ns}/{name}: {e}"));
}

/// Waits until the Shop is Available at its current generation; panics with its status and pods.
pub async fn wait_shop_available(client: &Client, ns: &str, name: &str, timeout: Duration) {
    let ok = crate::wait_until(timeout, || async {
        let Ok(Some(s)) = shops(client, ns).get_opt(name).await else {
            return false;
        };
        s.data["status"]["phase"] == "Available"
            && s.data["status"]["observedGeneration"].as_i64() == s.metadata.generation
    })
    .await;
    if !ok {
        let status = shops(client, ns)
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .map(|s| s.data["status"].clone());
        panic!(
            "Shop {ns}/{name} not Available within {timeout:?}; status: {status:#?}; pods: {:#?}",
            pod_summary(client, ns).await
        );
    }
}

/// `name phase ready restarts` of every pod in `ns`, for failure messages.
pub async fn pod_summary(client: &Client, ns: &str) -> Vec<String> {
    pods(client, ns, "")
        .await
        .iter()
        .map(|p| {
            let st = p.status.as_ref();
            let cs = st.and_then(|s| s.container_statuses.as_ref());
            format!(
                "{} {} ready={} restarts={}",
                p.metadata.name.as_deref().unwrap_or("?"),
                st.and_then(|s| s.phase.as_deref()).unwrap_or("?"),
                is_ready(p),
                cs.map(|c| c.iter().map(|c| c.restart_count).sum::<i32>())
                    .unwrap_or(0)
            )
        })
        .collect()
}

/// Pods of `ns` matching a label selector ("" for all).
pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap_or_else(|e| panic!("listing pods of {ns}: {e}"))
        .items
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Label selector of one component's pods of a Shop.
pub fn component_selector(shop: &str, component: &str) -> String {
    format!("app.kubernetes.io/instance={shop},app.kubernetes.io/component={component}")
}

/// `http://<ClusterIP>:<port>` of a Service (reachable from the host through kube-proxy).
pub async fn service_url(client: &Client, ns: &str, name: &str) -> String {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Service {ns}/{name}: {e}"));
    let spec = svc.spec.unwrap_or_default();
    let ip = spec
        .cluster_ip
        .unwrap_or_else(|| panic!("Service {ns}/{name} has no ClusterIP"));
    let port = spec
        .ports
        .and_then(|p| p.first().map(|p| p.port))
        .unwrap_or_else(|| panic!("Service {ns}/{name} has no port"));
    format!("http://{ip}:{port}")
}

/// A development token for the gateways of `make up` and of test Shops (all scopes).
pub fn dev_token() -> String {
    crate::host_shop::mint_token(DEV_JWT_SECRET, "tests", crate::host_shop::ALL_SCOPES)
}

/// Deletes one pod at once (grace period 0), as a node failure would.
pub async fn kill_pod(client: &Client, ns: &str, name: &str) {
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap_or_else(|e| panic!("deleting pod {ns}/{name}: {e}"));
}

/// Sets the keys of `string_data` in Secret `ns/name` (a renewed certificate, a rotated
/// password), as `kubectl apply` of the new Secret would; other keys are kept.
pub async fn replace_secret_data(client: &Client, ns: &str, name: &str, string_data: Value) {
    // The API server writes stringData over data's keys of the same name.
    let patch = json!({"stringData": string_data});
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("replacing the data of Secret {ns}/{name}: {e}"));
}
