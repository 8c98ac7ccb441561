//! `shop-load mix`: drives a shop the way its users do, through the gateway, at a fixed arrival
//! rate: browsing the catalogue, searching it, placing orders and watching the notification
//! stream, in the proportions `--mix` asks for; then reports what was achieved against the
//! target, latency percentiles per route and errors by type, as text and (`--json`) as JSON.
//!
//! It exists so that "how does the shop hold up under a realistic load" is one command against
//! any running shop (`make up`'s, a kind cluster's, the host processes of the tests), instead of
//! each benchmark's own single-route driver. The schedule is open-loop and every latency is
//! counted from the request's due time (see [`schedule`]), so a stalled shop cannot hide its
//! delay by slowing the generator down. Ctrl-C stops the schedule, gives the requests in flight a
//! moment, and prints the report of what ran.

pub mod report;
pub mod schedule;
pub mod spec;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Client, StatusCode, Url};
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use report::{Outcome, RunFacts, Sample, Tally};
use spec::{Mix, Route};

/// How long the requests in flight get to finish after Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The scopes of a token minted with `--jwt-secret` (every scope of the default routes).
const SCOPES: &str = "orders:write products:write inventory:write";
/// Nouns of the seeded products' names: the search route looks for them.
const NOUNS: [&str; 4] = ["widget", "gadget", "gizmo", "sprocket"];

/// Arguments of `shop-load mix`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    gateway: String,
    /// Target arrival rate, requests per second, in (0, 10000].
    #[arg(long)]
    rate: f64,
    /// How long to send for: 30 (seconds), 30s, 500ms, 2m, 1h (at most 24h).
    #[arg(long, value_parser = spec::parse_duration)]
    duration: Duration,
    /// A gateway JWT (with the orders:write and products:write scopes) for orders and seeding.
    #[arg(long, conflicts_with = "jwt_secret")]
    token: Option<String>,
    /// Mint the JWT from the gateway's HS256 secret instead (its SHOP_JWT_SECRET).
    #[arg(long)]
    jwt_secret: Option<String>,
    /// The routes and their weights: browse, search, order, stream (left out: 0).
    #[arg(long, default_value = "browse=60,search=20,order=15,stream=5", value_parser = parse_mix)]
    mix: Mix,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Products to create (with stock) before the run; 0 uses the catalogue's first page as it is.
    #[arg(long, default_value_t = 4)]
    seed_products: u32,
    /// Stock of each seeded product.
    #[arg(long, default_value_t = 1_000_000)]
    seed_stock: u64,
    /// How long each stream request holds the notification stream open, e.g. 3s.
    #[arg(long, default_value = "3s", value_parser = spec::parse_duration)]
    stream_for: Duration,
    /// Per-request timeout (a stream's is for its answer's head), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = spec::parse_duration)]
    timeout: Duration,
    /// Requests in flight at most; a due request waits for a slot, and the wait counts in its
    /// latency.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse::<Mix>().map_err(|e| e.to_string())
}

/// A product the run browses and orders.
#[derive(Debug, Clone)]
struct Product {
    id: String,
    sku: String,
    price: String,
}

/// What every request task shares.
#[derive(Debug)]
struct Ctx {
    http: Client,
    gateway: String,
    token: Option<String>,
    products: Vec<Product>,
    words: Vec<String>,
    stream_for: Duration,
    timeout: Duration,
    slots: tokio::sync::Semaphore,
    cancel: CancellationToken,
}

/// Runs the mix and prints its report; `Ok(true)` when Ctrl-C stopped it.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    ensure!(
        args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0,
        "--rate must be in (0, 10000], not {}",
        args.rate
    );
    ensure!(
        (1..=100_000).contains(&args.max_in_flight),
        "--max-in-flight must be in [1, 100000]"
    );
    ensure!(
        args.seed_products <= 1000,
        "--seed-products is at most 1000"
    );
    let url = Url::parse(&args.gateway)
        .with_context(|| format!("--gateway {:?} is not a URL", args.gateway))?;
    ensure!(
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
        "--gateway must be an http:// or https:// URL, not {:?}",
        args.gateway
    );
    let scheduled = schedule::arrivals(args.rate, args.duration);
    ensure!(
        scheduled > 0,
        "--rate {} for --duration {:?} schedules no request",
        args.rate,
        args.duration
    );
    let token = match (&args.token, &args.jwt_secret) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(secret)) => Some(mint(secret, args.duration)?),
        (None, None) => None,
    };
    if token.is_none() && (args.mix.weight(Route::Order) > 0 || args.seed_products > 0) {
        bail!(
            "orders and seeding need a token: give --token or --jwt-secret (or --mix without order \
             and --seed-products 0)"
        );
    }
    let http = Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()
        .context("building the HTTP client")?;
    let gateway = args.gateway.trim_end_matches('/').to_owned();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let products = if args.seed_products > 0 {
        let token = token.as_deref().unwrap_or_default();
        seed(
            &http,
            &gateway,
            token,
            &tag,
            args.seed_products,
            args.seed_stock,
        )
        .await?
    } else {
        catalogue(&http, &gateway).await?
    };
    let needs_products = args.mix.weight(Route::Order) > 0;
    ensure!(
        !(needs_products && products.is_empty()),
        "the catalogue is empty, so there is nothing to order: seed products with --seed-products N"
    );
    let mut words: Vec<String> = NOUNS.iter().map(|w| (*w).to_owned()).collect();
    if args.seed_products > 0 {
        words.push(tag.clone());
    }
    let ctx = Arc::new(Ctx {
        http,
        gateway,
        token,
        products,
        words,
        stream_for: args.stream_for,
        timeout: args.timeout,
        slots: tokio::sync::Semaphore::new(args.max_in_flight),
        cancel: CancellationToken::new(),
    });
    drive(&ctx, &args, scheduled).await
}

/// A development token from the gateway's own minting code.
fn mint(secret: &str, duration: Duration) -> anyhow::Result<String> {
    ensure!(!secret.is_empty(), "--jwt-secret is empty");
    let t = shop_gateway::auth::DevToken {
        sub: "shop-load".to_owned(),
        scopes: SCOPES.split(' ').map(str::to_owned).collect(),
        ttl: duration + Duration::from_secs(3600),
        ..Default::default()
    };
    shop_gateway::auth::mint_hs256(secret.as_bytes(), &t).context("minting a token")
}

/// Creates `n` products with stock through the gateway and waits until inventory has it.
async fn seed(
    http: &Client,
    gateway: &str,
    token: &str,
    tag: &str,
    n: u32,
    stock: u64,
) -> anyhow::Result<Vec<Product>> {
    let mut products = Vec::new();
    for k in 0..n {
        let noun = NOUNS[k as usize % NOUNS.len()];
        let sku = format!("load-{tag}-{k}");
        let body = json!({
            "name": format!("Load {noun} {tag} {k}"),
            "description": format!("a {noun} made by shop-load mix"),
            "price": "9.99", "skuCode": sku, "quantity": stock,
        });
        let r = http
            .post(format!("{gateway}/api/product"))
            .bearer_auth(token)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("seeding: POST {gateway}/api/product"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        ensure!(
            status == StatusCode::CREATED,
            "seeding: POST /api/product answered {status}: {text}"
        );
        let v: Value = serde_json::from_str(&text).context("seeding: the created product")?;
        let id = v["id"]
            .as_str()
            .with_context(|| format!("seeding: the created product has no id: {text}"))?;
        products.push(Product {
            id: id.to_owned(),
            sku,
            price: v["price"].as_str().unwrap_or("9.99").to_owned(),
        });
    }
    // Product hands the stock to inventory in the background: orders need it there.
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in &products {
        loop {
            let url = format!("{gateway}/api/inventory?skuCode={}", p.sku);
            let available = match http.get(&url).timeout(Duration::from_secs(5)).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v[0]["availableQuantity"].as_u64()),
                Err(_) => None,
            };
            if available.is_some_and(|a| a > 0) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "seeding: inventory has no stock of {} after 30 s",
                p.sku
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(products)
}

/// The catalogue's first page, when nothing is seeded.
async fn catalogue(http: &Client, gateway: &str) -> anyhow::Result<Vec<Product>> {
    let url = format!("{gateway}/api/product?page=0&size=50");
    let r = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(r.status().is_success(), "GET {url} answered {}", r.status());
    let v: Value = r.json().await.with_context(|| format!("GET {url}: JSON"))?;
    Ok(v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| {
                    Some(Product {
                        id: p["id"].as_str()?.to_owned(),
                        sku: p["skuCode"].as_str()?.to_owned(),
                        price: p["price"].as_str()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The run itself: the schedule, the progress bar, Ctrl-C, the report.
async fn drive(ctx: &Arc<Ctx>, args: &Args, scheduled: u64) -> anyhow::Result<bool> {
    let bar = ProgressBar::new(scheduled);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} sent, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(100);
    let scheduler = tokio::spawn(schedule_requests(
        ctx.clone(),
        args.mix.clone(),
        args.rate,
        scheduled,
        t0,
        tx,
        sent.clone(),
        bar.clone(),
    ));
    let mut tally = Tally::new(&args.mix);
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => tally.record(s),
                None => break,
            },
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                ctx.cancel.cancel();
                bar.suspend(|| {
                    eprintln!("shop-load: Ctrl-C: stopping; the requests in flight get 2 s");
                });
            }
            _ = tick.tick() => {
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                #[allow(clippy::cast_precision_loss)]
                let rate = sent.load(Ordering::Relaxed) as f64 / secs;
                bar.set_message(format!("{rate:.1}/s, {} errors", tally.errors()));
            }
        }
    }
    let last_send = scheduler.await.context("the scheduler")?;
    bar.finish_and_clear();
    let sent = sent.load(Ordering::Relaxed);
    let send_window = last_send.map_or(Duration::ZERO, |at| {
        at.saturating_duration_since(t0) + Duration::from_secs_f64(1.0 / args.rate)
    });
    let report = tally.report(&RunFacts {
        rate: args.rate,
        duration: args.duration,
        mix: args.mix.clone(),
        scheduled,
        sent,
        send_window,
        elapsed: t0.elapsed(),
        interrupted,
    });
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("the JSON report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
    }
    Ok(interrupted)
}

/// Sends each request at its due time until the schedule ends or the run is cancelled; returns
/// when the last request went out.
#[allow(clippy::too_many_arguments)]
async fn schedule_requests(
    ctx: Arc<Ctx>,
    mix: Mix,
    rate: f64,
    scheduled: u64,
    t0: Instant,
    tx: mpsc::UnboundedSender<Sample>,
    sent: Arc<AtomicU64>,
    bar: ProgressBar,
) -> Option<Instant> {
    let mut picker = schedule::Picker::new(&mix);
    let mut last = None;
    for i in 0..scheduled {
        let due = t0 + schedule::due(i, rate);
        tokio::select! {
            () = ctx.cancel.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let route = picker.next_route();
        let (ctx, tx) = (ctx.clone(), tx.clone());
        tokio::spawn(async move {
            let sample = one(&ctx, route, i, due).await;
            let _ = tx.send(sample);
        });
        sent.fetch_add(1, Ordering::Relaxed);
        bar.inc(1);
        last = Some(Instant::now());
    }
    last
}

/// One request of `route`, due at `due`; stopped `STOP_GRACE` after a Ctrl-C.
async fn one(ctx: &Ctx, route: Route, i: u64, due: Instant) -> Sample {
    let mut sample = Sample {
        route,
        outcome: Outcome::Interrupted,
        latency: Duration::ZERO,
        send_lag: Duration::ZERO,
        order_number: None,
        events: 0,
    };
    let stopped = async {
        ctx.cancel.cancelled().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        () = stopped => {}
        () = async {
            let Ok(_slot) = ctx.slots.acquire().await else { return };
            sample.send_lag = due.elapsed();
            match route {
                Route::Browse => browse(ctx, i, due, &mut sample).await,
                Route::Search => search(ctx, i, due, &mut sample).await,
                Route::Order => order(ctx, i, due, &mut sample).await,
                Route::Stream => stream(ctx, due, &mut sample).await,
            }
        } => {}
    }
    sample
}

/// A transport error as an outcome.
fn failed(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Transport
    }
}

/// Sends `req`, reads the whole answer, and fills in the outcome and latency; returns the body
/// of a 2xx answer.
async fn exchange(
    req: reqwest::RequestBuilder,
    due: Instant,
    sample: &mut Sample,
) -> Option<Vec<u8>> {
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(body) => {
                    sample.latency = due.elapsed();
                    sample.outcome = Outcome::Status(status);
                    (200..300).contains(&status).then(|| body.to_vec())
                }
                Err(e) => {
                    sample.outcome = failed(&e);
                    None
                }
            }
        }
        Err(e) => {
            sample.outcome = failed(&e);
            None
        }
    }
}

async fn browse(ctx: &Ctx, i: u64, due: Instant, sample: &mut Sample) {
    // Half the browsing looks at a page of the catalogue, half at one product.
    let url = match ctx.products.get(pick(i / 2, ctx.products.len())) {
        Some(p) if i % 2 == 1 => format!("{}/api/product/{}", ctx.gateway, p.id),
        _ => format!("{}/api/product?page=0&size=20", ctx.gateway),
    };
    exchange(ctx.http.get(url).timeout(ctx.timeout), due, sample).await;
}

async fn search(ctx: &Ctx, i: u64, due: Instant, sample: &mut Sample) {
    let word = ctx
        .words
        .get(pick(i, ctx.words.len()))
        .map_or("widget", String::as_str);
    let q: String = form_urlencoded::byte_serialize(word.as_bytes()).collect();
    let url = format!("{}/api/product?q={q}", ctx.gateway);
    exchange(ctx.http.get(url).timeout(ctx.timeout), due, sample).await;
}

async fn order(ctx: &Ctx, i: u64, due: Instant, sample: &mut Sample) {
    let Some(p) = ctx.products.get(pick(i, ctx.products.len())) else {
        return;
    };
    let body =
        json!({"orderLineItemsDtoList": [{"skuCode": p.sku, "price": p.price, "quantity": 1}]});
    let req = ctx
        .http
        .post(format!("{}/api/order", ctx.gateway))
        .bearer_auth(ctx.token.as_deref().unwrap_or_default())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .timeout(ctx.timeout);
    if let Some(body) = exchange(req, due, sample).await
        && sample.outcome == Outcome::Status(201)
    {
        sample.order_number = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["orderNumber"].as_str().map(str::to_owned));
    }
}

async fn stream(ctx: &Ctx, due: Instant, sample: &mut Sample) {
    let url = format!("{}/api/notifications/stream", ctx.gateway);
    let req = ctx
        .http
        .get(url)
        .header("Accept", "text/event-stream")
        .timeout(ctx.timeout + ctx.stream_for + Duration::from_secs(5));
    let resp = match tokio::time::timeout(ctx.timeout, req.send()).await {
        Err(_) => {
            sample.outcome = Outcome::Timeout;
            return;
        }
        Ok(Err(e)) => {
            sample.outcome = failed(&e);
            return;
        }
        Ok(Ok(r)) => r,
    };
    sample.latency = due.elapsed();
    let status = resp.status().as_u16();
    sample.outcome = Outcome::Status(status);
    if !(200..300).contains(&status) {
        let _ = resp.bytes().await;
        return;
    }
    let until = Instant::now() + ctx.stream_for;
    let mut body = resp.bytes_stream();
    let mut pending = String::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => break,
            () = ctx.cancel.cancelled() => break,
            chunk = body.next() => match chunk {
                Some(Ok(bytes)) => {
                    pending.push_str(&String::from_utf8_lossy(&bytes));
                    sample.events += count_events(&mut pending);
                }
                Some(Err(_)) => {
                    sample.outcome = Outcome::Transport;
                    break;
                }
                None => break,
            },
        }
    }
}

/// Counts the complete `event: notification` lines at the start of `pending` and keeps the
/// unfinished last line.
fn count_events(pending: &mut String) -> u64 {
    let Some(end) = pending.rfind('\n') else {
        return 0;
    };
    let n = pending[..end]
        .lines()
        .filter(|l| l.trim_end() == "event: notification" || l.trim_end() == "event:notification")
        .count();
    pending.drain(..=end);
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Index `i` into a list of `len` (0 when empty).
fn pick(i: u64, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        usize::try_from(i % len as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_counted_across_chunk_boundaries() {
        let mut p = String::new();
        p.push_str(": connected\n\nevent: notifi");
        assert_eq!(count_events(&mut p), 0);
        p.push_str("cation\nid: 1\ndata: {}\n\nevent: notification\r\n");
        assert_eq!(count_events(&mut p), 2);
        assert_eq!(p, "");
        p.push_str("event: lagged\ndata: 3\n\n");
        assert_eq!(count_events(&mut p), 0);
    }

    #[test]
    fn pick_wraps_and_tolerates_empty_lists() {
        assert_eq!(pick(5, 4), 1);
        assert_eq!(pick(5, 0), 0);
    }
}
