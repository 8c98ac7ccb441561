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
    ComponentSpec, JwtSpec, MAX_PLACEMENT_ENTRIES, MAX_SHOP_NAME, PlacementSpec, PullPolicy,
    RateLimitSpec, SecretKeyRef, ServiceType, Shop, TolerationOperator,
};

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
    /// An empty image repository/tag/override.
    #[error("{field} must not be empty")]
    EmptyImage {
        /// The field path.
        field: String,
    },
    /// A component is enabled but the backing service it needs is not configured.
    #[error("spec.backing.{backing} is required because component {component} is enabled")]
    MissingBacking {
        /// Component concerned.
        component: Component,
        /// The missing backing service field.
        backing: &'static str,
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
}

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
    /// `SHOP_ZIPKIN_ENDPOINT`.
    pub zipkin_endpoint: Option<String>,
    /// Gateway extras.
    pub gateway: GatewaySettings,
    /// Node labels every pod requires (`spec.placement.nodeSelector`).
    pub node_selector: BTreeMap<String, String>,
    /// Taints every pod tolerates (`spec.placement.tolerations`).
    pub tolerations: Vec<Toleration>,
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
        let mut seen = BTreeSet::new();
        for e in &cs.env {
            if !seen.insert(e.name.as_str()) {
                return Err(ValidationError::DuplicateEnv {
                    component: c,
                    name: e.name.clone(),
                });
            }
        }
        let backing = &spec.backing;
        if c.uses_mysql() && backing.mysql.is_none() {
            return Err(ValidationError::MissingBacking {
                component: c,
                backing: "mysql",
            });
        }
        if c.uses_mongodb() && backing.mongodb.is_none() {
            return Err(ValidationError::MissingBacking {
                component: c,
                backing: "mongodb",
            });
        }
        if c.uses_kafka() && backing.kafka.is_none() {
            return Err(ValidationError::MissingBacking {
                component: c,
                backing: "kafka",
            });
        }
        enabled.push(ResolvedComponent {
            component: c,
            replicas: cs.replicas,
            image,
            pull_policy: spec.image.pull_policy,
            resources: cs.resources.clone().unwrap_or_else(default_resources),
            env: cs.env.clone(),
            node_port: cs.node_port,
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
    let (node_selector, tolerations) = placement(&spec.placement)?;
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
        mysql: spec
            .backing
            .mysql
            .as_ref()
            .map(|m| m.url_secret_ref.clone()),
        mongodb: spec
            .backing
            .mongodb
            .as_ref()
            .map(|m| m.url_secret_ref.clone()),
        kafka_bootstrap: spec
            .backing
            .kafka
            .as_ref()
            .map(|k| k.bootstrap_servers.clone()),
        zipkin_endpoint: spec.backing.zipkin.as_ref().map(|z| z.endpoint.clone()),
        gateway: GatewaySettings {
            service_type: gw.service_type,
            jwt: gw.jwt.clone(),
            rate_limit: gw.rate_limit.clone(),
        },
        node_selector,
        tolerations,
    })
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

    #[test]
    fn enabled_component_without_its_database_is_refused_naming_the_field() {
        let s = shop(
            "apiVersion: shopkeeper.dev/v1alpha1\nkind: Shop\nmetadata: {name: a}\nspec:\n  backing:\n    kafka: {bootstrapServers: k}\n    mongodb: {urlSecretRef: {name: m, key: u}}\n",
        );
        let err = validate(&s).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.backing.mysql is required because component inventory is enabled"
        );
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
}
