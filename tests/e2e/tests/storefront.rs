//! The storefront in a real headless Chromium (Debian's `chromium` and `chromedriver`, driven over
//! WebDriver by fantoccini) against the whole shop as host processes (`shop_testkit::host_shop`):
//! the store page loads, a search by a word of a product's description finds it, an order placed
//! with a pasted token is accepted, its notification appears on the page live (server-sent events)
//! within seconds, and the admin page shows the stock decreased, the registered instances and the
//! Shop's status from `SHOP_STATUS_FILE`.
//!
//! With `SHOP_UPDATE_SCREENSHOTS=1` it saves `docs/storefront/store.png` and `admin.png`.
//! Chromium runs headless with `--no-sandbox` (the tests run as root in CI). A missing browser or
//! driver fails the test with the command that installs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use serde_json::{Value, json};
use shop_testkit::clients::Eureka;
use shop_testkit::{
    free_port, fresh_name,
    host_shop::{HostShop, HostShopOptions},
    lossy_link::{Loss, LossyLink},
    registry::java_instance,
    repo_root, wait_until,
};

const INSTALL: &str = "hack/tools.sh chromium (apt-get install -y chromium chromium-driver)";
/// How long the page may take to show what a user waits for (a search result, an order, a
/// notification, a refreshed stock level).
const PATIENCE: Duration = Duration::from_secs(15);

/// `name` on the PATH (or in /usr/bin), else a loud failure naming the install command.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: the storefront test needs a real browser; run {INSTALL}")
    })
}

/// A chromedriver process started by this test; killed (by its pid) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let bin = tool("chromedriver");
        // chromedriver is not ours (no port file): its port is chosen up front.
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; run {INSTALL}", bin.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{url}/status");
        assert!(
            wait_until(Duration::from_secs(20), || async {
                match http.get(&status).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            })
            .await,
            "chromedriver did not become ready on {url} within 20 s"
        );
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session.
async fn browser(driver: &Driver) -> Client {
    let chromium = tool("chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,1100", "--lang=en-US", "--force-color-profile=srgb"],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no Chromium session through {}: {e}", driver.url))
}

/// The text of the first element matching `css` once `ready` holds for it, polling.
async fn wait_text(c: &Client, css: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::from("<no such element>");
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ready(&t) {
                return t;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `{css}` still reads {last:?} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Elements matching `css`, once there are `n` of them.
async fn wait_count(
    c: &Client,
    css: &str,
    n: usize,
    what: &str,
) -> Vec<fantoccini::elements::Element> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = c.find_all(Locator::Css(css)).await.unwrap_or_default();
        if found.len() == n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} elements match `{css}`, not {n}, after {PATIENCE:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn save_screenshot(png: &[u8], name: &str) {
    if std::env::var("SHOP_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = repo_root().join("docs/storefront");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    println!("storefront: wrote {}", path.display());
}

async fn create_product(http: &reqwest::Client, gateway: &str, token: &str, p: Value) {
    let r = http
        .post(format!("{gateway}/api/product"))
        .bearer_auth(token)
        .json(&p)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 201, "creating {p}: {}", r.text().await.unwrap());
}

async fn available(http: &reqwest::Client, gateway: &str, sku: &str) -> Option<u64> {
    let r = http
        .get(format!("{gateway}/api/inventory?skuCode={sku}"))
        .send()
        .await
        .ok()?;
    r.json::<Value>().await.ok()?[0]["availableQuantity"].as_u64()
}

/// What the browser part needs, owned (it runs on a task of its own so that the browser is closed
/// even when it panics).
struct Scene {
    link: LossyLink,
    gateway: String,
    token: String,
    sku: String,
    word: String,
}

#[tokio::test]
async fn a_shopper_searches_orders_and_sees_the_notification_live_and_the_admin_sees_the_stock() {
    // Fail before starting anything when the browser is missing.
    tool("chromium");
    let driver = Driver::start().await;

    let dir = tempfile_dir();
    let status_file = dir.join("shop-status.json");
    std::fs::write(
        &status_file,
        json!({"phase": "Ready", "readyComponents": "6/6", "components": [
            {"name": "gateway", "desired": 2, "ready": 2, "updated": 2},
            {"name": "order", "desired": 2, "ready": 2, "updated": 2}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllComponentsReady"}]})
        .to_string(),
    )
    .unwrap();
    // The gateway reaches the order service through a link that can lose one answer: an order
    // the shop placed while the browser never heard so. The gateway is told the link's address
    // before the link starts (it needs the order service's), so the port is chosen up front.
    let link_port = free_port();
    let shop = HostShop::start_with(HostShopOptions {
        gateway_env: vec![
            ("SHOP_STATUS_FILE".into(), status_file.display().to_string()),
            (
                "SHOP_GATEWAY_ROUTES".into(),
                format!("/api/order=http://127.0.0.1:{link_port}"),
            ),
        ],
        ..HostShopOptions::default()
    })
    .await;
    let order_addr = shop.url("order").trim_start_matches("http://").to_owned();
    let link = LossyLink::start_on(link_port, &order_addr).await;
    let gateway = shop.gateway_url();
    let token = shop.token("storefront-test");
    let http = reqwest::Client::new();
    // The gateway routes `/eureka` to the app REGISTRY, as on the platform, where the registry
    // registers itself; the host shop's registry does not, so the test registers it.
    let registry = shop.url("registry");
    let port: u16 = registry.rsplit(':').next().unwrap().parse().unwrap();
    let me = java_instance("REGISTRY", &format!("127.0.0.1:registry:{port}"), port, 600);
    Eureka::new(shop.eureka_url())
        .register("REGISTRY", &me)
        .await;
    let apps = format!("{gateway}/eureka/apps");
    assert!(
        wait_until(PATIENCE, || async {
            matches!(http.get(&apps).send().await, Ok(r) if r.status().is_success())
        })
        .await,
        "the gateway does not route {apps} to the registry"
    );

    // A word of the description only this run's lamp has, and two products it must not find.
    let word = format!("brass{}", &fresh_name("")[..6]);
    let sku = fresh_name("lamp-");
    create_product(
        &http,
        &gateway,
        &token,
        json!({"name": "Reading lamp",
        "description": format!("Hand-polished {word} reading lamp with a linen shade"),
        "price": "49.00", "skuCode": sku, "quantity": 5}),
    )
    .await;
    for (name, desc, price) in [
        ("Stoneware mug", "A heavy mug, glazed by hand", "12.50"),
        ("Linen apron", "Washed linen, two pockets", "24.00"),
    ] {
        create_product(
            &http,
            &gateway,
            &token,
            json!({"name": name, "description": desc,
            "price": price, "skuCode": fresh_name("item-"), "quantity": 20}),
        )
        .await;
    }
    assert!(
        wait_until(PATIENCE, || async {
            available(&http, &gateway, &sku).await == Some(5)
        })
        .await,
        "inventory never held the lamp's 5 units"
    );

    let c = browser(&driver).await;
    let scene = Scene {
        link,
        gateway: gateway.clone(),
        token,
        sku: sku.clone(),
        word,
    };
    let outcome = tokio::spawn(shop_like_a_user(c.clone(), scene)).await;
    let _ = c.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(
        available(&http, &gateway, &sku).await,
        Some(2),
        "the browser's orders (2 units, then 1 unit placed once over a retry) are reserved in inventory"
    );
    drop(shop);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn shop_like_a_user(c: Client, s: Scene) {
    let started = Instant::now();
    // The store loads, lists the catalogue and connects to the notification stream.
    c.goto(&format!("{}/", s.gateway)).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "Shop");
    wait_count(&c, "#products > li", 3, "the catalogue on load").await;
    wait_text(&c, "#stream-state", "the notification stream", |t| {
        t == "live"
    })
    .await;
    assert_accessible(&c, "the store").await;

    // Search by a word of the lamp's description: only the lamp is left.
    let q = c.find(Locator::Id("q")).await.unwrap();
    // From the keyboard: the word, then Enter.
    q.send_keys(&format!("{}{}", s.word, char::from(Key::Enter)))
        .await
        .unwrap();
    wait_text(&c, "#results-status", "the search summary", |t| {
        t.starts_with("1 product match")
    })
    .await;
    let hits = wait_count(&c, "#products > li", 1, "the search results").await;
    assert_eq!(
        hits[0].attr("data-sku").await.unwrap().as_deref(),
        Some(s.sku.as_str())
    );

    // Ordering without a token asks for one and sends nothing.
    let card = format!("#products > li[data-sku=\"{}\"]", s.sku);
    c.find(Locator::Css(&format!("{card} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#order-status", "ordering without a token", |t| {
        t.starts_with("Sign in first")
    })
    .await;

    // Paste the token, order two lamps: accepted with an order number.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&s.token)
        .await
        .unwrap();
    c.find(Locator::Css("#token-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#token-status", "the token", |t| {
        t.contains("token is set")
    })
    .await;
    let qty = c
        .find(Locator::Css(&format!("{card} input[name=quantity]")))
        .await
        .unwrap();
    qty.clear().await.unwrap();
    qty.send_keys("2").await.unwrap();
    c.find(Locator::Css(&format!("{card} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let placed = wait_text(&c, "#order-status", "the order", |t| t.contains(" placed")).await;
    let number = placed
        .strip_prefix("Order ")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no order number in {placed:?}"))
        .to_owned();
    assert!(
        placed.contains("2 × Reading lamp, total $98.00"),
        "{placed}"
    );
    let ordered = Instant::now();

    // Its notification arrives on the page by itself (SSE), without a reload.
    let note = wait_text(
        &c,
        &format!("#notifications li[data-order=\"{number}\"]"),
        "the order's notification",
        |t| !t.is_empty(),
    )
    .await;
    println!(
        "storefront: order {number} notified on the page {} ms after it was accepted: {note:?}",
        ordered.elapsed().as_millis()
    );

    // The order service's answer to the next order is lost on its way back: the shop placed it
    // (its notification arrives), the page only hears of a failure and keeps the click's
    // Idempotency-Key. Ordering again sends the same key, so the shop answers with that same
    // order instead of placing a second one.
    let mut link = s.link;
    link.arm(b"POST /api/order", Loss::Answer);
    qty.clear().await.unwrap();
    qty.send_keys("1").await.unwrap();
    c.find(Locator::Css(&format!("{card} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let failed = wait_text(
        &c,
        "#order-status",
        "the order whose answer was lost",
        |t| t.starts_with("Not placed yet"),
    )
    .await;
    assert!(link.wait_fired(PATIENCE).await, "the link lost no answer");
    assert!(failed.contains("same Idempotency-Key"), "{failed}");
    let http = reqwest::Client::new();
    assert!(
        wait_until(PATIENCE, || async {
            available(&http, &s.gateway, &s.sku).await == Some(2)
        })
        .await,
        "the order whose answer was lost was not placed"
    );
    let late = wait_text(
        &c,
        "#notifications li:first-child",
        "the late order's notification",
        |t| !t.contains(&number),
    )
    .await;
    c.find(Locator::Css(&format!("{card} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let retried = wait_text(&c, "#order-status", "the retried order", |t| {
        t.contains(" placed")
    })
    .await;
    let retried_number = retried
        .strip_prefix("Order ")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no order number in {retried:?}"));
    assert!(
        late.contains(retried_number),
        "the retry answers the order placed while the page thought it failed ({late:?}), not a new one: {retried:?}"
    );
    assert_eq!(
        available(&http, &s.gateway, &s.sku).await,
        Some(2),
        "the retry placed a second order"
    );
    save_screenshot(&c.screenshot().await.unwrap(), "store.png");

    // The admin page: the lamp's stock is down by two, every service is registered, the Shop is Ready.
    c.goto(&format!("{}/admin", s.gateway)).await.unwrap();
    let row = format!("#stock tr[data-sku=\"{}\"] td.num", s.sku);
    assert_accessible(&c, "the admin page").await;
    wait_text(&c, &row, "the lamp's stock on the admin page", |t| t == "2").await;
    let instances = wait_text(&c, "#instances", "the registered instances", |t| {
        ["INVENTORY", "PRODUCT", "ORDER", "NOTIFICATION"]
            .iter()
            .all(|app| t.contains(app))
    })
    .await;
    assert!(instances.contains("UP"), "{instances}");
    wait_text(&c, "#shop-phase", "the Shop's phase", |t| t == "Ready").await;
    save_screenshot(&c.screenshot().await.unwrap(), "admin.png");
    println!(
        "storefront: load, search, order, live notification and admin checked in {} ms",
        started.elapsed().as_millis()
    );
}

/// What a screen-reader or keyboard user needs of a page: one `main` landmark, a label for every
/// field, a name for every button, and an `aria-live` region or status for what changes.
async fn assert_accessible(c: &Client, page: &str) {
    let report = c
        .execute(
            r#"const unnamed = (els) => [...els].filter((e) => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim())).map((e) => e.id || e.outerHTML.slice(0, 60));
               return {
                 main: document.querySelectorAll('main').length,
                 lang: document.documentElement.lang,
                 unlabelled: unnamed(document.querySelectorAll('input')),
                 unnamedButtons: unnamed(document.querySelectorAll('button')),
                 live: document.querySelectorAll('[aria-live], [role=status]').length,
               };"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(report["main"], 1, "{page}: {report}");
    assert_eq!(report["lang"], "en", "{page}: {report}");
    assert_eq!(
        report["unlabelled"],
        json!([]),
        "{page}: fields without a label: {report}"
    );
    assert_eq!(
        report["unnamedButtons"],
        json!([]),
        "{page}: buttons without a name: {report}"
    );
    assert!(
        report["live"].as_u64() >= Some(1),
        "{page}: nothing announces changes: {report}"
    );
}

/// A fresh folder under the repository's `.state/` for this run's status file.
fn tempfile_dir() -> PathBuf {
    let dir: &Path = &repo_root().join(".state/storefront-test");
    let run = dir.join(fresh_name("run-"));
    std::fs::create_dir_all(&run).unwrap();
    run
}
