//! Step 2 of the pipeline (pure, no client): renders every child object of a validated Shop.
//! Keeping this free of I/O makes the rendered objects snapshot-testable and lets the apply step
//! stay a thin loop over the returned list.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::component::Component;
use crate::crd::SecretKeyRef;
use crate::exposure::{self, ExposureObject};
use crate::stores::{self, StoreCredentials, StoreResources, StoreSecret};
use crate::validate::{ResolvedComponent, ValidatedShop};

/// `app.kubernetes.io/name` of every child.
pub const APP_NAME: &str = "shopkeeper";
/// `app.kubernetes.io/managed-by` of every child; owned watches are scoped by it.
pub const MANAGED_BY: &str = "shop-operator";
/// Label keys (Kubernetes recommended labels).
pub mod labels {
    /// Application name.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The Shop.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The component.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The larger application.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The operator.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Image tag.
    pub const VERSION: &str = "app.kubernetes.io/version";
}
/// Pod template annotation carrying a hash of the ConfigMap, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "shopkeeper.dev/config-hash";
/// Container port name used by Services, probes and NetworkPolicies.
pub const PORT_NAME: &str = "http";
/// Where the gateway's TLS Secret (`spec.components.gateway.tls`) is mounted; the gateway reads
/// `tls.crt` and `tls.key` there and reloads them when the kubelet swaps in a renewed Secret.
pub const TLS_MOUNT_PATH: &str = "/etc/shop/tls";
/// Where the Shop's fault flags (`spec.faults`, ConfigMap `<shop>-faults`) are mounted in the
/// inventory, order and notification pods; they re-read `faults.json` there without a restart.
pub const FAULTS_MOUNT_PATH: &str = "/etc/shop/faults";
/// Where the Shop's status (ConfigMap `<shop>-status`) is mounted in the gateway pods, which serve
/// it to the storefront's admin page at `/admin/status.json`.
pub const STATUS_MOUNT_PATH: &str = "/etc/shop/status";
/// Key (and file name) of the fault flags in `<shop>-faults`.
pub const FAULTS_KEY: &str = "faults.json";
/// Key (and file name) of the status in `<shop>-status`.
pub const STATUS_KEY: &str = "status.json";
/// Port every Service also exposes (to the component's own port), so that the runtime's single
/// DNS fallback pattern `http://<shop>-{service}.<ns>.svc:80` reaches any component.
pub const DNS_FALLBACK_PORT: i32 = 80;
/// Seconds a terminating pod keeps serving, unready and deregistered, before it stops accepting:
/// longer than the services' registry refresh (5 s) plus kube-proxy's resync (1 s), so callers
/// have dropped it first and a rolling update fails no request. After it the pod still serves
/// connections that keep arriving (a kube-proxy slower than that on a busy node) until a quiet
/// second, at most 10 s more (`shop_runtime::Arrivals`). Inside the 30 s grace period together
/// with the 10 s drain: 7 + 10 + 10.
pub const SHUTDOWN_DELAY_SECS: u32 = 7;
/// Annotation on a Deployment whose pod count an HPA owns (`spec.components.<c>.autoscaling`):
/// the operator leaves `spec.replicas` out of what it applies and out of the Deployment's
/// fingerprint, so the autoscaler's changes are neither reverted nor taken for a hand edit.
pub const AUTOSCALED_ANNOTATION: &str = "shopkeeper.dev/autoscaled";
/// UID/GID the images run as (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;

/// Everything one component consists of, in apply order within the component.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentResources {
    /// Which component.
    pub component: Component,
    /// Its own identity (no API token mounted).
    pub service_account: ServiceAccount,
    /// Its non-secret configuration, consumed through `envFrom`.
    pub config_map: ConfigMap,
    /// ClusterIP (gateway: configurable) Service.
    pub service: Service,
    /// Registry only: headless Service for peer discovery.
    pub peer_service: Option<Service>,
    /// Who may connect to it.
    pub network_policy: NetworkPolicy,
    /// Only when replicas (or the autoscaler's minimum) > 1.
    pub pdb: Option<PodDisruptionBudget>,
    /// Only with `autoscaling`: owns the Deployment's pod count; applied after it.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The workload, applied last so its config exists first.
    pub deployment: Deployment,
}

/// Typestate of [`Resources`] as rendered: nothing is known about the cluster yet, so there is
/// nothing to compute a status from (only [`crate::apply::Applier::apply`] turns it into
/// `Resources<Applied>`, which has the children as the API server returned them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prepared;

/// Every child of a Shop, components in apply order (registry first, gateway last). `S` is where
/// it stands: [`Prepared`] (rendered) or [`crate::apply::Applied`] (applied, with what the API
/// server returned).
#[derive(Clone, Debug, PartialEq)]
pub struct Resources<S = Prepared> {
    /// Enabled components.
    pub components: Vec<ComponentResources>,
    /// Managed stores (`spec.backing.<store>.mode: managed`), applied before the components.
    pub stores: Vec<StoreResources>,
    /// The generated credentials of the managed stores (`<shop>-stores`), when a managed store
    /// needs one; `None` from [`build`], which has no credentials.
    pub store_secret: Option<StoreSecret>,
    /// The Ingress or HTTPRoute exposing the gateway (`spec.components.gateway.ingress` /
    /// `.httpRoute`), applied after the gateway; the controller removes it (see
    /// [`crate::exposure::plan`]) when the cluster does not serve its API.
    pub exposure: Option<ExposureObject>,
    /// `<shop>-faults`: the fault flags as the components read them (`{}` when none), applied
    /// before the components (their pods mount it).
    pub faults: ConfigMap,
    /// The ServiceMonitor (`spec.monitoring.serviceMonitor`), applied after the components; the
    /// controller removes it (see [`crate::monitoring::plan`]) when the cluster does not serve its
    /// API.
    pub service_monitor: Option<crate::monitoring::ServiceMonitor>,
    /// Where these resources stand (private: only [`Resources::into_applied`] changes it).
    state: S,
}

impl Resources<Prepared> {
    /// The same resources once applied. `Applied` can only be made by the apply step, so this is
    /// the only way to a `Resources<Applied>`.
    pub fn into_applied(self, applied: crate::apply::Applied) -> Resources<crate::apply::Applied> {
        let Resources {
            components,
            stores,
            store_secret,
            exposure,
            faults,
            service_monitor,
            state: Prepared,
        } = self;
        Resources {
            components,
            stores,
            store_secret,
            exposure,
            faults,
            service_monitor,
            state: applied,
        }
    }
}

impl<S> Resources<S> {
    /// Where these resources stand.
    pub fn state(&self) -> &S {
        &self.state
    }
}

impl Resources<crate::apply::Applied> {
    /// What the apply step found, consumed (the status is computed from its children).
    pub fn into_state(self) -> crate::apply::Applied {
        self.state
    }
}

/// Object name of a component's children.
pub fn child_name(shop: &str, c: Component) -> String {
    format!("{shop}-{c}")
}

/// Name of the registry's headless peer Service.
pub fn peer_service_name(shop: &str) -> String {
    format!("{shop}-registry-peers")
}

/// Labels that select a component's pods (immutable once a Deployment exists).
pub fn selector_labels(shop: &str, c: Component) -> BTreeMap<String, String> {
    named_selector(shop, c.name())
}

/// Selector labels of any part of a Shop by its `app.kubernetes.io/component` value (a
/// component, or a store: `mysql`, `mongodb`, `kafka`, `zipkin`).
pub fn named_selector(shop: &str, component: &str) -> BTreeMap<String, String> {
    [
        (labels::NAME, APP_NAME.to_string()),
        (labels::INSTANCE, shop.to_string()),
        (labels::COMPONENT, component.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Label selector string matching every child of one Shop.
pub fn shop_selector(shop: &str) -> String {
    format!(
        "{}={MANAGED_BY},{}={shop}",
        labels::MANAGED_BY,
        labels::INSTANCE
    )
}

/// A label value from an image tag: at most 63 characters, alphanumeric at both ends.
fn label_value(s: &str) -> String {
    let cut: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn all_labels(shop: &ValidatedShop, c: Component) -> BTreeMap<String, String> {
    named_labels(shop, c.name())
}

/// Every label of a child (selector labels plus part-of, managed-by and version).
pub fn named_labels(shop: &ValidatedShop, component: &str) -> BTreeMap<String, String> {
    let mut l = named_selector(&shop.name, component);
    l.insert(labels::PART_OF.into(), APP_NAME.into());
    l.insert(labels::MANAGED_BY.into(), MANAGED_BY.into());
    let v = label_value(&shop.version);
    if !v.is_empty() {
        l.insert(labels::VERSION.into(), v);
    }
    l
}

fn meta(shop: &ValidatedShop, c: Component, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(shop.namespace.clone()),
        labels: Some(all_labels(shop, c)),
        owner_references: Some(vec![shop.owner.clone()]),
        ..Default::default()
    }
}

/// FNV-1a, 64 bit: a hash that is stable across Rust releases (unlike `DefaultHasher`), so an
/// operator upgrade does not roll every pod.
fn fnv1a(data: &BTreeMap<String, String>) -> String {
    let mut h = Fnv::default();
    for (k, v) in data {
        h.feed(k.as_bytes());
        h.feed(v.as_bytes());
    }
    format!("{:016x}", h.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain([0u8].iter()) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// FNV-1a hash of some byte strings (stable across Rust releases and processes).
pub fn stable_hash(parts: &[&[u8]]) -> String {
    let mut h = Fnv::default();
    for p in parts {
        h.feed(p);
    }
    format!("{:016x}", h.0)
}

/// A hash of everything rendered for a Shop: equal hashes mean an identical desired state.
pub fn desired_hash(res: &Resources) -> String {
    let mut h = Fnv::default();
    if let Some(s) = &res.store_secret {
        h.feed(serde_json::to_string(&s.0).unwrap_or_default().as_bytes());
    }
    for sr in &res.stores {
        let parts = [
            serde_json::to_string(&sr.config_map),
            serde_json::to_string(&sr.service),
            serde_json::to_string(&sr.statefulset),
        ];
        for p in parts {
            h.feed(p.unwrap_or_default().as_bytes());
        }
    }
    for cr in &res.components {
        let parts = [
            serde_json::to_string(&cr.service_account),
            serde_json::to_string(&cr.config_map),
            serde_json::to_string(&cr.service),
            serde_json::to_string(&cr.peer_service),
            serde_json::to_string(&cr.network_policy),
            serde_json::to_string(&cr.pdb),
            serde_json::to_string(&cr.hpa),
            serde_json::to_string(&cr.deployment),
        ];
        for p in parts {
            h.feed(p.unwrap_or_default().as_bytes());
        }
    }
    match &res.exposure {
        Some(ExposureObject::Ingress(i)) => {
            h.feed(serde_json::to_string(i).unwrap_or_default().as_bytes())
        }
        Some(ExposureObject::HttpRoute(r)) => {
            h.feed(serde_json::to_string(r).unwrap_or_default().as_bytes())
        }
        None => {}
    }
    if let Some(sm) = &res.service_monitor {
        h.feed(serde_json::to_string(sm).unwrap_or_default().as_bytes());
    }
    h.feed(
        serde_json::to_string(&res.faults)
            .unwrap_or_default()
            .as_bytes(),
    );
    format!("{:016x}", h.0)
}

/// The non-secret configuration of a component, as environment variables.
pub fn config_data(shop: &ValidatedShop, c: Component) -> BTreeMap<String, String> {
    let ns = &shop.namespace;
    let name = &shop.name;
    let mut d = BTreeMap::new();
    let registry = child_name(name, Component::Registry);
    d.insert(
        "SHOP_REGISTRY_URL".to_string(),
        format!(
            "http://{registry}.{ns}.svc:{}/eureka",
            Component::Registry.port()
        ),
    );
    d.insert(
        "SHOP_DNS_PATTERN".to_string(),
        format!("http://{name}-{{service}}.{ns}.svc:{DNS_FALLBACK_PORT}"),
    );
    d.insert("SHOP_BIND".to_string(), "0.0.0.0".to_string());
    d.insert(
        "SHOP_SHUTDOWN_DELAY_SECS".to_string(),
        SHUTDOWN_DELAY_SECS.to_string(),
    );
    d.insert("SHOP_PORT".to_string(), c.port().to_string());
    if let Some(z) = &shop.zipkin_endpoint {
        d.insert("SHOP_ZIPKIN_ENDPOINT".to_string(), z.clone());
    }
    if c.uses_kafka()
        && let Some(k) = &shop.kafka_bootstrap
    {
        d.insert("SHOP_KAFKA_BOOTSTRAP".to_string(), k.clone());
    }
    if c == Component::Order && shop.kafka_bootstrap.is_some() {
        d.insert(
            "SHOP_KAFKA_PARTITIONS".to_string(),
            shop.kafka_partitions.to_string(),
        );
    }
    match c {
        Component::Registry => {
            d.insert(
                "SHOP_REGISTRY_PEER_DNS".to_string(),
                format!(
                    "{}.{ns}.svc:{}",
                    peer_service_name(name),
                    Component::Registry.port()
                ),
            );
        }
        Component::Gateway => {
            if let Some(jwt) = &shop.gateway.jwt {
                if let Some(u) = &jwt.jwks_url {
                    d.insert("SHOP_JWKS_URL".to_string(), u.clone());
                }
                if let Some(i) = &jwt.issuer {
                    d.insert("SHOP_JWT_ISSUER".to_string(), i.clone());
                }
                if let Some(a) = &jwt.audience {
                    d.insert("SHOP_JWT_AUDIENCE".to_string(), a.clone());
                }
            }
            if let Some(r) = &shop.gateway.rate_limit {
                d.insert(
                    "SHOP_RATE_LIMIT_PER_SECOND".to_string(),
                    r.requests_per_second.to_string(),
                );
                d.insert("SHOP_RATE_LIMIT_BURST".to_string(), r.burst.to_string());
            }
            if shop.gateway.tls_secret.is_some() {
                d.insert(
                    "SHOP_TLS_CERT_FILE".to_string(),
                    format!("{TLS_MOUNT_PATH}/tls.crt"),
                );
                d.insert(
                    "SHOP_TLS_KEY_FILE".to_string(),
                    format!("{TLS_MOUNT_PATH}/tls.key"),
                );
            }
        }
        _ => {}
    }
    match c {
        Component::Inventory | Component::Order | Component::Notification => {
            d.insert(
                "SHOP_FAULTS_FILE".to_string(),
                format!("{FAULTS_MOUNT_PATH}/{FAULTS_KEY}"),
            );
        }
        Component::Gateway => {
            d.insert(
                "SHOP_STATUS_FILE".to_string(),
                format!("{STATUS_MOUNT_PATH}/{STATUS_KEY}"),
            );
        }
        _ => {}
    }
    d
}

/// Name of the ConfigMap holding the Shop's fault flags.
pub fn faults_config_name(shop: &str) -> String {
    format!("{shop}-faults")
}

/// Name of the ConfigMap holding the Shop's status for its gateway.
pub fn status_config_name(shop: &str) -> String {
    format!("{shop}-status")
}

/// `<shop>-faults`: the flags of `spec.faults` as the components read them (camelCase, only the
/// flags that are set; `{}` when none). Always rendered, and always mounted (optionally), so
/// turning a flag on or off changes a file, never a pod template: nothing restarts.
fn faults_config_map(shop: &ValidatedShop) -> ConfigMap {
    let mut flags = shop
        .faults
        .as_ref()
        .and_then(|f| serde_json::to_value(f).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = flags.as_object_mut() {
        o.remove("allowInProduction");
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(faults_config_name(&shop.name)),
            namespace: Some(shop.namespace.clone()),
            labels: Some(named_labels(shop, "faults")),
            owner_references: Some(vec![shop.owner.clone()]),
            ..Default::default()
        },
        data: Some([(FAULTS_KEY.to_string(), flags.to_string())].into()),
        ..Default::default()
    }
}

/// `<shop>-status`: the Shop's status as JSON for its gateway's admin page. It carries the Shop's
/// labels but not `managed-by`, so the operator's owned watches, fingerprints and orphan cleanup
/// (all selected by `managed-by`) never see it: it is written after each status change, not
/// applied with the children. The owner reference still removes it with the Shop.
pub fn status_config_map(
    shop: &str,
    namespace: &str,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    body: &serde_json::Value,
) -> ConfigMap {
    let mut l = named_selector(shop, "status");
    l.insert(labels::PART_OF.into(), APP_NAME.into());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(status_config_name(shop)),
            namespace: Some(namespace.to_string()),
            labels: Some(l),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some([(STATUS_KEY.to_string(), body.to_string())].into()),
        ..Default::default()
    }
}

/// The database of a MySQL-backed component on the shared server (the original's names).
fn mysql_database(c: Component) -> &'static str {
    match c {
        Component::Order => "order_service",
        _ => "inventory_service",
    }
}

fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// Explicit env of the container: downward API, secrets, then the user's overrides (which
/// replace a variable of the same name in place, or are appended).
fn container_env(shop: &ValidatedShop, rc: &ResolvedComponent) -> Vec<EnvVar> {
    let c = rc.component;
    let mut env = vec![
        field_env("POD_IP", "status.podIP"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    if c.uses_mysql()
        && let Some(r) = &shop.mysql
    {
        // One MariaDB server, one database per service (as in the original): the Secret holds the
        // server URL and Kubernetes expands `$(VAR)` to build each service's DATABASE_URL. A shared
        // database would make the two services' sqlx migration histories collide.
        env.push(secret_env("SHOP_MYSQL_SERVER_URL", r));
        env.push(EnvVar {
            name: "DATABASE_URL".to_string(),
            value: Some(format!("$(SHOP_MYSQL_SERVER_URL)/{}", mysql_database(c))),
            value_from: None,
        });
    }
    if c.uses_mongodb()
        && let Some(r) = &shop.mongodb
    {
        env.push(secret_env("SHOP_MONGO_URL", r));
    }
    if c == Component::Gateway
        && let Some(r) = shop
            .gateway
            .jwt
            .as_ref()
            .and_then(|j| j.secret_ref.as_ref())
    {
        env.push(secret_env("SHOP_JWT_SECRET", r));
    }
    for user in &rc.env {
        match env.iter_mut().find(|e| e.name == user.name) {
            Some(existing) => *existing = user.clone(),
            None => env.push(user.clone()),
        }
    }
    env
}

fn probe(path: &str, scheme: &str, period: i32, failure: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(PORT_NAME.to_string()),
            scheme: Some(scheme.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure),
        success_threshold: Some(1),
        ..Default::default()
    }
}

/// The HorizontalPodAutoscaler of an autoscaled component, scaling its Deployment on CPU (a
/// `Resource` metric against the pods' requests) and/or one per-pod metric (`Pods`, served by a
/// custom-metrics adapter).
fn autoscaler(shop: &ValidatedShop, rc: &ResolvedComponent) -> Option<HorizontalPodAutoscaler> {
    let a = rc.autoscaling.as_ref()?;
    let c = rc.component;
    let name = child_name(&shop.name, c);
    let cpu = a.target_cpu_utilization.map(|t| MetricSpec {
        type_: "Resource".to_string(),
        resource: Some(ResourceMetricSource {
            name: "cpu".to_string(),
            target: MetricTarget {
                type_: "Utilization".to_string(),
                average_utilization: Some(t),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    let pods = a.metric.as_ref().map(|m| MetricSpec {
        type_: "Pods".to_string(),
        pods: Some(PodsMetricSource {
            metric: MetricIdentifier {
                name: m.name.clone(),
                selector: None,
            },
            target: MetricTarget {
                type_: "AverageValue".to_string(),
                average_value: Some(Quantity(m.average_value.clone())),
                ..Default::default()
            },
        }),
        ..Default::default()
    });
    Some(HorizontalPodAutoscaler {
        metadata: meta(shop, c, name.clone()),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name,
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(cpu.into_iter().chain(pods).collect()),
            behavior: None,
        },
        status: None,
    })
}

fn deployment(shop: &ValidatedShop, rc: &ResolvedComponent, config_hash: String) -> Deployment {
    let c = rc.component;
    let name = child_name(&shop.name, c);
    // The gateway with TLS on: its Secret mounted read-only, and probes over https (the kubelet
    // does not verify the certificate, so a self-signed or not-yet-trusted one still probes).
    let tls_secret = match c {
        Component::Gateway => shop.gateway.tls_secret.as_deref(),
        _ => None,
    };
    let scheme = if tls_secret.is_some() {
        "HTTPS"
    } else {
        "HTTP"
    };
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_string(),
        mount_path: "/tmp".to_string(),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity("64Mi".to_string())),
        }),
        ..Default::default()
    }];
    // The live files (fault flags, the Shop's status): optional, so a pod never waits for them,
    // and mounted whether or not anything is in them, so a change never touches the template.
    let live = match c {
        Component::Inventory | Component::Order | Component::Notification => {
            Some(("faults", faults_config_name(&shop.name), FAULTS_MOUNT_PATH))
        }
        Component::Gateway => Some(("status", status_config_name(&shop.name), STATUS_MOUNT_PATH)),
        _ => None,
    };
    if let Some((volume, config_map, path)) = live {
        mounts.push(VolumeMount {
            name: volume.to_string(),
            mount_path: path.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: volume.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map,
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(secret) = tls_secret {
        mounts.push(VolumeMount {
            name: "tls".to_string(),
            mount_path: TLS_MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "tls".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                // Readable by the pod's group (fsGroup) only.
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let container = Container {
        name: c.name().to_string(),
        image: Some(rc.image.clone()),
        image_pull_policy: Some(rc.pull_policy.as_str().to_string()),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_string()),
            container_port: c.port(),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(container_env(shop, rc)),
        resources: Some(rc.resources.clone()),
        // Startup gives a slow first start 60 s before liveness may restart the pod.
        startup_probe: Some(probe("/health/live", scheme, 2, 30)),
        liveness_probe: Some(probe("/health/live", scheme, 10, 3)),
        readiness_probe: Some(probe("/health/ready", scheme, 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let mut pod_labels = all_labels(shop, c);
    pod_labels.remove(labels::MANAGED_BY);
    let mut metadata = meta(shop, c, name.clone());
    if rc.autoscaling.is_some() {
        metadata.annotations =
            Some([(AUTOSCALED_ANNOTATION.to_string(), "true".to_string())].into());
    }
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // Left out under an HPA: applying it would take the count back from the autoscaler.
            replicas: rc.autoscaling.is_none().then_some(rc.replicas),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&shop.name, c)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some([(CONFIG_HASH_ANNOTATION.to_string(), config_hash)].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    // spec.placement, identical for every component.
                    node_selector: (!shop.node_selector.is_empty())
                        .then(|| shop.node_selector.clone()),
                    tolerations: (!shop.tolerations.is_empty()).then(|| shop.tolerations.clone()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The gateway's configured type; any component with a fixed node port needs at least NodePort.
fn service_type(shop: &ValidatedShop, rc: &ResolvedComponent) -> &'static str {
    let t = if rc.component == Component::Gateway {
        shop.gateway.service_type.as_str()
    } else {
        "ClusterIP"
    };
    if rc.node_port.is_some() && t == "ClusterIP" {
        "NodePort"
    } else {
        t
    }
}

/// The Service's ports; `tls`: the port speaks https (`appProtocol`, which Gateway API
/// implementations and several Ingress controllers read to pick the protocol to the backend).
fn service_ports(c: Component, node_port: Option<i32>, tls: bool) -> Vec<ServicePort> {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(PORT_NAME.to_string())),
        protocol: Some("TCP".to_string()),
        app_protocol: tls.then(|| "https".to_string()),
        ..Default::default()
    };
    let mut main = port(PORT_NAME, c.port());
    main.node_port = node_port;
    vec![main, port("dns-fallback", DNS_FALLBACK_PORT)]
}

fn network_policy(shop: &ValidatedShop, c: Component) -> NetworkPolicy {
    let from = c.callers().map(|callers| {
        let mut names: Vec<String> = callers.iter().map(|c| c.name().to_string()).collect();
        names.sort();
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [
                        (labels::NAME.to_string(), APP_NAME.to_string()),
                        (labels::INSTANCE.to_string(), shop.name.clone()),
                    ]
                    .into(),
                ),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: labels::COMPONENT.to_string(),
                    operator: "In".to_string(),
                    values: Some(names),
                }]),
            }),
            ..Default::default()
        }]
    });
    let port = || {
        vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(c.port())),
            protocol: Some("TCP".to_string()),
            end_port: None,
        }]
    };
    // `spec.monitoring.scrapeNamespace`: Prometheus's pods there may reach the port `/metrics`
    // is served on. (The gateway's rule admits everyone already; the extra rule is harmless.)
    let scrapers = shop.monitoring.scrape_namespace.as_ref().map(|ns| {
        vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(
                    [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into(),
                ),
                match_expressions: None,
            }),
            pod_selector: None,
            ip_block: None,
        }]
    });
    NetworkPolicy {
        metadata: meta(shop, c, child_name(&shop.name, c)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&shop.name, c)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(
                std::iter::once(NetworkPolicyIngressRule {
                    from,
                    ports: Some(port()),
                })
                .chain(scrapers.map(|from| NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: Some(port()),
                }))
                .collect(),
            ),
            egress: None,
        }),
    }
}

/// Renders every child object of a validated Shop, the managed stores' Secret with the given
/// credentials (read from the existing Secret, or generated once by the caller).
pub fn build_with_credentials(shop: &ValidatedShop, creds: &StoreCredentials) -> Resources {
    let mut res = build(shop);
    if stores::needs_secret(&shop.managed_stores) {
        res.store_secret = Some(stores::secret(shop, &shop.managed_stores, creds));
    }
    res
}

/// Renders every child object of a validated Shop except the stores' credentials Secret (the
/// components reference it by name): what tests of the pod contract need. The operator uses
/// [`build_with_credentials`].
pub fn build(shop: &ValidatedShop) -> Resources {
    let stores = shop
        .managed_stores
        .iter()
        .map(|m| stores::render(shop, m))
        .collect();
    let components = shop
        .enabled
        .iter()
        .map(|rc| {
            let c = rc.component;
            let name = child_name(&shop.name, c);
            let data = config_data(shop, c);
            let hash = fnv1a(&data);
            let selector = selector_labels(&shop.name, c);
            let service = Service {
                metadata: meta(shop, c, name.clone()),
                spec: Some(ServiceSpec {
                    type_: Some(service_type(shop, rc).to_string()),
                    selector: Some(selector.clone()),
                    ports: Some(service_ports(
                        c,
                        rc.node_port,
                        c == Component::Gateway && shop.gateway.tls_secret.is_some(),
                    )),
                    ..Default::default()
                }),
                status: None,
            };
            let peer_service = (c == Component::Registry).then(|| Service {
                metadata: meta(shop, c, peer_service_name(&shop.name)),
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".to_string()),
                    cluster_ip: Some("None".to_string()),
                    publish_not_ready_addresses: Some(true),
                    selector: Some(selector.clone()),
                    ports: Some(service_ports(c, None, false)),
                    ..Default::default()
                }),
                status: None,
            });
            let pdb = (rc.min_replicas() > 1).then(|| PodDisruptionBudget {
                metadata: meta(shop, c, name.clone()),
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector {
                        match_labels: Some(selector.clone()),
                        match_expressions: None,
                    }),
                    ..Default::default()
                }),
                status: None,
            });
            ComponentResources {
                component: c,
                service_account: ServiceAccount {
                    metadata: meta(shop, c, name.clone()),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                },
                config_map: ConfigMap {
                    metadata: meta(shop, c, name.clone()),
                    data: Some(data),
                    ..Default::default()
                },
                service,
                peer_service,
                network_policy: network_policy(shop, c),
                pdb,
                hpa: autoscaler(shop, rc),
                deployment: deployment(shop, rc, hash),
            }
        })
        .collect();
    Resources {
        components,
        stores,
        store_secret: None,
        exposure: exposure::render(shop),
        service_monitor: crate::monitoring::render(shop),
        faults: faults_config_map(shop),
        state: Prepared,
    }
}
