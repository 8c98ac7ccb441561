//! The chart's Grafana dashboards and PrometheusRule alerts read only metrics the shop really exports.
//!
//! A dashboard panel or an alert that names a metric nobody exports (a typo, a counter without its
//! `_total`, a metric renamed in a service) shows an empty graph or never fires, and nothing else
//! would notice. So this test renders the chart as a user installs it (`helm template`, with the
//! Prometheus operator's API announced so the PrometheusRule renders), parses every PromQL
//! expression of the dashboards (panels and template variables) and of the rules with
//! `promql-parser`, and checks each metric name against the `/metrics` of real processes: the six
//! components started by `shop_testkit::host_shop` on the local stack, and `shop-operator` run
//! against the stack's API server. The one metric allowed from elsewhere is kube-state-metrics'
//! restarts counter. It also checks the shape a user relies on: dashboards are JSON with unique
//! panel ids, every alert has `for`, a severity and a summary, the rule is absent where the API is
//! not served, and the operator's NetworkPolicy admits the scrape namespace when one is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::PostParams;
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr};
use serde::Deserialize;
use serde_json::json;
use shop_operator::crd::PlacementSpec;
use shop_operator::monitoring::SERIES_LABELS;
use shop_testkit::host_shop::HostShop;
use shop_testkit::{Service, cluster, free_port, helm_path, kubeconfig_path, repo_root};

/// Metrics a panel or alert may read although no shopkeeper component exports them.
const FOREIGN_METRICS: &[(&str, &str)] = &[(
    "kube_pod_container_status_restarts_total",
    "kube-state-metrics: container restarts (the ShopPodRestarting alert)",
)];

/// Labels of kube-state-metrics' series that the queries may use.
const FOREIGN_LABELS: &[&str] = &["namespace", "pod", "container", "uid"];

/// Labels Prometheus attaches to every scraped series under a ServiceMonitor (target labels).
const SCRAPE_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "service",
    "job",
    "instance",
    "endpoint",
    "container",
];

/// Labels every series of a shop component carries in Prometheus: the scrape's target labels and
/// the ones the operator's ServiceMonitor relabels from the Services (`shop`, `component`), taken
/// from the operator itself so the dashboards and the ServiceMonitor cannot drift apart.
fn target_labels() -> BTreeSet<&'static str> {
    SCRAPE_LABELS
        .iter()
        .copied()
        .chain(SERIES_LABELS.iter().map(|(_, to)| *to))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Metric names in PromQL.

/// Grafana's built-in interval variables, replaced by a duration so the query parses as PromQL.
const GRAFANA_INTERVALS: &[&str] = &["$__rate_interval", "$__interval", "$__range"];

/// What a query reads: metric names, and label names (matchers, `by`/`without`, `on`/`ignoring`,
/// `group_left`/`group_right`, the label of `label_values`).
#[derive(Debug, Default)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// What `query` reads. `query` is PromQL, possibly with Grafana variables (`$__rate_interval` as
/// a range, `$namespace` inside label values) or Grafana's `label_values(selector, label)`
/// template query. An error names what does not parse, or a selector whose metric name cannot be
/// known (a regex on `__name__`).
fn refs(query: &str) -> Result<Refs, String> {
    let mut q = query.trim().to_owned();
    for var in GRAFANA_INTERVALS {
        q = q.replace(var, "5m");
    }
    let mut out = Refs::default();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    {
        // label_values(selector, label): only the selector is PromQL.
        let (selector, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| format!("`{query}`: label_values needs a selector and a label"))?;
        out.labels.insert(label.trim().to_owned());
        q = selector.trim().to_owned();
    }
    let expr = parser::parse(&q).map_err(|e| format!("`{query}` is not PromQL: {e}"))?;
    collect(&expr, &mut out).map_err(|e| format!("`{query}`: {e}"))?;
    Ok(out)
}

/// The metric names `query` selects.
fn metric_names(query: &str) -> Result<BTreeSet<String>, String> {
    refs(query).map(|r| r.metrics)
}

fn collect(expr: &Expr, out: &mut Refs) -> Result<(), String> {
    match expr {
        Expr::VectorSelector(vs) => selector(vs, out),
        Expr::MatrixSelector(ms) => selector(&ms.vs, out),
        Expr::Aggregate(a) => {
            if let Some(m) = &a.modifier {
                out.labels.extend(m.labels().labels.iter().cloned());
            }
            if let Some(p) = &a.param {
                collect(p, out)?;
            }
            collect(&a.expr, out)
        }
        Expr::Unary(u) => collect(&u.expr, out),
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if let Some(on) = &m.matching {
                    out.labels.extend(on.labels().labels.iter().cloned());
                }
                if let Some(group) = m.card.labels() {
                    out.labels.extend(group.labels.iter().cloned());
                }
            }
            collect(&b.lhs, out)?;
            collect(&b.rhs, out)
        }
        Expr::Paren(p) => collect(&p.expr, out),
        Expr::Subquery(s) => collect(&s.expr, out),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| collect(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err("an extension expression".into()),
    }
}

fn selector(vs: &promql_parser::parser::VectorSelector, out: &mut Refs) -> Result<(), String> {
    let mut named = vs.name.is_some();
    out.metrics.extend(vs.name.iter().cloned());
    let all = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    for m in all {
        if m.name != "__name__" {
            out.labels.insert(m.name.clone());
            continue;
        }
        match m.op {
            MatchOp::Equal => {
                out.metrics.insert(m.value.clone());
                named = true;
            }
            _ => return Err(format!("`__name__` matched by {} (not a fixed name)", m.op)),
        }
    }
    if named {
        Ok(())
    } else {
        Err("a selector without a metric name".into())
    }
}

#[test]
fn extractor_finds_metric_names_and_nothing_else() {
    let set = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    // Functions, aggregations, by/without/on/ignoring, label names, durations, strings and numbers
    // are not metrics.
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (component, le) (rate(http_server_request_duration_seconds_bucket{namespace="$namespace", shop=~"$shop", status!~"5.."}[$__rate_interval])))"#
        )
        .unwrap(),
        set(&["http_server_request_duration_seconds_bucket"])
    );
    assert_eq!(
        metric_names(
            "sum without (pod) (increase(a_total[15m] offset 5m)) / on (namespace) group_left (shop) max_over_time(b[1h:5m]) > bool 3 or vector(0) and absent(c{x=\"sum(d)\"})"
        )
        .unwrap(),
        set(&["a_total", "b", "c"])
    );
    assert_eq!(
        metric_names(r#"topk(3, {__name__="e", job="x"}) unless -f"#).unwrap(),
        set(&["e", "f"])
    );
    assert_eq!(
        metric_names(r#"label_values(http_server_requests_total{namespace="$namespace"}, shop)"#)
            .unwrap(),
        set(&["http_server_requests_total"])
    );
    assert_eq!(
        metric_names("count_values(\"v\", g) + scalar(h) * time()").unwrap(),
        set(&["g", "h"])
    );
    let r = refs(
        r#"sum by (component, le) (rate(a_bucket{shop="$shop"}[5m])) / on (pod) group_left (reason) b or count without (verb) (c)"#,
    )
    .unwrap();
    assert_eq!(
        r.labels,
        set(&["component", "le", "shop", "pod", "reason", "verb"])
    );
    assert_eq!(
        refs(r#"label_values(x{namespace="$namespace"}, shop)"#)
            .unwrap()
            .labels,
        set(&["namespace", "shop"])
    );
    assert!(metric_names(r#"{__name__=~"http_.*"}"#).is_err());
    assert!(metric_names(r#"sum(rate(x[5m])"#).is_err(), "unbalanced");
}

// ---------------------------------------------------------------------------------------------
// Metric names on /metrics.

/// Every series name a Prometheus scraping `text` stores, with the label names its samples carry:
/// the samples present, and for each `# TYPE` (also of families with no sample yet) the names its
/// type is exposed under, as prometheus_client writes them (a counter `foo` as `foo_total`, a
/// histogram as `foo_bucket`/`foo_sum`/`foo_count`).
fn exposed_series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                out.entry(format!("{name}{s}")).or_default();
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = out.entry(line[..end].to_owned()).or_default();
            if let Some(set) = line[end..].strip_prefix('{') {
                labels.extend(label_names(set));
            }
        }
    }
    out
}

/// The label names of a sample's label set (`a="x",b="y\"}"} 1` without the opening brace):
/// values are quoted and may hold `,`, `{`, `}` and escaped quotes (route templates do).
fn label_names(set: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = set;
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_owned());
        let mut chars = after.char_indices();
        let mut close = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    close = i;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[(close + 1).min(after.len())..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

#[test]
fn exposition_names_follow_the_metric_types() {
    let text = "# HELP a Requests.\n# TYPE a counter\na_total{x=\"1\",route=\"/p/{id},\\\"q\\\"\",z=\"\"} 2\n\
                # TYPE b histogram\n# TYPE c gauge\nc 1\n# TYPE d counter\n# EOF\n";
    let got = exposed_series(text);
    let names: BTreeSet<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["a_total", "b_bucket", "b_sum", "b_count", "c", "d_total"])
    );
    assert!(
        !got.contains_key("a"),
        "a counter is stored as a_total only"
    );
    let a: Vec<&str> = got["a_total"].iter().map(String::as_str).collect();
    assert_eq!(a, ["route", "x", "z"]);
    assert!(got["c"].is_empty());
}

// ---------------------------------------------------------------------------------------------
// The chart.

fn chart() -> PathBuf {
    repo_root().join("charts/shopkeeper")
}

/// `helm template` of the chart with `args`; the rendered objects as JSON.
fn render(args: &[&str]) -> Vec<serde_json::Value> {
    let helm = helm_path();
    let mut cmd = Command::new(&helm);
    cmd.args([
        "template",
        "obs",
        chart().to_str().unwrap(),
        "--kube-version",
        "1.36.0",
    ])
    .args(args);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "running {} (hack/tools.sh helm builds it): {e}",
            helm.display()
        )
    });
    assert!(
        out.status.success(),
        "helm template {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

const WITH_PROMETHEUS_OPERATOR: &[&str] =
    &["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"];

fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The dashboards as Grafana's sidecar gets them: file name and JSON, from the rendered ConfigMaps.
fn dashboards(docs: &[serde_json::Value]) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for cm in of_kind(docs, "ConfigMap") {
        if cm["metadata"]["labels"]["grafana_dashboard"] != "1" {
            continue;
        }
        assert_eq!(
            cm["metadata"]["annotations"]["grafana_folder"], "Shopkeeper",
            "the sidecar's folder annotation"
        );
        for (file, body) in cm["data"].as_object().unwrap() {
            let json: serde_json::Value = serde_json::from_str(body.as_str().unwrap())
                .unwrap_or_else(|e| panic!("dashboard {file} is not JSON: {e}"));
            out.push((file.clone(), json));
        }
    }
    out
}

/// Every panel, rows' nested panels included.
fn panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dash["panels"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        out.push(p);
    }
    out
}

/// Every PromQL query of a dashboard, with where it is: panel targets and template variables.
fn dashboard_queries(file: &str, dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("{file}: panel {} has a target without expr", p["title"])
            });
            out.push((format!("{file}: panel {}", p["title"]), expr.to_owned()));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            out.push((format!("{file}: variable {}", v["name"]), q.to_owned()));
        }
    }
    out
}

/// Every alert of the rendered PrometheusRule(s): (name, rule).
fn alerts(docs: &[serde_json::Value]) -> Vec<(String, serde_json::Value)> {
    of_kind(docs, "PrometheusRule")
        .into_iter()
        .flat_map(|r| r["spec"]["groups"].as_array().unwrap().iter())
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["alert"]
                    .as_str()
                    .unwrap_or("(a recording rule)")
                    .to_owned(),
                r.clone(),
            )
        })
        .collect()
}

#[test]
fn dashboards_and_alerts_are_well_formed() {
    let docs = render(WITH_PROMETHEUS_OPERATOR);
    let dashes = dashboards(&docs);
    let files: BTreeSet<&str> = dashes.iter().map(|(f, _)| f.as_str()).collect();
    assert!(
        files.contains("shop-overview.json") && files.contains("order-pipeline.json"),
        "both dashboards ship: {files:?}"
    );
    let mut uids = BTreeSet::new();
    for (file, dash) in &dashes {
        assert!(
            uids.insert(dash["uid"].as_str().unwrap().to_owned()),
            "{file}: uid repeated"
        );
        let mut ids = BTreeSet::new();
        for p in panels(dash) {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: {} has no id", p["title"]));
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
        }
        let vars: Vec<&str> = dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            vars,
            ["datasource", "namespace", "shop"],
            "{file}: template variables"
        );
        for p in panels(dash).into_iter().filter(|p| p["type"] != "row") {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: panel {} must use the datasource variable",
                p["title"]
            );
        }
        assert!(
            dashboard_queries(file, dash).len() >= 10,
            "{file}: a dashboard with panels"
        );
    }

    let rules = alerts(&docs);
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "ShopComponentErrorRatioHigh",
        "ShopOutboxLagHigh",
        "ShopNotificationConsumerLagging",
        "ShopCircuitBreakerOpen",
        "ShopPodRestarting",
    ] {
        assert!(names.contains(want), "alert {want} missing: {names:?}");
    }
    for (name, r) in &rules {
        assert!(
            r["for"].as_str().is_some_and(|f| !f.is_empty()),
            "{name}: no `for`"
        );
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("critical" | "warning" | "info")
            ),
            "{name}: severity {}",
            r["labels"]["severity"]
        );
        for a in ["summary", "description"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: no {a}"
            );
        }
    }

    // Extra labels reach the rule (a Prometheus ruleSelector picks it by them).
    let labelled = render(&[
        WITH_PROMETHEUS_OPERATOR[0],
        WITH_PROMETHEUS_OPERATOR[1],
        "--set",
        "monitoring.prometheusRule.labels.release=kps",
    ]);
    assert_eq!(
        of_kind(&labelled, "PrometheusRule")[0]["metadata"]["labels"]["release"],
        "kps"
    );
    // Where the cluster does not serve the API, installing must not fail on an unknown kind.
    assert!(
        of_kind(&render(&[]), "PrometheusRule").is_empty(),
        "no PrometheusRule without the monitoring.coreos.com/v1 API"
    );
    // The operator's own ServiceMonitor selects its metrics Service and that Service's admin port.
    let with_sm = render(&["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"]);
    let sm = of_kind(&with_sm, "ServiceMonitor");
    assert_eq!(sm.len(), 1, "one ServiceMonitor where the API is served");
    let svc = of_kind(&with_sm, "Service")
        .into_iter()
        .find(|s| {
            sm[0]["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| s["metadata"]["labels"][k] == *v)
        })
        .expect("the ServiceMonitor selects a Service of the chart");
    let port = sm[0]["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "{} has no port {port}",
        svc["metadata"]["name"]
    );
    assert!(
        of_kind(&docs, "ServiceMonitor").is_empty(),
        "none without the API"
    );
    let off = render(&["--set", "monitoring.dashboards.enabled=false"]);
    assert!(
        dashboards(&off).is_empty(),
        "dashboards off renders no ConfigMap"
    );
}

#[test]
fn operator_network_policy_admits_the_scrape_namespace() {
    let policy = |args: &[&str]| {
        let docs = render(args);
        let np = of_kind(&docs, "NetworkPolicy");
        assert_eq!(np.len(), 1);
        np[0]["spec"]["ingress"].clone()
    };
    let open = policy(&[]);
    assert!(
        open[0]["from"].is_null(),
        "no scrape namespace: the admin port is open: {open}"
    );
    let scoped = policy(&[
        "--set",
        "networkPolicy.scrapeNamespace=monitoring",
        "--set",
        "networkPolicy.nodeCIDRs={10.0.0.0/24}",
    ]);
    assert_eq!(scoped[0]["ports"][0]["port"], 8080, "{scoped}");
    assert_eq!(
        scoped[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring",
        "{scoped}"
    );
    assert_eq!(
        scoped[0]["from"][1]["ipBlock"]["cidr"], "10.0.0.0/24",
        "{scoped}"
    );
    // A namespace name that is not one is refused by the schema, naming the value.
    let bad = Command::new(helm_path())
        .args([
            "template",
            "obs",
            chart().to_str().unwrap(),
            "--kube-version",
            "1.36.0",
        ])
        .args(["--set", "networkPolicy.scrapeNamespace=Not_A_Namespace"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("scrapeNamespace"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Against real processes.

/// `GET url` as text, retried for up to 30 s (a process's listener may still be coming up).
async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let last = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => match r.text().await {
                Ok(t) => return t,
                Err(e) => e.to_string(),
            },
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        assert!(
            std::time::Instant::now() < deadline,
            "GET {url} never answered 200: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Scrapes `url` until its text names `what` (a family appears at its first count), for up to 30 s.
async fn scrape_until(http: &reqwest::Client, url: &str, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(http, url).await;
        if text.contains(what) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never showed {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A namespace of the test's own, with the Secret its Shop reads; deleted (with everything in it)
/// on drop, also when the test fails.
struct ScratchNamespace {
    name: String,
}

impl ScratchNamespace {
    async fn create(client: &kube::Client) -> Self {
        let name = shop_testkit::fresh_name("obs-");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name} (is the stack's API server up? hack/stack.sh up): {e}"));
        let scratch = Self { name };
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "obs-backing"},
            "stringData": {"mysql-url": "mysql://x@127.0.0.1:1", "mongodb-url": "mongodb://127.0.0.1:1"}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), &scratch.name)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        scratch
    }
}

impl Drop for ScratchNamespace {
    fn drop(&mut self) {
        // Synchronous: Drop cannot await, and it also runs while a failed test unwinds.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_alerts_read_is_exported() {
    // What the chart makes Grafana and Prometheus query.
    let docs = render(WITH_PROMETHEUS_OPERATOR);
    let mut queries = Vec::new();
    for (file, dash) in dashboards(&docs) {
        queries.extend(dashboard_queries(&file, &dash));
    }
    for (name, r) in alerts(&docs) {
        queries.push((
            format!("alert {name}"),
            r["expr"].as_str().unwrap().to_owned(),
        ));
    }
    let parsed: Vec<(&String, Refs)> = queries
        .iter()
        .map(|(place, q)| (place, refs(q).unwrap_or_else(|e| panic!("{place}: {e}"))))
        .collect();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (place, r) in &parsed {
        for name in &r.metrics {
            wanted
                .entry(name.clone())
                .or_default()
                .push((*place).clone());
        }
    }
    assert!(
        wanted.len() >= 20,
        "the queries read {} metrics: {wanted:?}",
        wanted.len()
    );

    // What the real processes export. A family with labels (failures by reason, calls by target)
    // is on /metrics only once something was counted in it, so the test makes each happen for
    // real: an order whose inventory is gone (order's failed call), and a Shop the API server
    // refuses a part of (the operator's writes and its failure).
    let mut shop = HostShop::start().await;
    let client = cluster::client().await;
    let ns = ScratchNamespace::create(&client).await;
    // The operator's admin address is a flag of its own (it is not a runtime service and writes
    // no port file): chosen up front.
    let operator_port = free_port();
    let admin = format!("127.0.0.1:{operator_port}");
    let kubeconfig = kubeconfig_path();
    let _operator = Service::launch(
        "shop-operator",
        &[
            "run",
            "--watch-namespace",
            &ns.name,
            "--admin-addr",
            &admin,
            "--log-format",
            "text",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        operator_port,
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let operator_metrics = format!("http://{admin}/metrics");
    scrape(&http, &operator_metrics).await;
    // Node port 1 is outside every cluster's node port range: the API server refuses the gateway's
    // Service, after the operator wrote the rest. The pods go to the kwok node (never run).
    let placement = serde_json::to_value(PlacementSpec::kwok()).unwrap();
    cluster::apply_shop(
        &client,
        &ns.name,
        "obs",
        json!({
            "image": {"repository": "shopkeeper.local", "tag": "obs", "pullPolicy": "Never"},
            "placement": placement,
            "backing": {
                "mysql": {"urlSecretRef": {"name": "obs-backing", "key": "mysql-url"}},
                "mongodb": {"urlSecretRef": {"name": "obs-backing", "key": "mongodb-url"}},
                "kafka": {"bootstrapServers": "10.244.0.1:9094"},
                "zipkin": {"endpoint": "http://10.244.0.1:9411/api/v2/spans"}
            },
            "components": {"gateway": {"serviceType": "NodePort", "nodePort": 1}}
        }),
    )
    .await;

    // Series name -> the components exporting it, and the label names its samples carry.
    let mut exported: BTreeMap<String, (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut record = |component: &str, text: &str| {
        let series = exposed_series(text);
        assert!(
            !series.is_empty(),
            "{component}'s /metrics exposes nothing:\n{text}"
        );
        for (s, labels) in series {
            let e = exported.entry(s).or_default();
            e.0.push(component.to_owned());
            e.1.extend(labels);
        }
    };
    let components = [
        "registry",
        "inventory",
        "product",
        "order",
        "notification",
        "gateway",
    ];
    for c in components {
        record(c, &scrape(&http, &format!("{}/metrics", shop.url(c))).await);
    }
    // Inventory stops; an order through the gateway makes order's call to it fail.
    let order_metrics = format!("{}/metrics", shop.url("order"));
    shop.components
        .iter_mut()
        .find(|c| c.name == "inventory")
        .unwrap()
        .service
        .kill();
    let placed = http
        .post(format!("{}/api/order", shop.gateway_url()))
        .bearer_auth(shop.token("obs"))
        .header("Idempotency-Key", shop_testkit::fresh_name("obs-"))
        .json(&json!({"orderLineItemsDtoList": [{"skuCode": "obs_sku", "price": "1.00", "quantity": 1}]}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert!(
        placed.status().is_server_error(),
        "an order without inventory is refused with a 5xx, got {}",
        placed.status()
    );
    let order_text = scrape_until(&http, &order_metrics, "http_client_failures_total").await;
    record("order", &order_text);
    let operator_text = scrape_until(
        &http,
        &operator_metrics,
        "shop_operator_reconcile_failures_total",
    )
    .await;
    assert!(
        operator_text.contains("shop_operator_api_writes_total"),
        "the operator wrote the Shop's objects:\n{operator_text}"
    );
    record("operator", &operator_text);

    let foreign: BTreeMap<&str, &str> = FOREIGN_METRICS.iter().copied().collect();

    // Every label a query filters or groups by is one Prometheus attaches to the target, or one
    // a metric of that query carries on its samples (a typo such as `by (code)` for `status`
    // draws one flat line and fails here).
    let mut unknown_labels = Vec::new();
    for (place, r) in &parsed {
        let mut known = target_labels();
        for m in &r.metrics {
            if let Some((_, labels)) = exported.get(m) {
                known.extend(labels.iter().map(String::as_str));
            }
            if foreign.contains_key(m.as_str()) {
                known.extend(FOREIGN_LABELS.iter().copied());
            }
        }
        for l in r.labels.iter().filter(|l| !known.contains(l.as_str())) {
            unknown_labels.push(format!("{l} (in {place}; known: {known:?})"));
        }
    }
    assert!(
        unknown_labels.is_empty(),
        "the chart's queries use labels nothing attaches:\n  {}",
        unknown_labels.join("\n  ")
    );

    let missing: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !exported.contains_key(*name) && !foreign.contains_key(name.as_str()))
        .map(|(name, places)| format!("{name} (read by {})", places.join("; ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the chart reads metrics no component exports:\n  {}\nexported: {:?}",
        missing.join("\n  "),
        exported.keys().collect::<Vec<_>>()
    );
    // The signals the issue names are each read by something (a dashboard panel or an alert).
    for signal in [
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "http_server_requests_in_flight",
        "order_outbox_pending",
        "notifications_stored_total",
        "circuit_breaker_state",
        "shop_operator_reconciles_total",
        "kube_pod_container_status_restarts_total",
    ] {
        assert!(wanted.contains_key(signal), "nothing reads {signal}");
    }
    let mut per_component: BTreeMap<&str, usize> = BTreeMap::new();
    for (m, (cs, _)) in &exported {
        if wanted.contains_key(m) {
            for c in cs.iter().collect::<BTreeSet<_>>() {
                *per_component.entry(c.as_str()).or_default() += 1;
            }
        }
    }
    eprintln!(
        "{} queries read {} metrics, all exported ({} by kube-state-metrics); per component: {per_component:?}",
        queries.len(),
        wanted.len(),
        wanted
            .keys()
            .filter(|m| foreign.contains_key(m.as_str()))
            .count()
    );
}
