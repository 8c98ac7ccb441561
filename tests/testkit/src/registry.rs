//! Helpers for tests that talk to shop-registry: start a registry process with short test intervals,
//! build registration bodies shaped exactly like the Java Eureka client's, and read instance ids back.

use crate::Service;
use serde_json::{Value, json};

/// Starts shop-registry on a port the OS picks with a 200 ms expiry check and the given extra flags.
pub async fn spawn_registry(extra: &[&str]) -> Service {
    spawn_registry_on(0, extra).await
}

/// Starts shop-registry on `port` (e.g. to restart it at the same address; 0: any).
pub async fn spawn_registry_on(port: u16, extra: &[&str]) -> Service {
    let mut args = vec!["--eviction-interval-ms", "200"];
    args.extend_from_slice(extra);
    Service::spawn("shop-registry", &args, &[], port).await
}

/// Eureka base URL of a registry process (`http://127.0.0.1:port/eureka`).
pub fn eureka_url(registry: &Service) -> String {
    format!("{}/eureka", registry.base_url())
}

/// A registration body as Spring Cloud's Eureka client sends it.
pub fn java_instance(app: &str, instance_id: &str, port: u16, lease_secs: u64) -> Value {
    let app_up = app.to_ascii_uppercase();
    json!({"instance": {
        "instanceId": instance_id,
        "hostName": "127.0.0.1",
        "app": app_up,
        "ipAddr": "127.0.0.1",
        "status": "UP",
        "overriddenstatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "leaseInfo": {
            "renewalIntervalInSecs": 1,
            "durationInSecs": lease_secs,
            "registrationTimestamp": 0,
            "lastRenewalTimestamp": 0,
            "evictionTimestamp": 0,
            "serviceUpTimestamp": 0
        },
        "metadata": {"@class": "java.util.Collections$EmptyMap", "management.port": port.to_string()},
        "homePageUrl": format!("http://127.0.0.1:{port}/"),
        "statusPageUrl": format!("http://127.0.0.1:{port}/actuator/info"),
        "healthCheckUrl": format!("http://127.0.0.1:{port}/actuator/health"),
        "vipAddress": app.to_ascii_lowercase(),
        "secureVipAddress": app.to_ascii_lowercase(),
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1700000000000",
        "lastDirtyTimestamp": "1700000000000"
    }})
}

/// Instance ids of `app` in a full fetch (empty when the app is absent or the registry unreachable).
pub async fn instance_ids(eureka: &str, app: &str) -> Vec<String> {
    let Ok(resp) = reqwest::get(format!("{eureka}/apps/")).await else {
        return Vec::new();
    };
    let Ok(v) = resp.json::<Value>().await else {
        return Vec::new();
    };
    let mut ids: Vec<String> = v["applications"]["application"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(app))
        })
        .flat_map(|a| a["instance"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["instanceId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}
