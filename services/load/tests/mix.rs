//! `shop-load mix` against the whole shop as host processes on the local stack (MariaDB,
//! FerretDB, Kafka, Zipkin): the real binary at 50 requests/s for 8 s through the real gateway,
//! judged by its JSON report and by reading its orders back through the gateway. And the refusal
//! of bad arguments, which needs no shop.
//!
//! Needs the stack (`hack/stack.sh up`) and the service binaries (`cargo build --workspace
//! --bins`); fails loudly without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use shop_testkit::host_shop::HostShop;

const SHOP_LOAD: &str = env!("CARGO_BIN_EXE_shop-load");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_at_50_per_second_reaches_its_rate_and_every_route_and_its_orders_are_stored() {
    let shop = HostShop::start().await;
    let gateway = shop.gateway_url();
    let token = shop.token("shop-load-test");
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");

    let out = tokio::process::Command::new(SHOP_LOAD)
        .args([
            "mix",
            "--gateway",
            &gateway,
            "--rate",
            "50",
            "--duration",
            "8s",
        ])
        .args([
            "--token",
            &token,
            "--stream-for",
            "3s",
            "--seed-products",
            "3",
        ])
        .arg("--json")
        .arg(&json_path)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("shop-load mix did not finish within 90 s")
        .expect("running shop-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "shop-load mix failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json_path).expect("the JSON report");
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    println!("shop-load mix printed:\n{stdout}");
    let ctx = format!("report: {text}\nstdout:\n{stdout}");

    // The open-loop schedule: 400 requests due, all sent at the target rate, all finished.
    assert_eq!(report["scheduled"], 400, "{ctx}");
    assert_eq!(report["sent"], 400, "{ctx}");
    assert_eq!(report["completed"], 400, "{ctx}");
    let achieved = report["achieved_rps"].as_f64().unwrap();
    assert!(
        (45.0..=55.0).contains(&achieved),
        "achieved {achieved}/s for a target of 50/s\n{ctx}"
    );
    assert_eq!(report["interrupted"], false);

    // Every route of the default mix ran and was answered 2xx; nothing failed on the shop's side.
    for (route, share) in [("browse", 60), ("search", 20), ("order", 15), ("stream", 5)] {
        let r = &report["routes"][route];
        let requests = r["requests"].as_u64().unwrap();
        assert_eq!(requests, 4 * share, "{route}: {ctx}");
        assert_eq!(
            r["ok"], requests,
            "{route} had answers other than 2xx: {ctx}"
        );
        assert!(
            r["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
            "{route}: {ctx}"
        );
        let p = &r["latency_ms"];
        assert!(
            p["p50"].as_f64() <= p["p90"].as_f64()
                && p["p90"].as_f64() <= p["p99"].as_f64()
                && p["p99"].as_f64() <= p["max"].as_f64(),
            "{route}: percentiles out of order: {ctx}"
        );
    }
    for kind in ["5xx", "4xx", "timeout", "connect", "transport"] {
        assert_eq!(report["errors"][kind], 0, "{kind} errors: {ctx}");
    }

    // Every order the report says was placed is stored: read back through the gateway.
    let numbers: Vec<String> = report["orders"]["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(report["orders"]["accepted"], 60, "{ctx}");
    assert_eq!(numbers.len(), 60, "{ctx}");
    let http = reqwest::Client::new();
    for n in &numbers {
        let r = http
            .get(format!("{gateway}/api/order/{n}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "order {n} is not stored");
        let order: Value = r.json().await.unwrap();
        assert_eq!(order["orderNumber"], n.as_str(), "{order}");
    }

    // The streams were open while orders were placed: they saw their notifications.
    assert_eq!(report["stream"]["opened"], 20, "{ctx}");
    assert!(
        report["stream"]["events"].as_u64().unwrap() >= 1,
        "no notification event reached a stream: {ctx}"
    );

    // The text report on stdout says the same.
    assert!(
        stdout.contains("400 of 400 requests sent"),
        "stdout:\n{stdout}"
    );
    assert!(stdout.contains("orders placed: 60"), "stdout:\n{stdout}");
}

/// `shop-load` with `args`: (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(SHOP_LOAD)
        .args(args)
        .output()
        .expect("running shop-load");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_exit_non_zero_naming_the_argument() {
    let base = [
        "mix",
        "--gateway",
        "http://127.0.0.1:9",
        "--rate",
        "5",
        "--duration",
        "1s",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };

    let (code, err) = run(&with(&["--mix", "browse=60,checkout=5"]));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--mix"), "{err}");
    assert!(err.contains("unknown route `checkout`"), "{err}");

    let (code, err) = run(&with(&["--mix", "order=many"]));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--mix") && err.contains("`many`"), "{err}");

    let (code, err) = run(&["mix", "--gateway", "http://127.0.0.1:9", "--rate", "5"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--duration"), "{err}");

    let (code, err) = run(&[
        "mix",
        "--gateway",
        "http://127.0.0.1:9",
        "--rate",
        "5",
        "--duration",
        "soon",
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--duration"), "{err}");

    // Orders need a token; said before any request is sent.
    let (code, err) = run(&with(&["--mix", "order=1"]));
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--token or --jwt-secret"), "{err}");

    let (code, err) = run(&[
        "mix",
        "--gateway",
        "ftp://127.0.0.1:9",
        "--rate",
        "5",
        "--duration",
        "1s",
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--gateway"), "{err}");

    let (code, err) = run(&[
        "mix",
        "--gateway",
        "http://127.0.0.1:9",
        "--rate",
        "0",
        "--duration",
        "1s",
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("--rate"), "{err}");
}
