//! Spans reach the real Zipkin, and a trace started by a caller's `traceparent` continues through a
//! service-to-service call (W3C + B3 injected by the client, extracted by the server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{echo, get, wait_registered};
use serde_json::Value;
use shop_testkit::registry::spawn_registry;
use shop_testkit::{fresh_name, wait_until, zipkin_url};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test]
async fn spans_of_a_two_hop_call_reach_zipkin_in_one_trace() {
    let zipkin = zipkin_url();
    let endpoint = format!("{zipkin}/api/v2/spans");
    let reg = spawn_registry(&[]).await;
    let (a_name, b_name) = (fresh_name("za"), fresh_name("zb"));
    let env = [("SHOP_ZIPKIN_ENDPOINT", endpoint.as_str())];
    let _b = echo(&b_name, Some(&reg), &env).await;
    let a = echo(&a_name, Some(&reg), &env).await;
    assert!(wait_registered(&reg, &b_name, 1).await);

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let r = reqwest::Client::new()
        .get(format!("{}/call/{b_name}/hello", a.base_url()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["trace_id"],
        trace_id.as_str(),
        "B must continue the caller's trace"
    );

    let url = format!("{zipkin}/api/v2/trace/{trace_id}");
    let found = wait_until(Duration::from_secs(15), || async {
        let (code, text) = get(&url).await;
        if code != 200 {
            return false;
        }
        let spans: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        let services: BTreeSet<String> = spans
            .iter()
            .filter_map(|s| {
                s["localEndpoint"]["serviceName"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        services.contains(&a_name) && services.contains(&b_name)
    })
    .await;
    assert!(
        found,
        "spans of {a_name} and {b_name} never reached Zipkin under trace {trace_id}"
    );
}
