//! Every documented operation of shop-registry, driven against a real registry process with good and bad
//! input (bodies shaped like the Java Eureka client's); each response must conform to the OpenAPI
//! document the registry itself serves at `/openapi.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Client;
use serde_json::{Value, json};
use shop_testkit::get_json;
use shop_testkit::openapi::Spec;
use shop_testkit::registry::{eureka_url, java_instance, spawn_registry};

const APPS: &str = "/eureka/apps";
const DELTA: &str = "/eureka/apps/delta";
const APP: &str = "/eureka/apps/{app}";
const INSTANCE: &str = "/eureka/apps/{app}/{id}";
const STATUS: &str = "/eureka/apps/{app}/{id}/status";
const METADATA: &str = "/eureka/apps/{app}/{id}/metadata";
const BY_ID: &str = "/eureka/instances/{id}";
const VIPS: &str = "/eureka/vips/{vip}";
const SVIPS: &str = "/eureka/svips/{svip}";
const BATCH: &str = "/eureka/peerreplication/batch";

/// A named change to a valid body.
type Mutation = (&'static str, fn(&mut Value));

/// Sends `req` (asking for JSON, as Spring Cloud's client does) and checks the answer against the document.
async fn call(spec: &Spec, method: &str, template: &str, req: reqwest::RequestBuilder) -> Value {
    let r = req
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let c = spec.conform(method, template, r).await;
    json!({"status": c.status, "body": c.json, "contentType": c.content_type})
}

fn ids(apps: &Value) -> Vec<String> {
    let mut ids: Vec<String> = apps["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["instance"].as_array().unwrap().clone())
        .map(|i| i["instanceId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    let reg = spawn_registry(&["--max-instances", "3", "--max-body-bytes", "8192"]).await;
    let spec = Spec::fetch(&reg.base_url()).await;
    let e = eureka_url(&reg);
    let h = Client::new();

    // GET /eureka/apps on an empty registry: an empty array and an empty hashcode.
    let r = call(&spec, "GET", APPS, h.get(format!("{e}/apps"))).await;
    assert_eq!(r["body"]["applications"]["application"], json!([]));
    assert_eq!(r["body"]["applications"]["apps__hashcode"], "");

    // POST /eureka/apps/{app}: register, and every way a registration is refused.
    for (id, port) in [("o1", 8081), ("o2", 8082)] {
        let r = call(
            &spec,
            "POST",
            APP,
            h.post(format!("{e}/apps/ORDER-SERVICE"))
                .json(&java_instance("order-service", id, port, 90)),
        )
        .await;
        assert_eq!(r["status"], 204);
    }
    let mut product = java_instance("product", "p1", 9001, 90);
    product["instance"]["secureVipAddress"] = "product-secure".into();
    let r = call(
        &spec,
        "POST",
        APP,
        h.post(format!("{e}/apps/product")).json(&product),
    )
    .await;
    assert_eq!(r["status"], 204);
    let mut no_id = java_instance("cart", "c1", 1, 90);
    no_id["instance"]
        .as_object_mut()
        .unwrap()
        .remove("instanceId");
    let r = call(
        &spec,
        "POST",
        APP,
        h.post(format!("{e}/apps/CART")).json(&no_id),
    )
    .await;
    assert_eq!(r["status"], 400);
    assert_eq!(r["body"]["field"], "instance.instanceId");
    assert_eq!(r["contentType"], "application/problem+json");
    let mut bad_port = java_instance("cart", "c1", 1, 90);
    bad_port["instance"]["port"]["$"] = "eighty".into();
    let r = call(
        &spec,
        "POST",
        APP,
        h.post(format!("{e}/apps/CART")).json(&bad_port),
    )
    .await;
    assert_eq!(r["body"]["field"], "instance.port.$");
    let r = call(
        &spec,
        "POST",
        APP,
        h.post(format!("{e}/apps/OTHER"))
            .json(&java_instance("cart", "c1", 1, 90)),
    )
    .await;
    assert_eq!(r["body"]["field"], "instance.app");
    let r = call(
        &spec,
        "POST",
        APP,
        h.post(format!("{e}/apps/CART"))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(r["status"], 400);
    let mut big = java_instance("cart", "c1", 1, 90);
    big["instance"]["metadata"]["junk"] = "x".repeat(10_000).into();
    let r = call(
        &spec,
        "POST",
        APP,
        h.post(format!("{e}/apps/CART")).json(&big),
    )
    .await;
    assert_eq!(r["status"], 413);
    // The registry is full (3 instances): a new instance is refused with Retry-After.
    let resp = h
        .post(format!("{e}/apps/CART"))
        .json(&java_instance("cart", "c1", 1, 90))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(spec.conform("POST", APP, resp).await.status, 503);

    // GET /eureka/apps (and the Java client's `/eureka/apps/`), also when XML is asked for: JSON.
    let r = call(&spec, "GET", APPS, h.get(format!("{e}/apps/"))).await;
    assert_eq!(ids(&r["body"]), vec!["o1", "o2", "p1"]);
    assert_eq!(r["body"]["applications"]["apps__hashcode"], "UP_3_");
    let resp = h
        .get(format!("{e}/apps"))
        .header("accept", "application/xml")
        .send()
        .await
        .unwrap();
    let c = spec.conform("GET", APPS, resp).await;
    assert_eq!(c.content_type.as_deref(), Some("application/json"));

    // GET /eureka/apps/{app}
    let r = call(&spec, "GET", APP, h.get(format!("{e}/apps/order-service"))).await;
    assert_eq!(r["body"]["application"]["name"], "ORDER-SERVICE");
    assert_eq!(
        r["body"]["application"]["instance"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = call(&spec, "GET", APP, h.get(format!("{e}/apps/NOPE"))).await;
    assert_eq!(r["status"], 404);

    // GET /eureka/apps/{app}/{id}
    let r = call(
        &spec,
        "GET",
        INSTANCE,
        h.get(format!("{e}/apps/ORDER-SERVICE/o2")),
    )
    .await;
    assert_eq!(r["body"]["instance"]["port"]["$"], 8082);
    let r = call(
        &spec,
        "GET",
        INSTANCE,
        h.get(format!("{e}/apps/ORDER-SERVICE/nobody")),
    )
    .await;
    assert_eq!(r["status"], 404);

    // GET /eureka/instances/{id}
    let r = call(&spec, "GET", BY_ID, h.get(format!("{e}/instances/p1"))).await;
    assert_eq!(r["body"]["instance"]["app"], "PRODUCT");
    let r = call(&spec, "GET", BY_ID, h.get(format!("{e}/instances/nobody"))).await;
    assert_eq!(r["status"], 404);

    // PUT /eureka/apps/{app}/{id}: heartbeat.
    let r = call(
        &spec,
        "PUT",
        INSTANCE,
        h.put(format!(
            "{e}/apps/ORDER-SERVICE/o1?status=UP&lastDirtyTimestamp=1700000000000"
        )),
    )
    .await;
    assert_eq!(r["status"], 200);
    let r = call(
        &spec,
        "PUT",
        INSTANCE,
        h.put(format!(
            "{e}/apps/ORDER-SERVICE/o1?status=UP&lastDirtyTimestamp=yesterday"
        )),
    )
    .await;
    assert_eq!(r["body"]["field"], "lastDirtyTimestamp");
    let r = call(
        &spec,
        "PUT",
        INSTANCE,
        h.put(format!("{e}/apps/ORDER-SERVICE/nobody?status=UP")),
    )
    .await;
    assert_eq!(r["status"], 404);
    // A client with newer data than the registry's is told to register again.
    let r = call(
        &spec,
        "PUT",
        INSTANCE,
        h.put(format!(
            "{e}/apps/ORDER-SERVICE/o1?lastDirtyTimestamp=99999999999999"
        )),
    )
    .await;
    assert_eq!(r["status"], 404);

    // PUT /eureka/apps/{app}/{id}/status
    let r = call(
        &spec,
        "PUT",
        STATUS,
        h.put(format!(
            "{e}/apps/ORDER-SERVICE/o2/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=1"
        )),
    )
    .await;
    assert_eq!(r["status"], 200);
    let r = call(
        &spec,
        "PUT",
        STATUS,
        h.put(format!("{e}/apps/ORDER-SERVICE/o2/status?value=SLEEPY")),
    )
    .await;
    assert_eq!(r["body"]["field"], "value");
    let r = call(
        &spec,
        "PUT",
        STATUS,
        h.put(format!("{e}/apps/ORDER-SERVICE/o2/status")),
    )
    .await;
    assert_eq!(r["status"], 400);
    let r = call(
        &spec,
        "PUT",
        STATUS,
        h.put(format!("{e}/apps/ORDER-SERVICE/nobody/status?value=UP")),
    )
    .await;
    assert_eq!(r["status"], 404);
    let r = call(
        &spec,
        "GET",
        INSTANCE,
        h.get(format!("{e}/apps/ORDER-SERVICE/o2")),
    )
    .await;
    assert_eq!(r["body"]["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
    let r = call(&spec, "GET", APPS, h.get(format!("{e}/apps"))).await;
    assert_eq!(
        r["body"]["applications"]["apps__hashcode"],
        "OUT_OF_SERVICE_1_UP_2_"
    );

    // DELETE /eureka/apps/{app}/{id}/status
    let r = call(
        &spec,
        "DELETE",
        STATUS,
        h.delete(format!("{e}/apps/ORDER-SERVICE/o2/status?value=UP")),
    )
    .await;
    assert_eq!(r["status"], 200);
    let r = call(
        &spec,
        "DELETE",
        STATUS,
        h.delete(format!("{e}/apps/ORDER-SERVICE/o2/status")),
    )
    .await;
    assert_eq!(r["status"], 200);
    let r = call(
        &spec,
        "DELETE",
        STATUS,
        h.delete(format!("{e}/apps/ORDER-SERVICE/o2/status?value=SLEEPY")),
    )
    .await;
    assert_eq!(r["body"]["field"], "value");
    let r = call(
        &spec,
        "DELETE",
        STATUS,
        h.delete(format!("{e}/apps/ORDER-SERVICE/nobody/status")),
    )
    .await;
    assert_eq!(r["status"], 404);

    // PUT /eureka/apps/{app}/{id}/metadata
    let r = call(
        &spec,
        "PUT",
        METADATA,
        h.put(format!(
            "{e}/apps/ORDER-SERVICE/o1/metadata?zone=a&version=2"
        )),
    )
    .await;
    assert_eq!(r["status"], 200);
    let r = call(
        &spec,
        "PUT",
        METADATA,
        h.put(format!("{e}/apps/ORDER-SERVICE/o1/metadata?=nameless")),
    )
    .await;
    assert_eq!(r["body"]["field"], "metadata");
    let r = call(
        &spec,
        "PUT",
        METADATA,
        h.put(format!("{e}/apps/ORDER-SERVICE/nobody/metadata?zone=a")),
    )
    .await;
    assert_eq!(r["status"], 404);
    let r = call(
        &spec,
        "GET",
        INSTANCE,
        h.get(format!("{e}/apps/ORDER-SERVICE/o1")),
    )
    .await;
    assert_eq!(r["body"]["instance"]["metadata"]["zone"], "a");

    // GET /eureka/vips/{vip}, /eureka/svips/{svip}: matches, and an empty answer for none.
    let r = call(&spec, "GET", VIPS, h.get(format!("{e}/vips/order-service"))).await;
    assert_eq!(ids(&r["body"]), vec!["o1", "o2"]);
    let r = call(&spec, "GET", VIPS, h.get(format!("{e}/vips/nothing"))).await;
    assert!(ids(&r["body"]).is_empty());
    let r = call(
        &spec,
        "GET",
        SVIPS,
        h.get(format!("{e}/svips/PRODUCT-SECURE")),
    )
    .await;
    assert_eq!(ids(&r["body"]), vec!["p1"]);
    let r = call(&spec, "GET", SVIPS, h.get(format!("{e}/svips/nothing"))).await;
    assert!(ids(&r["body"]).is_empty());

    // DELETE /eureka/apps/{app}/{id}: cancel, then 404.
    let r = call(
        &spec,
        "DELETE",
        INSTANCE,
        h.delete(format!("{e}/apps/ORDER-SERVICE/o2")),
    )
    .await;
    assert_eq!(r["status"], 200);
    let r = call(
        &spec,
        "DELETE",
        INSTANCE,
        h.delete(format!("{e}/apps/ORDER-SERVICE/o2")),
    )
    .await;
    assert_eq!(r["status"], 404);

    // GET /eureka/apps/delta: the changes above, each with its actionType.
    let r = call(&spec, "GET", DELTA, h.get(format!("{e}/apps/delta"))).await;
    let actions: Vec<(String, String)> = r["body"]["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["instance"].as_array().unwrap().clone())
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap().to_owned(),
                i["actionType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(actions.contains(&("o2".to_owned(), "DELETED".to_owned())));
    assert!(actions.contains(&("o1".to_owned(), "MODIFIED".to_owned())));
    assert_eq!(r["body"]["applications"]["apps__hashcode"], "UP_2_");

    // POST /eureka/peerreplication/batch: one status per event, in order.
    let cart = java_instance("cart", "c1", 1, 90);
    let r = call(
        &spec,
        "POST",
        BATCH,
        h.post(format!("{e}/peerreplication/batch"))
            .header("x-netflix-discovery-replication", "true")
            .json(&json!({"events": [
                {"action": "register", "instance": cart["instance"]},
                {"action": "heartbeat", "app": "CART", "id": "c1"},
                {"action": "statusUpdate", "app": "CART", "id": "c1", "status": "DOWN"},
                {"action": "metadata", "app": "CART", "id": "c1", "pairs": [["zone", "b"]]},
                {"action": "cancel", "app": "CART", "id": "nobody"},
                {"action": "statusUpdate", "app": "CART", "id": "c1", "status": "SLEEPY"},
            ]})),
    )
    .await;
    assert_eq!(r["body"]["statuses"], json!([204, 200, 200, 200, 404, 400]));
    let r = call(
        &spec,
        "POST",
        BATCH,
        h.post(format!("{e}/peerreplication/batch"))
            .json(&json!({"events": [{"action": "teleport", "app": "CART", "id": "c1"}]})),
    )
    .await;
    assert_eq!(r["status"], 400);
    let r = call(
        &spec,
        "POST",
        BATCH,
        h.post(format!("{e}/peerreplication/batch"))
            .header("content-type", "application/json")
            .body("[1,2"),
    )
    .await;
    assert_eq!(r["status"], 400);
    let r = call(
        &spec,
        "POST",
        BATCH,
        h.post(format!("{e}/peerreplication/batch"))
            .json(&json!({"events": [], "pad": "x".repeat(10_000)})),
    )
    .await;
    assert_eq!(r["status"], 413);

    spec.assert_every_operation_exercised();
}

#[tokio::test]
async fn the_checker_rejects_responses_that_leave_the_document() {
    let reg = spawn_registry(&[]).await;
    let spec = Spec::fetch(&reg.base_url()).await;
    let e = eureka_url(&reg);
    let h = Client::new();
    h.post(format!("{e}/apps/PRODUCT"))
        .json(&java_instance("product", "p1", 9001, 90))
        .send()
        .await
        .unwrap();
    let one: Value = get_json(&h, format!("{e}/apps/PRODUCT/p1")).await;
    let ok = |v: &Value| {
        spec.check(
            "GET",
            INSTANCE,
            200,
            Some("application/json"),
            v.to_string().as_bytes(),
        )
    };
    ok(&one).unwrap();
    // Each change below leaves the Eureka shape a Java client parses; each must be refused.
    let mutations: [Mutation; 8] = [
        ("instanceId missing", |v| {
            v["instance"].as_object_mut().unwrap().remove("instanceId");
        }),
        ("port as a bare number", |v| {
            v["instance"]["port"] = json!(9001)
        }),
        ("@enabled as a boolean", |v| {
            v["instance"]["port"]["@enabled"] = json!(true)
        }),
        ("timestamp as a number", |v| {
            v["instance"]["lastDirtyTimestamp"] = json!(1_700_000_000_000_i64)
        }),
        ("unknown status", |v| {
            v["instance"]["status"] = json!("SLEEPY")
        }),
        ("null actionType", |v| {
            v["instance"]["actionType"] = Value::Null
        }),
        ("a member the Netflix server does not write", |v| {
            v["instance"]["zone"] = json!("a")
        }),
        ("unwrapped instance", |v| *v = v["instance"].clone()),
    ];
    for (what, mutate) in mutations {
        let mut v = one.clone();
        mutate(&mut v);
        assert!(ok(&v).is_err(), "accepted a body with {what}: {v}");
    }
    // Applications: an instance list that is a single object (the XML-to-JSON quirk), a bad hashcode.
    let apps = json!({"applications": {"versions__delta": "1", "apps__hashcode": "UP_1_",
        "application": [{"name": "PRODUCT", "instance": one["instance"].clone()}]}});
    assert!(
        spec.check(
            "GET",
            APPS,
            200,
            Some("application/json"),
            apps.to_string().as_bytes()
        )
        .is_err()
    );
    let apps = json!({"applications": {"versions__delta": "1", "apps__hashcode": "up-1",
        "application": []}});
    assert!(
        spec.check(
            "GET",
            APPS,
            200,
            Some("application/json"),
            apps.to_string().as_bytes()
        )
        .is_err()
    );
    // Statuses and media types: a body on a bodiless answer, a problem as plain JSON, an undocumented status.
    assert!(
        spec.check("PUT", INSTANCE, 200, Some("application/json"), b"{}")
            .is_err()
    );
    assert!(
        spec.check(
            "GET",
            INSTANCE,
            404,
            Some("application/json"),
            br#"{"type":"about:blank","title":"Not found","status":404}"#
        )
        .is_err()
    );
    assert!(spec.check("DELETE", INSTANCE, 204, None, b"").is_err());
    assert!(
        spec.check(
            "GET",
            INSTANCE,
            404,
            Some("application/problem+json"),
            br#"{"type":"about:blank","title":"Not found","status":404}"#
        )
        .is_ok()
    );
}
