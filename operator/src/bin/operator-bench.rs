//! Operator benchmark driver (run by `hack/bench/operator.sh`, collected by `hack/bench.sh` into
//! docs/benchmarks.md). It exists so the benchmark is Rust like the rest of the product (it replaces a
//! Python script): it talks to the real kube-apiserver of the local stack and prints a markdown section
//! on stdout.
//!
//! Measures, against the real release `shop-operator` binary watching one fresh namespace:
//!   * time from creating 1 Shop to all its children existing (and to phase Available),
//!   * the same for 100 Shops created back to back,
//!   * operator RSS (VmRSS from /proc) idle and with the Shops reconciled,
//!   * API writes per minute at steady state (operator metrics) and objects changed in that window.
//!
//! Children and phases are counted from watches (metadata-only for the children), not by polling
//! lists: a list of 3,200 objects every 250 ms was a tenth of the API server's CPU during the
//! ramp (measured with its pprof, docs/benchmarks.md), load on what is being measured.
//!
//! Every wait is bounded by a deadline and an iteration count; only 127.0.0.1 is contacted. The
//! namespace it creates is deleted and the operator it starts is stopped (by pid) on every exit path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Deployments, Services (+ the registry peers Service), ConfigMaps (+ the fault flags'),
/// ServiceAccounts, NetworkPolicies.
const CHILDREN_PER_SHOP: usize = 6 + 7 + 7 + 6 + 6;
/// The operator-managed kinds that are counted: (group, version, kind, plural).
const KINDS: [(&str, &str, &str, &str); 5] = [
    ("apps", "v1", "Deployment", "deployments"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
];
const MANAGED: &str = "app.kubernetes.io/managed-by=shop-operator";
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than the 290 s after which the API server ends a watch (kube's default too).
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(295);

#[derive(Parser, Debug)]
#[command(
    name = "operator-bench",
    about = "Benchmarks the release shop-operator against the local control plane; prints markdown"
)]
struct Args {
    /// Kubeconfig of the local stack (default: <repo>/.state/kubeconfig).
    #[arg(long, env = "SHOP_TEST_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The operator binary (default: <repo>/target/release/shop-operator).
    #[arg(long, env = "SHOP_OPERATOR_BIN")]
    operator_bin: Option<PathBuf>,
    /// Shops created in the "many" case.
    #[arg(long, env = "SHOP_BENCH_SHOPS", default_value_t = 100)]
    shops: usize,
    /// Length of the steady-state window, in seconds.
    #[arg(long, env = "SHOP_BENCH_STEADY_SECS", default_value_t = 60)]
    steady_secs: u64,
}

/// Times of one case, from the first Shop create.
struct Case {
    posted: Duration,
    children: Duration,
    available: Duration,
}

/// Everything printed.
struct Results {
    one: Case,
    many: Case,
    rss_idle_kib: u64,
    rss_many_kib: u64,
    writes_window: f64,
    reconciles_window: f64,
    changed: usize,
    watched: usize,
    total_writes: f64,
}

/// API handles for one namespace, and what its watches have seen so far.
struct Cluster {
    ns: String,
    shops: Api<DynamicObject>,
    /// The Shops again, for the watch.
    shops_watched: Api<DynamicObject>,
    /// The counted kinds, metadata only, on the watch client (watched, and listed twice).
    kinds: Vec<(&'static str, Api<PartialObjectMeta<DynamicObject>>)>,
    seen: Arc<Mutex<Seen>>,
}

/// The state of the namespace as the watches last reported it.
#[derive(Default)]
struct Seen {
    /// `plural/name` of every operator-managed child.
    children: BTreeSet<String>,
    /// Shop name → phase (empty before the first status).
    phases: BTreeMap<String, String>,
}

impl Cluster {
    /// `watcher` serves the watches (its read timeout outlasts an idle watch).
    fn new(client: &kube::Client, watcher: &kube::Client, ns: &str) -> Self {
        let shop_ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("shopkeeper.dev", "v1alpha1", "Shop"),
            "shops",
        );
        let kinds = KINDS
            .iter()
            .map(|(group, version, kind, plural)| {
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
                (*plural, Api::namespaced_with(watcher.clone(), ns, &ar))
            })
            .collect();
        Self {
            ns: ns.to_owned(),
            shops: Api::namespaced_with(client.clone(), ns, &shop_ar),
            shops_watched: Api::namespaced_with(watcher.clone(), ns, &shop_ar),
            kinds,
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one watch per counted kind (metadata only, the managed label) and one on the
    /// Shops, feeding [`Seen`]; returns once every watch has listed what exists. The caller
    /// aborts the returned tasks when it has counted enough.
    async fn watch(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(KINDS.len() + 1);
        for (plural, api) in &self.kinds {
            let stream = watcher::watcher(api.clone(), watcher::Config::default().labels(MANAGED));
            let (seen, ready, plural) = (self.seen.clone(), ready_tx.clone(), *plural);
            tasks.push(tokio::spawn(follow(
                stream,
                seen,
                ready,
                move |seen, ev| {
                    let key = |m: &kube::core::ObjectMeta| {
                        format!("{plural}/{}", m.name.as_deref().unwrap_or_default())
                    };
                    match ev {
                        Change::Put(o) => {
                            seen.children.insert(key(&o.metadata));
                        }
                        Change::Gone(o) => {
                            seen.children.remove(&key(&o.metadata));
                        }
                    }
                },
            )));
        }
        let stream = watcher::watcher(self.shops_watched.clone(), watcher::Config::default());
        let (seen, ready) = (self.seen.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(follow(
            stream,
            seen,
            ready,
            |seen, ev| match ev {
                Change::Put(o) => {
                    let phase = o.data.pointer("/status/phase").and_then(|p| p.as_str());
                    seen.phases.insert(
                        o.metadata.name.clone().unwrap_or_default(),
                        phase.unwrap_or_default().to_owned(),
                    );
                }
                Change::Gone(o) => {
                    seen.phases
                        .remove(o.metadata.name.as_deref().unwrap_or_default());
                }
            },
        )));
        drop(ready_tx);
        for _ in 0..=KINDS.len() {
            tokio::time::timeout(API_TIMEOUT, ready_rx.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "the watches in {} did not list within {API_TIMEOUT:?}",
                        self.ns
                    )
                })?;
        }
        Ok(tasks)
    }

    /// `plural/name` → resourceVersion of every operator-managed object in the namespace.
    async fn children(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let lp = ListParams::default().labels(MANAGED);
        for (plural, api) in &self.kinds {
            let list = api
                .list(&lp)
                .await
                .with_context(|| format!("listing {plural} in {}", self.ns))?;
            for o in list.items {
                let name = o.metadata.name.unwrap_or_default();
                let rv = o.metadata.resource_version.unwrap_or_default();
                out.insert(format!("{plural}/{name}"), rv);
            }
        }
        Ok(out)
    }

    /// Children of the Shops named `prefix*` the watches have seen.
    fn count_children(&self, prefix: &str) -> usize {
        self.seen()
            .children
            .iter()
            .filter(|k| k.split('/').nth(1).is_some_and(|n| n.starts_with(prefix)))
            .count()
    }

    /// Shops named `prefix*` in phase Available, as the watch last reported them.
    fn count_available(&self, prefix: &str) -> usize {
        self.seen()
            .phases
            .iter()
            .filter(|(n, p)| n.starts_with(prefix) && p.as_str() == "Available")
            .count()
    }

    async fn create_shop(&self, name: &str) -> anyhow::Result<()> {
        let shop: DynamicObject = serde_json::from_value(shop(name)?).context("building a Shop")?;
        self.shops
            .create(&PostParams::default(), &shop)
            .await
            .with_context(|| format!("creating Shop {}/{name}", self.ns))?;
        Ok(())
    }

    /// Creates `n` Shops back to back, then waits for their children and for phase Available.
    async fn run_case(&self, n: usize, prefix: &str) -> anyhow::Result<Case> {
        let t0 = Instant::now();
        for i in 0..n {
            self.create_shop(&format!("{prefix}{i}")).await?;
        }
        let posted = t0.elapsed();
        let want = n * CHILDREN_PER_SHOP;
        // Polls memory only (the watches fill it), so a short interval costs the server nothing.
        wait(
            &format!("{want} children"),
            Duration::from_secs(300),
            Duration::from_millis(20),
            async || Ok(self.count_children(prefix) >= want),
        )
        .await?;
        let children = t0.elapsed();
        eprintln!(
            "operator-bench: {n} Shop(s): all {want} children after {:.1} s",
            children.as_secs_f64()
        );
        wait(
            &format!("{n} Shops Available"),
            Duration::from_secs(600),
            Duration::from_millis(20),
            async || Ok(self.count_available(prefix) >= n),
        )
        .await?;
        eprintln!(
            "operator-bench: {n} Shop(s): all Available after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        Ok(Case {
            posted,
            children,
            available: t0.elapsed(),
        })
    }
}

/// A benchmark Shop. Its images do not exist: it is placed on the kwok fake node, which reports
/// the pods Ready without running them (on the real node they would never become Ready).
fn shop(name: &str) -> anyhow::Result<serde_json::Value> {
    let placement = serde_json::to_value(shop_operator::crd::PlacementSpec::kwok())
        .context("serialising the kwok placement")?;
    Ok(json!({
        "apiVersion": "shopkeeper.dev/v1alpha1", "kind": "Shop", "metadata": {"name": name},
        "spec": {
            "image": {"repository": "bench.local", "tag": "1.0.0"},
            "backing": {
                "mysql": {"urlSecretRef": {"name": "db", "key": "url"}},
                "mongodb": {"urlSecretRef": {"name": "mongo", "key": "url"}},
                "kafka": {"bootstrapServers": "kafka:9092"},
                // External like the others: a managed store per Shop is not what this measures.
                "zipkin": {"endpoint": "http://zipkin:9411/api/v2/spans"}
            },
            "placement": placement
        }
    }))
}

/// Polls `pred` every `interval` until it holds; fails after `deadline` (and never loops more than
/// `deadline / interval + 1` times, however slow a poll is).
async fn wait(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut pred: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    let max_polls = deadline.as_millis() / interval.as_millis().max(1) + 1;
    for _ in 0..max_polls {
        if Instant::now() >= end {
            break;
        }
        if pred().await? {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
    bail!("timed out after {}s waiting for {what}", deadline.as_secs())
}

/// One watch event as [`Cluster::watch`] applies it to [`Seen`].
enum Change<K> {
    Put(K),
    Gone(K),
}

/// Applies a watch stream's events to `seen` with `apply`; says `ready` once the initial list is
/// in. An error is said on stderr and the watch goes on after a backoff, from the last version it
/// saw or with a relist (which re-adds what exists; the cases only create, so a delete missed in
/// a relist cannot make a count).
async fn follow<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    seen: Arc<Mutex<Seen>>,
    ready: tokio::sync::mpsc::Sender<()>,
    apply: impl Fn(&mut Seen, Change<K>),
) {
    let mut stream = std::pin::pin!(stream.default_backoff());
    while let Some(ev) = stream.next().await {
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                apply(&mut s, Change::Put(o))
            }
            Ok(watcher::Event::Delete(o)) => apply(&mut s, Change::Gone(o)),
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => {
                // The channel has room for every watch's first list; a relist needs no signal.
                let _ = ready.try_send(());
            }
            Err(e) => eprintln!("operator-bench: watch restarted: {e}"),
        }
    }
}

/// A plain HTTP/1.0 GET to the operator's admin server on loopback: (status, body).
async fn http_get(port: u16, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow!("GET 127.0.0.1:{port}{path}: no answer in {timeout:?}"))?
        .with_context(|| format!("GET 127.0.0.1:{port}{path}"))?;
    let text = String::from_utf8(raw).context("admin server response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: malformed response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: no status code in {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, dechunk(body)?));
    }
    Ok((status, body.to_owned()))
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    for _ in 0..=body.len() {
        let (size, rest) = body.split_once("\r\n").context("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).context("truncated chunk")?;
        out.push_str(chunk);
        body = rest.get(size + 2..).unwrap_or("");
    }
    bail!("malformed chunked body")
}

/// Sum of every sample whose line starts with `name` on the operator's /metrics.
async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let (status, text) = http_get(port, "/metrics", Duration::from_secs(5)).await?;
    if status != 200 {
        bail!("GET /metrics: HTTP {status}");
    }
    let mut sum = 0.0;
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let value = line.rsplit(' ').next().unwrap_or("");
        sum += value
            .parse::<f64>()
            .with_context(|| format!("metric line {line:?}"))?;
    }
    Ok(sum)
}

async fn ready(port: u16) -> bool {
    matches!(
        http_get(port, "/readyz", Duration::from_secs(1)).await,
        Ok((200, _))
    )
}

/// VmRSS of `pid` in KiB (0 when the line is missing).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.split_whitespace().next().unwrap_or("");
            return kib.parse().with_context(|| format!("VmRSS line {line:?}"));
        }
    }
    Ok(0)
}

fn free_port() -> anyhow::Result<u16> {
    let l =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A client whose reads time out after `read_timeout` (a watch's must outlast the server's 290 s
/// watch timeout, or an idle watch breaks).
async fn client(kubeconfig: &Path, read_timeout: Duration) -> anyhow::Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    config.connect_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(read_timeout);
    config.write_timeout = Some(API_TIMEOUT);
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Server-side applies crds/shop.yaml with field manager `shop-bench`, forced.
async fn apply_crd(client: &kube::Client, root: &Path) -> anyhow::Result<()> {
    let path = root.join("crds/shop.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let name = crd
        .metadata
        .name
        .clone()
        .context("the CRD has no metadata.name")?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("shop-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", path.display()))?;
    Ok(())
}

/// The measurement proper, with the operator already spawned.
async fn measure(
    cluster: &Cluster,
    port: u16,
    pid: u32,
    shops: usize,
    steady_secs: u64,
) -> anyhow::Result<Results> {
    wait(
        "operator /readyz",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || Ok(ready(port).await),
    )
    .await?;
    let rss_idle_kib = rss_kib(pid)?;
    let tasks = cluster.watch().await?;
    let cases = async {
        let one = cluster.run_case(1, "one-").await?;
        let many = cluster.run_case(shops, "many-").await?;
        anyhow::Ok((one, many))
    }
    .await;
    tasks.iter().for_each(|t| t.abort());
    let (one, many) = cases?;
    tokio::time::sleep(Duration::from_secs(5)).await; // trailing Deployment status events settle
    let rss_many_kib = rss_kib(pid)?;
    let w0 = metric(port, "shop_operator_api_writes_total").await?;
    let r0 = metric(port, "shop_operator_reconciles_total").await?;
    let rv0 = cluster.children().await?;
    tokio::time::sleep(Duration::from_secs(steady_secs)).await;
    let w1 = metric(port, "shop_operator_api_writes_total").await?;
    let r1 = metric(port, "shop_operator_reconciles_total").await?;
    let rv1 = cluster.children().await?;
    let changed = rv0.iter().filter(|(k, v)| rv1.get(*k) != Some(*v)).count();
    let total_writes = metric(port, "shop_operator_api_writes_total").await?;
    Ok(Results {
        one,
        many,
        rss_idle_kib,
        rss_many_kib,
        writes_window: w1 - w0,
        reconciles_window: r1 - r0,
        changed,
        watched: rv0.len(),
        total_writes,
    })
}

/// SIGTERM to the operator we started (by pid), SIGKILL if it has not exited after 15 s.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn print(r: &Results, shops: usize, steady_secs: u64) {
    let per_min = 60.0 / steady_secs as f64;
    let all = shops + 1;
    println!("## Operator (shop-operator)\n");
    println!(
        "Command: `hack/bench/operator.sh` — the release `shop-operator` binary on the host, watching one fresh namespace of the"
    );
    println!(
        "local control plane (kube-apiserver + controller-manager + scheduler + kwok); Shops placed on the kwok node"
    );
    println!(
        "(`spec.placement`: its pods are reported Ready without running) and created through the API,"
    );
    println!(
        "children ({CHILDREN_PER_SHOP} managed objects per Shop) and phases counted from watches. No peer operator is"
    );
    println!("named by the issue; the goal for steady-state writes is 0.\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| 1 Shop: apply → all {CHILDREN_PER_SHOP} children exist | {:.0} ms |",
        r.one.children.as_secs_f64() * 1000.0
    );
    println!(
        "| 1 Shop: apply → phase Available (kwok pods Ready) | {:.0} ms |",
        r.one.available.as_secs_f64() * 1000.0
    );
    println!(
        "| {shops} Shops: first apply → all {} children exist | {:.1} s (creating the Shops took {:.1} s) |",
        shops * CHILDREN_PER_SHOP,
        r.many.children.as_secs_f64(),
        r.many.posted.as_secs_f64()
    );
    println!(
        "| {shops} Shops: first apply → all Available | {:.1} s |",
        r.many.available.as_secs_f64()
    );
    println!(
        "| operator RSS idle / with {all} Shops | {:.1} MiB / {:.1} MiB |",
        r.rss_idle_kib as f64 / 1024.0,
        r.rss_many_kib as f64 / 1024.0
    );
    println!(
        "| API writes per minute at steady state ({steady_secs} s window) | {:.1} (reconciles: {:.1}/min) |",
        r.writes_window * per_min,
        r.reconciles_window * per_min
    );
    println!(
        "| managed objects changed during that window | {} of {} |",
        r.changed, r.watched
    );
    println!(
        "| total API writes for {all} Shops (apply + status + delete) | {:.0} |",
        r.total_writes
    );
    println!();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A workspace build enables both rustls providers, so pick one before the first TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    if args.shops == 0 || args.steady_secs == 0 {
        bail!("SHOP_BENCH_SHOPS and SHOP_BENCH_STEADY_SECS must be at least 1");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the operator crate has no parent directory")?
        .to_path_buf();
    let kubeconfig = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| root.join(".state/kubeconfig"));
    let bin = args
        .operator_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/shop-operator"));
    if !bin.exists() {
        bail!(
            "{} not built: cargo build --release -p shop-operator",
            bin.display()
        );
    }

    let watch_client = client(&kubeconfig, WATCH_READ_TIMEOUT).await?;
    let client = client(&kubeconfig, API_TIMEOUT).await?;
    apply_crd(&client, &root).await?;
    let namespaces = Api::<Namespace>::all(client.clone());
    // A namespace of an earlier run still being deleted (3,200 objects and 600 pods for the
    // garbage collector, minutes on a busy cluster) would load the API server this run measures.
    settle(&namespaces).await?;
    let ns = format!("{NS_PREFIX}{:08x}", rand::random::<u32>());
    let namespace: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .context("building the Namespace")?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    // The Secrets the Shops' external stores name (the operator reports SecretMissing without
    // them); kwok runs no container, so the URLs are stand-ins.
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    for name in ["db", "mongo"] {
        let secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"url": "stand-in://bench"}
        }))
        .context("building a Secret")?;
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("creating Secret {name} in {ns}"))?;
    }

    let clients = (&client, &watch_client);
    let outcome = run(clients, &root, &kubeconfig, &bin, &ns, &args).await;
    if let Err(e) = namespaces.delete(&ns, &DeleteParams::default()).await {
        eprintln!("operator-bench: deleting namespace {ns}: {e}");
    }
    // Gone before this run reports, so the next run (or whatever comes next) starts quiet.
    if let Err(e) = settle(&namespaces).await {
        eprintln!("operator-bench: {e:#}");
    }
    let results = outcome?;
    print(&results, args.shops, args.steady_secs);
    Ok(())
}

/// Prefix of the namespaces the benchmark creates.
const NS_PREFIX: &str = "bench-op-";

/// Waits until no benchmark namespace is left (being deleted), saying so on stderr every 10 s;
/// fails after 10 minutes naming them.
async fn settle(namespaces: &Api<Namespace>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut said = Duration::ZERO;
    loop {
        let left: Vec<String> = namespaces
            .list_metadata(&ListParams::default())
            .await
            .context("listing namespaces")?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| n.starts_with(NS_PREFIX))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        let waited = started.elapsed();
        if waited > Duration::from_secs(600) {
            bail!("benchmark namespaces still there after 10 min: {left:?}");
        }
        if waited >= said {
            eprintln!(
                "operator-bench: waiting for {} to be deleted ({}s)",
                left.join(", "),
                waited.as_secs()
            );
            said += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Spawns the operator, measures (Ctrl-C aborts), and always stops the operator.
async fn run(
    (client, watch_client): (&kube::Client, &kube::Client),
    root: &Path,
    kubeconfig: &Path,
    bin: &Path,
    ns: &str,
    args: &Args,
) -> anyhow::Result<Results> {
    let port = free_port()?;
    let log_path = root
        .join(".state/logs")
        .join(format!("bench-operator-{ns}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = tokio::process::Command::new(bin)
        .args([
            "run",
            "--watch-namespace",
            ns,
            "--admin-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let outcome = match child.id() {
        None => Err(anyhow!("{} exited at once", bin.display())),
        Some(pid) => {
            let cluster = Cluster::new(client, watch_client, ns);
            tokio::select! {
                r = measure(&cluster, port, pid, args.shops, args.steady_secs) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            }
        }
    };
    stop(&mut child).await;
    outcome.with_context(|| format!("operator log: {}", log_path.display()))
}
