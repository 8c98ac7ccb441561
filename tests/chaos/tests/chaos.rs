//! The short tier of the chaos soak, inside `make test`: orders through `make up`'s Shop while its
//! order, inventory, gateway and notification pods are killed and inventory is paused; nothing the
//! client was told may be missing or doubled in the stores. `make chaos` runs the full schedule.
//!
//! It hits the example Shop itself (the only Shop with notification and managed stores), so it
//! waits for the Shop to be Available again before it ends: the test binaries after it use it.

use std::time::Duration;

use shop_chaos::{Config, plan};
use shop_testkit::cluster::{self, DEMO_GATEWAY, DEMO_NAMESPACE, DEMO_SHOP};

#[tokio::test]
async fn orders_survive_killed_and_paused_pods_with_nothing_lost_or_doubled() {
    let kube = cluster::client().await;
    cluster::require_real_node(&kube).await;
    cluster::wait_shop_available(&kube, DEMO_NAMESPACE, DEMO_SHOP, Duration::from_secs(300)).await;
    let cfg = Config {
        namespace: DEMO_NAMESPACE.to_owned(),
        shop: DEMO_SHOP.to_owned(),
        gateway: DEMO_GATEWAY.to_owned(),
        token: cluster::dev_token(),
        orders: 300,
        rate: 20,
        concurrency: 32,
        patience: Duration::from_secs(120),
        plan: plan::parse("short").unwrap(),
        gap: Duration::from_secs(5),
        settle: Duration::from_secs(240),
        command: "cargo test -p shop-chaos --test chaos".to_owned(),
    };
    let report = shop_chaos::run(&kube, &cfg).await.unwrap();
    let md = report.markdown();
    eprintln!("{md}");
    cluster::wait_shop_available(&kube, DEMO_NAMESPACE, DEMO_SHOP, Duration::from_secs(300)).await;

    assert!(report.passed(), "{md}");
    assert!(
        report.gave_up.is_empty(),
        "orders the client gave up on: {md}"
    );
    assert!(
        report.accepted >= 200,
        "too few orders accepted for the run to mean anything: {md}"
    );
    assert!(
        report.refused.keys().all(|r| r == "409 out-of-stock"),
        "only the scarce SKU may refuse orders: {md}"
    );
    for f in &report.faults {
        assert!(
            f.whole_after.is_some() && f.first_order_after.is_some(),
            "{} did not recover: {md}",
            f.fault
        );
    }
}
