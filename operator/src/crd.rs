//! The `Shop` custom resource (group `shopkeeper.dev`, version `v1alpha1`): the one object a user
//! writes to get a whole shop. The OpenAPI schema (with CEL rules) is generated from these types,
//! so the API server refuses nonsense before the operator ever sees it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the Shop CRD.
pub const GROUP: &str = "shopkeeper.dev";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Full CRD name, `<plural>.<group>`.
pub const CRD_NAME: &str = "shops.shopkeeper.dev";
/// Longest Shop name: the longest child name is `<shop>-registry-peers` (15 more characters)
/// and every child name must stay a 63-character DNS label.
pub const MAX_SHOP_NAME: usize = 48;

/// Desired state of a shop: images, the six components and the backing services they use.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "shopkeeper.dev",
    version = "v1alpha1",
    kind = "Shop",
    plural = "shops",
    singular = "shop",
    shortname = "shp",
    category = "shopkeeper",
    namespaced,
    status = "ShopStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A whole shop: registry, gateway, product, inventory, order and notification services.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.readyComponents", description = "ready components / enabled components"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 48").message("metadata.name must be at most 48 characters: child names such as <name>-registry-peers must fit a 63-character DNS label"),
    validation = Rule::new("!has(self.spec.faults) || (has(self.spec.environment) && self.spec.environment == 'Development') || (has(self.spec.faults.allowInProduction) && self.spec.faults.allowInProduction)").message("spec.faults injects failures: only a Development Shop (spec.environment: Development) takes them, unless spec.faults.allowInProduction is true"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) because it prefixes Service names")
)]
#[serde(rename_all = "camelCase")]
pub struct ShopSpec {
    /// Default image repository and tag for every component (`<repository>/shop-<component>:<tag>`).
    #[serde(default)]
    pub image: ImageSpec,
    /// When true the operator leaves every child object alone (no apply, no delete) and only reports status.
    #[serde(default)]
    pub paused: bool,
    /// The six components; each may be disabled, scaled and overridden.
    #[serde(default)]
    pub components: Components,
    /// Databases, Kafka and Zipkin the components use.
    #[serde(default)]
    pub backing: BackingServices,
    /// Which nodes every component's pods may run on (node selector and tolerations), e.g. a
    /// dedicated node pool.
    #[serde(default, skip_serializing_if = "PlacementSpec::is_empty")]
    pub placement: PlacementSpec,
    /// What the Shop is for: `Production` (the default) refuses `faults` unless they are
    /// explicitly allowed; `Development` takes them.
    #[serde(default)]
    pub environment: Environment,
    /// Failures injected into the running components (chaos drills, demos of the breakers and the
    /// outbox). They reach the pods through a mounted file, so changing them restarts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultsSpec>,
    /// How Prometheus reaches the components' `/metrics`: a ServiceMonitor, and the namespace
    /// the NetworkPolicies admit scrapes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
}

/// What a Shop is for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Environment {
    /// Real customers: fault flags are refused unless `faults.allowInProduction`.
    #[default]
    Production,
    /// A developer's or a test's Shop: fault flags are welcome.
    Development,
}

/// Fault flags, each off when unset. The components re-read them within seconds of the kubelet
/// updating the mounted file (about a minute after the change on a default kubelet).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultsSpec {
    /// Every inventory API request waits this long first (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub inventory_latency_ms: Option<u32>,
    /// Share of inventory API requests answered `503` without touching the store (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub inventory_error_ratio: Option<f64>,
    /// The notification consumer takes no records while true (they wait in Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_consumer_paused: Option<bool>,
    /// Share of the order outbox's Kafka publishes that fail (the events stay in the outbox and
    /// are retried: nothing is lost) (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub kafka_publish_failure_ratio: Option<f64>,
    /// Take these flags although the Shop is not `environment: Development`.
    #[serde(default)]
    pub allow_in_production: bool,
}

impl FaultsSpec {
    /// The flags that are on, as `name=value` (for the status and the logs).
    pub fn active(&self) -> Vec<String> {
        let mut on = Vec::new();
        if let Some(ms) = self.inventory_latency_ms.filter(|ms| *ms > 0) {
            on.push(format!("inventoryLatencyMs={ms}"));
        }
        if let Some(r) = self.inventory_error_ratio.filter(|r| *r > 0.0) {
            on.push(format!("inventoryErrorRatio={r}"));
        }
        if self.notification_consumer_paused == Some(true) {
            on.push("notificationConsumerPaused=true".to_string());
        }
        if let Some(r) = self.kafka_publish_failure_ratio.filter(|r| *r > 0.0) {
            on.push(format!("kafkaPublishFailureRatio={r}"));
        }
        on
    }
}

/// Scraping the components' metrics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A ServiceMonitor (`monitoring.coreos.com/v1`, the Prometheus Operator's) `<shop>` selecting
    /// every component's Service; created only when the cluster serves that API (condition
    /// `Monitored` says otherwise); removed when this section is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
    /// A namespace (e.g. `monitoring`) whose pods may connect to every component's port, so
    /// Prometheus can scrape `/metrics` through the NetworkPolicies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("monitoring.scrapeNamespace must be a namespace name (a DNS label)"))]
    pub scrape_namespace: Option<String>,
}

/// What the ServiceMonitor asks of Prometheus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Scrape interval, a Prometheus duration (`15s`, `1m`); Prometheus's own default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$')").message("monitoring.serviceMonitor.interval must be a Prometheus duration such as 30s or 1m"))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitor, e.g. `release: kube-prometheus-stack`, so a
    /// Prometheus's `serviceMonitorSelector` picks it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub labels: BTreeMap<String, String>,
}

/// Image repository, tag and pull policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Registry and path prefix, e.g. `ghcr.io/example`; images are `<repository>/shop-<component>:<tag>`.
    #[serde(default = "default_repository")]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("image.repository must not be empty"))]
    #[schemars(length(max = 200))]
    pub repository: String,
    /// Image tag shared by all components.
    #[serde(default = "default_tag")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$')").message("image.tag must be a valid image tag (letters, digits, '_', '.', '-'; at most 128 characters)"))]
    pub tag: String,
    /// Kubernetes image pull policy.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

fn default_repository() -> String {
    "ghcr.io/shopkeeper".to_string()
}
fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            tag: default_tag(),
            pull_policy: PullPolicy::default(),
        }
    }
}

/// Kubernetes image pull policy (a unit-only enum keeps the schema structural).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Always pull.
    Always,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IfNotPresent => "IfNotPresent",
            Self::Always => "Always",
            Self::Never => "Never",
        }
    }
}

/// Per-component settings, one field per component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    /// Service registry (Eureka-compatible); started first.
    #[serde(default)]
    pub registry: ComponentSpec,
    /// API gateway: the only component that takes outside traffic; started last.
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// Product catalogue (MongoDB).
    #[serde(default)]
    pub product: ComponentSpec,
    /// Inventory (MySQL).
    #[serde(default)]
    pub inventory: ComponentSpec,
    /// Orders (MySQL + Kafka).
    #[serde(default)]
    pub order: ComponentSpec,
    /// Notifications (Kafka consumer).
    #[serde(default)]
    pub notification: ComponentSpec,
}

/// Settings every component has.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Whether the component runs; a disabled component has all its objects deleted.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Number of pods (0 keeps the objects but runs no pod).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Full image reference overriding `<repository>/shop-<component>:<tag>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.trim() != '' && !self.contains(' ')").message("image override must be a non-empty image reference without spaces"))]
    pub image: Option<String>,
    /// CPU/memory requests and limits; defaults are small (the services are Rust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables; they win over the operator's own settings of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
    /// Fixed node port for the component's Service (a ClusterIP Service becomes NodePort), e.g.
    /// for kind's host port mappings. The schema accepts any port; the API server refuses one
    /// outside its `--service-node-port-range` (30000-32767 unless the cluster configures another
    /// range) or already taken, and the Shop then reports `Degraded` naming this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// A HorizontalPodAutoscaler (`autoscaling/v2`) owns the pod count between `minReplicas` and
    /// `maxReplicas`: the operator creates it and stops setting `replicas` on the Deployment, so
    /// the two never fight. Removing the section deletes the HPA and hands the count back to
    /// `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// How a component's pod count follows its load.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetCPUUtilization) || has(self.metric)").message("autoscaling needs targetCPUUtilization or metric (what to scale on)"))]
pub struct AutoscalingSpec {
    /// Fewest pods (also the PodDisruptionBudget's trigger: more than one gets one).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU use across the pods, in percent of their CPU request (needs metrics-server).
    #[serde(
        default,
        rename = "targetCPUUtilization",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// A per-pod metric the component exports (served to the HPA by a custom-metrics adapter
    /// such as prometheus-adapter), e.g. `http_server_requests_in_flight` at an average of `20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<PodMetricTarget>,
}

/// A per-pod metric and the average value to hold it at.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricTarget {
    /// Metric name as the custom-metrics API serves it.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z_:][a-zA-Z0-9_:]*$')").message("autoscaling.metric.name must be a Prometheus metric name"))]
    pub name: String,
    /// Target average per pod, a Kubernetes quantity (`20`, `500m`).
    #[x_kube(validation = Rule::new("isQuantity(self)").message("autoscaling.metric.averageValue must be a quantity such as 20 or 500m"))]
    pub average_value: String,
}

fn default_true() -> bool {
    true
}
fn default_replicas() -> i32 {
    1
}

impl Default for ComponentSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: 1,
            image: None,
            resources: None,
            env: Vec::new(),
            node_port: None,
            autoscaling: None,
        }
    }
}

/// The gateway: a component plus JWT, rate-limit and Service-type settings, and how it is
/// exposed outside the cluster (an Ingress or a Gateway API HTTPRoute, at most one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.ingress) || !has(self.httpRoute)").message("gateway.ingress and gateway.httpRoute cannot both be set: expose the gateway through one of them"))]
#[x_kube(validation = Rule::new("(!has(self.ingress) && !has(self.httpRoute)) || !has(self.enabled) || self.enabled").message("gateway.ingress and gateway.httpRoute need the gateway enabled (they route to its Service)"))]
pub struct GatewaySpec {
    /// Common component settings.
    #[serde(flatten)]
    pub common: ComponentSpec,
    /// How the gateway is exposed.
    #[serde(default)]
    pub service_type: ServiceType,
    /// JWT validation; without it the gateway only serves public routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Token-bucket rate limit per client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// An Ingress (`networking.k8s.io/v1`) `<shop>-gateway` routing `/` on `host` to the
    /// gateway's Service; removed when this section is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// A Gateway API HTTPRoute (`gateway.networking.k8s.io/v1`) `<shop>-gateway` attaching the
    /// gateway's Service to existing Gateways; created only when the cluster serves the Gateway
    /// API (condition `Exposed` says otherwise); removed when this section is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteSpec>,
    /// TLS on the gateway itself: its port then serves only TLS 1.2/1.3 (HTTP/2 through ALPN)
    /// with the certificate of a `kubernetes.io/tls` Secret, its probes use https, and a renewed
    /// Secret (cert-manager, a rotation job) is served without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsSpec>,
}

/// The certificate the gateway serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTlsSpec {
    /// A `kubernetes.io/tls` Secret in the Shop's namespace (keys `tls.crt`, chain leaf first,
    /// and `tls.key`), mounted read-only into the gateway pods. Until it exists the gateway pods
    /// wait in `ContainerCreating`; the Shop's `GatewayTlsReady` condition names what is missing.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway.tls.secretName must be a Secret name (a DNS subdomain)"))]
    pub secret_name: String,
}

/// Most `httpRoute.parentRefs` (the Gateway API's own limit).
pub const MAX_ROUTE_PARENTS: usize = 32;
/// Most `httpRoute.hostnames` (the Gateway API's own limit).
pub const MAX_ROUTE_HOSTNAMES: usize = 16;
/// Most `ingress.annotations`.
pub const MAX_INGRESS_ANNOTATIONS: usize = 64;

/// The Ingress the operator creates for the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// `ingressClassName`: which Ingress controller serves it; absent: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway.ingress.className must be an IngressClass name (a DNS subdomain); leave it out for the default class"))]
    pub class_name: Option<String>,
    /// The host name clients use, e.g. `shop.example.com` (a leading `*.` wildcard is allowed).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("gateway.ingress.host must not be empty"))]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway.ingress.host must be a DNS name (lower-case letters, digits, '-' and '.', optionally starting with '*.'), e.g. shop.example.com"))]
    pub host: String,
    /// A `kubernetes.io/tls` Secret in the Shop's namespace holding the certificate for `host`:
    /// the Ingress then terminates TLS for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway.ingress.tlsSecretName must be a Secret name (a DNS subdomain)"))]
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress, for the controller that serves it (e.g.
    /// `nginx.ingress.kubernetes.io/proxy-body-size`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_INGRESS_ANNOTATIONS, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,
}

/// The HTTPRoute the operator creates for the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways (or listeners of one) the route attaches to; at least one.
    #[schemars(length(min = 1, max = MAX_ROUTE_PARENTS))]
    pub parent_refs: Vec<RouteParentRef>,
    /// Host names the route answers (each a DNS name, optionally `*.`); absent: the listeners'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ROUTE_HOSTNAMES), extend("items" = {"type": "string", "maxLength": 253}))]
    #[x_kube(validation = Rule::new("self.all(h, h.matches('^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("gateway.httpRoute.hostnames must be DNS names (lower-case letters, digits, '-' and '.', optionally starting with '*.'), at most 253 characters"))]
    pub hostnames: Vec<String>,
}

/// A Gateway the HTTPRoute attaches to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentRef {
    /// Name of the Gateway.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("gateway.httpRoute.parentRefs[].name must not be empty"))]
    pub name: String,
    /// Namespace of the Gateway; absent: the Shop's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("gateway.httpRoute.parentRefs[].namespace must be a namespace name (a DNS label)"))]
    pub namespace: Option<String>,
    /// One listener of that Gateway, by name; absent: every listener that allows the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway.httpRoute.parentRefs[].sectionName must be a listener name (a DNS subdomain)"))]
    pub section_name: Option<String>,
}

/// Kubernetes Service type for the gateway.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Cluster-internal (use an Ingress or port-forward).
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// JWT settings: exactly one of an HS256 shared secret or a JWKS URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.jwksUrl)").message("jwt needs exactly one of secretRef (HS256 shared secret) or jwksUrl (RS256/ES256)"))]
pub struct JwtSpec {
    /// Secret key holding the HS256 shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// URL of the JWKS document for RS256/ES256 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("jwt.jwksUrl must be an http(s) URL"))]
    pub jwks_url: Option<String>,
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Token-bucket rate limit.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained requests per second per client.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_second: i32,
    /// Bucket size (burst).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: i32,
}

/// A key in a Secret of the Shop's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[x_kube(validation = Rule::new("self != ''").message("secretRef.name must not be empty"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[x_kube(validation = Rule::new("self != ''").message("secretRef.key must not be empty"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

/// Most entries of `placement.nodeSelector` and `placement.tolerations`.
pub const MAX_PLACEMENT_ENTRIES: usize = 32;

/// Where the pods of every component may run. Both parts go unchanged into each component's pod
/// template; the operator never looks at the nodes themselves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Node labels a node must carry (every one of them) to run the pods, e.g.
    /// `{pool: shops}`. Keys are label keys (`[prefix/]name`), values label values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_PLACEMENT_ENTRIES, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 317 && k.indexOf('/') <= 253 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))").message("placement.nodeSelector keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$'))").message("placement.nodeSelector values must be label values: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub node_selector: BTreeMap<String, String>,
    /// Node taints the pods tolerate, as in a pod spec. A toleration only allows a tainted node;
    /// pair it with `nodeSelector` to keep the pods on that node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PLACEMENT_ENTRIES))]
    pub tolerations: Vec<Toleration>,
}

impl PlacementSpec {
    /// Nothing asked for: the scheduler may use any untainted node.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.tolerations.is_empty()
    }

    /// The local stack's kwok fake node (`hack/stack.sh`): label `type: kwok`, taint
    /// `kwok.x-k8s.io/node=fake:NoSchedule`. kwok reports pods Ready without running them, which
    /// is what the operator's cluster tests and benchmark need (their images do not exist); the
    /// taint keeps every other pod on the real node.
    pub fn kwok() -> Self {
        Self {
            node_selector: [("type".to_string(), "kwok".to_string())].into(),
            tolerations: vec![Toleration {
                key: Some("kwok.x-k8s.io/node".to_string()),
                operator: Some(TolerationOperator::Exists),
                value: None,
                effect: Some(TaintEffect::NoSchedule),
                toleration_seconds: None,
            }],
        }
    }
}

/// A toleration of node taints: the fields of a pod's `core/v1` Toleration, with their rules in
/// the schema so that a mistake is refused when the Shop is written, not when the operator
/// applies a Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')").message("a toleration without a key must use operator Exists (it then tolerates every taint)"))]
#[x_kube(validation = Rule::new("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''").message("a toleration with operator Exists must not have a value"))]
#[x_kube(validation = Rule::new("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')").message("tolerationSeconds needs effect NoExecute"))]
pub struct Toleration {
    /// Taint key to match; empty (with operator Exists) matches every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 317))]
    #[x_kube(validation = Rule::new("self == '' || (self.indexOf('/') <= 253 && self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))").message("toleration key must be a label key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub key: Option<String>,
    /// How the value is compared (the schema shows [`TolerationOperator`]'s description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// Taint value to match with operator `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$')").message("toleration value must be a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub value: Option<String>,
    /// The taint effect matched (the schema shows [`TaintEffect`]'s description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// With effect `NoExecute`: how long a running pod stays once the taint appears (absent:
    /// forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// How the toleration matches a taint: `Equal` (the default; key and value must match) or
/// `Exists` (the key must match, any value; with no key, every taint matches).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TolerationOperator {
    /// Key and value must both match.
    Equal,
    /// The key must match (any value); with no key, every taint matches.
    Exists,
}

impl TolerationOperator {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "Equal",
            Self::Exists => "Exists",
        }
    }
}

/// The taint effect the toleration matches; absent matches every effect.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    /// New pods are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node when it can.
    PreferNoSchedule,
    /// Running pods are evicted, new ones not scheduled.
    NoExecute,
}

impl TaintEffect {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

/// Backing services: where the data and the events live. Each store is either `managed` (the
/// operator runs it in the Shop's namespace) or `external` (the Shop points at one the user runs).
/// A store that is not mentioned is managed when an enabled component needs it, so a dev Shop
/// gets its stores; a Shop written before the modes existed (only `urlSecretRef`,
/// `bootstrapServers` or `endpoint`) keeps using its external store unchanged.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackingServices {
    /// MySQL/MariaDB for inventory and order; each gets its own database (`inventory_service`,
    /// `order_service`) in `DATABASE_URL`. External: `urlSecretRef` names a Secret key holding the
    /// server URL without a database (e.g. `mysql://user:pass@host:3306`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<DatabaseBacking>,
    /// MongoDB (managed: FerretDB on SQLite) for product and notification (`SHOP_MONGO_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<DatabaseBacking>,
    /// Kafka (managed: one KRaft broker) for order and notification (`SHOP_KAFKA_BOOTSTRAP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaBacking>,
    /// Zipkin span collector for every component (`SHOP_ZIPKIN_ENDPOINT`); managed Zipkin keeps
    /// traces in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinBacking>,
}

/// Who runs a backing store.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// The operator runs the store: a single-replica StatefulSet, a Service and (except Zipkin)
    /// a PersistentVolumeClaim.
    Managed,
    /// The user runs the store; the Shop says where it is.
    External,
}

/// Settings of a store the operator runs (`mode: managed`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the store's PersistentVolumeClaim (default 1Gi). Growing it later needs a
    /// StorageClass that allows expansion and a hand edit of the PVC (StatefulSet templates are
    /// immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    /// StorageClass of the PVC; absent: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("storage.storageClassName must not be empty (leave it out for the default class)"))]
    pub storage_class_name: Option<String>,
}

/// MySQL or MongoDB: external through a Secret key holding the URL, or managed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'managed' || !has(self.urlSecretRef)").message("urlSecretRef cannot be combined with mode: managed (the operator generates the credentials); remove urlSecretRef or set mode: external"))]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'external' || has(self.urlSecretRef)").message("mode: external needs urlSecretRef (the Secret key holding the URL)"))]
#[x_kube(validation = Rule::new("(has(self.mode) ? self.mode == 'managed' : !has(self.urlSecretRef)) || (!has(self.image) && !has(self.storage) && !has(self.keepData) && !has(self.resources))").message("image, storage, keepData and resources only apply to mode: managed, not to an external store (urlSecretRef)"))]
pub struct DatabaseBacking {
    /// `managed` or `external`; absent: external when `urlSecretRef` is set, managed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<StoreMode>,
    /// External: the Secret key holding the URL (URLs carry passwords).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Managed: the store's image (default: see `stores::DEFAULT_IMAGES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.trim() != '' && !self.contains(' ')").message("image must be a non-empty image reference without spaces"))]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Managed: the PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Managed: keep the PVC when the store stops being managed or the Shop is deleted
    /// (default true: data is never deleted silently).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_data: Option<bool>,
    /// Managed: CPU/memory of the store's container (defaults fit a dev Shop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Kafka: external bootstrap servers, or a managed single KRaft broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'managed' || !has(self.bootstrapServers)").message("bootstrapServers cannot be combined with mode: managed; remove bootstrapServers or set mode: external"))]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'external' || has(self.bootstrapServers)").message("mode: external needs bootstrapServers"))]
#[x_kube(validation = Rule::new("(has(self.mode) ? self.mode == 'managed' : !has(self.bootstrapServers)) || (!has(self.image) && !has(self.storage) && !has(self.keepData) && !has(self.resources))").message("image, storage, keepData and resources only apply to mode: managed, not to an external Kafka (bootstrapServers)"))]
pub struct KafkaBacking {
    /// `managed` or `external`; absent: external when `bootstrapServers` is set, managed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<StoreMode>,
    /// External: comma-separated `host:port` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("kafka.bootstrapServers must not be empty"))]
    #[schemars(length(max = 1024))]
    pub bootstrap_servers: Option<String>,
    /// Managed: the broker's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.trim() != '' && !self.contains(' ')").message("image must be a non-empty image reference without spaces"))]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Managed: the PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Managed: keep the PVC when the store stops being managed or the Shop is deleted (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_data: Option<bool>,
    /// Managed: CPU/memory of the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Partitions of the OrderPlaced topic when order creates it (either mode; default 3, so up to
    /// three notification replicas consume in parallel). An existing topic is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub partitions: Option<i32>,
}

/// Zipkin: an external span endpoint, or a managed in-memory Zipkin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'managed' || !has(self.endpoint)").message("endpoint cannot be combined with mode: managed; remove endpoint or set mode: external"))]
#[x_kube(validation = Rule::new("!has(self.mode) || self.mode != 'external' || has(self.endpoint)").message("mode: external needs endpoint"))]
#[x_kube(validation = Rule::new("(has(self.mode) ? self.mode == 'managed' : !has(self.endpoint)) || (!has(self.image) && !has(self.resources))").message("image and resources only apply to mode: managed, not to an external Zipkin (endpoint)"))]
pub struct ZipkinBacking {
    /// `managed` or `external`; absent: external when `endpoint` is set, managed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<StoreMode>,
    /// External: e.g. `http://zipkin.observability.svc:9411/api/v2/spans`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("zipkin.endpoint must be an http(s) URL"))]
    #[schemars(length(max = 1024))]
    pub endpoint: Option<String>,
    /// Managed: Zipkin's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.trim() != '' && !self.contains(' ')").message("image must be a non-empty image reference without spaces"))]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Not supported: managed Zipkin keeps its traces in memory. The field exists so that the
    /// API server refuses it with a message instead of silently dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("false").message("zipkin.storage is not supported: managed Zipkin keeps traces in memory and has no volume"))]
    pub storage: Option<StorageSpec>,
    /// Managed: CPU/memory of Zipkin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

// The one word `kubectl get shops` shows. Which one follows from the reconcile's outcome and
// the components' readiness (`status::compute`); a step that failed before the status could be
// computed makes it Degraded (`status::reconcile_failed`).
/// One word summary: Available, Progressing, Degraded, Paused or Invalid.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Every enabled component is ready.
    Available,
    /// Applied; components are still starting or rolling.
    Progressing,
    /// Something the operator cannot fix by waiting: a store, a child, a failed step.
    Degraded,
    /// `spec.paused`: nothing is applied or deleted.
    Paused,
    /// The spec names something that cannot exist (the reason is in the Available condition).
    Invalid,
}

impl Phase {
    /// The word itself.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Available => "Available",
            Phase::Progressing => "Progressing",
            Phase::Degraded => "Degraded",
            Phase::Paused => "Paused",
            Phase::Invalid => "Invalid",
        }
    }

    /// Whether reaching this phase is worth a Warning event.
    pub fn is_warning(self) -> bool {
        matches!(self, Phase::Degraded | Phase::Invalid)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state, computed deterministically from the applied objects so that writing it never
/// triggers another reconcile.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShopStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word summary: Available, Progressing, Degraded, Paused or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `<ready>/<enabled>` components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_components: Option<String>,
    /// Per enabled component, in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// Available / Progressing / Degraded, Kubernetes conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Replica counts of one component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component name (registry, gateway, ...).
    pub name: String,
    /// Replicas asked for.
    pub desired: i32,
    /// Pods passing readiness.
    pub ready: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Image the Deployment runs.
    pub image: String,
}
