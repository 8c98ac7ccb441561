//! Every JSON endpoint of the shop fuzzed from its own OpenAPI document, with schemathesis.
//!
//! The services' tests check the cases their authors thought of; a fuzzer checks the ones nobody
//! did, and the OpenAPI documents (docs/api.md) are precise enough to drive one. This test starts
//! the real processes on the real local stack the way full_flow.rs does (a registry, inventory and
//! order on fresh MariaDB databases, product and notification on fresh FerretDB databases, fresh
//! Kafka topics, a gateway routing through the registry with JWT security), then runs
//! schemathesis 4.32.5 (`st run <url>/openapi.json`, installed by `hack/tools.sh schemathesis`)
//! against each service directly and against the gateway (`/openapi/<service>.json`, with a token
//! minted by `shop-gateway mint-token`). tests/e2e/fuzz/schemathesis.toml says which checks run and
//! why; tests/e2e/fuzz/hooks.py adds the shop's own: every 4xx is application/problem+json naming
//! the offending field. It requires:
//!
//! - no response >= 500, no failed check, no request schemathesis could not complete;
//! - no crash: every process still running and live afterwards, and no `panicked at` in its log.
//!
//! The run is bounded (`SHOP_FUZZ_EXAMPLES`, default 6 per operation and phase; one worker) to stay
//! near three minutes on two cores. `make fuzz` (hack/fuzz.sh) runs this same test with many more
//! examples and `SHOP_FUZZ_REPORT=docs/reliability.md`, where the counts go between the `fuzz:`
//! markers. Missing schemathesis or a missing server fails the test, naming the command that
//! provides it; it never skips. The failure message carries schemathesis's failing cases, each with
//! the curl command that reproduces it.
//!
//! The registry that the services use for discovery is not the one fuzzed: fuzzing a registry
//! registers and deletes instances, so a second shop-registry is the target, directly and behind
//! the gateway's `/eureka` route.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shop_testkit::{
    Service, fresh_mysql_database, fresh_name, kafka_bootstrap, mongo_url,
    registry::{eureka_url, instance_ids},
    repo_root, wait_until, zipkin_url,
};

/// Examples per operation and phase when `SHOP_FUZZ_EXAMPLES` is unset: the bounded run.
const DEFAULT_EXAMPLES: u32 = 6;
/// Seed when `SHOP_FUZZ_SEED` is unset, so the bounded run sends the same cases every time.
const DEFAULT_SEED: u64 = 20_261_207;
/// The gateway's HS256 secret in this test (the token is minted with it).
const JWT_SECRET: &str = "fuzz-test-secret-0123456789-abcdefghij";
/// Begin and end of the fuzzing section of docs/reliability.md.
const BEGIN: &str = "<!-- fuzz:begin (written by make fuzz; do not edit by hand) -->";
const END: &str = "<!-- fuzz:end -->";
/// How much of one target's schemathesis output a failure message carries.
const MAX_OUTPUT_CHARS: usize = 12_000;

/// `st`, from `SHOP_TEST_SCHEMATHESIS` or where `hack/tools.sh schemathesis` installs it.
fn schemathesis() -> PathBuf {
    let path = match std::env::var("SHOP_TEST_SCHEMATHESIS") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let out = Command::new("bash")
                .arg(repo_root().join("hack/tools.sh"))
                .arg("schemathesis-bin")
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run hack/tools.sh schemathesis-bin: {e}"));
            assert!(
                out.status.success(),
                "hack/tools.sh schemathesis-bin failed ({})",
                out.status
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    assert!(
        path.is_file(),
        "schemathesis is not installed ({} is missing): run `hack/tools.sh schemathesis` \
         (make test does this first; it needs Python 3 with venv and PyPI)",
        path.display()
    );
    path
}

/// One schemathesis run: a document and the base URL its operations are sent to.
#[derive(Clone)]
struct Target {
    /// `product`, or `gateway → product`.
    name: String,
    /// The service whose document it is.
    service: &'static str,
    via_gateway: bool,
    document: String,
    base_url: String,
}

/// What one route (`METHOD /path/{param}`) saw.
#[derive(Default, Clone)]
struct RouteTally {
    cases: u64,
    /// Responses by status class (`2xx`, `4xx`, ...; `none` when no response came).
    statuses: BTreeMap<String, u64>,
}

/// What one run showed.
struct Outcome {
    target: String,
    service: &'static str,
    via_gateway: bool,
    exit_code: Option<i32>,
    seconds: f64,
    operations: u64,
    routes: BTreeMap<String, RouteTally>,
    /// (code, title, count, operations) from schemathesis's JSON report.
    failures: Vec<(String, String, u64, Vec<String>)>,
    /// Requests schemathesis could not complete (network errors, timeouts) and other errors.
    errors: u64,
    output: String,
    /// `METHOD /path` of every operation the document lists (the rest are schemathesis's probes
    /// of methods the document does not list, which must be 405s).
    documented: HashSet<String>,
}

impl Outcome {
    fn cases(&self) -> u64 {
        self.routes.values().map(|r| r.cases).sum()
    }

    fn responses(&self, class: &str) -> u64 {
        self.routes
            .values()
            .map(|r| r.statuses.get(class).copied().unwrap_or(0))
            .sum()
    }

    fn server_errors(&self) -> u64 {
        self.responses("5xx")
    }

    fn failed(&self) -> bool {
        self.exit_code != Some(0)
            || !self.failures.is_empty()
            || self.errors > 0
            || self.server_errors() > 0
    }

    /// Schemathesis's failing cases (its FAILURES and ERRORS sections), else its whole output.
    fn failing_cases(&self) -> String {
        let text = &self.output;
        let start = ["=== ERRORS ===", "=== FAILURES ==="]
            .iter()
            .filter_map(|m| text.find(m))
            .min();
        let end = text
            .find("=== WARNINGS ===")
            .or_else(|| text.find("=== SUMMARY ==="));
        let part = match (start, end) {
            (Some(s), Some(e)) if e > s => &text[s..e],
            (Some(s), _) => &text[s..],
            _ => text.as_str(),
        };
        let part = part.trim();
        if part.chars().count() > MAX_OUTPUT_CHARS {
            let cut: String = part.chars().take(MAX_OUTPUT_CHARS).collect();
            format!("{cut}\n[... cut; the whole output is in {}]", self.target)
        } else {
            part.to_owned()
        }
    }
}

/// Runs `st` for `target` and reads its reports.
fn run_schemathesis(
    st: &Path,
    target: &Target,
    examples: u32,
    seed: u64,
    token: &str,
    dir: &Path,
    timeout: Duration,
) -> Outcome {
    let slug = target.name.replace(" → ", "-via-").replace(' ', "-");
    let json_path = dir.join(format!("{slug}.json"));
    let ndjson_path = dir.join(format!("{slug}.ndjson"));
    let output_path = dir.join(format!("{slug}.txt"));
    let output = std::fs::File::create(&output_path).expect("schemathesis output file");
    let mut cmd = Command::new(st);
    cmd.current_dir(repo_root().join("tests/e2e/fuzz"))
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(&target.document)
        .args(["--url", &target.base_url])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--report", "json,ndjson"])
        .arg("--report-json-path")
        .arg(&json_path)
        .arg("--report-ndjson-path")
        .arg(&ndjson_path)
        .env(
            "SHOP_FUZZ_VIA_GATEWAY",
            if target.via_gateway { "1" } else { "0" },
        )
        // No hypothesis example database in the repository: every run starts from its seed.
        .args(["--generation-database", "none"])
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("schemathesis output file"))
        .stderr(output);
    if target.via_gateway {
        cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", st.display()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for schemathesis") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut text = std::fs::read_to_string(&output_path).unwrap_or_default();
    if status.is_none() {
        text.push_str(&format!(
            "\n[schemathesis did not finish within {timeout:?} and was killed]\n"
        ));
    }
    let report: Value = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let failures = report["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["code"].as_str().unwrap_or("?").to_owned(),
                f["title"].as_str().unwrap_or("?").to_owned(),
                f["count"].as_u64().unwrap_or(1),
                f["operations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .collect();
    let errors = report["errors"].as_array().map_or(0, |e| e.len() as u64)
        + report["test_cases"]["errored"].as_u64().unwrap_or(0);
    Outcome {
        target: target.name.clone(),
        service: target.service,
        via_gateway: target.via_gateway,
        exit_code: status.and_then(|s| s.code()),
        seconds,
        operations: report["operations"]["tested"].as_u64().unwrap_or(0),
        routes: route_tallies(&ndjson_path),
        failures,
        errors,
        output: text,
        documented: HashSet::new(),
    }
}

/// Cases and response statuses per route, from schemathesis's NDJSON event stream: every
/// `ScenarioFinished` event records its cases (method and path template) and their exchanges.
fn route_tallies(ndjson: &Path) -> BTreeMap<String, RouteTally> {
    let mut routes: BTreeMap<String, RouteTally> = BTreeMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let text = std::fs::read_to_string(ndjson).unwrap_or_default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let recorder = &event["ScenarioFinished"]["recorder"];
        let Some(cases) = recorder["cases"].as_object() else {
            continue;
        };
        for (id, case) in cases {
            if !seen.insert(id.clone()) {
                continue;
            }
            let value = &case["value"];
            let route = format!(
                "{} {}",
                value["method"].as_str().unwrap_or("?"),
                value["path"].as_str().unwrap_or("?")
            );
            let tally = routes.entry(route).or_default();
            tally.cases += 1;
            let class = recorder["interactions"][id.as_str()]["response"]["status_code"]
                .as_u64()
                .map_or_else(|| "none".to_owned(), |s| format!("{}xx", s / 100));
            *tally.statuses.entry(class).or_default() += 1;
        }
    }
    routes
}

/// `METHOD /path` of every operation of the OpenAPI document at `url`.
async fn documented_operations(http: &reqwest::Client, url: &str) -> HashSet<String> {
    let doc: Value = match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .into_iter()
                .flatten()
                .filter(|(m, _)| {
                    [
                        "get", "put", "post", "delete", "patch", "head", "options", "trace",
                    ]
                    .contains(&m.as_str())
                })
                .map(move |(m, _)| format!("{} {path}", m.to_ascii_uppercase()))
        })
        .collect()
}

/// A started process with its log file.
struct Process {
    name: &'static str,
    service: Service,
    log: PathBuf,
}

async fn spawn(
    name: &'static str,
    bin: &str,
    args: &[&str],
    envs: &[(String, String)],
    logs: &Path,
) -> Process {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = logs.join(format!("{name}.log"));
    let service = Service::spawn_logged(bin, args, &envs, 0, &log).await;
    Process { name, service, log }
}

/// What is wrong with `p` after the runs: exited, not live, or a panic in its log.
async fn crash_report(p: &mut Process, http: &reqwest::Client) -> Option<String> {
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    let tail = |log: &str| {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    if let Some(status) = p.service.exit_status() {
        return Some(format!(
            "{} exited during the fuzzing ({status}); the end of its log ({}):\n{}",
            p.name,
            p.log.display(),
            tail(&log)
        ));
    }
    if let Some(at) = log.find("panicked at") {
        let from = log[..at].rfind('\n').map_or(0, |i| i + 1);
        let excerpt: String = log[from..].lines().take(12).collect::<Vec<_>>().join("\n");
        return Some(format!(
            "{} panicked ({}):\n{excerpt}",
            p.name,
            p.log.display()
        ));
    }
    let live = http
        .get(format!("{}/health/live", p.service.base_url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match live {
        Ok(r) if r.status().is_success() => None,
        other => Some(format!(
            "{} no longer answers /health/live ({:?}); the end of its log:\n{}",
            p.name,
            other.map(|r| r.status()),
            tail(&log)
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_endpoint_survives_schemathesis_directly_and_through_the_gateway() {
    let st = schemathesis();
    let examples: u32 = shop_testkit::env_or("SHOP_FUZZ_EXAMPLES", DEFAULT_EXAMPLES);
    let seed: u64 = shop_testkit::env_or("SHOP_FUZZ_SEED", DEFAULT_SEED);
    let timeout = Duration::from_secs(shop_testkit::env_or("SHOP_FUZZ_TARGET_TIMEOUT_SECS", 600));
    let report_to = std::env::var("SHOP_FUZZ_REPORT").ok().map(PathBuf::from);
    let started = Instant::now();

    let zipkin = zipkin_url();
    let spans = format!("{zipkin}/api/v2/spans");
    let mongo = mongo_url();
    let bootstrap = kafka_bootstrap();
    let runs = repo_root().join(".state/fuzz");
    prune_old_runs(&runs, 4);
    let run_dir = runs.join(fresh_name("run-"));
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).expect("fuzz run folder");
    println!(
        "fuzz: schemathesis {} examples per operation and phase, seed {seed}; reports and logs in {}",
        examples,
        run_dir.display()
    );
    let http = reqwest::Client::new();

    // The registry the services find each other through; the registry that is fuzzed registers
    // with it as the app REGISTRY (so the gateway finds its document) like every other service.
    let registry_args = ["--eviction-interval-ms", "200"];
    let mut processes = vec![spawn("registry", "shop-registry", &registry_args, &[], &logs).await];
    let eureka = eureka_url(&processes[0].service);
    let common = [
        ("SHOP_REGISTRY_URL", eureka.as_str()),
        ("SHOP_ZIPKIN_ENDPOINT", spans.as_str()),
        ("SHOP_LEASE_RENEWAL_SECS", "1"),
        ("SHOP_REGISTRY_FETCH_SECS", "1"),
    ];
    let with = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        common
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    processes.push(
        spawn(
            "registry-under-test",
            "shop-registry",
            &registry_args,
            &with(&[]),
            &logs,
        )
        .await,
    );
    let under_test = processes[1].service.base_url();
    let inventory_db = fresh_mysql_database("fuzz_inv").await;
    let order_db = fresh_mysql_database("fuzz_ord").await;
    let product_db = fresh_name("fuzz-product-");
    let notification_db = fresh_name("fuzz-notification-");
    let topic = fresh_name("fuzz-orders-");
    let group = fresh_name("fuzz-notification-group-");
    processes.push(
        spawn(
            "inventory",
            "shop-inventory",
            &[],
            &with(&[("DATABASE_URL", &inventory_db)]),
            &logs,
        )
        .await,
    );
    processes.push(
        spawn(
            "product",
            "shop-product",
            &[],
            &with(&[
                ("SHOP_MONGO_URL", &mongo),
                ("SHOP_MONGO_DB", &product_db),
                ("SHOP_STOCK_RETRY_MS", "200"),
            ]),
            &logs,
        )
        .await,
    );
    processes.push(
        spawn(
            "order",
            "shop-order",
            &[],
            &with(&[
                ("DATABASE_URL", &order_db),
                ("SHOP_KAFKA_BOOTSTRAP", &bootstrap),
                ("ORDER_TOPIC", &topic),
                ("OUTBOX_POLL_MS", "100"),
            ]),
            &logs,
        )
        .await,
    );
    processes.push(
        spawn(
            "notification",
            "shop-notification",
            &[],
            &with(&[
                ("SHOP_MONGO_URL", &mongo),
                ("SHOP_MONGO_DB", &notification_db),
                ("SHOP_KAFKA_BOOTSTRAP", &bootstrap),
                ("SHOP_NOTIFICATION_TOPIC", &topic),
                ("SHOP_NOTIFICATION_GROUP", &group),
                ("SHOP_SSE_KEEP_ALIVE_SECS", "1"),
            ]),
            &logs,
        )
        .await,
    );
    // The gateway with the shop's default routes through the registry, except `/eureka`, which goes
    // to the registry under test; rate limits high enough for a fuzzer on one connection.
    let eureka_route = format!("/eureka={under_test}");
    processes.push(
        spawn(
            "gateway",
            "shop-gateway",
            &[],
            &with(&[
                ("SHOP_JWT_SECRET", JWT_SECRET),
                ("SHOP_GATEWAY_ROUTES", &eureka_route),
                ("SHOP_RATE_LIMIT_PER_SECOND", "100000"),
                ("SHOP_RATE_LIMIT_BURST", "100000"),
            ]),
            &logs,
        )
        .await,
    );
    for app in ["INVENTORY", "PRODUCT", "ORDER", "NOTIFICATION", "REGISTRY"] {
        assert!(
            wait_until(Duration::from_secs(20), || async {
                !instance_ids(&eureka, app).await.is_empty()
            })
            .await,
            "{app} did not register with the registry"
        );
    }
    let gateway = processes
        .iter()
        .find(|p| p.name == "gateway")
        .map(|p| p.service.base_url())
        .expect("gateway");
    // The gateway routes once its registry cache holds every service.
    for service in ["product", "inventory", "order", "notification", "registry"] {
        let url = format!("{gateway}/openapi/{service}.json");
        assert!(
            wait_until(Duration::from_secs(20), || async {
                matches!(http.get(&url).send().await, Ok(r) if r.status().is_success())
            })
            .await,
            "the gateway does not serve {url}"
        );
    }
    let token = shop_testkit::host_shop::mint_token(
        JWT_SECRET,
        "fuzz",
        shop_testkit::host_shop::ALL_SCOPES,
    );
    let base = |name: &str| {
        processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.service.base_url())
            .expect("process")
    };

    let mut targets = Vec::new();
    for (service, process) in [
        ("product", "product"),
        ("inventory", "inventory"),
        ("order", "order"),
        ("notification", "notification"),
        ("registry", "registry-under-test"),
        ("gateway", "gateway"),
    ] {
        let url = base(process);
        targets.push(Target {
            name: service.to_owned(),
            service,
            via_gateway: false,
            document: format!("{url}/openapi.json"),
            base_url: url,
        });
    }
    for service in ["product", "inventory", "order", "notification", "registry"] {
        targets.push(Target {
            name: format!("gateway → {service}"),
            service,
            via_gateway: true,
            document: format!("{gateway}/openapi/{service}.json"),
            base_url: gateway.clone(),
        });
    }

    let mut outcomes = Vec::new();
    for target in targets {
        let (st, token, dir) = (st.clone(), token.clone(), run_dir.clone());
        let document = target.document.clone();
        let mut outcome = tokio::task::spawn_blocking(move || {
            run_schemathesis(&st, &target, examples, seed, &token, &dir, timeout)
        })
        .await
        .expect("schemathesis run");
        outcome.documented = documented_operations(&http, &document).await;
        println!(
            "fuzz: {:<24} {:>3} operations {:>6} cases {:>5} 4xx {:>3} 5xx {:>3} failures {:>3} errors  {:>6.1} s{}",
            outcome.target,
            outcome.operations,
            outcome.cases(),
            outcome.responses("4xx"),
            outcome.server_errors(),
            outcome.failures.iter().map(|f| f.2).sum::<u64>(),
            outcome.errors,
            outcome.seconds,
            if outcome.failed() { "  FAILED" } else { "" }
        );
        outcomes.push(outcome);
    }

    let mut crashes = Vec::new();
    for p in &mut processes {
        if let Some(report) = crash_report(p, &http).await {
            crashes.push(report);
        }
    }
    let elapsed = started.elapsed();
    let total_cases: u64 = outcomes.iter().map(Outcome::cases).sum();
    println!(
        "fuzz: {total_cases} cases in {:.0} s ({} runs)",
        elapsed.as_secs_f64(),
        outcomes.len()
    );
    for (service, cases) in cases_per_service(&outcomes) {
        println!("fuzz: {service:<13} {cases:>6} cases (direct and through the gateway)");
    }
    if let Some(path) = &report_to {
        write_report(path, &outcomes, &crashes, examples, seed, elapsed);
        println!("fuzz: counts written to {}", path.display());
    }

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failed()).collect();
    let mut message = String::new();
    for o in &failed {
        message.push_str(&format!(
            "\n==================== {} ({}, exit {:?}; {} 5xx, {} errors) ====================\n{}\n",
            o.target,
            o.failures
                .iter()
                .map(|f| format!("{} {} x{}", f.0, f.1, f.2))
                .collect::<Vec<_>>()
                .join("; "),
            o.exit_code,
            o.server_errors(),
            o.errors,
            o.failing_cases()
        ));
    }
    for c in &crashes {
        message.push_str(&format!(
            "\n==================== crash ====================\n{c}\n"
        ));
    }
    assert!(
        message.is_empty(),
        "schemathesis found problems in {} of {} runs{}; reports and logs in {}:{message}",
        failed.len(),
        outcomes.len(),
        if crashes.is_empty() {
            String::new()
        } else {
            format!(" and {} processes crashed", crashes.len())
        },
        run_dir.display()
    );
    // The processes stop on drop (SIGTERM), the registries last.
    while let Some(p) = processes.pop() {
        drop(p);
    }
}

/// Deletes all but the `keep` newest run folders under `runs` (each holds 10-100 MB of reports
/// and logs; `make test` adds one every run).
fn prune_old_runs(runs: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort();
    let excess = dirs.len().saturating_sub(keep);
    for (_, dir) in dirs.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Cases per service, direct and through the gateway together.
fn cases_per_service(outcomes: &[Outcome]) -> BTreeMap<&'static str, u64> {
    let mut per: BTreeMap<&'static str, u64> = BTreeMap::new();
    for o in outcomes {
        *per.entry(o.service).or_default() += o.cases();
    }
    per
}

/// Writes the counts between the `fuzz:` markers of `path` (docs/reliability.md), keeping the rest.
fn write_report(
    path: &Path,
    outcomes: &[Outcome],
    crashes: &[String],
    examples: u32,
    seed: u64,
    elapsed: Duration,
) {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "unknown date".to_owned());
    let mut md = String::new();
    md.push_str(&format!(
        "Last run: {date}, schemathesis 4.32.5, {examples} examples per operation and phase \
         (`SHOP_FUZZ_EXAMPLES`), seed {seed}, one worker; {:.0} s in all.\n\n",
        elapsed.as_secs_f64()
    ));
    md.push_str("| run | operations | cases | 2xx | 4xx | 5xx | failures | errors | seconds |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for o in outcomes {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            o.target,
            o.operations,
            o.cases(),
            o.responses("2xx"),
            o.responses("4xx"),
            o.server_errors(),
            o.failures.iter().map(|f| f.2).sum::<u64>(),
            o.errors,
            o.seconds
        ));
    }
    let total = |f: &dyn Fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    md.push_str(&format!(
        "| **all** | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n\n",
        total(&|o| o.operations),
        total(&|o| o.cases()),
        total(&|o| o.responses("2xx")),
        total(&|o| o.responses("4xx")),
        total(&|o| o.server_errors()),
        total(&|o| o.failures.iter().map(|f| f.2).sum()),
        total(&|o| o.errors),
        outcomes.iter().map(|o| o.seconds).sum::<f64>()
    ));
    md.push_str("Cases per service (direct and through the gateway): ");
    md.push_str(
        &cases_per_service(outcomes)
            .iter()
            .map(|(s, c)| format!("{s} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    md.push_str(
        ".\n\nCases per route (\"other methods\": schemathesis's probes of the methods a document \
         does not list, which must answer 405):\n\n",
    );
    md.push_str("| service | route | direct | through the gateway |\n|---|---|---:|---:|\n");
    let mut per_route: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for o in outcomes {
        for (route, tally) in &o.routes {
            let route = if o.documented.contains(route) {
                route.as_str()
            } else {
                "other methods"
            };
            let e = per_route.entry((o.service, route)).or_default();
            if o.via_gateway {
                e.1 += tally.cases;
            } else {
                e.0 += tally.cases;
            }
        }
    }
    for ((service, route), (direct, gateway)) in &per_route {
        let route = if route.starts_with('/') || route.contains(" /") {
            format!("`{route}`")
        } else {
            (*route).to_owned()
        };
        md.push_str(&format!("| {service} | {route} | {direct} | {gateway} |\n"));
    }
    md.push_str("\nFailures found: ");
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.failures.iter().map(move |(code, title, count, ops)| {
                format!("{}: {code} {title} ×{count} ({})", o.target, ops.join(", "))
            })
        })
        .chain(crashes.iter().map(|c| {
            format!(
                "crash: {}",
                c.lines().next().unwrap_or_default().trim_end_matches(':')
            )
        }))
        .collect();
    if failures.is_empty() {
        md.push_str("none.\n");
    } else {
        md.push('\n');
        md.push('\n');
        for f in failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        panic!(
            "{} has no `{BEGIN}` … `{END}` markers to write between",
            path.display()
        );
    };
    assert!(
        b < e,
        "the fuzz markers of {} are out of order",
        path.display()
    );
    let new = format!("{}{BEGIN}\n{md}{}", &text[..b], &text[e..]);
    std::fs::write(path, new).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
