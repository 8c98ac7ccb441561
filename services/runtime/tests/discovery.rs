//! The runtime's registry client in real processes: registration, lookup of another service, round-robin,
//! skipping a dead instance, surviving the registry's death (cache, then DNS fallback), re-registration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{echo, echo_on, get, wait_registered};
use serde_json::Value;
use shop_testkit::registry::{eureka_url, java_instance, spawn_registry, spawn_registry_on};
use shop_testkit::{free_port, fresh_name, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test]
async fn registers_finds_round_robins_and_skips_a_dead_instance() {
    let reg = spawn_registry(&[]).await;
    let b = fresh_name("b");
    let b1 = echo(&b, Some(&reg), &[]).await;
    let mut b2 = echo(&b, Some(&reg), &[]).await;
    let a = echo(&fresh_name("a"), Some(&reg), &[]).await;
    assert!(
        wait_registered(&reg, &b, 2).await,
        "both instances of {b} must register"
    );

    let mut ports = BTreeSet::new();
    for _ in 0..6 {
        let (code, body) = get(&format!("{}/call/{b}/hello", a.base_url())).await;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ports.insert(v["port"].as_u64().unwrap() as u16);
    }
    assert_eq!(
        ports,
        BTreeSet::from([b1.port(), b2.port()]),
        "calls are spread over both instances"
    );

    // SIGKILL: no deregistration, the registry and A's cache still list it. Calls must keep working.
    b2.kill();
    for _ in 0..6 {
        let (code, body) = get(&format!("{}/call/{b}/hello", a.base_url())).await;
        assert_eq!(code, 200, "a dead instance must be skipped: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["port"].as_u64().unwrap() as u16, b1.port());
    }
}

#[tokio::test]
async fn keeps_working_when_the_registry_dies_then_falls_back_to_dns_and_reregisters_on_404() {
    let mut reg = spawn_registry(&[]).await;
    let reg_port = reg.port();
    let b = fresh_name("b");
    let b1 = echo(&b, Some(&reg), &[]).await;
    let a = echo(&fresh_name("a"), Some(&reg), &[]).await;
    assert!(wait_registered(&reg, &b, 1).await);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            get(&format!("{}/call/{b}/hello", a.base_url())).await.0 == 200
        })
        .await
    );

    // Registry gone: A answers from its cache.
    reg.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, body) = get(&format!("{}/call/{b}/hello", a.base_url())).await;
    assert_eq!(
        code, 200,
        "cached lookup must survive the registry's death: {body}"
    );

    // A fresh process with an empty cache and no registry: DNS pattern fallback.
    let pattern = format!("http://127.0.0.1:{}", b1.port());
    let c = echo(
        &fresh_name("c"),
        Some(&reg),
        &[("SHOP_DNS_PATTERN", &pattern)],
    )
    .await;
    let (code, body) = get(&format!("{}/call/{b}/hello", c.base_url())).await;
    assert_eq!(code, 200, "DNS fallback: {body}");
    // Without a pattern the same situation is a clear 502 naming the missing instance.
    let d = echo(&fresh_name("d"), Some(&reg), &[]).await;
    let (code, body) = get(&format!("{}/call/{b}/hello", d.base_url())).await;
    assert_eq!(code, 502);
    assert!(body.contains("no_instance"), "{body}");

    // A new, empty registry at the same address: renewals get 404 and the instances register again.
    let reg2 = spawn_registry_on(reg_port, &[]).await;
    assert!(
        wait_registered(&reg2, &b, 1).await,
        "client must re-register after a 404 renewal"
    );
}

/// Seen on the real node: the registry pod gone, then inventory's pod replaced. The order pods kept
/// picking the dead instance from their cache (marked down, but the only one cached) and never
/// asked DNS, where the Service already led to the new pod.
#[tokio::test]
async fn with_the_registry_gone_a_replaced_instance_is_found_through_dns() {
    let mut reg = spawn_registry(&[]).await;
    let b = fresh_name("b");
    let mut b1 = echo(&b, Some(&reg), &[]).await;
    // Where the replacement will listen: the "Service" the DNS pattern names, known before the
    // replacement starts, so chosen up front.
    let next_port = free_port();
    let pattern = format!("http://127.0.0.1:{next_port}");
    let a = echo(
        &fresh_name("a"),
        Some(&reg),
        &[("SHOP_DNS_PATTERN", &pattern)],
    )
    .await;
    assert!(wait_registered(&reg, &b, 1).await);
    let call = format!("{}/call/{b}/hello", a.base_url());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            get(&call).await.0 == 200
        })
        .await
    );

    reg.kill();
    b1.kill();
    let b2 = echo_on(next_port, &b, None, &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = get(&call).await;
    while last.0 != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = get(&call).await;
    }
    let found = last.0 == 200;
    assert!(
        found,
        "the replacement was never found through DNS: {last:?}"
    );
    let v: Value = serde_json::from_str(&last.1).unwrap();
    assert_eq!(v["port"].as_u64().unwrap() as u16, b2.port());
}

/// A deleted pod's address answers nothing at all (no refusal): the connect times out. Seen on the
/// real node: order kept timing out on the dead inventory instance, because a connect timeout was
/// taken for a slow answer, and never marked it down nor tried DNS.
#[tokio::test]
async fn an_instance_whose_address_answers_nothing_is_skipped_and_dns_used() {
    // A listener that never accepts, its queue full: further SYNs go unanswered.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hole = sock.listen(1).unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let mut held = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&hole_addr, Duration::from_millis(300)) {
        held.push(s);
        assert!(held.len() < 64, "the listen queue never filled");
    }

    let mut reg = spawn_registry(&[]).await;
    let b = fresh_name("b");
    let registered = reqwest::Client::new()
        .post(format!(
            "{}/apps/{}",
            eureka_url(&reg),
            b.to_ascii_uppercase()
        ))
        .json(&java_instance(&b, "hole", hole_addr.port(), 60))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success());
    let live = echo(&b, None, &[]).await;
    let pattern = format!("http://127.0.0.1:{}", live.port());
    let a = echo(
        &fresh_name("a"),
        Some(&reg),
        &[("SHOP_DNS_PATTERN", &pattern)],
    )
    .await;
    assert!(wait_registered(&reg, &b, 1).await);
    // A has fetched the registry (with the unanswering instance) before the registry dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reg.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let call = format!("{}/call/{b}/hello", a.base_url());
    let (code, body) = get(&call).await;
    assert_eq!(
        code, 200,
        "the unanswering instance was not skipped: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["port"].as_u64().unwrap() as u16, live.port());
    drop(held);
}
