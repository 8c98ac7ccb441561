//! Real Spring clients against our Rust services: proof of Spring compatibility by the clients
//! themselves, not by bodies we shaped like theirs.
//!
//! The clients are one jar built from tests/spring (Spring Boot 4.0.7, Spring Cloud 2025.1.4) by
//! `hack/tools.sh spring`, which `make test` runs first:
//! - `eureka` mode: a Spring MVC app with spring-cloud-starter-netflix-eureka-client. Two of them
//!   (spring-echo and spring-caller) register with a real shop-registry, renew, fetch deltas, are
//!   listed on its dashboard; the caller finds the echo app through the registry and calls it by
//!   name (@LoadBalanced RestClient); shop-gateway routes to it by its service name; on SIGTERM it
//!   leaves the registry.
//! - `kafka` mode: a Spring Kafka listener whose JSON deserializer maps the `__TypeId__: event`
//!   header through `spring.json.type.mapping` onto a Java record with the tutorial's field names,
//!   reading the OrderPlaced events a real shop-order publishes. Each record is printed as one JSON
//!   line on stdout, which this test reads.
//!
//! See docs/spring-clients.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_testkit::{
    Service, free_port, fresh_mysql_database, fresh_name, kafka_bootstrap,
    registry::{eureka_url, instance_ids, spawn_registry},
    repo_root, wait_until,
};

/// How long a Spring app may take to start (JVM + Spring on 2 busy cores: ~10-25 s).
const JAVA_START: Duration = Duration::from_secs(120);

/// The jar `hack/tools.sh spring` built (or `SHOP_TEST_SPRING_JAR`); panics with the command that
/// builds it when it is missing.
fn spring_jar() -> PathBuf {
    let path = match std::env::var("SHOP_TEST_SPRING_JAR") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let out = Command::new("bash")
                .arg(repo_root().join("hack/tools.sh"))
                .arg("spring-jar")
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run hack/tools.sh spring-jar: {e}"));
            assert!(
                out.status.success(),
                "hack/tools.sh spring-jar failed ({})",
                out.status
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    assert!(
        path.is_file(),
        "the Spring test clients are not built ({} is missing): run `hack/tools.sh spring` \
         (make test does this first; it needs Java 17 and Maven)",
        path.display()
    );
    path
}

/// A Spring app of the test jar as a child process: its output is kept (and shown when the test
/// fails); SIGTERM then SIGKILL on drop.
struct JavaApp {
    name: String,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl JavaApp {
    /// `java -jar spring-clients.jar <mode> <args>`, with JVM flags for a fast start.
    fn start(name: &str, mode: &str, args: &[String]) -> JavaApp {
        let jar = spring_jar();
        let mut child = Command::new("java")
            .args([
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                "-Xmx256m",
                "-jar",
            ])
            .arg(&jar)
            .arg(mode)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `java -jar {}`: {e}; install Java 17",
                    jar.display()
                )
            });
        let lines = Arc::new(Mutex::new(Vec::new()));
        fn pump(from: impl Read + Send + 'static, to: Arc<Mutex<Vec<String>>>) {
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines() {
                    let Ok(line) = line else { break };
                    to.lock().unwrap().push(line);
                }
            });
        }
        pump(child.stdout.take().unwrap(), lines.clone());
        pump(child.stderr.take().unwrap(), lines.clone());
        JavaApp {
            name: name.to_owned(),
            child: Some(child),
            lines,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Panics (with the app's output) when the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("{} exited early ({status}); its output is below", self.name);
        }
    }

    /// Waits until `GET url` answers 200 and returns its JSON body.
    async fn wait_json(&mut self, http: &Client, url: &str) -> Value {
        let deadline = Instant::now() + JAVA_START;
        loop {
            self.assert_running();
            if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && r.status() == StatusCode::OK
            {
                return r.json().await.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer {url} within {JAVA_START:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends SIGTERM (as Kubernetes or systemd would) and returns at once.
    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.pid());
    }

    /// Waits up to `grace` for the process to exit; SIGKILL after. Returns whether it exited itself.
    fn wait_exit(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for JavaApp {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.sigterm();
            if !self.wait_exit(Duration::from_secs(15)) {
                eprintln!("{} did not exit within 15 s of SIGTERM; killed", self.name);
            }
        }
        if std::thread::panicking() {
            let lines = self.lines();
            let from = lines.len().saturating_sub(300);
            eprintln!(
                "----- output of {} (last {} lines) -----",
                self.name,
                lines.len() - from
            );
            for l in &lines[from..] {
                eprintln!("{}: {l}", self.name);
            }
        }
    }
}

/// Arguments of a Eureka client app named `app` on `port`, registered with `eureka` (the timing
/// knobs are in tests/spring's application-eureka.properties).
fn eureka_args(app: &str, port: u16, eureka: &str) -> Vec<String> {
    vec![
        format!("--spring.application.name={app}"),
        format!("--server.port={port}"),
        format!("--eureka.client.service-url.defaultZone={eureka}/"),
        // The Netflix client tells at DEBUG whether each fetch was a delta or a full one.
        "--logging.level.com.netflix.discovery.DiscoveryClient=DEBUG".to_owned(),
    ]
}

/// The value of the sample whose name and labels are exactly `series` (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    shop_testkit::metric_sample(metrics, series).unwrap_or(0.0)
}

async fn text(http: &Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

async fn json_of(http: &Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The instance `id` of `app` in a full fetch of the registry (as any Eureka client reads it).
async fn registered(http: &Client, eureka: &str, app: &str, id: &str) -> Option<Value> {
    let v = json_of(http, &format!("{eureka}/apps")).await;
    v["applications"]["application"]
        .as_array()?
        .iter()
        .filter(|a| a["name"] == app)
        .flat_map(|a| a["instance"].as_array().cloned().unwrap_or_default())
        .find(|i| i["instanceId"] == id)
}

const FULL_FETCH: &str = "Getting all instance registry info from the eureka server";
const DELTA_FETCH: &str = "Got delta update with apps hashcode";
const HASH_MISMATCH: &str = "Reconcile hashcodes do not match";

#[tokio::test]
async fn spring_eureka_clients_register_renew_discover_each_other_are_routed_and_leave() {
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let registry = spawn_registry(&[]).await;
    let eureka = eureka_url(&registry);

    // shop-gateway with a route to the Spring app by its service name, as Spring Cloud Gateway's
    // discovery locator gives one (`/spring-echo/**` → `lb://spring-echo`, prefix stripped).
    let routes = std::env::temp_dir().join(format!("{}.yaml", fresh_name("spring-gateway-")));
    std::fs::write(
        &routes,
        "routes:\n  - {id: spring-echo, prefix: /spring-echo, service: spring-echo, rewrite: /, auth: public}\n",
    )
    .unwrap();
    let gateway = Service::spawn(
        "shop-gateway",
        &["--routes", routes.to_str().unwrap()],
        &[
            ("SHOP_REGISTRY_URL", eureka.as_str()),
            ("SHOP_REGISTRY_FETCH_SECS", "1"),
        ],
        0,
    )
    .await;

    // 1. The caller first: once its own registration is in its local copy, it fetches deltas only.
    // The Java apps are not ours (no port file): their ports are chosen up front.
    let caller_port = free_port();
    let mut caller = JavaApp::start(
        "spring-caller",
        "eureka",
        &eureka_args("spring-caller", caller_port, &eureka),
    );
    let caller_url = format!("http://127.0.0.1:{caller_port}");
    let me = caller
        .wait_json(&http, &format!("{caller_url}/hello"))
        .await;
    let caller_id = me["instanceId"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            caller.count(DELTA_FETCH) > 0
        })
        .await,
        "spring-caller never fetched a delta from shop-registry"
    );
    let full_fetches_before = caller.count(FULL_FETCH);

    // 2. The echo app registers: the registry lists it as Eureka lists an instance.
    let echo_port = free_port();
    let mut echo = JavaApp::start(
        "spring-echo",
        "eureka",
        &eureka_args("spring-echo", echo_port, &eureka),
    );
    let echo_url = format!("http://127.0.0.1:{echo_port}");
    let hello = echo.wait_json(&http, &format!("{echo_url}/hello")).await;
    let echo_id = hello["instanceId"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            registered(&http, &eureka, "SPRING-ECHO", &echo_id)
                .await
                .is_some_and(|i| i["status"] == "UP")
        })
        .await,
        "spring-echo ({echo_id}) is not UP in {eureka}/apps: {}",
        text(&http, &format!("{eureka}/apps")).await
    );
    let inst = registered(&http, &eureka, "SPRING-ECHO", &echo_id)
        .await
        .unwrap();
    assert_eq!(inst["app"], "SPRING-ECHO");
    assert_eq!(inst["ipAddr"], "127.0.0.1");
    assert_eq!(inst["port"]["$"], json!(echo_port));
    assert_eq!(inst["vipAddress"], "spring-echo");
    assert_eq!(inst["leaseInfo"]["renewalIntervalInSecs"], 1);
    assert_eq!(
        instance_ids(&eureka, "SPRING-CALLER").await,
        vec![caller_id.clone()]
    );

    // The dashboard lists both apps and the echo instance.
    let page = text(&http, &format!("{}/", registry.base_url())).await;
    for want in ["SPRING-ECHO", "SPRING-CALLER", echo_id.as_str()] {
        assert!(
            page.contains(want),
            "dashboard does not list {want}:\n{page}"
        );
    }

    // 3. It renews: its lease's lastRenewalTimestamp moves, heartbeats are counted.
    let one = format!("{eureka}/apps/SPRING-ECHO/{echo_id}");
    let first = json_of(&http, &one).await["instance"]["leaseInfo"]["lastRenewalTimestamp"]
        .as_i64()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            json_of(&http, &one).await["instance"]["leaseInfo"]["lastRenewalTimestamp"]
                .as_i64()
                .unwrap_or(0)
                > first
        })
        .await,
        "spring-echo's lease was not renewed in 10 s (renewal interval 1 s)"
    );
    let metrics = text(&http, &format!("{}/metrics", registry.base_url())).await;
    let renews = sample(
        &metrics,
        r#"http_server_requests_total{method="PUT",route="/eureka/apps/{app}/{id}",status="200"}"#,
    );
    assert!(renews >= 2.0, "renewals counted: {renews}");

    // 4. The caller discovered the echo app through deltas (apps__hashcode reconciled: no full
    //    fetch since) and calls it by service name through Spring Cloud LoadBalancer.
    let seen = format!("{caller_url}/instances/spring-echo");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            json_of(&http, &seen).await[0]["instanceId"] == echo_id.as_str()
        })
        .await,
        "spring-caller's DiscoveryClient never saw spring-echo: {}",
        json_of(&http, &seen).await
    );
    let called = json_of(&http, &format!("{caller_url}/call/spring-echo")).await;
    assert_eq!(called["caller"], caller_id.as_str());
    assert_eq!(called["answer"]["instanceId"], echo_id.as_str(), "{called}");
    assert_eq!(
        caller.count(FULL_FETCH),
        full_fetches_before,
        "spring-caller fell back to full fetches: deltas did not reconcile"
    );
    assert_eq!(caller.count(HASH_MISMATCH), 0, "apps__hashcode mismatch");

    // 5. shop-gateway routes /spring-echo/** to it by the name it registered.
    let via_gateway = format!("{}/spring-echo/hello", gateway.base_url());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http.get(&via_gateway).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let routed = status == StatusCode::OK
            && serde_json::from_str::<Value>(&body)
                .is_ok_and(|b| b["instanceId"] == echo_id.as_str());
        if routed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shop-gateway did not route {via_gateway} to spring-echo; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 6. SIGTERM: the app cancels its lease and is gone from the registry within seconds (its
    //    lease is 30 s, so this is the cancel, not expiry); the caller and the gateway follow.
    echo.sigterm();
    let signalled = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            registered(&http, &eureka, "SPRING-ECHO", &echo_id)
                .await
                .is_none()
        })
        .await,
        "spring-echo still registered 10 s after SIGTERM (lease 30 s)"
    );
    let gone_after = signalled.elapsed();
    assert!(
        echo.wait_exit(Duration::from_secs(20)),
        "spring-echo did not exit within 20 s of SIGTERM"
    );
    let metrics = text(&http, &format!("{}/metrics", registry.base_url())).await;
    assert_eq!(
        sample(
            &metrics,
            r#"http_server_requests_total{method="DELETE",route="/eureka/apps/{app}/{id}",status="200"}"#
        ),
        1.0,
        "one cancel (DELETE) from spring-echo"
    );
    assert_eq!(sample(&metrics, "registry_evictions_total"), 0.0);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            json_of(&http, &seen)
                .await
                .as_array()
                .is_some_and(Vec::is_empty)
        })
        .await,
        "spring-caller still lists spring-echo 10 s after it left"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            http.get(&via_gateway)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        })
        .await,
        "shop-gateway does not answer 503 for a service with no instance left"
    );
    eprintln!("spring-echo left the registry {gone_after:?} after SIGTERM");
    caller.assert_running();
    drop((caller, gateway, registry));
    let _ = std::fs::remove_file(routes);
}

#[tokio::test]
async fn spring_kafka_consumer_reads_order_placed_events_into_the_tutorials_record() {
    let bootstrap = kafka_bootstrap();
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let topic = fresh_name("spring-orders-");

    // A real order through shop-order (outbox → Kafka), inventory on its own database.
    let inventory = Service::spawn(
        "shop-inventory",
        &[],
        &[(
            "DATABASE_URL",
            fresh_mysql_database("spring_inv").await.as_str(),
        )],
        0,
    )
    .await;
    let order_db = fresh_mysql_database("spring_ord").await;
    let inventory_url = inventory.base_url();
    let order = Service::spawn(
        "shop-order",
        &[],
        &[
            ("DATABASE_URL", order_db.as_str()),
            ("SHOP_DNS_PATTERN", inventory_url.as_str()),
            ("SHOP_KAFKA_BOOTSTRAP", bootstrap.as_str()),
            ("ORDER_TOPIC", topic.as_str()),
            ("OUTBOX_POLL_MS", "100"),
        ],
        0,
    )
    .await;

    // Two real consumers, each in its own group, reading from the beginning (started while
    // shop-order creates the topic): the tutorial's notification-service settings with Spring
    // Kafka 4's Jackson 3 deserializer, and with the tutorial's own JsonDeserializer class
    // (Jackson 2; deprecated in Spring Kafka 4, still there).
    let consumer = |deserializer: Option<&str>| {
        let mut args = vec![
            format!("--spring.kafka.bootstrap-servers={bootstrap}"),
            format!("--shop.topic={topic}"),
            format!(
                "--spring.kafka.consumer.group-id={}",
                fresh_name("spring-notification-")
            ),
        ];
        if let Some(d) = deserializer {
            args.push(format!("--spring.kafka.consumer.value-deserializer={d}"));
        }
        args
    };
    let mut consumers = [
        JavaApp::start("spring-kafka-jackson3", "kafka", &consumer(None)),
        JavaApp::start(
            "spring-kafka-tutorial",
            "kafka",
            &consumer(Some(
                "org.springframework.kafka.support.serializer.JsonDeserializer",
            )),
        ),
    ];

    let skus = [fresh_name("spring_a_"), fresh_name("spring_b_")];
    for sku in &skus {
        let r = http
            .put(format!("{inventory_url}/api/inventory/{sku}"))
            .json(&json!({"quantity": 10}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = http
        .post(format!("{}/api/order", order.base_url()))
        .json(&json!({"orderLineItemsDtoList": [
            {"skuCode": skus[0], "price": "1200.00", "quantity": 2},
            {"skuCode": skus[1], "price": 19.99, "quantity": 1}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let placed: Value = r.json().await.unwrap();
    let number = placed["orderNumber"].as_str().unwrap().to_owned();
    let created_at = placed["createdAt"].as_str().unwrap().to_owned();

    // Each consumer prints the record it received as one JSON line.
    for c in &mut consumers {
        let deadline = Instant::now() + JAVA_START;
        let (raw, line) = loop {
            c.assert_running();
            let found = c.lines().into_iter().find_map(|l| {
                let v: Value = serde_json::from_str(&l)
                    .ok()
                    .filter(|_| l.starts_with('{'))?;
                (v["event"]["orderNumber"] == number.as_str()).then_some((l, v))
            });
            if let Some(found) = found {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no OrderPlaced record for order {number} within {JAVA_START:?}",
                c.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let who = &c.name;
        eprintln!("{who} printed {raw}");
        // The type header `__TypeId__: event` was mapped onto the record class.
        assert_eq!(
            line["class"], "dev.shopkeeper.springclients.OrderPlacedEvent",
            "{who}: {line}"
        );
        assert_eq!(line["topic"], topic.as_str(), "{who}: {line}");
        assert_eq!(line["key"], number.as_str(), "{who}: {line}");
        let event = &line["event"];
        assert_eq!(event["eventType"], "OrderPlaced", "{who}: {line}");
        assert!(
            event["eventId"].as_str().is_some_and(|s| s.len() == 36),
            "{who}: {line}"
        );
        // BigDecimal from the decimal string, exactly: Jackson prints a BigDecimal with its scale
        // (`1200.00`), where a double would print `1200.0`.
        assert!(raw.contains(r#""total":2419.99"#), "{who}: {raw}");
        assert!(raw.contains(r#""price":1200.00"#), "{who}: {raw}");
        let lines = event["lines"].as_array().expect("lines");
        assert_eq!(lines.len(), 2, "{who}: {line}");
        assert_eq!(lines[0]["skuCode"], skus[0].as_str());
        assert_eq!(lines[0]["price"].as_f64(), Some(1200.0));
        assert_eq!(lines[0]["quantity"], 2);
        assert_eq!(lines[1]["skuCode"], skus[1].as_str());
        assert_eq!(lines[1]["price"].as_f64(), Some(19.99));
        // java.time.Instant from the RFC 3339 string (printed back as ISO or epoch seconds).
        let at = &event["occurredAt"];
        assert!(
            at.as_str().is_some_and(|s| s[..19] == created_at[..19]) || at.is_number(),
            "{who}: occurredAt {at} vs createdAt {created_at}"
        );
        assert_eq!(
            c.count(" ERROR "),
            0,
            "{who} logged an error while consuming"
        );
    }
    drop((consumers, order, inventory));
}
