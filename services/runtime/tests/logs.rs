//! Log lines of a real service: JSON by default, one object per line, carrying the trace and span ids of
//! the request being served (so logs and Zipkin traces can be joined).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use shop_testkit::{binary_path, wait_until};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn json_log_lines_carry_the_request_trace_id() {
    // Port 0: the service writes the port it bound to SHOP_PORT_FILE.
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("echo.port");
    let mut child = Command::new(binary_path("shop-echo"))
        .env("SHOP_PORT", "0")
        .env("SHOP_PORT_FILE", &port_file)
        .env("SHOP_BIND", "127.0.0.1")
        .env_remove("SHOP_LOG_FORMAT")
        .env_remove("SHOP_REGISTRY_URL")
        .env_remove("SHOP_ZIPKIN_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let written = wait_until(Duration::from_secs(20), || async { port_file.exists() }).await;
    assert!(written, "shop-echo did not write {}", port_file.display());
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_until(Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/health/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "shop-echo did not start");
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let r = reqwest::Client::new()
        .get(format!("{base}/hello"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();

    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l["ts"].is_string() && l["level"].is_string() && l["message"].is_string(),
            "{l}"
        );
    }
    let listening = lines
        .iter()
        .find(|l| l["message"] == "listening")
        .unwrap_or_else(|| panic!("no 'listening' line in:\n{out}"));
    assert_eq!(
        listening["local_addr"],
        format!("127.0.0.1:{port}").as_str(),
        "the listening line names the address bound, the port the port file holds"
    );
    let hello = lines
        .iter()
        .find(|l| l["message"] == "hello served")
        .unwrap_or_else(|| panic!("no 'hello served' line in:\n{out}"));
    assert_eq!(hello["trace_id"], trace_id.as_str());
    assert_eq!(hello["span_id"].as_str().unwrap().len(), 16);
    assert_ne!(
        hello["span_id"], "00f067aa0ba902b7",
        "the server span is a child of the caller's span"
    );
}
