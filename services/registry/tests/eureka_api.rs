//! The Eureka REST API of a real shop-registry process, driven with bodies shaped like the Java client's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::Value;
use shop_testkit::clients::Eureka;
use shop_testkit::registry::{eureka_url, instance_ids, java_instance, spawn_registry};
use std::time::{Duration, Instant};

#[tokio::test]
async fn register_renew_cancel_fetch_and_delta_like_the_java_client() {
    let reg = spawn_registry(&[]).await;
    let eureka = eureka_url(&reg);
    let e = Eureka::new(&eureka);

    // Register must answer 204 (checked by `register`).
    for (id, port) in [
        ("host:order-service:8081", 8081),
        ("host:order-service:8082", 8082),
    ] {
        e.register(
            "ORDER-SERVICE",
            &java_instance("order-service", id, port, 90),
        )
        .await;
    }

    // Full fetch: arrays always, ports as {"$":n,"@enabled":"true"}, the hashcode.
    let full: Value = e.get_json("/apps/").await;
    let apps = &full["applications"];
    assert_eq!(apps["apps__hashcode"], "UP_2_");
    let app = &apps["application"][0];
    assert_eq!(app["name"], "ORDER-SERVICE");
    let inst = &app["instance"][0];
    assert_eq!(
        inst["port"],
        serde_json::json!({"$": 8081, "@enabled": "true"})
    );
    assert_eq!(inst["dataCenterInfo"]["name"], "MyOwn");
    assert_eq!(inst["metadata"]["management.port"], "8081");
    assert!(
        inst.get("actionType").is_none(),
        "full fetch carries no actionType"
    );

    // Renew: 200 when known, 404 when unknown (the client then re-registers).
    let renew = |id| {
        e.renew(
            "ORDER-SERVICE",
            id,
            "status=UP&lastDirtyTimestamp=1700000000000",
        )
    };
    assert_eq!(renew("host:order-service:8081").await, StatusCode::OK);
    assert_eq!(renew("nobody").await, StatusCode::NOT_FOUND);

    // One app, one instance, by id; app names are case-insensitive.
    let one: Value = e.get_json("/apps/order-service").await;
    assert_eq!(one["application"]["instance"].as_array().unwrap().len(), 2);
    let i: Value = e
        .get_json("/apps/ORDER-SERVICE/host:order-service:8082")
        .await;
    assert_eq!(i["instance"]["port"]["$"], 8082);
    let by_id = e.get("/instances/host:order-service:8082").await;
    assert_eq!(by_id.status, StatusCode::OK);
    let vip: Value = e.get_json("/vips/order-service").await;
    assert_eq!(
        vip["applications"]["application"][0]["instance"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Cancel: 200, then 404; the delta shows the deletion and the whole registry's hashcode.
    let cancel = || e.cancel("ORDER-SERVICE", "host:order-service:8082");
    assert_eq!(cancel().await, StatusCode::OK);
    assert_eq!(cancel().await, StatusCode::NOT_FOUND);
    let delta: Value = e.get_json("/apps/delta").await;
    assert_eq!(delta["applications"]["apps__hashcode"], "UP_1_");
    let changed = delta["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap();
    let deleted = changed
        .iter()
        .find(|i| i["instanceId"] == "host:order-service:8082")
        .expect("deleted instance in delta");
    assert_eq!(deleted["actionType"], "DELETED");
    assert_eq!(
        instance_ids(&eureka, "order-service").await,
        vec!["host:order-service:8081"]
    );
    assert_eq!(e.get("/apps/NOPE").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_override_and_metadata() {
    let reg = spawn_registry(&[]).await;
    let e = Eureka::new(eureka_url(&reg));
    e.register("PRODUCT", &java_instance("product", "p1", 9001, 90))
        .await;
    let r = e
        .put("/apps/PRODUCT/p1/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=1")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let full: Value = e.get_json("/apps").await;
    assert_eq!(full["applications"]["apps__hashcode"], "OUT_OF_SERVICE_1_");
    assert_eq!(
        full["applications"]["application"][0]["instance"][0]["overriddenStatus"],
        "OUT_OF_SERVICE"
    );
    let bad = e.put("/apps/PRODUCT/p1/status?value=SLEEPY").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json["field"], "value");
    let r = e.delete("/apps/PRODUCT/p1/status?value=UP").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = e.put("/apps/PRODUCT/p1/metadata?zone=a&version=2").await;
    assert_eq!(r.status, StatusCode::OK);
    let i: Value = e.get_json("/apps/PRODUCT/p1").await;
    assert_eq!(i["instance"]["status"], "UP");
    assert_eq!(i["instance"]["metadata"]["zone"], "a");
    assert_eq!(i["instance"]["metadata"]["version"], "2");
    // Found by fuzzing: a key given twice said two things; which one was kept depended on the
    // order. It is refused, and nothing changes.
    let r = e.put("/apps/PRODUCT/p1/metadata?zone=b&zone=c").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json["field"], "metadata");
    let i: Value = e.get_json("/apps/PRODUCT/p1").await;
    assert_eq!(i["instance"]["metadata"]["zone"], "a");
    let r = e.put("/apps/PRODUCT/zzz/metadata?a=b").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_registrations_get_400_naming_the_field_and_limits_hold() {
    let reg = spawn_registry(&["--max-instances", "2", "--max-body-bytes", "8192"]).await;
    let eureka = eureka_url(&reg);
    let e = Eureka::new(&eureka);
    let cases = [
        ("instanceId", "instance.instanceId"),
        ("hostName", "instance.hostName"),
        ("ipAddr", "instance.ipAddr"),
        ("dataCenterInfo", "instance.dataCenterInfo"),
    ];
    for (remove, field) in cases {
        let mut body = java_instance("cart", "c1", 1, 90);
        body["instance"].as_object_mut().unwrap().remove(remove);
        let r = e.post_instance("CART", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{remove}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json["field"], field);
    }
    let mut body = java_instance("cart", "c1", 1, 90);
    body["instance"]["port"]["$"] = "eighty".into();
    let p: Value = e.post_instance("CART", &body).await.json;
    assert_eq!(p["field"], "instance.port.$");
    // App in the path must match the body.
    let r = e
        .post_instance("OTHER", &java_instance("cart", "c1", 1, 90))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Not JSON: sent raw, as no client would.
    let r = e
        .http()
        .post(e.url("/apps/CART"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Oversized body.
    let mut big = java_instance("cart", "c9", 1, 90);
    big["instance"]["metadata"]["junk"] = "x".repeat(10_000).into();
    let r = e.post_instance("CART", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing half-written by all of the above.
    assert!(instance_ids(&eureka, "cart").await.is_empty());
    // Instance limit: 2 fit, the third is refused, re-registering an existing one is fine.
    for id in ["c1", "c2"] {
        e.register("CART", &java_instance("cart", id, 1, 90)).await;
    }
    let r = e
        .post_instance("CART", &java_instance("cart", "c3", 1, 90))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    e.register("CART", &java_instance("cart", "c1", 1, 90))
        .await;
}

#[tokio::test]
async fn instance_that_stops_renewing_is_gone_within_one_lease_plus_one_eviction_interval() {
    let reg = spawn_registry(&[]).await;
    let eureka = eureka_url(&reg);
    let e = Eureka::new(&eureka);
    let registered = Instant::now();
    e.register("INVENTORY", &java_instance("inventory", "dies", 1, 2))
        .await;
    e.register("INVENTORY", &java_instance("inventory", "lives", 2, 2))
        .await;
    // "lives" renews every 500 ms; "dies" never renews.
    let mut gone_after = None;
    while registered.elapsed() < Duration::from_secs(6) {
        e.renew("INVENTORY", "lives", "status=UP").await;
        let ids = instance_ids(&eureka, "inventory").await;
        assert!(
            ids.contains(&"lives".to_owned()),
            "a renewing instance must stay"
        );
        if !ids.contains(&"dies".to_owned()) && gone_after.is_none() {
            gone_after = Some(registered.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gone_after = gone_after.expect("expired instance was never evicted");
    // Lease 2 s + eviction interval 0.2 s (+ polling slack); never before the lease ran out.
    assert!(
        gone_after >= Duration::from_secs(2),
        "evicted too early: {gone_after:?}"
    );
    assert!(
        gone_after <= Duration::from_millis(2200 + 600),
        "evicted too late: {gone_after:?}"
    );
}

#[tokio::test]
async fn dashboard_lists_instances_and_threshold() {
    let reg = spawn_registry(&[]).await;
    let e = Eureka::new(eureka_url(&reg));
    e.register("GATEWAY", &java_instance("gateway", "gw-<1>", 8080, 90))
        .await;
    let html = shop_testkit::get_text(e.http(), format!("{}/", reg.base_url())).await;
    assert!(html.contains("GATEWAY"));
    assert!(html.contains("gw-&lt;1&gt;"), "instance ids are escaped");
    assert!(html.contains("Renews in the last minute"));
    assert!(html.contains("Renew threshold"));
    assert!(html.contains("Peers"));
}
