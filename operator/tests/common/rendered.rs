//! Pure fixtures of the build tests (`tests/build_*.rs`), which render a Shop without any
//! server: the sample Shop their insta snapshots hold, rendering a Shop's YAML, and finding one
//! component's objects, pod or container in what was rendered (the lookups every build test
//! used to spell out).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use shop_operator::Shop;
use shop_operator::build::{self, ComponentResources, Resources};
use shop_operator::component::Component;
use shop_operator::validate::validate;

/// The Shop the build snapshots are rendered from. Named differently from the app
/// ("shopkeeper") and the components so that a swapped name/instance label shows up.
pub const SAMPLE: &str = r#"
apiVersion: shopkeeper.dev/v1alpha1
kind: Shop
metadata:
  name: corner
  namespace: retail
  uid: 6f1c3a9e-0000-4000-8000-000000000001
  generation: 4
spec:
  image: {repository: registry.example/shops, tag: "1.2.3"}
  components:
    registry: {replicas: 2}
    gateway:
      replicas: 3
      serviceType: LoadBalancer
      jwt:
        secretRef: {name: jwt, key: hs256}
        issuer: https://issuer.example
        audience: shop
      rateLimit: {requestsPerSecond: 50, burst: 100}
    order:
      env:
        - {name: SHOP_LOG_FORMAT, value: text}
        - {name: POD_IP, value: "10.9.9.9"}
    notification: {enabled: false}
  backing:
    mysql: {urlSecretRef: {name: db, key: url}}
    mongodb: {urlSecretRef: {name: mongo, key: url}}
    kafka: {bootstrapServers: "kafka-0.kafka:9092"}
    zipkin: {endpoint: "http://zipkin.obs.svc:9411/api/v2/spans"}
  placement:
    nodeSelector: {pool: shops, topology.kubernetes.io/zone: eu-1a}
    tolerations:
      - {key: dedicated, operator: Equal, value: shops, effect: NoSchedule}
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 60}
"#;

/// What the operator renders for the Shop in `yaml` (which must be valid).
pub fn render(yaml: &str) -> Resources {
    let shop: Shop = serde_yaml::from_str(yaml).unwrap();
    build::build(&validate(&shop).unwrap())
}

/// Component `c`'s objects; panics when `c` was not rendered (disabled).
pub fn component(res: &Resources, c: Component) -> &ComponentResources {
    res.components
        .iter()
        .find(|r| r.component == c)
        .unwrap_or_else(|| panic!("{c} was not rendered"))
}

/// The pod template's spec of a Deployment.
pub fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// The (only) container of a Deployment's pods.
pub fn container(d: &Deployment) -> &Container {
    &pod_spec(d).containers[0]
}

/// The Secret (name, key) an environment variable is read from.
pub fn secret_ref(e: &EnvVar) -> (String, String) {
    let r = e
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    (r.name.clone(), r.key.clone())
}

/// Asserts what the restricted Pod Security Standard asks of every container the operator
/// renders, component or store: not root, no privilege escalation, every capability dropped,
/// the runtime's seccomp profile. `what` names the container in a failure.
pub fn assert_restricted(c: &Container, what: &str) {
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true), "{what}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..]),
        "{what}"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault",
        "{what}"
    );
}

/// Asserts that a container requests memory and is limited in it (the node's scheduler and
/// OOM killer both need the figure).
pub fn assert_memory_bounded(c: &Container, what: &str) {
    let r = c.resources.as_ref().unwrap();
    assert!(
        r.requests.as_ref().unwrap().contains_key("memory"),
        "{what}: no memory request"
    );
    assert!(
        r.limits.as_ref().unwrap().contains_key("memory"),
        "{what}: no memory limit"
    );
}
