//! How the gateway is reached from outside the cluster: an Ingress (`networking.k8s.io/v1`) or a
//! Gateway API HTTPRoute (`gateway.networking.k8s.io/v1`), rendered from
//! `spec.components.gateway.ingress` / `.httpRoute`.
//!
//! Unlike every other child, these kinds may not exist in a cluster (the Gateway API is a set of
//! CRDs someone has to install; a very old or stripped-down cluster may not serve Ingress). Asking
//! for one must therefore never fail the Shop: [`plan`] takes what the API server serves (found by
//! discovery in the apply step, passed in here so that this decision stays pure and unit-tested),
//! drops an object whose API is missing from the desired state and says so in the `Exposed`
//! condition, while everything else is applied as usual. The HTTPRoute is a small typed struct of
//! its own (only the fields the operator writes) rather than a Gateway API crate, which would pin
//! other kube/k8s-openapi versions than the workspace's.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::build::{child_name, named_labels};
use crate::component::Component;
use crate::crd::{HttpRouteSpec, IngressSpec};
use crate::validate::{Exposure, ValidatedShop};

/// API group of the Gateway API.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API version the operator writes (GA since Gateway API v1.0).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The Ingress API version the operator writes.
pub const INGRESS_API_VERSION: &str = "networking.k8s.io/v1";

/// The fields of a Gateway API `HTTPRoute` spec the operator sets (unknown fields the API server
/// adds are ignored when reading one back).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    root = "HttpRoute",
    plural = "httproutes",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteBody {
    /// The Gateways the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names the route answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Routing rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

/// `parentRefs[]` of an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group of the parent (defaulted to the Gateway API's by the API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent (defaulted to `Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the parent; absent: the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// A listener of the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// `rules[]` of an HTTPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Which requests the rule takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Where they go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
}

/// `rules[].matches[]` of an HTTPRoute (only the path).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Path match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
}

/// `rules[].matches[].path`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HttpPathMatch {
    /// `PathPrefix`, `Exact` or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `rules[].backendRefs[]`: a Service and port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// API group (`""`, the core group, by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (`Service` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Service name.
    pub name: String,
    /// Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Share of the traffic (1 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Which kind of object exposes the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExposureKind {
    /// `networking.k8s.io/v1` Ingress.
    Ingress,
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute,
}

impl ExposureKind {
    /// The object's kind.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Ingress => "Ingress",
            Self::HttpRoute => "HTTPRoute",
        }
    }

    /// The Shop field that asks for it.
    pub fn field(self) -> &'static str {
        match self {
            Self::Ingress => "spec.components.gateway.ingress",
            Self::HttpRoute => "spec.components.gateway.httpRoute",
        }
    }

    /// `Exposed=False` reason when the cluster does not serve the API.
    pub fn missing_reason(self) -> &'static str {
        match self {
            Self::Ingress => "IngressApiMissing",
            Self::HttpRoute => "GatewayApiMissing",
        }
    }

    /// What the user has to install, for the condition's message.
    pub fn missing_message(self) -> String {
        match self {
            Self::Ingress => format!(
                "{} asks for an Ingress but the cluster does not serve {INGRESS_API_VERSION} ingresses (Kubernetes 1.19 or later serves them): nothing was created",
                self.field()
            ),
            Self::HttpRoute => format!(
                "{} asks for an HTTPRoute but the cluster does not serve {GATEWAY_API_VERSION} httproutes: install the Gateway API CRDs (standard channel, e.g. kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.3/standard-install.yaml) and a Gateway controller; the operator creates the route within a minute of the API appearing",
                self.field()
            ),
        }
    }
}

/// Which of the optional APIs the cluster serves (from discovery).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Apis {
    /// `networking.k8s.io/v1` `ingresses`.
    pub ingress: bool,
    /// `gateway.networking.k8s.io/v1` `httproutes`.
    pub http_route: bool,
    /// `monitoring.coreos.com/v1` `servicemonitors` (see [`crate::monitoring`]).
    pub service_monitor: bool,
}

impl Apis {
    /// Whether the API of `kind` is served.
    pub fn serves(self, kind: ExposureKind) -> bool {
        match kind {
            ExposureKind::Ingress => self.ingress,
            ExposureKind::HttpRoute => self.http_route,
        }
    }
}

/// The rendered object that exposes the gateway.
#[derive(Clone, Debug, PartialEq)]
pub enum ExposureObject {
    /// An Ingress.
    Ingress(Ingress),
    /// An HTTPRoute.
    HttpRoute(HttpRoute),
}

impl ExposureObject {
    /// Which kind it is.
    pub fn kind(&self) -> ExposureKind {
        match self {
            Self::Ingress(_) => ExposureKind::Ingress,
            Self::HttpRoute(_) => ExposureKind::HttpRoute,
        }
    }

    /// Its name (`<shop>-gateway`).
    pub fn name(&self) -> &str {
        let m = match self {
            Self::Ingress(i) => &i.metadata,
            Self::HttpRoute(r) => &r.metadata,
        };
        m.name.as_deref().unwrap_or_default()
    }
}

/// What became of the exposure the Shop asks for; the `Exposed` condition is computed from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExposureState {
    /// The cluster does not serve the API: nothing was created (or an earlier object was left
    /// alone: it cannot be listed without the API either).
    ApiMissing(ExposureKind),
    /// The object is part of the desired state (applied when the apply step succeeds).
    Planned {
        /// Which kind.
        kind: ExposureKind,
        /// Object name.
        name: String,
        /// Where it sends traffic, for the message.
        detail: String,
    },
}

/// Decides what is applied: removes the rendered exposure from the desired state when its API is
/// not served (so the reconcile still applies everything else), and reports what happened.
/// `None` when the Shop asks for no exposure.
pub fn plan(exposure: &mut Option<ExposureObject>, apis: Apis) -> Option<ExposureState> {
    let kind = exposure.as_ref()?.kind();
    if !apis.serves(kind) {
        *exposure = None;
        return Some(ExposureState::ApiMissing(kind));
    }
    let obj = exposure.as_ref()?;
    let detail = match obj {
        ExposureObject::Ingress(i) => {
            let rule = i
                .spec
                .as_ref()
                .and_then(|s| s.rules.as_ref()?.first().cloned());
            let host = rule.and_then(|r| r.host).unwrap_or_default();
            let tls = i
                .spec
                .as_ref()
                .and_then(|s| s.tls.as_ref())
                .is_some_and(|t| !t.is_empty());
            format!("{}://{host}/", if tls { "https" } else { "http" })
        }
        ExposureObject::HttpRoute(r) => {
            let parents: Vec<String> = r
                .spec
                .parent_refs
                .iter()
                .map(|p| match &p.namespace {
                    Some(ns) => format!("{ns}/{}", p.name),
                    None => p.name.clone(),
                })
                .collect();
            format!("Gateway {}", parents.join(", "))
        }
    };
    Some(ExposureState::Planned {
        kind,
        name: obj.name().to_string(),
        detail,
    })
}

fn meta(
    shop: &ValidatedShop,
    annotations: &std::collections::BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(&shop.name, Component::Gateway)),
        namespace: Some(shop.namespace.clone()),
        labels: Some(named_labels(shop, Component::Gateway.name())),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        owner_references: Some(vec![shop.owner.clone()]),
        ..Default::default()
    }
}

/// ingress-nginx's annotation naming the protocol it speaks to the backend.
pub const NGINX_BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";

/// The Ingress: `/` (Prefix) on the host to the gateway Service's own port, TLS when a Secret is
/// named.
pub fn ingress(shop: &ValidatedShop, spec: &IngressSpec) -> Ingress {
    let service = child_name(&shop.name, Component::Gateway);
    // With TLS on the gateway itself, ingress-nginx (the usual controller; it ignores the
    // Service's appProtocol) is told to speak https to it, unless the Shop says otherwise.
    let mut annotations = spec.annotations.clone();
    if shop.gateway.tls_secret.is_some() {
        annotations
            .entry(NGINX_BACKEND_PROTOCOL.to_string())
            .or_insert_with(|| "HTTPS".to_string());
    }
    Ingress {
        metadata: meta(shop, &annotations),
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_string()),
                        path_type: "Prefix".to_string(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service,
                                port: Some(ServiceBackendPort {
                                    number: Some(Component::Gateway.port()),
                                    name: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    }
}

/// The HTTPRoute: attached to the Shop's parent Gateways, every path (`/` PathPrefix) to the
/// gateway Service's own port.
pub fn http_route(shop: &ValidatedShop, spec: &HttpRouteSpec) -> HttpRoute {
    HttpRoute {
        metadata: meta(shop, &Default::default()),
        spec: HttpRouteBody {
            parent_refs: spec
                .parent_refs
                .iter()
                .map(|p| ParentReference {
                    group: None,
                    kind: None,
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    section_name: p.section_name.clone(),
                })
                .collect(),
            hostnames: spec.hostnames.clone(),
            rules: vec![HttpRouteRule {
                matches: vec![HttpRouteMatch {
                    path: Some(HttpPathMatch {
                        type_: Some("PathPrefix".to_string()),
                        value: Some("/".to_string()),
                    }),
                }],
                backend_refs: vec![HttpBackendRef {
                    group: None,
                    kind: None,
                    name: child_name(&shop.name, Component::Gateway),
                    port: Some(Component::Gateway.port()),
                    weight: None,
                }],
            }],
        },
    }
}

/// Renders what the Shop asks for (whether the cluster serves it is [`plan`]'s business).
pub fn render(shop: &ValidatedShop) -> Option<ExposureObject> {
    Some(match shop.gateway.exposure.as_ref()? {
        Exposure::Ingress(i) => ExposureObject::Ingress(ingress(shop, i)),
        Exposure::HttpRoute(r) => ExposureObject::HttpRoute(http_route(shop, r)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Shop;
    use crate::validate::validate;

    fn shop(gateway: &str) -> ValidatedShop {
        let yaml = format!(
            r#"
apiVersion: shopkeeper.dev/v1alpha1
kind: Shop
metadata: {{name: mall, namespace: ns1, uid: uid-1}}
spec:
  backing:
    mysql: {{urlSecretRef: {{name: db, key: url}}}}
    mongodb: {{urlSecretRef: {{name: mongo, key: url}}}}
    kafka: {{bootstrapServers: "kafka:9092"}}
  components:
    gateway: {gateway}
"#
        );
        let s: Shop = serde_yaml::from_str(&yaml).unwrap();
        validate(&s).unwrap()
    }

    const NO_GATEWAY_API: Apis = Apis {
        ingress: true,
        http_route: false,
        service_monitor: false,
    };
    const BOTH: Apis = Apis {
        ingress: true,
        http_route: true,
        service_monitor: false,
    };

    #[test]
    fn an_http_route_without_the_gateway_api_is_dropped_and_reported_missing() {
        let s = shop("{httpRoute: {parentRefs: [{name: public, namespace: infra}]}}");
        let mut obj = render(&s);
        assert!(matches!(obj, Some(ExposureObject::HttpRoute(_))));
        let state = plan(&mut obj, NO_GATEWAY_API);
        assert_eq!(
            state,
            Some(ExposureState::ApiMissing(ExposureKind::HttpRoute))
        );
        assert_eq!(obj, None, "nothing of a missing API is applied");
        assert!(
            ExposureKind::HttpRoute
                .missing_message()
                .contains("install the Gateway API CRDs")
        );

        // The same Shop once the API is there: the route is kept and named.
        let mut obj = render(&s);
        let state = plan(&mut obj, BOTH);
        assert_eq!(
            state,
            Some(ExposureState::Planned {
                kind: ExposureKind::HttpRoute,
                name: "mall-gateway".into(),
                detail: "Gateway infra/public".into(),
            })
        );
        assert!(obj.is_some());
    }

    #[test]
    fn an_ingress_is_kept_when_served_and_dropped_when_not() {
        let s = shop("{ingress: {host: shop.example.com, tlsSecretName: shop-tls}}");
        let mut obj = render(&s);
        let state = plan(&mut obj, NO_GATEWAY_API);
        assert_eq!(
            state,
            Some(ExposureState::Planned {
                kind: ExposureKind::Ingress,
                name: "mall-gateway".into(),
                detail: "https://shop.example.com/".into(),
            })
        );
        let mut obj = render(&s);
        let state = plan(&mut obj, Apis::default());
        assert_eq!(
            state,
            Some(ExposureState::ApiMissing(ExposureKind::Ingress))
        );
        assert_eq!(obj, None);
    }

    #[test]
    fn no_exposure_asked_plans_nothing_whatever_is_served() {
        let s = shop("{replicas: 1}");
        let mut obj = render(&s);
        assert_eq!(obj, None);
        assert_eq!(plan(&mut obj, Apis::default()), None);
        assert_eq!(plan(&mut obj, BOTH), None);
    }
}
