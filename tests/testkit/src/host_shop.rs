//! The whole shop as host processes on the local stack: shop-registry, shop-inventory,
//! shop-product, shop-order, shop-notification and shop-gateway, each on a free port, each with
//! its own fresh database, topic and consumer group, all tracing to Zipkin.
//!
//! It exists because the tests that drive the shop as a user does (through the gateway: the
//! load generator, the storefront in a browser, the metrics scrape, the fuzzer) all need the same
//! six processes wired the same way; one start-up here means one place to change when a service
//! gains a setting. [`HostShop::start`] returns once every service is registered and the gateway
//! routes to each of them, so the first request of a test already takes the real path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::registry::{eureka_url, instance_ids};
use crate::{
    Service, fresh_mysql_database, fresh_name, kafka_bootstrap, mongo_url, wait_until, zipkin_url,
};

/// The JWT secret of a [`HostShop`]'s gateway (tests mint tokens with [`HostShop::token`]).
pub const HOST_SHOP_JWT_SECRET: &str = "host-shop-test-secret-0123456789-abcdefghij";

/// Every scope the gateway's default routes ask for.
pub const ALL_SCOPES: &str = "orders:write products:write inventory:write";

/// What a test may change about a [`HostShop`].
#[derive(Default, Debug, Clone)]
pub struct HostShopOptions {
    /// Write each process's stdout and stderr to `<dir>/<component>.log` instead of the test's
    /// output (read them afterwards, e.g. to look for a panic).
    pub logs: Option<PathBuf>,
    /// Extra environment for the gateway (routes, rate limits, the storefront switch, ...).
    pub gateway_env: Vec<(String, String)>,
    /// Extra environment for every service but the registry.
    pub service_env: Vec<(String, String)>,
}

/// One started component.
pub struct Component {
    /// The component's name: `registry`, `inventory`, `product`, `order`, `notification`, `gateway`.
    pub name: &'static str,
    /// Its process (SIGTERM, then SIGKILL, on drop).
    pub service: Service,
    /// Its log file, when the options asked for logs.
    pub log: Option<PathBuf>,
}

/// The six processes of a running shop; dropping it stops them all.
pub struct HostShop {
    /// In start order: registry, inventory, product, order, notification, gateway.
    pub components: Vec<Component>,
    /// The Kafka topic the order service publishes OrderPlaced to and notification reads.
    pub order_topic: String,
    /// The MongoDB databases of product and notification.
    pub product_db: String,
    pub notification_db: String,
}

impl HostShop {
    /// Starts the shop with the default options.
    pub async fn start() -> HostShop {
        HostShop::start_with(HostShopOptions::default()).await
    }

    /// Starts the shop; panics, naming the component, when one does not come up.
    pub async fn start_with(opts: HostShopOptions) -> HostShop {
        let spans = format!("{}/api/v2/spans", zipkin_url());
        let mongo = mongo_url();
        let bootstrap = kafka_bootstrap();
        if let Some(dir) = &opts.logs {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating the log folder {}: {e}", dir.display()));
        }
        let logs = opts.logs.as_deref();

        let mut components = vec![
            spawn(
                "registry",
                "shop-registry",
                &["--eviction-interval-ms", "200"],
                &[],
                logs,
            )
            .await,
        ];
        let eureka = eureka_url(&components[0].service);
        let mut common: Vec<(String, String)> = [
            ("SHOP_REGISTRY_URL", eureka.as_str()),
            ("SHOP_ZIPKIN_ENDPOINT", spans.as_str()),
            ("SHOP_LEASE_RENEWAL_SECS", "1"),
            ("SHOP_REGISTRY_FETCH_SECS", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        common.extend(opts.service_env.iter().cloned());
        let with = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut env = common.clone();
            env.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            env
        };

        let inventory_db = fresh_mysql_database("host_inv").await;
        let order_db = fresh_mysql_database("host_ord").await;
        let product_db = fresh_name("host-product-");
        let notification_db = fresh_name("host-notification-");
        let order_topic = fresh_name("host-orders-");
        let group = fresh_name("host-notification-group-");

        let inventory_env = with(&[("DATABASE_URL", &inventory_db)]);
        components.push(spawn("inventory", "shop-inventory", &[], &inventory_env, logs).await);
        let product_env = with(&[
            ("SHOP_MONGO_URL", &mongo),
            ("SHOP_MONGO_DB", &product_db),
            ("SHOP_STOCK_RETRY_MS", "200"),
        ]);
        components.push(spawn("product", "shop-product", &[], &product_env, logs).await);
        let order_env = with(&[
            ("DATABASE_URL", &order_db),
            ("SHOP_KAFKA_BOOTSTRAP", &bootstrap),
            ("ORDER_TOPIC", &order_topic),
            ("OUTBOX_POLL_MS", "100"),
        ]);
        components.push(spawn("order", "shop-order", &[], &order_env, logs).await);
        let notification_env = with(&[
            ("SHOP_MONGO_URL", &mongo),
            ("SHOP_MONGO_DB", &notification_db),
            ("SHOP_KAFKA_BOOTSTRAP", &bootstrap),
            ("SHOP_NOTIFICATION_TOPIC", &order_topic),
            ("SHOP_NOTIFICATION_GROUP", &group),
            ("SHOP_SSE_KEEP_ALIVE_SECS", "1"),
        ]);
        components.push(
            spawn(
                "notification",
                "shop-notification",
                &[],
                &notification_env,
                logs,
            )
            .await,
        );
        let mut gateway_env = with(&[("SHOP_JWT_SECRET", HOST_SHOP_JWT_SECRET)]);
        gateway_env.extend(opts.gateway_env.iter().cloned());
        components.push(spawn("gateway", "shop-gateway", &[], &gateway_env, logs).await);

        let shop = HostShop {
            components,
            order_topic,
            product_db,
            notification_db,
        };
        for app in ["INVENTORY", "PRODUCT", "ORDER", "NOTIFICATION"] {
            assert!(
                wait_until(Duration::from_secs(20), || async {
                    !instance_ids(&eureka, app).await.is_empty()
                })
                .await,
                "{app} did not register with the host shop's registry within 20 s"
            );
        }
        // The gateway routes once its registry cache holds every service: its copy of each
        // service's OpenAPI document is the cheapest request that takes the routed path.
        let http = reqwest::Client::new();
        let gateway = shop.gateway_url();
        for service in ["product", "inventory", "order", "notification"] {
            let url = format!("{gateway}/openapi/{service}.json");
            assert!(
                wait_until(Duration::from_secs(20), || async {
                    matches!(http.get(&url).send().await, Ok(r) if r.status().is_success())
                })
                .await,
                "the host shop's gateway does not route to {service} within 20 s ({url})"
            );
        }
        shop
    }

    /// The component called `name`; panics when there is none.
    pub fn component(&self, name: &str) -> &Component {
        self.components
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("the host shop has no component {name}"))
    }

    /// Base URL (`http://127.0.0.1:port`) of the component called `name`.
    pub fn url(&self, name: &str) -> String {
        self.component(name).service.base_url()
    }

    /// The gateway's base URL: the front door every user request takes.
    pub fn gateway_url(&self) -> String {
        self.url("gateway")
    }

    /// The registry's Eureka base URL (`.../eureka`).
    pub fn eureka_url(&self) -> String {
        eureka_url(&self.component("registry").service)
    }

    /// A JWT the gateway accepts, for subject `sub`, with every scope of the default routes.
    pub fn token(&self, sub: &str) -> String {
        mint_token(HOST_SHOP_JWT_SECRET, sub, ALL_SCOPES)
    }
}

/// `shop-gateway mint-token`: a JWT signed with `secret` for `sub` with the space-separated
/// `scopes`, as an operator of the platform mints one.
pub fn mint_token(secret: &str, sub: &str, scopes: &str) -> String {
    let bin = crate::binary_path("shop-gateway");
    let out = Command::new(&bin)
        .args([
            "mint-token",
            "--secret",
            secret,
            "--sub",
            sub,
            "--scope",
            scopes,
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {} mint-token: {e}", bin.display()));
    assert!(
        out.status.success(),
        "shop-gateway mint-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn spawn(
    name: &'static str,
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
    logs: Option<&Path>,
) -> Component {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match logs {
        Some(dir) => {
            let log = dir.join(format!("{name}.log"));
            let service = Service::spawn_logged(bin, args, &env, 0, &log).await;
            Component {
                name,
                service,
                log: Some(log),
            }
        }
        None => Component {
            name,
            service: Service::spawn(bin, args, &env, 0).await,
            log: None,
        },
    }
}
