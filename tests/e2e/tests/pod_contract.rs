//! The contract between the operator and the binaries it deploys: every environment variable the
//! operator gives a component's pod must be one that component's binary actually reads.
//!
//! A renamed flag on either side used to go unnoticed until a reconciled shop started without its
//! Kafka, MongoDB or JWKS settings. This test renders Shops with the operator's pure build step
//! and compares each pod's variables with the `[env: NAME=]` entries of the real binary's `--help`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use shop_operator::Shop;
use shop_operator::build::{self, Resources};
use shop_operator::validate::validate;
use shop_testkit::binary_path;

/// Variables that are set for Kubernetes' own `$(VAR)` expansion or for humans, not for the
/// binary: the MySQL server URL only feeds `DATABASE_URL`; the pod's name and namespace are kept
/// for `kubectl exec` users and log shippers.
const NOT_FOR_THE_BINARY: &[&str] = &["SHOP_MYSQL_SERVER_URL", "POD_NAME", "POD_NAMESPACE"];

fn shop(jwt: &str) -> Resources {
    let yaml = format!(
        r#"
apiVersion: shopkeeper.dev/v1alpha1
kind: Shop
metadata: {{name: contract, namespace: shop, uid: 6f1c3a9e-0000-4000-8000-000000000002, generation: 1}}
spec:
  image: {{repository: registry.example/shops, tag: "1.0.0"}}
  components:
    registry: {{replicas: 2}}
    gateway:
      jwt: {jwt}
      rateLimit: {{requestsPerSecond: 50, burst: 100}}
  backing:
    mysql: {{urlSecretRef: {{name: db, key: url}}}}
    mongodb: {{urlSecretRef: {{name: mongo, key: url}}}}
    kafka: {{bootstrapServers: "kafka:9092"}}
    zipkin: {{endpoint: "http://zipkin:9411/api/v2/spans"}}
"#
    );
    let shop: Shop = serde_yaml::from_str(&yaml).unwrap();
    build::build(&validate(&shop).unwrap())
}

fn env_read_by(binary: &str) -> BTreeSet<String> {
    let out = Command::new(binary_path(binary))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{binary} --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

fn env_given_to_pods(res: &Resources) -> Vec<(String, BTreeSet<String>)> {
    res.components
        .iter()
        .map(|cr| {
            let mut names: BTreeSet<String> = cr
                .config_map
                .data
                .as_ref()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            let pod = cr
                .deployment
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap();
            for c in &pod.containers {
                for e in c.env.iter().flatten() {
                    names.insert(e.name.clone());
                }
            }
            (cr.component.to_string(), names)
        })
        .collect()
}

#[test]
fn every_variable_the_operator_sets_is_read_by_the_binary_it_deploys() {
    let mut problems = Vec::new();
    for jwt in [
        "{secretRef: {name: jwt, key: hs256}, issuer: https://issuer.example, audience: shop}",
        "{jwksUrl: https://issuer.example/jwks.json, issuer: https://issuer.example, audience: shop}",
    ] {
        for (component, names) in env_given_to_pods(&shop(jwt)) {
            let read = env_read_by(&format!("shop-{component}"));
            for name in names {
                if !read.contains(&name) && !NOT_FOR_THE_BINARY.contains(&name.as_str()) {
                    problems.push(format!("{component}: {name}"));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "the operator sets variables the binaries do not read: {problems:?}"
    );
}

#[test]
fn the_operator_gives_every_component_its_backing_services() {
    let res = shop("{secretRef: {name: jwt, key: hs256}}");
    let pods = env_given_to_pods(&res);
    let has = |component: &str, name: &str| {
        pods.iter()
            .any(|(c, names)| c == component && names.contains(name))
    };
    for c in ["inventory", "order"] {
        assert!(has(c, "DATABASE_URL"), "{c} gets DATABASE_URL");
    }
    for c in ["product", "notification"] {
        assert!(has(c, "SHOP_MONGO_URL"), "{c} gets SHOP_MONGO_URL");
    }
    for c in ["order", "notification"] {
        assert!(
            has(c, "SHOP_KAFKA_BOOTSTRAP"),
            "{c} gets SHOP_KAFKA_BOOTSTRAP"
        );
    }
    assert!(has("gateway", "SHOP_JWT_SECRET"));
    assert!(has("registry", "SHOP_REGISTRY_PEER_DNS"));
}
