//! Two or three real shop-registry replicas on loopback: changes on one reach the others, a restarted
//! replica catches up from a peer, and a replica stays available while its peer is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::Value;
use shop_testkit::clients::Eureka;
use shop_testkit::registry::{
    eureka_url, instance_ids, java_instance, spawn_registry, spawn_registry_on,
};
use shop_testkit::{free_port, wait_until};
use std::time::{Duration, Instant};

fn peer(port: u16) -> String {
    format!("http://127.0.0.1:{port}/eureka")
}

#[tokio::test]
async fn two_replicas_converge_on_register_status_and_cancel() {
    // Each replica's --peers names the other, so both ports are chosen before either starts.
    let (p1, p2) = (free_port(), free_port());
    let peers = format!("{},{}", peer(p1), peer(p2));
    let r1 = spawn_registry_on(p1, &["--peers", &peers]).await;
    let r2 = spawn_registry_on(p2, &["--peers", &peers]).await;
    let (e1, e2) = (eureka_url(&r1), eureka_url(&r2));
    let (c1, c2) = (Eureka::new(&e1), Eureka::new(&e2));

    c1.register("PRODUCT", &java_instance("product", "p1", 1, 90))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            instance_ids(&e2, "product").await == ["p1"]
        })
        .await,
        "registration on replica 1 did not reach replica 2"
    );
    // A renewal on replica 2 is known there (replicated registration) and must not bounce.
    assert_eq!(c2.renew("PRODUCT", "p1", "status=UP").await, StatusCode::OK);

    c2.put("/apps/PRODUCT/p1/status?value=OUT_OF_SERVICE").await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let v: Value = c1.get_json("/apps/PRODUCT/p1").await;
            v["instance"]["overriddenStatus"] == "OUT_OF_SERVICE"
        })
        .await,
        "status override on replica 2 did not reach replica 1"
    );

    c2.cancel("PRODUCT", "p1").await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            instance_ids(&e1, "product").await.is_empty()
        })
        .await,
        "cancel on replica 2 did not reach replica 1"
    );
}

#[tokio::test]
async fn restarted_replica_catches_up_from_its_peer() {
    // Each replica's --peers names the other, so both ports are chosen before either starts.
    let (p1, p2) = (free_port(), free_port());
    let peers = format!("{},{}", peer(p1), peer(p2));
    let r1 = spawn_registry_on(p1, &["--peers", &peers]).await;
    let c1 = Eureka::new(eureka_url(&r1));
    for id in ["a", "b", "c"] {
        c1.register("ORDER", &java_instance("order", id, 1, 90))
            .await;
    }
    // Replica 2 starts after the registrations; ready means it has copied replica 1.
    let r2 = spawn_registry_on(p2, &["--peers", &peers]).await;
    assert_eq!(
        instance_ids(&eureka_url(&r2), "order").await,
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn replica_stays_available_while_its_peer_is_down() {
    // A peer that never starts: a port that was free a moment ago.
    let dead = free_port();
    let reg = spawn_registry(&["--peers", &peer(dead)]).await;
    let e = eureka_url(&reg);
    let c = Eureka::new(&e);
    let start = Instant::now();
    for i in 0..20 {
        // With a timeout of its own: a registration waiting on the dead peer fails here.
        let r = shop_testkit::send(
            c.http()
                .post(c.url("/apps/NOTIFICATION"))
                .json(&java_instance("notification", &format!("n{i}"), 1, 90))
                .timeout(Duration::from_secs(2)),
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            c.put(&format!("/apps/NOTIFICATION/n{i}")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(instance_ids(&e, "notification").await.len(), 20);
    // Not a timing benchmark: only that a dead peer does not make callers wait on it (1 s connect timeout).
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn peers_found_through_dns_catch_up_and_receive_changes() {
    let r1 = spawn_registry(&[]).await;
    let e1 = eureka_url(&r1);
    Eureka::new(&e1)
        .register("GATEWAY", &java_instance("gateway", "g1", 1, 90))
        .await;
    // "localhost:<port>" stands in for a headless Service name: every address it resolves to is a peer.
    let dns = format!("localhost:{}", r1.port());
    let r2 = spawn_registry(&["--peer-dns", &dns]).await;
    let e2 = eureka_url(&r2);
    assert_eq!(
        instance_ids(&e2, "gateway").await,
        ["g1"],
        "catch-up through the DNS-found peer"
    );
    let c2 = Eureka::new(&e2);
    c2.register("GATEWAY", &java_instance("gateway", "g2", 2, 90))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            instance_ids(&e1, "gateway").await == ["g1", "g2"]
        })
        .await,
        "registration on the DNS-configured replica did not reach its peer"
    );
    let dashboard = shop_testkit::get_text(c2.http(), format!("{}/", r2.base_url())).await;
    assert!(
        dashboard.contains(&format!("127.0.0.1:{}", r1.port())),
        "dashboard lists the peer"
    );
}
