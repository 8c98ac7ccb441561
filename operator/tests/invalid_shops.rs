//! Generated invalid Shops against the real API server with the operator running: a valid Shop with
//! one to three fields of its spec (any field of the CRD's schema, walked from the generated CRD)
//! set to values of the wrong type, out of range, empty, oversized or odd. Each one is either
//! refused by the API server with a message naming a `spec` field (schema or CEL), or accepted and
//! then given a status by the operator; the operator keeps running throughout.
//!
//! Exists because the CEL and validation cases in cluster.rs are the ones someone thought of; this
//! asks the same question of every field of the schema (issue 19). `SHOP_FUZZ_SHOPS` sets the
//! number of cases (default 150), `SHOP_FUZZ_SEED` the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, CustomResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use shop_operator::Shop;

/// A leaf or object of the spec's schema: its path under `spec` and its type.
#[derive(Debug, Clone)]
struct Field {
    path: Vec<String>,
    kind: String,
}

/// Every property under `spec` of the generated CRD's schema (arrays: their first item).
fn fields(schema: &Value, path: &mut Vec<String>, out: &mut Vec<Field>) {
    let kind = schema["type"].as_str().unwrap_or("any").to_owned();
    if !path.is_empty() {
        out.push(Field {
            path: path.clone(),
            kind: kind.clone(),
        });
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, sub) in props {
            path.push(name.clone());
            fields(sub, path, out);
            path.pop();
        }
    }
    if kind == "array" {
        path.push("0".into());
        fields(&schema["items"], path, out);
        path.pop();
    }
}

/// A value a field of this type should not accept, or an edge it might not handle.
fn bad_value(kind: &str, rng: &mut StdRng) -> Value {
    let pick = |rng: &mut StdRng, v: Vec<Value>| v[rng.random_range(0..v.len())].clone();
    match kind {
        "integer" | "number" => pick(
            rng,
            vec![
                json!(-1),
                json!(-2147483648i64),
                json!(1i64 << 40),
                json!("12"),
                json!(1.5),
                json!(true),
                json!({}),
                json!(0),
                json!(65536),
            ],
        ),
        "string" => pick(
            rng,
            vec![
                json!(""),
                json!(" "),
                json!("x".repeat(300)),
                json!("UPPER case!"),
                json!("a\u{0}b"),
                json!("../../etc"),
                json!("${jndi:ldap://x}"),
                json!(12),
                json!([]),
                json!("-"),
            ],
        ),
        "boolean" => pick(rng, vec![json!("yes"), json!(2), json!([])]),
        "array" => pick(
            rng,
            vec![json!({}), json!("x"), json!([null]), json!([1, 2])],
        ),
        "object" => pick(
            rng,
            vec![json!("x"), json!([]), json!(5), json!({"unknownField": 1})],
        ),
        _ => pick(rng, vec![json!(null), json!(-1), json!("")]),
    }
}

/// Sets `path` (creating objects and one-item arrays on the way) to `value`.
fn set(root: &mut Value, path: &[String], value: Value) {
    let mut cur = root;
    for (i, key) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if key == "0" {
            if !cur.is_array() {
                *cur = json!([]);
            }
            let arr = cur.as_array_mut().unwrap();
            if arr.is_empty() {
                arr.push(json!({}));
            }
            cur = &mut arr[0];
        } else {
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .unwrap()
                .entry(key.clone())
                .or_insert(json!({}));
        }
        if last {
            *cur = value.clone();
        }
    }
}

#[tokio::test]
async fn generated_invalid_shops_are_refused_naming_a_field_or_get_a_status_and_the_operator_keeps_running()
 {
    let (client, ns) = setup("op-fuzz-").await;
    let op = start_operator(&client, &ns.name);
    let schema = serde_json::to_value(Shop::crd()).unwrap()["spec"]["versions"][0]["schema"]
        ["openAPIV3Schema"]["properties"]["spec"]
        .clone();
    let mut all = Vec::new();
    fields(&schema, &mut Vec::new(), &mut all);
    assert!(
        all.len() > 40,
        "the schema walk found only {} fields",
        all.len()
    );

    let cases: usize = shop_testkit::env_or("SHOP_FUZZ_SHOPS", 150);
    let seed: u64 = shop_testkit::env_or("SHOP_FUZZ_SEED", 0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let gvk = GroupVersionKind::gvk("shopkeeper.dev", "v1alpha1", "Shop");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    // The Secrets the sample Shop names exist, so an accepted Shop fails only for its own fields.
    create_shop(&client, &ns.name, &sample_shop("base", "")).await;

    let mut refused = 0usize;
    let mut accepted = Vec::new();
    let mut failures = Vec::new();
    for case in 0..cases {
        let name = format!("fuzz-{case}");
        let mut shop = serde_json::to_value(sample_shop(&name, "")).unwrap();
        let mut changed = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let f = &all[rng.random_range(0..all.len())];
            let v = bad_value(&f.kind, &mut rng);
            changed.push(format!("spec.{} = {v}", f.path.join(".")));
            set(&mut shop["spec"], &f.path, v);
        }
        let obj: DynamicObject = match serde_json::from_value(shop) {
            Ok(o) => o,
            Err(e) => panic!("case {case}: not an object: {e}"),
        };
        match api.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(s)) => {
                refused += 1;
                // The refusal names a field of the spec (or the name), so the user knows what to fix.
                if !(s.message.contains("spec") || s.message.contains("metadata.name"))
                    || s.code >= 500
                {
                    failures.push(format!(
                        "case {case} {changed:?}: refused unclearly ({}) {}",
                        s.code, s.message
                    ));
                }
            }
            Err(e) => failures.push(format!("case {case} {changed:?}: {e}")),
            Ok(_) => accepted.push((name, changed)),
        }
    }
    // Every accepted Shop gets a status from the operator (whatever its phase), within a minute.
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (name, changed) in &accepted {
        let phase = loop {
            let s = Api::<Shop>::namespaced(client.clone(), &ns.name)
                .get(name)
                .await
                .ok()
                .and_then(|s| s.status)
                .and_then(|s| s.phase)
                .map(|p| p.to_string());
            if s.is_some() || tokio::time::Instant::now() >= deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        match phase {
            Some(p) => *phases.entry(p).or_default() += 1,
            None => failures.push(format!(
                "{name} {changed:?}: accepted but never given a status"
            )),
        }
    }
    assert!(
        !op.handle.is_finished(),
        "the operator stopped while reconciling the generated Shops"
    );
    eprintln!(
        "{cases} generated Shops (seed {seed:#x}, {} schema fields): {refused} refused by the API server, {} accepted: phases {phases:?}",
        all.len(),
        accepted.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    op.stop().await;
    ns.delete().await;
}
