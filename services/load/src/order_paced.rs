//! `shop-load order-paced` (formerly the order crate's `order-paced` binary): the paced order client of `hack/bench/orders.sh` (phase 3).
//!
//! Exists because the benchmark scripts must not carry Python (the product is Rust only): this is
//! the Rust port of the paced client that used to be embedded in the script. It places `count`
//! orders one at a time at `rate` orders/s (the original's body, rotating over `bench-sku-<i % skus>`),
//! collects their order numbers, then polls shop-notification's newest pages (`GET /api/notifications`)
//! for up to 90 s and, for each stored notification, takes the delay `createdAt - occurredAt` in ms
//! (shop-notification's clock minus shop-order's clock; same host).
//!
//! Prints exactly one line: `<found> <missing> <p50> <p99> <max>` (delays in ms, one decimal; `nan`
//! when nothing was found). Loopback targets only; bounded by `count` and by time (10 s per request,
//! 90 s of polling).
//!
//! Usage: `shop-load order-paced <order-url> <notification-url> <count> <rate-per-sec> <skus>`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::DateTime;
use reqwest::Url;
use serde_json::{Value, json};

/// Per-request timeout (the Python client's `urlopen(..., timeout=10)`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long notifications are polled for after the last order was placed.
const POLL_FOR: Duration = Duration::from_secs(90);
/// Pause between two polling rounds.
const POLL_PAUSE: Duration = Duration::from_millis(500);
/// Upper bound of `count` (bounded load).
const MAX_COUNT: u64 = 100_000;
/// Page size of one polling request (shop-notification's maximum).
const PAGE_SIZE: usize = 500;
/// Upper bound of `rate` in orders/s.
const MAX_RATE: f64 = 100_000.0;

/// Arguments (positional, in the order the benchmark script passes them).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base URL of shop-order, e.g. http://127.0.0.1:8082 (loopback only).
    order_url: String,
    /// Base URL of shop-notification, e.g. http://127.0.0.1:8084 (loopback only).
    notification_url: String,
    /// Number of orders to place (at most 100,000).
    count: u64,
    /// Orders per second (in (0, 100000]).
    rate: f64,
    /// Number of seeded SKUs: order i uses `bench-sku-<i % skus>` (at least 1).
    skus: u64,
}

/// Parses a base URL and refuses anything that is not a loopback HTTP target.
fn loopback_base(raw: &str, what: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).with_context(|| format!("{what} URL {raw:?}"))?;
    ensure!(
        url.scheme() == "http",
        "{what} URL must be http://, got {raw:?}"
    );
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    ensure!(
        loopback,
        "shop-load order-paced only targets loopback addresses; {what} URL is {raw:?}"
    );
    Ok(url)
}

/// Joins a path onto a base URL given as `http://host:port` (the script's form), keeping any base path.
fn endpoint(base: &Url, path: &str) -> anyhow::Result<Url> {
    let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
    Url::parse(&joined).with_context(|| format!("URL {joined:?}"))
}

/// An RFC 3339 timestamp as seconds since the epoch, computed like Python's
/// `datetime.fromisoformat(s).timestamp()`: whole microseconds divided by 10^6.
fn epoch_seconds(item: &Value, field: &str) -> anyhow::Result<f64> {
    let s = item
        .get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("notification has no string {field:?}: {item}"))?;
    let t = DateTime::parse_from_rfc3339(s).with_context(|| format!("{field} {s:?}"))?;
    // Exact: epoch microseconds are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    Ok(t.timestamp_micros() as f64 / 1e6)
}

/// The script's percentile: `sorted[min(n - 1, round_half_even(p / 100 * n + 0.5) - 1)]`, with a
/// negative index counting from the end as in Python; NaN when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let n = sorted.len();
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let rank = (p / 100.0 * n as f64 + 0.5).round_ties_even() as i64 - 1;
    let last = n - 1;
    let idx = match usize::try_from(rank) {
        Ok(i) => i.min(last),
        // Python's negative index (only reachable for p = 0): counts from the end.
        Err(_) => n.saturating_sub(usize::try_from(rank.unsigned_abs()).unwrap_or(n)),
    };
    sorted.get(idx).copied().unwrap_or(f64::NAN)
}

/// One decimal, `nan` for NaN (Python's `f"{x:.1f}"`).
fn one_decimal(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else {
        format!("{v:.1}")
    }
}

async fn get_json(req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let resp = req
        .send()
        .await
        .with_context(|| format!("{what}: request"))?
        .error_for_status()
        .with_context(|| format!("{what}: status"))?;
    resp.json::<Value>()
        .await
        .with_context(|| format!("{what}: JSON body"))
}

/// Places the orders, polls for their notifications and prints the one result line.
pub async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        (1..=MAX_COUNT).contains(&args.count),
        "count must be in [1, {MAX_COUNT}]"
    );
    ensure!(
        args.rate > 0.0 && args.rate <= MAX_RATE,
        "rate must be in (0, {MAX_RATE}]"
    );
    ensure!(args.skus >= 1, "skus must be at least 1");
    let order = loopback_base(&args.order_url, "order")?;
    let notif = loopback_base(&args.notification_url, "notification")?;
    let place_url = endpoint(&order, "/api/order")?;
    let list_url = endpoint(&notif, "/api/notifications")?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;

    // Place the orders one at a time on a fixed schedule.
    let mut numbers: Vec<String> = Vec::new();
    let start = Instant::now();
    for i in 0..args.count {
        let body = json!({"orderLineItemsDtoList": [
            {"skuCode": format!("bench-sku-{}", i % args.skus), "price": "19.99", "quantity": 1}
        ]});
        let placed = get_json(
            client.post(place_url.clone()).json(&body),
            "POST /api/order",
        )
        .await?;
        let Some(number) = placed.get("orderNumber").and_then(Value::as_str) else {
            bail!("POST /api/order answered without an orderNumber: {placed}");
        };
        numbers.push(number.to_owned());
        #[allow(clippy::cast_precision_loss)]
        let due = start + Duration::from_secs_f64((i + 1) as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
    }

    // Poll for the notifications, bounded by time. One round reads the newest pages
    // (`GET /api/notifications?page=P&size=500`, newest first) instead of one lookup per order:
    // FerretDB 1.24 filters `orderNumber` by scanning the collection, so 300 lookups against a store
    // that earlier runs filled took longer than the polling window (the 2026-12-06 run counted 184 of
    // 300 as missing although all were stored).
    let mut delays: Vec<f64> = Vec::with_capacity(numbers.len());
    let deadline = Instant::now() + POLL_FOR;
    let mut pending: std::collections::HashSet<String> = numbers.into_iter().collect();
    let pages = pending.len().div_ceil(PAGE_SIZE) + 1;
    while !pending.is_empty() && Instant::now() < deadline {
        for page in 0..pages {
            let mut url = list_url.clone();
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("size", &PAGE_SIZE.to_string());
            let items = get_json(client.get(url), "GET /api/notifications").await?;
            let Some(items) = items.as_array() else {
                bail!("GET /api/notifications answered without a JSON array");
            };
            for it in items {
                let Some(num) = it.get("orderNumber").and_then(Value::as_str) else {
                    continue;
                };
                if pending.remove(num) {
                    let created = epoch_seconds(it, "createdAt")?;
                    let occurred = epoch_seconds(it, "occurredAt")?;
                    delays.push((created - occurred) * 1000.0);
                }
            }
            if pending.is_empty() || items.len() < PAGE_SIZE {
                break;
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    delays.sort_by(f64::total_cmp);
    let max = delays.last().copied().unwrap_or(f64::NAN);
    println!(
        "{} {} {} {} {}",
        delays.len(),
        pending.len(),
        one_decimal(percentile(&delays, 50.0)),
        one_decimal(percentile(&delays, 99.0)),
        one_decimal(max)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_the_python_formula() {
        // Values checked against the script's Python: pct(p) on sorted lists.
        let one = [7.0];
        assert!((percentile(&one, 50.0) - 7.0).abs() < f64::EPSILON);
        assert!((percentile(&one, 99.0) - 7.0).abs() < f64::EPSILON);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        // 50/100*10 + 0.5 = 5.5 -> round half even 6 -> index 5.
        assert!((percentile(&ten, 50.0) - 6.0).abs() < f64::EPSILON);
        assert!((percentile(&ten, 99.0) - 10.0).abs() < f64::EPSILON);
        let four = [1.0, 2.0, 3.0, 4.0];
        // 2.5 -> 2 -> index 1.
        assert!((percentile(&four, 50.0) - 2.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 50.0).is_nan());
        // p = 0: round(0.5) = 0 -> index -1 -> the last element, as in Python.
        assert!((percentile(&four, 0.0) - 4.0).abs() < f64::EPSILON);
    }

    #[test]
    fn formats_like_python() {
        assert_eq!(one_decimal(f64::NAN), "nan");
        assert_eq!(one_decimal(1.25), "1.2");
        assert_eq!(one_decimal(12.0), "12.0");
    }

    #[test]
    fn timestamps_as_python_does() {
        let it = json!({"createdAt": "2026-01-02T03:04:05.123Z", "occurredAt": "2026-01-02T03:04:05.120456+00:00"});
        let d = (epoch_seconds(&it, "createdAt").unwrap_or(0.0)
            - epoch_seconds(&it, "occurredAt").unwrap_or(0.0))
            * 1000.0;
        assert!((d - 2.544).abs() < 1e-3, "{d}");
    }

    #[test]
    fn only_loopback() {
        assert!(loopback_base("http://127.0.0.1:8082", "order").is_ok());
        assert!(loopback_base("http://localhost:8082", "order").is_ok());
        assert!(loopback_base("http://10.0.0.1:8082", "order").is_err());
        assert!(loopback_base("https://127.0.0.1:8082", "order").is_err());
    }
}
