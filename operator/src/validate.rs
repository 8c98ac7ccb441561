//! Step 1 of the pipeline (pure): turns a `Shop` as stored into a `ValidatedShop` with every
//! default resolved, or a precise error the user can act on. Rules the API server already
//! enforces through CEL are checked again here, because an object stored before a CRD upgrade
//! (or applied with validation off) must not crash the build step.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::component::Component;
use crate::crd::{
    AutoscalingSpec, BackingServices, ComponentSpec, Environment, FaultsSpec, GatewaySpec,
    HttpRouteSpec, IngressSpec, JwtSpec, MAX_INGRESS_ANNOTATIONS, MAX_PLACEMENT_ENTRIES,
    MAX_ROUTE_HOSTNAMES, MAX_ROUTE_PARENTS, MAX_SHOP_NAME, MonitoringSpec, PlacementSpec,
    PullPolicy, RateLimitSpec, SecretKeyRef, ServiceType, Shop, StorageSpec, StoreMode,
    TolerationOperator,
};
use crate::stores::{self, DEFAULT_STORAGE, ManagedStore, Store};

/// Why a Shop cannot be turned into objects. Each message names the offending field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// The object has no namespace (cannot happen for a stored namespaced object).
    #[error("metadata.namespace is missing")]
    MissingNamespace,
    /// The object has no uid, so children cannot point at it.
    #[error("metadata.uid is missing")]
    MissingUid,
    /// The name would overflow a child's DNS label or is not a DNS-1035 label.
    #[error("metadata.name {0:?} must be a DNS-1035 label of at most {MAX_SHOP_NAME} characters")]
    BadName(String),
    /// A negative or absurd replica count.
    #[error("spec.components.{component}.replicas must be between 0 and 100, got {replicas}")]
    BadReplicas {
        /// Component concerned.
        component: Component,
        /// The value given.
        replicas: i32,
    },
    /// Fault flags on a Shop that is not for development.
    #[error(
        "spec.faults injects failures: only a Development Shop (spec.environment: Development) takes them, unless spec.faults.allowInProduction is true"
    )]
    FaultsNotAllowed,
    /// A fault ratio outside 0..=1 or a latency over a minute.
    #[error("spec.faults.{field}: {problem}")]
    BadFault {
        /// The flag.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// An autoscaling section the HPA could not follow.
    #[error("spec.components.{component}.autoscaling: {problem}")]
    BadAutoscaling {
        /// Component concerned.
        component: Component,
        /// What is wrong.
        problem: &'static str,
    },
    /// An empty image repository/tag/override.
    #[error("{field} must not be empty")]
    EmptyImage {
        /// The field path.
        field: String,
    },
    /// The same env name twice in one component's overrides.
    #[error("spec.components.{component}.env has {name:?} more than once")]
    DuplicateEnv {
        /// Component concerned.
        component: Component,
        /// Variable name.
        name: String,
    },
    /// Two components asking for the same node port.
    #[error("spec.components.{component}.nodePort {port} is already used by another component")]
    DuplicateNodePort {
        /// Component concerned.
        component: Component,
        /// The port.
        port: i32,
    },
    /// A node port that is no TCP port at all (the cluster's own range is the API server's to check).
    #[error("spec.components.{component}.nodePort must be between 1 and 65535, got {port}")]
    BadNodePort {
        /// Component concerned.
        component: Component,
        /// The port.
        port: i32,
    },
    /// A backing store whose mode and fields contradict each other (CEL refuses these too).
    #[error("spec.backing.{store}: {problem}")]
    BadBacking {
        /// The store concerned.
        store: Store,
        /// What is wrong.
        problem: &'static str,
    },
    /// The Shop's name is too long for a managed store's StatefulSet name.
    #[error(
        "metadata.name {name:?} is too long for a managed spec.backing.{store}: at most {max} characters, so that its StatefulSet {name}-{store} fits 52 characters"
    )]
    NameTooLongForStore {
        /// The Shop's name.
        name: String,
        /// The managed store.
        store: Store,
        /// Longest allowed name.
        max: usize,
    },
    /// `gateway.ingress`, `gateway.httpRoute` or `gateway.tls` with something the API server
    /// would refuse.
    #[error("spec.components.gateway.{field}: {problem}")]
    BadExposure {
        /// The field path below the gateway, e.g. `ingress.host`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// JWT settings with both or neither of secretRef / jwksUrl.
    #[error("spec.components.gateway.jwt needs exactly one of secretRef or jwksUrl")]
    JwtSource,
    /// More node selector entries or tolerations than the schema allows.
    #[error(
        "spec.placement.{field} has {count} entries, at most {MAX_PLACEMENT_ENTRIES} are allowed"
    )]
    TooManyPlacementEntries {
        /// `nodeSelector` or `tolerations`.
        field: &'static str,
        /// How many there are.
        count: usize,
    },
    /// A node selector entry that is not a label key and value.
    #[error("spec.placement.nodeSelector entry {key:?}: {problem}")]
    BadNodeSelector {
        /// The entry's key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A toleration the API server would refuse in a pod template.
    #[error("spec.placement.tolerations[{index}]: {problem}")]
    BadToleration {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        problem: &'static str,
    },
}

/// One enabled component with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedComponent {
    /// Which component.
    pub component: Component,
    /// Pod count.
    pub replicas: i32,
    /// Full image reference.
    pub image: String,
    /// Pull policy.
    pub pull_policy: PullPolicy,
    /// Requests and limits.
    pub resources: ResourceRequirements,
    /// User env overrides (win over the operator's).
    pub env: Vec<EnvVar>,
    /// Fixed node port of the Service.
    pub node_port: Option<i32>,
    /// When set, an HPA owns the pod count and `replicas` is not applied.
    pub autoscaling: Option<AutoscalingSpec>,
}

impl ResolvedComponent {
    /// The fewest pods this component runs: what decides whether it gets a
    /// PodDisruptionBudget, and what the status expects before an autoscaler has acted.
    pub fn min_replicas(&self) -> i32 {
        self.autoscaling
            .as_ref()
            .map_or(self.replicas, |a| a.min_replicas)
    }
}

/// Gateway-only settings.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct GatewaySettings {
    /// Service type.
    pub service_type: ServiceType,
    /// JWT validation.
    pub jwt: Option<JwtSpec>,
    /// Rate limit.
    pub rate_limit: Option<RateLimitSpec>,
    /// How the gateway is exposed outside the cluster, if at all.
    pub exposure: Option<Exposure>,
    /// The `kubernetes.io/tls` Secret the gateway serves its certificate from (TLS on its port).
    pub tls_secret: Option<String>,
}

/// The object the operator creates to expose the gateway (`spec.components.gateway.ingress` or
/// `.httpRoute`; the schema allows at most one).
#[derive(Clone, Debug, PartialEq)]
pub enum Exposure {
    /// A `networking.k8s.io/v1` Ingress.
    Ingress(IngressSpec),
    /// A `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute(HttpRouteSpec),
}

/// Partitions of the OrderPlaced topic when the Shop does not say.
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 3;

/// A Shop the build step can render without further checks.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedShop {
    /// Shop name (prefix of every child).
    pub name: String,
    /// Namespace of the Shop and its children.
    pub namespace: String,
    /// Controller owner reference every child carries.
    pub owner: OwnerReference,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Leave children alone.
    pub paused: bool,
    /// Image tag (for the version label).
    pub version: String,
    /// Enabled components in apply order.
    pub enabled: Vec<ResolvedComponent>,
    /// Disabled components (their objects get deleted).
    pub disabled: Vec<Component>,
    /// `DATABASE_URL` source.
    pub mysql: Option<SecretKeyRef>,
    /// `SHOP_MONGO_URL` source.
    pub mongodb: Option<SecretKeyRef>,
    /// `SHOP_KAFKA_BOOTSTRAP`.
    pub kafka_bootstrap: Option<String>,
    /// `SHOP_KAFKA_PARTITIONS` (order creates its topic with it).
    pub kafka_partitions: i32,
    /// `SHOP_ZIPKIN_ENDPOINT`.
    pub zipkin_endpoint: Option<String>,
    /// Gateway extras.
    pub gateway: GatewaySettings,
    /// Stores the operator runs, in [`Store::ALL`] order (only those in use).
    pub managed_stores: Vec<ManagedStore>,
    /// Stores the user runs that an enabled component uses, in [`Store::ALL`] order.
    pub external_stores: Vec<ExternalStore>,
    /// Node labels every pod requires (`spec.placement.nodeSelector`).
    pub node_selector: BTreeMap<String, String>,
    /// Taints every pod tolerates (`spec.placement.tolerations`).
    pub tolerations: Vec<Toleration>,
    /// `spec.monitoring` (empty when unset).
    pub monitoring: MonitoringSpec,
    /// `spec.faults`, allowed for this Shop (`None` when unset).
    pub faults: Option<FaultsSpec>,
}

/// A store the user runs, as the Shop points at it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalStore {
    /// Which store.
    pub store: Store,
    /// MySQL, MongoDB: the Secret key holding the URL (the operator checks that it exists).
    pub secret: Option<SecretKeyRef>,
    /// Kafka, Zipkin: the bootstrap servers or span endpoint.
    pub address: Option<String>,
}

/// How one store is resolved: managed, or the external URL/Secret it points at.
enum Resolved {
    Managed(ManagedStore),
    External(ExternalStore),
}

/// The fields a store entry may carry, whatever its kind.
struct Entry<'a> {
    mode: Option<StoreMode>,
    secret: Option<&'a SecretKeyRef>,
    address: Option<&'a String>,
    image: Option<&'a String>,
    storage: Option<&'a StorageSpec>,
    keep_data: Option<bool>,
    resources: Option<&'a ResourceRequirements>,
}

fn entry(b: &BackingServices, store: Store) -> Option<Entry<'_>> {
    Some(match store {
        Store::Mysql | Store::Mongodb => {
            let d = if store == Store::Mysql {
                b.mysql.as_ref()?
            } else {
                b.mongodb.as_ref()?
            };
            Entry {
                mode: d.mode,
                secret: d.url_secret_ref.as_ref(),
                address: None,
                image: d.image.as_ref(),
                storage: d.storage.as_ref(),
                keep_data: d.keep_data,
                resources: d.resources.as_ref(),
            }
        }
        Store::Kafka => {
            let k = b.kafka.as_ref()?;
            Entry {
                mode: k.mode,
                secret: None,
                address: k.bootstrap_servers.as_ref(),
                image: k.image.as_ref(),
                storage: k.storage.as_ref(),
                keep_data: k.keep_data,
                resources: k.resources.as_ref(),
            }
        }
        Store::Zipkin => {
            let z = b.zipkin.as_ref()?;
            Entry {
                mode: z.mode,
                secret: None,
                address: z.endpoint.as_ref(),
                image: z.image.as_ref(),
                // Refused by `resolve_store`: Zipkin has no volume.
                storage: z.storage.as_ref(),
                keep_data: None,
                resources: z.resources.as_ref(),
            }
        }
    })
}

/// Resolves one store: `None` when nothing needs it (no enabled component uses it and the Shop
/// does not ask for it to be managed).
fn resolve_store(
    b: &BackingServices,
    store: Store,
    needed: bool,
) -> Result<Option<Resolved>, ValidationError> {
    let bad = |problem| ValidationError::BadBacking { store, problem };
    let e = entry(b, store);
    if store == Store::Zipkin && e.as_ref().is_some_and(|e| e.storage.is_some()) {
        return Err(bad(
            "storage is not supported: managed Zipkin keeps traces in memory and has no volume",
        ));
    }
    let external_field = e
        .as_ref()
        .is_some_and(|e| e.secret.is_some() || e.address.is_some());
    let mode = match e.as_ref().and_then(|e| e.mode) {
        Some(m) => m,
        None if external_field => StoreMode::External,
        None => StoreMode::Managed,
    };
    let explicit = e.as_ref().and_then(|e| e.mode) == Some(StoreMode::Managed);
    match mode {
        StoreMode::External => {
            let e = e.ok_or_else(|| bad("mode: external needs its URL"))?;
            if !external_field {
                return Err(bad(match store {
                    Store::Mysql | Store::Mongodb => "mode: external needs urlSecretRef",
                    Store::Kafka => "mode: external needs bootstrapServers",
                    Store::Zipkin => "mode: external needs endpoint",
                }));
            }
            if e.image.is_some()
                || e.storage.is_some()
                || e.keep_data.is_some()
                || e.resources.is_some()
            {
                return Err(bad(
                    "image, storage, keepData and resources only apply to mode: managed",
                ));
            }
            if let Some(a) = e.address
                && a.trim().is_empty()
            {
                return Err(bad("the address of an external store must not be empty"));
            }
            Ok(needed.then(|| {
                Resolved::External(ExternalStore {
                    store,
                    secret: e.secret.cloned(),
                    address: e.address.map(|a| a.trim().to_string()),
                })
            }))
        }
        StoreMode::Managed => {
            if external_field {
                return Err(bad(match store {
                    Store::Mysql | Store::Mongodb => {
                        "urlSecretRef cannot be combined with mode: managed"
                    }
                    Store::Kafka => "bootstrapServers cannot be combined with mode: managed",
                    Store::Zipkin => "endpoint cannot be combined with mode: managed",
                }));
            }
            if !(needed || explicit) {
                return Ok(None);
            }
            let image = match e.as_ref().and_then(|e| e.image) {
                Some(i) if i.trim().is_empty() => return Err(bad("image must not be empty")),
                Some(i) => i.trim().to_string(),
                None => store.default_image().to_string(),
            };
            let storage = e.as_ref().and_then(|e| e.storage);
            Ok(Some(Resolved::Managed(ManagedStore {
                store,
                image,
                size: storage
                    .and_then(|s| s.size.clone())
                    .unwrap_or_else(|| Quantity(DEFAULT_STORAGE.to_string())),
                storage_class: storage.and_then(|s| s.storage_class_name.clone()),
                keep_data: e.as_ref().and_then(|e| e.keep_data).unwrap_or(true),
                resources: e
                    .as_ref()
                    .and_then(|e| e.resources.cloned())
                    .unwrap_or_else(|| store.default_resources()),
            })))
        }
    }
}

impl ValidatedShop {
    /// Settings of an enabled component.
    pub fn component(&self, c: Component) -> Option<&ResolvedComponent> {
        self.enabled.iter().find(|r| r.component == c)
    }
}

fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SHOP_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

/// A label name: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain: dot-separated lower-case labels, at most 253 characters.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label (or taint) key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// A label value: empty, or a label name.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// A host name as an Ingress rule or an HTTPRoute takes it: a DNS subdomain, optionally with a
/// leading `*.` wildcard label, and not an IP address.
pub fn is_hostname(s: &str) -> bool {
    let bare = s.strip_prefix("*.").unwrap_or(s);
    is_dns1123_subdomain(bare) && bare.parse::<std::net::IpAddr>().is_err()
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ValidationError {
    ValidationError::BadExposure {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks `gateway.ingress` / `gateway.httpRoute` (CEL refuses the same when the Shop is written)
/// and resolves which one, if any, the operator creates.
fn exposure(gw: &GatewaySpec) -> Result<Option<Exposure>, ValidationError> {
    let dns = "must be a DNS subdomain (lower-case letters, digits, '-' and '.')";
    match (&gw.ingress, &gw.http_route) {
        (Some(_), Some(_)) => Err(bad(
            "ingress",
            "cannot be combined with httpRoute: expose the gateway through one of them",
        )),
        (Some(_), None) | (None, Some(_)) if !gw.common.enabled => Err(bad(
            if gw.ingress.is_some() {
                "ingress"
            } else {
                "httpRoute"
            },
            "needs the gateway enabled (it routes to the gateway's Service)",
        )),
        (Some(i), None) => {
            if i.host.is_empty() {
                return Err(bad("ingress.host", "must not be empty"));
            }
            if !is_hostname(&i.host) {
                return Err(bad(
                    "ingress.host",
                    format!(
                        "{:?} is not a DNS name (lower-case letters, digits, '-' and '.', optionally starting with '*.')",
                        i.host
                    ),
                ));
            }
            if let Some(c) = &i.class_name
                && !is_dns1123_subdomain(c)
            {
                return Err(bad("ingress.className", dns));
            }
            if let Some(t) = &i.tls_secret_name
                && !is_dns1123_subdomain(t)
            {
                return Err(bad("ingress.tlsSecretName", dns));
            }
            if i.annotations.len() > MAX_INGRESS_ANNOTATIONS {
                return Err(bad(
                    "ingress.annotations",
                    format!("at most {MAX_INGRESS_ANNOTATIONS} entries"),
                ));
            }
            if let Some(k) = i.annotations.keys().find(|k| !is_label_key(k)) {
                return Err(bad(
                    "ingress.annotations",
                    format!("{k:?} is not an annotation key ([prefix/]name)"),
                ));
            }
            Ok(Some(Exposure::Ingress(i.clone())))
        }
        (None, Some(r)) => {
            if r.parent_refs.is_empty() || r.parent_refs.len() > MAX_ROUTE_PARENTS {
                return Err(bad(
                    "httpRoute.parentRefs",
                    format!("needs 1 to {MAX_ROUTE_PARENTS} Gateways"),
                ));
            }
            for (n, p) in r.parent_refs.iter().enumerate() {
                if !is_dns1123_subdomain(&p.name) {
                    return Err(bad(format!("httpRoute.parentRefs[{n}].name"), dns));
                }
                if let Some(ns) = &p.namespace
                    && (ns.len() > 63 || ns.contains('.') || !is_dns1123_subdomain(ns))
                {
                    return Err(bad(
                        format!("httpRoute.parentRefs[{n}].namespace"),
                        "must be a namespace name (a DNS label)",
                    ));
                }
                if let Some(sn) = &p.section_name
                    && !is_dns1123_subdomain(sn)
                {
                    return Err(bad(format!("httpRoute.parentRefs[{n}].sectionName"), dns));
                }
            }
            if r.hostnames.len() > MAX_ROUTE_HOSTNAMES {
                return Err(bad(
                    "httpRoute.hostnames",
                    format!("at most {MAX_ROUTE_HOSTNAMES} entries"),
                ));
            }
            if let Some((n, h)) = r
                .hostnames
                .iter()
                .enumerate()
                .find(|(_, h)| !is_hostname(h))
            {
                return Err(bad(
                    format!("httpRoute.hostnames[{n}]"),
                    format!(
                        "{h:?} is not a DNS name (lower-case letters, digits, '-' and '.', optionally starting with '*.')"
                    ),
                ));
            }
            Ok(Some(Exposure::HttpRoute(r.clone())))
        }
        (None, None) => Ok(None),
    }
}

/// Checks `spec.placement` as the API server would check the pod template, and converts the
/// tolerations to the pod spec's type.
fn placement(
    p: &PlacementSpec,
) -> Result<(BTreeMap<String, String>, Vec<Toleration>), ValidationError> {
    for (field, count) in [
        ("nodeSelector", p.node_selector.len()),
        ("tolerations", p.tolerations.len()),
    ] {
        if count > MAX_PLACEMENT_ENTRIES {
            return Err(ValidationError::TooManyPlacementEntries { field, count });
        }
    }
    for (key, value) in &p.node_selector {
        let problem = if !is_label_key(key) {
            "the key is not a label key ([prefix/]name, name at most 63 characters)"
        } else if !is_label_value(value) {
            "the value is not a label value (at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends)"
        } else {
            continue;
        };
        return Err(ValidationError::BadNodeSelector {
            key: key.clone(),
            problem,
        });
    }
    let mut tolerations = Vec::with_capacity(p.tolerations.len());
    for (index, t) in p.tolerations.iter().enumerate() {
        let key = t.key.as_deref().unwrap_or("");
        let value = t.value.as_deref().unwrap_or("");
        let exists = t.operator == Some(TolerationOperator::Exists);
        let problem = if !key.is_empty() && !is_label_key(key) {
            Some("key is not a label key ([prefix/]name, name at most 63 characters)")
        } else if key.is_empty() && !exists {
            Some("a toleration without a key must use operator Exists")
        } else if exists && !value.is_empty() {
            Some("a toleration with operator Exists must not have a value")
        } else if !is_label_value(value) {
            Some("value is not a label value (at most 63 letters, digits, '-', '_' or '.')")
        } else if t.toleration_seconds.is_some()
            && t.effect != Some(crate::crd::TaintEffect::NoExecute)
        {
            Some("tolerationSeconds needs effect NoExecute")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ValidationError::BadToleration { index, problem });
        }
        tolerations.push(Toleration {
            key: t.key.clone(),
            operator: t.operator.map(|o| o.as_str().to_string()),
            value: t.value.clone(),
            effect: t.effect.map(|e| e.as_str().to_string()),
            toleration_seconds: t.toleration_seconds,
        });
    }
    Ok((p.node_selector.clone(), tolerations))
}

/// Default requests/limits: the services are small Rust binaries.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), Quantity("20m".to_string())),
                ("memory".to_string(), Quantity("32Mi".to_string())),
            ]
            .into(),
        ),
        limits: Some(
            [
                ("cpu".to_string(), Quantity("1".to_string())),
                ("memory".to_string(), Quantity("256Mi".to_string())),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

fn component_spec(shop: &Shop, c: Component) -> &ComponentSpec {
    let cs = &shop.spec.components;
    match c {
        Component::Registry => &cs.registry,
        Component::Gateway => &cs.gateway.common,
        Component::Product => &cs.product,
        Component::Inventory => &cs.inventory,
        Component::Order => &cs.order,
        Component::Notification => &cs.notification,
    }
}

/// The schema's autoscaling rules again (see the module doc): an HPA with min > max or nothing
/// to scale on is refused by the API server and would fail every apply.
fn check_autoscaling(component: Component, a: &AutoscalingSpec) -> Result<(), ValidationError> {
    let problem = if !(1..=100).contains(&a.min_replicas) || !(1..=100).contains(&a.max_replicas) {
        Some("minReplicas and maxReplicas must be between 1 and 100")
    } else if a.min_replicas > a.max_replicas {
        Some("minReplicas must not exceed maxReplicas")
    } else if a.target_cpu_utilization.is_none() && a.metric.is_none() {
        Some("needs targetCPUUtilization or metric (what to scale on)")
    } else if a
        .target_cpu_utilization
        .is_some_and(|t| !(1..=100).contains(&t))
    {
        Some("targetCPUUtilization must be between 1 and 100")
    } else if a
        .metric
        .as_ref()
        .is_some_and(|m| m.name.trim().is_empty() || m.average_value.trim().is_empty())
    {
        Some("metric needs a name and an averageValue")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ValidationError::BadAutoscaling { component, problem }),
        None => Ok(()),
    }
}

/// Validates a Shop and resolves its defaults.
pub fn validate(shop: &Shop) -> Result<ValidatedShop, ValidationError> {
    let name = shop.name_any();
    if !is_dns1035_label(&name) {
        return Err(ValidationError::BadName(name));
    }
    let namespace = shop.namespace().ok_or(ValidationError::MissingNamespace)?;
    let uid = shop.uid().ok_or(ValidationError::MissingUid)?;
    let spec = &shop.spec;
    if spec.image.repository.trim().is_empty() {
        return Err(ValidationError::EmptyImage {
            field: "spec.image.repository".into(),
        });
    }
    if spec.image.tag.trim().is_empty() {
        return Err(ValidationError::EmptyImage {
            field: "spec.image.tag".into(),
        });
    }
    let repo = spec.image.repository.trim_end_matches('/');
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    for c in Component::ALL {
        let cs = component_spec(shop, c);
        if !cs.enabled {
            disabled.push(c);
            continue;
        }
        if !(0..=100).contains(&cs.replicas) {
            return Err(ValidationError::BadReplicas {
                component: c,
                replicas: cs.replicas,
            });
        }
        let image = match &cs.image {
            Some(i) if i.trim().is_empty() => {
                return Err(ValidationError::EmptyImage {
                    field: format!("spec.components.{c}.image"),
                });
            }
            Some(i) => i.trim().to_string(),
            None => format!("{repo}/shop-{c}:{}", spec.image.tag),
        };
        if let Some(port) = cs.node_port
            && !(1..=65535).contains(&port)
        {
            return Err(ValidationError::BadNodePort { component: c, port });
        }
        if let Some(a) = &cs.autoscaling {
            check_autoscaling(c, a)?;
        }
        let mut seen = BTreeSet::new();
        for e in &cs.env {
            if !seen.insert(e.name.as_str()) {
                return Err(ValidationError::DuplicateEnv {
                    component: c,
                    name: e.name.clone(),
                });
            }
        }
        enabled.push(ResolvedComponent {
            component: c,
            replicas: cs.replicas,
            image,
            pull_policy: spec.image.pull_policy,
            resources: cs.resources.clone().unwrap_or_else(default_resources),
            env: cs.env.clone(),
            node_port: cs.node_port,
            autoscaling: cs.autoscaling.clone(),
        });
    }
    let mut node_ports = BTreeSet::new();
    for r in &enabled {
        if let Some(port) = r.node_port
            && !node_ports.insert(port)
        {
            return Err(ValidationError::DuplicateNodePort {
                component: r.component,
                port,
            });
        }
    }
    let gw = &spec.components.gateway;
    if let Some(jwt) = &gw.jwt
        && jwt.secret_ref.is_some() == jwt.jwks_url.is_some()
    {
        return Err(ValidationError::JwtSource);
    }
    let exposure = exposure(gw)?;
    let tls_secret = match &gw.tls {
        Some(t) if !is_dns1123_subdomain(&t.secret_name) => {
            return Err(bad(
                "tls.secretName",
                "must be a DNS subdomain (lower-case letters, digits, '-' and '.')",
            ));
        }
        Some(t) => Some(t.secret_name.clone()),
        None => None,
    };
    let (node_selector, tolerations) = placement(&spec.placement)?;
    let uses = |f: fn(Component) -> bool| enabled.iter().any(|r| f(r.component));
    let mut managed_stores = Vec::new();
    let mut external_stores = Vec::new();
    for store in Store::ALL {
        let needed = match store {
            Store::Mysql => uses(Component::uses_mysql),
            Store::Mongodb => uses(Component::uses_mongodb),
            Store::Kafka => uses(Component::uses_kafka),
            Store::Zipkin => !enabled.is_empty(),
        };
        match resolve_store(&spec.backing, store, needed)? {
            Some(Resolved::Managed(m)) => {
                if name.len() > store.max_shop_name() {
                    return Err(ValidationError::NameTooLongForStore {
                        name,
                        store,
                        max: store.max_shop_name(),
                    });
                }
                managed_stores.push(m);
            }
            Some(Resolved::External(e)) => external_stores.push(e),
            None => {}
        }
    }
    // Where the components connect: the managed store's Service (URLs with credentials through
    // the `<shop>-stores` Secret), or what the Shop points at.
    let external = |s: Store| external_stores.iter().find(|e| e.store == s);
    let managed = |s: Store| managed_stores.iter().any(|m| m.store == s);
    let secret_of = |s: Store, key: &str| {
        if managed(s) {
            Some(stores::secret_ref(&name, key))
        } else {
            external(s).and_then(|e| e.secret.clone())
        }
    };
    let mysql = secret_of(Store::Mysql, stores::keys::MYSQL_URL);
    let mongodb = secret_of(Store::Mongodb, stores::keys::MONGODB_URL);
    let kafka_bootstrap = if managed(Store::Kafka) {
        Some(stores::kafka_bootstrap(&name))
    } else {
        external(Store::Kafka).and_then(|e| e.address.clone())
    };
    let zipkin_endpoint = if managed(Store::Zipkin) {
        Some(stores::zipkin_endpoint(&name))
    } else {
        external(Store::Zipkin).and_then(|e| e.address.clone())
    };
    Ok(ValidatedShop {
        owner: OwnerReference {
            api_version: format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            kind: "Shop".to_string(),
            name: name.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        name,
        namespace,
        generation: shop.metadata.generation,
        paused: spec.paused,
        version: spec.image.tag.clone(),
        enabled,
        disabled,
        mysql,
        mongodb,
        kafka_bootstrap,
        kafka_partitions: spec
            .backing
            .kafka
            .as_ref()
            .and_then(|k| k.partitions)
            .unwrap_or(DEFAULT_KAFKA_PARTITIONS),
        zipkin_endpoint,
        managed_stores,
        external_stores,
        gateway: GatewaySettings {
            service_type: gw.service_type,
            jwt: gw.jwt.clone(),
            rate_limit: gw.rate_limit.clone(),
            exposure,
            tls_secret,
        },
        node_selector,
        tolerations,
        monitoring: spec.monitoring.clone().unwrap_or_default(),
        faults: check_faults(spec.environment, spec.faults.as_ref())?,
    })
}

/// The schema's fault rules again (see the module doc).
fn check_faults(
    env: Environment,
    faults: Option<&FaultsSpec>,
) -> Result<Option<FaultsSpec>, ValidationError> {
    let Some(f) = faults else { return Ok(None) };
    if env != Environment::Development && !f.allow_in_production {
        return Err(ValidationError::FaultsNotAllowed);
    }
    let ratio = |field, r: Option<f64>| match r {
        Some(r) if !(0.0..=1.0).contains(&r) => Err(ValidationError::BadFault {
            field,
            problem: "must be between 0 and 1",
        }),
        _ => Ok(()),
    };
    ratio("inventoryErrorRatio", f.inventory_error_ratio)?;
    ratio("kafkaPublishFailureRatio", f.kafka_publish_failure_ratio)?;
    if f.inventory_latency_ms.is_some_and(|ms| ms > 60_000) {
        return Err(ValidationError::BadFault {
            field: "inventoryLatencyMs",
            problem: "must be at most 60000",
        });
    }
    Ok(Some(f.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(yaml: &str) -> Shop {
        let mut s: Shop = serde_yaml::from_str(yaml).unwrap();
        s.metadata.namespace.get_or_insert_with(|| "ns1".into());
        s.metadata.uid.get_or_insert_with(|| "uid-1".into());
        s
    }

    const FULL: &str = r#"
apiVersion: shopkeeper.dev/v1alpha1
kind: Shop
metadata: {name: corner}
spec:
  backing:
    mysql: {urlSecretRef: {name: db, key: url}}
    mongodb: {urlSecretRef: {name: mongo, key: url}}
    kafka: {bootstrapServers: "kafka:9092"}
"#;

    #[test]
    fn defaults_enable_all_six_in_apply_order_with_default_images() {
        let v = validate(&shop(FULL)).unwrap();
        let order: Vec<_> = v.enabled.iter().map(|r| r.component).collect();
        assert_eq!(order, Component::ALL.to_vec());
        let product = v.component(Component::Product).unwrap();
        assert_eq!(
            product.image,
            format!(
                "ghcr.io/shopkeeper/shop-product:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(product.replicas, 1);
        assert_eq!(v.owner.uid, "uid-1");
        assert_eq!(v.owner.controller, Some(true));
    }

    const BARE: &str =
        "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {name: a}\nspec: {}\n";

    fn managed(v: &ValidatedShop) -> Vec<Store> {
        v.managed_stores.iter().map(|m| m.store).collect()
    }

    #[test]
    fn a_shop_without_backing_gets_every_store_managed_and_connects_to_them() {
        let v = validate(&shop(BARE)).unwrap();
        assert_eq!(managed(&v), Store::ALL.to_vec());
        assert!(v.external_stores.is_empty());
        assert_eq!(
            v.mysql,
            Some(SecretKeyRef {
                name: "a-stores".into(),
                key: "mysql-url".into()
            })
        );
        assert_eq!(
            v.mongodb.as_ref().map(|r| r.key.as_str()),
            Some("mongodb-url")
        );
        assert_eq!(v.kafka_bootstrap.as_deref(), Some("a-kafka:9092"));
        assert_eq!(
            v.zipkin_endpoint.as_deref(),
            Some("http://a-zipkin:9411/api/v2/spans")
        );
        let mysql = &v.managed_stores[0];
        assert_eq!(mysql.image, "docker.io/library/mariadb:11.4");
        assert_eq!(mysql.size, Quantity("1Gi".into()));
        assert!(
            mysql.keep_data,
            "data is kept unless the spec says otherwise"
        );
        assert_eq!(mysql.storage_class, None);
    }

    #[test]
    fn a_shop_written_before_modes_keeps_its_external_stores_exactly() {
        let v = validate(&shop(FULL)).unwrap();
        assert_eq!(
            v.mysql,
            Some(SecretKeyRef {
                name: "db".into(),
                key: "url".into()
            })
        );
        assert_eq!(v.mongodb.as_ref().map(|r| r.name.as_str()), Some("mongo"));
        assert_eq!(v.kafka_bootstrap.as_deref(), Some("kafka:9092"));
        let external: Vec<Store> = v.external_stores.iter().map(|e| e.store).collect();
        assert_eq!(external, vec![Store::Mysql, Store::Mongodb, Store::Kafka]);
        // FULL names no Zipkin: a dev Shop gets one.
        assert_eq!(managed(&v), vec![Store::Zipkin]);
        let with_zipkin = format!("{FULL}    zipkin: {{endpoint: 'http://z:9411/api/v2/spans'}}\n");
        let v = validate(&shop(&with_zipkin)).unwrap();
        assert!(v.managed_stores.is_empty());
        assert_eq!(
            v.zipkin_endpoint.as_deref(),
            Some("http://z:9411/api/v2/spans")
        );
    }

    #[test]
    fn a_store_no_enabled_component_uses_runs_only_when_asked_for() {
        let no_db = "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {name: a}\nspec:\n  components:\n    inventory: {enabled: false}\n    order: {enabled: false}\n";
        let v = validate(&shop(no_db)).unwrap();
        assert_eq!(
            managed(&v),
            vec![Store::Mongodb, Store::Kafka, Store::Zipkin]
        );
        assert_eq!(v.mysql, None);
        let asked = format!("{no_db}  backing:\n    mysql: {{mode: managed}}\n");
        assert_eq!(managed(&validate(&shop(&asked)).unwrap())[0], Store::Mysql);
    }

    #[test]
    fn managed_settings_override_the_defaults() {
        let s = shop(&format!(
            "{BARE}  backing:\n    mysql:\n      mode: managed\n      image: mirror.example/mariadb:11.4.5\n      storage: {{size: 5Gi, storageClassName: fast}}\n      keepData: false\n      resources: {{limits: {{memory: 2Gi}}}}\n"
        )
        .replace("spec: {}\n", "spec:\n"));
        let v = validate(&s).unwrap();
        let m = &v.managed_stores[0];
        assert_eq!(m.image, "mirror.example/mariadb:11.4.5");
        assert_eq!(m.size, Quantity("5Gi".into()));
        assert_eq!(m.storage_class.as_deref(), Some("fast"));
        assert!(!m.keep_data);
        assert_eq!(
            m.resources.limits.as_ref().unwrap()["memory"],
            Quantity("2Gi".into())
        );
        assert_eq!(
            m.resources.requests, None,
            "the user's resources replace the defaults"
        );
    }

    #[test]
    fn contradictory_backing_is_refused_naming_the_field() {
        let refused = |backing: &str| {
            validate(&shop(&format!(
                "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {{name: a}}\nspec:\n  backing:\n    {backing}\n"
            )))
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            refused("mysql: {mode: managed, urlSecretRef: {name: db, key: url}}"),
            "spec.backing.mysql: urlSecretRef cannot be combined with mode: managed"
        );
        assert_eq!(
            refused("mongodb: {mode: external}"),
            "spec.backing.mongodb: mode: external needs urlSecretRef"
        );
        assert_eq!(
            refused("kafka: {mode: external}"),
            "spec.backing.kafka: mode: external needs bootstrapServers"
        );
        assert_eq!(
            refused("zipkin: {mode: external}"),
            "spec.backing.zipkin: mode: external needs endpoint"
        );
        assert_eq!(
            refused("kafka: {bootstrapServers: 'k:9092', storage: {size: 1Gi}}"),
            "spec.backing.kafka: image, storage, keepData and resources only apply to mode: managed"
        );
        assert_eq!(
            refused("zipkin: {storage: {size: 1Gi}}"),
            "spec.backing.zipkin: storage is not supported: managed Zipkin keeps traces in memory and has no volume"
        );
        assert_eq!(
            refused("zipkin: {mode: managed, endpoint: 'http://z/api/v2/spans'}"),
            "spec.backing.zipkin: endpoint cannot be combined with mode: managed"
        );
    }

    #[test]
    fn a_name_too_long_for_a_store_statefulset_is_refused_only_when_that_store_is_managed() {
        let mut s = shop(BARE);
        s.metadata.name = Some("a".repeat(45));
        assert_eq!(
            validate(&s).unwrap_err(),
            ValidationError::NameTooLongForStore {
                name: "a".repeat(45),
                store: Store::Mongodb,
                max: 44
            }
        );
        let mut s = shop(&format!(
            "{FULL}    zipkin: {{endpoint: 'http://z:9411/api/v2/spans'}}\n"
        ));
        s.metadata.name = Some("a".repeat(48));
        assert!(validate(&s).is_ok(), "external stores have no StatefulSet");
    }

    #[test]
    fn disabled_components_need_no_backing_and_are_listed() {
        let s = shop(
            "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {name: a}\nspec:\n  components:\n    inventory: {enabled: false}\n    order: {enabled: false}\n    product: {enabled: false}\n    notification: {enabled: false}\n",
        );
        let v = validate(&s).unwrap();
        assert_eq!(
            v.disabled,
            vec![
                Component::Product,
                Component::Inventory,
                Component::Order,
                Component::Notification
            ]
        );
        assert_eq!(v.enabled.len(), 2);
    }

    #[test]
    fn placement_reaches_the_validated_shop_in_the_pod_spec_types() {
        let s = shop(&format!(
            "{FULL}  placement:\n    nodeSelector: {{pool: shops, topology.kubernetes.io/zone: eu-1a}}\n    tolerations:\n    - {{key: dedicated, operator: Equal, value: shops, effect: NoSchedule}}\n    - {{operator: Exists, effect: NoExecute, tolerationSeconds: 30}}\n"
        ));
        let v = validate(&s).unwrap();
        assert_eq!(v.node_selector["pool"], "shops");
        assert_eq!(v.node_selector["topology.kubernetes.io/zone"], "eu-1a");
        assert_eq!(
            v.tolerations,
            vec![
                Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Equal".into()),
                    value: Some("shops".into()),
                    effect: Some("NoSchedule".into()),
                    toleration_seconds: None,
                },
                Toleration {
                    key: None,
                    operator: Some("Exists".into()),
                    value: None,
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(30),
                },
            ]
        );
        // No placement: nothing asked of the scheduler.
        let v = validate(&shop(FULL)).unwrap();
        assert!(v.node_selector.is_empty() && v.tolerations.is_empty());
    }

    #[test]
    fn placement_the_api_server_would_refuse_in_a_pod_is_refused_naming_the_entry() {
        let refused = |placement: &str| {
            validate(&shop(&format!("{FULL}  placement: {placement}\n")))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused("{nodeSelector: {'-pool': a}}"),
            "spec.placement.nodeSelector entry \"-pool\": the key is not a label key ([prefix/]name, name at most 63 characters)"
        );
        assert!(refused("{nodeSelector: {'Example.com/pool': a}}").contains("not a label key"));
        assert!(refused("{nodeSelector: {'a/b/c': a}}").contains("not a label key"));
        assert!(
            refused(&format!("{{nodeSelector: {{pool: {}}}}}", "a".repeat(64)))
                .contains("the value is not a label value")
        );
        assert!(refused("{nodeSelector: {pool: 'a b'}}").contains("not a label value"));
        assert_eq!(
            refused("{tolerations: [{operator: Equal, value: x}]}"),
            "spec.placement.tolerations[0]: a toleration without a key must use operator Exists"
        );
        assert_eq!(
            refused(
                "{tolerations: [{key: a, operator: Exists}, {key: b, operator: Exists, value: x}]}"
            ),
            "spec.placement.tolerations[1]: a toleration with operator Exists must not have a value"
        );
        assert!(
            refused("{tolerations: [{key: a, value: '-x'}]}")
                .contains("value is not a label value")
        );
        assert!(
            refused("{tolerations: [{key: 'a_/b', operator: Exists}]}")
                .contains("key is not a label key")
        );
        assert_eq!(
            refused(
                "{tolerations: [{key: a, operator: Exists, effect: NoSchedule, tolerationSeconds: 5}]}"
            ),
            "spec.placement.tolerations[0]: tolerationSeconds needs effect NoExecute"
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}: v")).collect();
        assert_eq!(
            refused(&format!("{{nodeSelector: {{{}}}}}", many.join(", "))),
            "spec.placement.nodeSelector has 33 entries, at most 32 are allowed"
        );
    }

    #[test]
    fn the_kwok_placement_selects_and_tolerates_the_fake_node() {
        let mut s = shop(FULL);
        s.spec.placement = PlacementSpec::kwok();
        let v = validate(&s).unwrap();
        assert_eq!(v.node_selector, [("type".into(), "kwok".into())].into());
        assert_eq!(v.tolerations[0].key.as_deref(), Some("kwok.x-k8s.io/node"));
        assert_eq!(v.tolerations[0].operator.as_deref(), Some("Exists"));
        assert_eq!(v.tolerations[0].effect.as_deref(), Some("NoSchedule"));
    }

    #[test]
    fn bad_values_are_refused() {
        let mut s = shop(FULL);
        s.spec.components.order.replicas = -1;
        assert!(matches!(
            validate(&s),
            Err(ValidationError::BadReplicas {
                component: Component::Order,
                replicas: -1
            })
        ));
        let mut s = shop(FULL);
        s.spec.components.product.image = Some(" ".into());
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "spec.components.product.image must not be empty"
        );
        let mut s = shop(FULL);
        s.metadata.name = Some("x".repeat(49));
        assert!(matches!(validate(&s), Err(ValidationError::BadName(_))));
        let mut s = shop(FULL);
        s.metadata.name = Some("9lives".into());
        assert!(matches!(validate(&s), Err(ValidationError::BadName(_))));
        let mut s = shop(FULL);
        s.spec.components.gateway.jwt = Some(JwtSpec::default());
        assert_eq!(validate(&s), Err(ValidationError::JwtSource));
        let mut s = shop(FULL);
        let e = EnvVar {
            name: "A".into(),
            value: Some("1".into()),
            value_from: None,
        };
        s.spec.components.order.env = vec![e.clone(), e];
        assert!(matches!(
            validate(&s),
            Err(ValidationError::DuplicateEnv { .. })
        ));
        let mut s = shop(FULL);
        s.spec.components.gateway.common.node_port = Some(0);
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "spec.components.gateway.nodePort must be between 1 and 65535, got 0"
        );
    }

    #[test]
    fn an_exposure_the_api_server_would_refuse_is_refused_naming_the_field() {
        let refused = |gateway: &str| {
            let s = shop(&format!("{FULL}  components:\n    gateway: {gateway}\n"));
            validate(&s).unwrap_err().to_string()
        };
        assert_eq!(
            refused("{ingress: {host: ''}}"),
            "spec.components.gateway.ingress.host: must not be empty"
        );
        assert_eq!(
            refused("{ingress: {host: Shop_Example.com}}"),
            "spec.components.gateway.ingress.host: \"Shop_Example.com\" is not a DNS name (lower-case letters, digits, '-' and '.', optionally starting with '*.')"
        );
        assert!(
            refused("{ingress: {host: 10.0.0.1}}")
                .starts_with("spec.components.gateway.ingress.host: \"10.0.0.1\"")
        );
        assert_eq!(
            refused("{ingress: {host: a.example, tlsSecretName: 'Bad Secret'}}"),
            "spec.components.gateway.ingress.tlsSecretName: must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
        );
        assert_eq!(
            refused("{ingress: {host: a.example}, httpRoute: {parentRefs: [{name: gw}]}}"),
            "spec.components.gateway.ingress: cannot be combined with httpRoute: expose the gateway through one of them"
        );
        assert_eq!(
            refused("{enabled: false, httpRoute: {parentRefs: [{name: gw}]}}"),
            "spec.components.gateway.httpRoute: needs the gateway enabled (it routes to the gateway's Service)"
        );
        assert_eq!(
            refused("{httpRoute: {parentRefs: []}}"),
            "spec.components.gateway.httpRoute.parentRefs: needs 1 to 32 Gateways"
        );
        assert_eq!(
            refused("{httpRoute: {parentRefs: [{name: gw, namespace: a.b}]}}"),
            "spec.components.gateway.httpRoute.parentRefs[0].namespace: must be a namespace name (a DNS label)"
        );
        assert!(
            refused("{httpRoute: {parentRefs: [{name: gw}], hostnames: [ok.example, 'no way']}}")
                .starts_with("spec.components.gateway.httpRoute.hostnames[1]: \"no way\"")
        );
    }

    #[test]
    fn a_valid_exposure_reaches_the_validated_shop() {
        let s = shop(&format!(
            "{FULL}  components:\n    gateway: {{ingress: {{host: '*.shop.example', className: nginx}}}}\n"
        ));
        match validate(&s).unwrap().gateway.exposure {
            Some(Exposure::Ingress(i)) => {
                assert_eq!(i.host, "*.shop.example");
                assert_eq!(i.class_name.as_deref(), Some("nginx"));
            }
            other => panic!("expected an Ingress, got {other:?}"),
        }
        assert_eq!(validate(&shop(FULL)).unwrap().gateway.exposure, None);
    }
}
