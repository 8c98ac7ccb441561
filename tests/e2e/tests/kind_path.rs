//! The kind path (`make kind-up kind-images kind-install kind-shop`) cannot run here: no Docker,
//! and kind's node image cannot be fetched. So it is kept correct by testing what it would do:
//! `hack/kind.sh plan` prints the images `images` builds and loads, the arguments of `install`'s
//! helm command and the file `shop` applies, from the same functions those subcommands run. This
//! test checks that every image the kind Shop's pods and the chart's operator reference is one
//! that is loaded, with the same tag (a new user's first try loaded `:latest` tags nobody built);
//! that the kind Shop is the Shop the real node runs (examples/shop.yaml) but for its node ports
//! and the stores' images; that the real API server accepts it; and that kind-config.yaml maps the
//! Shop's node ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use kube::api::PostParams;
use kube::core::DynamicObject;
use serde_json::Value;
use shop_operator::crd::Shop;
use shop_operator::stores::Store;
use shop_testkit::cluster::{self, DEMO_NAMESPACE, require_real_node};
use shop_testkit::{helm_path, repo_root};

/// What `hack/kind.sh plan` prints.
struct Plan {
    images: BTreeSet<String>,
    helm: Vec<String>,
    applies: Vec<String>,
}

fn plan() -> Plan {
    let out = Command::new(repo_root().join("hack/kind.sh"))
        .arg("plan")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hack/kind.sh plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut plan = Plan {
        images: BTreeSet::new(),
        helm: Vec::new(),
        applies: Vec::new(),
    };
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (kind, value) = line.split_once(' ').unwrap();
        match kind {
            "image" => {
                plan.images.insert(value.to_owned());
            }
            "helm" => plan.helm.push(value.to_owned()),
            "apply" => plan.applies.push(value.to_owned()),
            other => panic!("unknown plan line {other:?}"),
        }
    }
    plan
}

/// The documents of a YAML file of the repository.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    text.split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap())
        .collect()
}

fn shop_of(docs: &[Value]) -> Value {
    docs.iter().find(|d| d["kind"] == "Shop").unwrap().clone()
}

#[test]
fn every_image_the_kind_shop_and_the_operator_reference_is_built_and_loaded_with_its_tag() {
    let plan = plan();
    assert_eq!(plan.applies, ["examples/kind/shop.yaml"]);

    // The Shop's components, resolved exactly as the operator resolves them.
    let mut shop: Shop = serde_json::from_value(shop_of(&documents(&plan.applies[0]))).unwrap();
    shop.metadata.namespace = Some("shop".into());
    shop.metadata.uid = Some("kind-path".into());
    let resolved = shop_operator::validate::validate(&shop).expect("the kind Shop validates");
    assert_eq!(resolved.enabled.len(), 6);
    for c in &resolved.enabled {
        assert!(
            plan.images.contains(&c.image),
            "the kind Shop's {:?} runs {}, which hack/kind.sh images does not load: {:?}",
            c.component,
            c.image,
            plan.images
        );
    }
    // Its stores are managed and pull the CRD's public images (kind has internet).
    let stores: Vec<(Store, String)> = resolved
        .managed_stores
        .iter()
        .map(|m| (m.store, m.image.clone()))
        .collect();
    let public: Vec<(Store, String)> = Store::ALL
        .iter()
        .map(|s| (*s, s.default_image().to_owned()))
        .collect();
    assert_eq!(stores, public);

    // The operator Deployment helm renders with install's values runs a loaded image.
    let set: Vec<&str> = plan
        .helm
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].as_str())
        .collect();
    let mut helm = Command::new(helm_path());
    helm.current_dir(repo_root()).args([
        "template",
        "shopkeeper",
        "charts/shopkeeper",
        "--kube-version",
        "1.36.0",
    ]);
    for s in &set {
        helm.args(["--set", s]);
    }
    let out = helm.output().unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let deployment = rendered
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str::<Value>(d).ok())
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart renders the operator Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap();
    assert!(
        plan.images.contains(image),
        "the chart's operator runs {image}, which is not loaded: {:?}",
        plan.images
    );
    assert_eq!(
        container["imagePullPolicy"], "Never",
        "a loaded image is never pulled"
    );
    // And nothing is loaded that nothing runs.
    let used: BTreeSet<String> = resolved
        .enabled
        .iter()
        .map(|c| c.image.clone())
        .chain([image.to_owned()])
        .collect();
    assert_eq!(used, plan.images);
}

#[test]
fn the_kind_shop_is_the_example_shop_but_for_node_ports_and_store_images() {
    let local = documents("examples/shop.yaml");
    let kind = documents("examples/kind/shop.yaml");
    // The same Secret.
    assert_eq!(local[0], kind[0]);
    // The local Shop with kind's node ports and without store images is the kind Shop.
    let mut expected = shop_of(&local);
    let spec = &mut expected["spec"];
    spec["components"]["registry"]["nodePort"] = 30761.into();
    spec["components"]["gateway"]["nodePort"] = 30080.into();
    for store in Store::ALL {
        let entry = spec["backing"][store.name()].as_object_mut().unwrap();
        assert!(
            entry.remove("image").is_some(),
            "examples/shop.yaml names the local {store} image"
        );
    }
    assert_eq!(expected, shop_of(&kind));

    // kind-config.yaml maps exactly the Shop's node ports to the host's 8080 and 8761.
    let config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("kind-config.yaml")).unwrap(),
    )
    .unwrap();
    let mappings: BTreeSet<(i64, i64)> = config["nodes"][0]["extraPortMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["containerPort"].as_i64().unwrap(),
                m["hostPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(mappings, BTreeSet::from([(30080, 8080), (30761, 8761)]));
}

#[tokio::test]
async fn the_api_server_accepts_the_kind_shop_as_written() {
    let client = cluster::client().await;
    require_real_node(&client).await;
    let shop = shop_of(&documents("examples/kind/shop.yaml"));
    let mut obj: DynamicObject = serde_json::from_value(shop).unwrap();
    obj.metadata.name = Some(shop_testkit::fresh_name("kind-"));
    let created = cluster::shops(&client, DEMO_NAMESPACE)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &obj,
        )
        .await;
    assert!(
        created.is_ok(),
        "the API server refuses the kind Shop: {created:?}"
    );
}

#[test]
fn another_image_tag_than_the_kind_shop_names_is_refused_before_anything_runs() {
    // Loading :v2 while the Shop runs :dev is how a first try ended with pods waiting for images
    // nobody loaded; `plan` (and `shop`) refuse it, naming the file.
    let out = Command::new(repo_root().join("hack/kind.sh"))
        .arg("plan")
        .env("SHOP_IMAGE_TAG", "v2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("examples/kind/shop.yaml") && err.contains("v2"),
        "{err}"
    );
}
