//! The committed CRD YAML must be exactly what the code generates (crds/ and the chart's copy),
//! and the schema must be structural, or the API server would refuse it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use kube::CustomResourceExt;
use serde_json::Value;
use shop_operator::Shop;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crd_files_match_the_code() {
    let expected = shop_operator::crd_yaml().unwrap();
    for rel in ["crds/shop.yaml", "charts/shopkeeper/files/crd-shop.yaml"] {
        let path = root().join(rel);
        if std::env::var_os("SHOP_UPDATE_CRDS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{rel} is out of date with operator/src/crd.rs: regenerate it with \
             `SHOP_UPDATE_CRDS=1 cargo test -p shop-operator --test crd` (or `cargo run -p shop-operator --bin crdgen > {rel}`)"
        );
    }
}

/// Checks the rules of a structural schema (apiextensions v1): every node has a type (or is
/// int-or-string / preserve-unknown-fields), no `$ref`, no type/default/nullable inside
/// oneOf/anyOf/allOf/not, `additionalProperties` never together with `properties`.
fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    let escape = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !escape {
        errors.push(format!("{path}: no type"));
    }
    if obj.contains_key("$ref") {
        errors.push(format!("{path}: $ref"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    for junction in ["oneOf", "anyOf", "allOf", "not"] {
        if let Some(v) = obj.get(junction) {
            let items: Vec<&Value> = v
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_else(|| vec![v]);
            for (i, it) in items.iter().enumerate() {
                for forbidden in [
                    "type",
                    "default",
                    "nullable",
                    "description",
                    "additionalProperties",
                ] {
                    if it.get(forbidden).is_some() {
                        errors.push(format!(
                            "{path}.{junction}[{i}]: {forbidden} inside a junction"
                        ));
                    }
                }
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), errors);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), errors);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(ap, &format!("{path}{{}}"), errors);
    }
}

#[test]
fn schema_is_structural_with_status_subresource_printer_columns_and_cel() {
    let crd = serde_json::to_value(Shop::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "shp");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, vec!["Ready", "Phase", "Age"]);
    let schema = &version["schema"]["openAPIV3Schema"];
    let mut errors = Vec::new();
    check_structural(schema, "", &mut errors);
    assert!(errors.is_empty(), "non-structural schema: {errors:#?}");
    let text = serde_json::to_string(schema).unwrap();
    for rule in [
        "size(self.metadata.name) <= 48",
        "has(self.secretRef) != has(self.jwksUrl)",
        "self.trim() != ''",
    ] {
        assert!(text.contains(rule), "missing CEL rule {rule}");
    }
    assert_eq!(
        schema["properties"]["spec"]["properties"]["components"]["properties"]["order"]["properties"]
            ["replicas"]["minimum"],
        0.0
    );
}

#[test]
fn placement_and_node_port_limits_are_in_the_schema() {
    let crd = serde_json::to_value(Shop::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let placement = &spec["placement"]["properties"];
    let selector = &placement["nodeSelector"];
    assert_eq!(selector["maxProperties"], 32);
    assert_eq!(selector["additionalProperties"]["maxLength"], 63);
    let tolerations = &placement["tolerations"];
    assert_eq!(tolerations["maxItems"], 32);
    let item = &tolerations["items"]["properties"];
    assert_eq!(
        item["operator"]["enum"],
        serde_json::json!(["Equal", "Exists"])
    );
    assert_eq!(
        item["effect"]["enum"],
        serde_json::json!(["NoSchedule", "PreferNoSchedule", "NoExecute"])
    );
    assert_eq!(item["key"]["maxLength"], 317);
    assert_eq!(item["value"]["maxLength"], 63);
    let rules = serde_json::to_string(&tolerations["items"]["x-kubernetes-validations"]).unwrap();
    for message in [
        "a toleration without a key must use operator Exists",
        "a toleration with operator Exists must not have a value",
        "tolerationSeconds needs effect NoExecute",
    ] {
        assert!(rules.contains(message), "missing rule: {message}");
    }
    // Any TCP port: the cluster's --service-node-port-range is the API server's to enforce.
    let node_port = &spec["components"]["properties"]["gateway"]["properties"]["nodePort"];
    assert_eq!(
        (node_port["minimum"].as_f64(), node_port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
}

#[test]
fn the_structural_check_catches_what_the_api_server_would_refuse() {
    let bad = serde_json::json!({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}});
    let mut errors = Vec::new();
    check_structural(&bad, "", &mut errors);
    assert!(
        errors.iter().any(|e| e.contains(".a: no type")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("type inside a junction")),
        "{errors:?}"
    );
}

#[test]
fn backing_modes_and_their_contradictions_are_in_the_schema() {
    let crd = serde_json::to_value(Shop::crd()).unwrap();
    let backing = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["backing"]["properties"];
    for store in ["mysql", "mongodb", "kafka", "zipkin"] {
        assert_eq!(
            backing[store]["properties"]["mode"]["enum"],
            serde_json::json!(["managed", "external"]),
            "{store}"
        );
    }
    let rules =
        |store: &str| serde_json::to_string(&backing[store]["x-kubernetes-validations"]).unwrap();
    assert!(rules("mysql").contains("urlSecretRef cannot be combined with mode: managed"));
    assert!(rules("mongodb").contains("mode: external needs urlSecretRef"));
    assert!(rules("kafka").contains("mode: external needs bootstrapServers"));
    assert!(rules("zipkin").contains("mode: external needs endpoint"));
    let zipkin_storage =
        serde_json::to_string(&backing["zipkin"]["properties"]["storage"]).unwrap();
    assert!(zipkin_storage.contains("zipkin.storage is not supported"));
    // Managed settings of a store with a volume.
    let mysql = &backing["mysql"]["properties"];
    for field in ["image", "storage", "keepData", "resources", "urlSecretRef"] {
        assert!(mysql[field].is_object(), "mysql.{field}");
    }
}
