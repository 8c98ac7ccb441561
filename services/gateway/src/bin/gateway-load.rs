//! gateway-load: a small open-loop load generator for `hack/bench/gateway.sh`.
//!
//! Exists because wrk2 (fixed-rate wrk) is not available: to compare latency "at half of the
//! maximum rate" the load must be sent on a fixed schedule, and each latency is measured from the
//! request's *scheduled* start (so a stalled server cannot hide its delay — no coordinated omission).
//! Loopback targets only; bounded by request count and by time.
//!
//! Sends are paced by one thread sleeping with the OS's fine-grained timer, not by tokio timers:
//! those fire on 1 ms ticks, so every request due within a millisecond went out in one burst at
//! the tick (16 at once at 16,000 req/s), measuring the queueing of bursts plus up to 1 ms of the
//! tool's own lateness rather than the latency at an even rate.
//!
//! Usage: `gateway-load <url> <rate-per-sec> <seconds> <connections>`; prints one JSON line.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        bail!("usage: gateway-load <url> <rate-per-sec> <seconds> <connections>");
    }
    let uri: http::Uri = args[1].parse().context("url")?;
    let rate: f64 = args[2].parse().context("rate")?;
    let secs: f64 = args[3].parse().context("seconds")?;
    let conns: usize = args[4].parse().context("connections")?;
    let authority = uri.authority().context("url needs host:port")?.clone();
    let addr: SocketAddr = authority
        .as_str()
        .parse()
        .context("host must be an IP:port")?;
    if !addr.ip().is_loopback() {
        bail!("gateway-load only targets loopback addresses");
    }
    if !(rate > 0.0
        && rate <= 200_000.0
        && secs > 0.0
        && secs <= 120.0
        && (1..=1024).contains(&conns))
    {
        bail!("rate must be in (0, 200000], seconds in (0, 120], connections in [1, 1024]");
    }
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let hard_stop = Duration::from_secs_f64(secs + 10.0);
    let t0 = Instant::now() + Duration::from_millis(200);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();

    // Request i is due at t0 + i * interval and goes out on connection i % conns; the pacer hands
    // each connection the index of its next request when it is due.
    let mut inboxes = Vec::with_capacity(conns);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let path = path.clone();
        let authority = authority.clone();
        let (tx, mut due) = tokio::sync::mpsc::unbounded_channel::<usize>();
        inboxes.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / conns + 1);
            let mut errors = 0usize;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            while let Some(i) = due.recv().await {
                let scheduled = t0 + interval.mul_f64(i as f64);
                let req = http::Request::get(path.as_str())
                    .header(http::header::HOST, authority.as_str())
                    .body(Empty::<Bytes>::new())?;
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(
                                u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX),
                            );
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
                if t0.elapsed() > hard_stop {
                    break;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            for i in 0..total {
                let scheduled = t0 + interval.mul_f64(i as f64);
                if scheduled.duration_since(t0) > hard_stop {
                    break;
                }
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                // A connection that failed has left; the others keep their schedule.
                let _ = inboxes[i % conns].send(i);
            }
            // Dropping the senders ends the connection tasks once their queues are drained.
        })
        .context("pacer thread")?;
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "scheduled": total,
            "ok": all.len(),
            "errors": errors,
            "achieved_rps": (all.len() as f64 / elapsed.max(1e-9)).round(),
            "p50_us": percentile(&all, 0.50),
            "p90_us": percentile(&all, 0.90),
            "p99_us": percentile(&all, 0.99),
            "max_us": all.last().copied().unwrap_or(0),
        })
    );
    Ok(())
}
