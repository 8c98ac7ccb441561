//! `shop-load gateway` (formerly the gateway crate's `gateway-load` binary): a small open-loop load
//! generator for `hack/bench/gateway.sh`.
//!
//! Exists because wrk2 (fixed-rate wrk) is not available: to compare latency "at a fixed rate" the
//! load must be sent on a fixed schedule, and each latency is measured from the request's
//! *scheduled* start (so a stalled server, or a late load generator, cannot hide its delay — no
//! coordinated omission). Loopback targets only; bounded by request count and by time.
//!
//! Built to cost the machine as little as possible, because on the benchmark's 2 cores the load
//! generator competes with the proxy it measures: each load thread (one by default) drives its
//! own connections in a plain `epoll` loop with a `timerfd` armed for the next request's due time
//! (nanosecond timers; tokio's fire on 1 ms ticks and sent the requests due within a millisecond
//! in one burst), writes pre-built requests and parses responses itself. The previous design —
//! one pacing thread handing each request to tokio tasks over channels — cost two cross-thread
//! wake-ups per request and kept 3 threads runnable next to the proxy's 2 workers and the
//! upstream, which showed up as multi-millisecond waits for a CPU in every target's tail.
//!
//! A request due when no connection is free waits (counted from its due time) for the first
//! connection that becomes free; free connections are used in turn, so the load spreads over all
//! of them. Besides the latency percentiles it prints how late requests went out (`send_lag_*`,
//! included in the latency) and its own CPU time and run-queue wait (from
//! `/proc/thread-self/schedstat`), so a busy or starved load generator shows in its own output.
//!
//! Usage: `shop-load gateway <url> <rate-per-sec> <seconds> <connections> [threads]`; prints one JSON
//! line.

use std::{
    collections::VecDeque,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::sys::{
    epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};

/// What every load thread shares.
#[derive(Debug, Clone)]
struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    rate: f64,
    total: usize,
    threads: usize,
    t0: Instant,
    hard_stop: Instant,
}

impl Plan {
    /// When request `i` is due.
    fn due(&self, i: usize) -> Instant {
        self.t0 + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// What one load thread measured.
#[derive(Debug, Default)]
struct Outcome {
    latencies_us: Vec<u64>,
    send_lag_us: Vec<u64>,
    errors: usize,
    cpu_ns: u64,
    run_delay_ns: u64,
}

/// One keep-alive connection and the request it has in flight.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    inflight: Option<usize>,
}

/// A parsed response head (and body length) at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A whole response of `len` bytes with this status; `close`: the server ends the connection.
    Complete {
        status: u16,
        len: usize,
        close: bool,
    },
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Parses one HTTP/1.1 response (Content-Length, chunked, or no body) at the start of `buf`.
fn parse_response(buf: &[u8]) -> anyhow::Result<Parsed> {
    let Some(head_end) = find(buf, b"\r\n\r\n", 0) else {
        if buf.len() > 64 * 1024 {
            bail!("response head larger than 64 KiB");
        }
        return Ok(Parsed::Incomplete);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body_start = head_end + 4;
    let len = if chunked {
        let mut pos = body_start;
        'chunks: loop {
            let Some(eol) = find(buf, b"\r\n", pos) else {
                return Ok(Parsed::Incomplete);
            };
            let size_text = std::str::from_utf8(&buf[pos..eol]).context("bad chunk size")?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
            if size == 0 {
                // Trailers (if any) end with an empty line.
                let mut line = eol + 2;
                loop {
                    let Some(e) = find(buf, b"\r\n", line) else {
                        return Ok(Parsed::Incomplete);
                    };
                    if e == line {
                        break 'chunks e + 2;
                    }
                    line = e + 2;
                }
            } else {
                pos = eol + 2 + size + 2;
                if buf.len() < pos {
                    return Ok(Parsed::Incomplete);
                }
            }
        }
    } else if let Some(n) = length {
        body_start + n
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        body_start
    } else {
        bail!(
            "response without content-length or chunked encoding (read-to-close) is not supported"
        );
    };
    Ok(if buf.len() < len {
        Parsed::Incomplete
    } else {
        Parsed::Complete { status, len, close }
    })
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// This thread's (CPU time, run-queue wait) in ns from `/proc/thread-self/schedstat`.
fn schedstat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

const TIMER: u64 = u64::MAX;

/// Drives `conns` connections for the requests `k, k + threads, k + 2 * threads, ...`.
fn drive(plan: &Plan, k: usize, conns: usize) -> anyhow::Result<Outcome> {
    let (cpu0, delay0) = schedstat();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
    let mut cs = Vec::with_capacity(conns);
    for c in 0..conns {
        let stream = connect(plan.addr)?;
        epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, c as u64))?;
        cs.push(Some(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            inflight: None,
        }));
    }
    let mine = plan.total / plan.threads + 1;
    let mut out = Outcome {
        latencies_us: Vec::with_capacity(mine),
        send_lag_us: Vec::with_capacity(mine),
        ..Outcome::default()
    };
    let mut free: VecDeque<usize> = (0..conns).collect();
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut inflight = 0usize;
    let mut next = k;
    let mut armed_for = None;
    let mut events = vec![EpollEvent::empty(); conns + 1];
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        while next < plan.total && plan.due(next) <= now {
            pending.push_back(next);
            next += plan.threads;
        }
        while !pending.is_empty() {
            let Some(c) = free.pop_front() else { break };
            let Some(conn) = cs.get_mut(c).and_then(Option::as_mut) else {
                continue;
            };
            let Some(i) = pending.pop_front() else { break };
            // One small request on an idle connection: the socket buffer takes it whole.
            match conn.stream.write(&plan.request) {
                Ok(n) if n == plan.request.len() => {
                    out.send_lag_us.push(micros(
                        Instant::now().saturating_duration_since(plan.due(i)),
                    ));
                    conn.inflight = Some(i);
                    inflight += 1;
                }
                _ => {
                    out.errors += 1;
                    reconnect(&epoll, &mut cs, c, plan.addr, &mut free);
                }
            }
        }
        if next >= plan.total && pending.is_empty() && inflight == 0 {
            break;
        }
        if now >= plan.hard_stop {
            out.errors += pending.len() + inflight;
            break;
        }
        if next < plan.total && armed_for != Some(next) {
            let wait = plan.due(next).saturating_duration_since(now);
            let wait = wait.max(Duration::from_nanos(1));
            timer.set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )?;
            armed_for = Some(next);
        }
        let n = match epoll.wait(&mut events, EpollTimeout::from(100u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for ev in events.iter().take(n) {
            let c = ev.data();
            if c == TIMER {
                let mut count = [0u8; 8];
                let _ = nix::unistd::read(&timer, &mut count);
                continue;
            }
            let c = usize::try_from(c).unwrap_or(usize::MAX);
            let Some(conn) = cs.get_mut(c).and_then(Option::as_mut) else {
                continue;
            };
            let got = match conn.stream.read(&mut chunk) {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => None,
            };
            let Some(got) = got else {
                // Closed by the server: a request in flight on it failed.
                if conn.inflight.take().is_some() {
                    inflight -= 1;
                    out.errors += 1;
                }
                free.retain(|&f| f != c);
                reconnect(&epoll, &mut cs, c, plan.addr, &mut free);
                continue;
            };
            conn.buf.extend_from_slice(&chunk[..got]);
            match parse_response(&conn.buf) {
                Ok(Parsed::Incomplete) => {}
                Ok(Parsed::Complete { status, len, close }) => {
                    let done = Instant::now();
                    conn.buf.drain(..len);
                    if let Some(i) = conn.inflight.take() {
                        inflight -= 1;
                        if (200..300).contains(&status) {
                            out.latencies_us
                                .push(micros(done.saturating_duration_since(plan.due(i))));
                        } else {
                            out.errors += 1;
                        }
                    }
                    if close || !conn.buf.is_empty() {
                        reconnect(&epoll, &mut cs, c, plan.addr, &mut free);
                    } else {
                        free.push_back(c);
                    }
                }
                Err(e) => {
                    eprintln!("shop-load gateway: {e:#}");
                    if conn.inflight.take().is_some() {
                        inflight -= 1;
                    }
                    out.errors += 1;
                    reconnect(&epoll, &mut cs, c, plan.addr, &mut free);
                }
            }
        }
    }
    let (cpu1, delay1) = schedstat();
    out.cpu_ns = cpu1.saturating_sub(cpu0);
    out.run_delay_ns = delay1.saturating_sub(delay0);
    Ok(out)
}

/// Replaces connection `c` with a new one (made free); a connection that cannot be replaced is
/// dropped and its share of the load goes to the others.
fn reconnect(
    epoll: &Epoll,
    cs: &mut [Option<Conn>],
    c: usize,
    addr: SocketAddr,
    free: &mut VecDeque<usize>,
) {
    let Some(slot) = cs.get_mut(c) else { return };
    if let Some(old) = slot.take() {
        let _ = epoll.delete(&old.stream);
    }
    let Ok(stream) = connect(addr) else { return };
    if epoll
        .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, c as u64))
        .is_err()
    {
        return;
    }
    *slot = Some(Conn {
        stream,
        buf: Vec::with_capacity(4096),
        inflight: None,
    });
    free.push_back(c);
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Arguments (positional, in the order `hack/bench/gateway.sh` passes them).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Target URL, `http://<loopback IP>:<port>/<path>`.
    url: String,
    /// Requests per second, in (0, 200000].
    rate: f64,
    /// Seconds of load, in (0, 120].
    seconds: f64,
    /// Keep-alive connections, in [1, 1024].
    connections: usize,
    /// Load threads, in [1, 16] and at most the connections.
    #[arg(default_value_t = 1)]
    threads: usize,
}

/// Runs the load and prints its one JSON line.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let (rate, secs, conns, threads) = (args.rate, args.seconds, args.connections, args.threads);
    let uri: http::Uri = args.url.parse().context("url")?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs");
    }
    let authority = uri.authority().context("url needs host:port")?.clone();
    let addr: SocketAddr = authority
        .as_str()
        .parse()
        .context("host must be an IP:port")?;
    if !addr.ip().is_loopback() {
        bail!("shop-load gateway only targets loopback addresses");
    }
    if !(rate > 0.0
        && rate <= 200_000.0
        && secs > 0.0
        && secs <= 120.0
        && (1..=1024).contains(&conns)
        && (1..=16).contains(&threads)
        && threads <= conns)
    {
        bail!(
            "rate must be in (0, 200000], seconds in (0, 120], connections in [1, 1024], \
             threads in [1, 16] and at most the connections"
        );
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes();
    let t0 = Instant::now() + Duration::from_millis(200);
    let plan = Plan {
        addr,
        request,
        rate,
        total: (rate * secs) as usize,
        threads,
        t0,
        hard_stop: t0 + Duration::from_secs_f64(secs + 10.0),
    };
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let plan = plan.clone();
            // Connections split as evenly as possible over the threads.
            let mine = conns / threads + usize::from(k < conns % threads);
            std::thread::Builder::new()
                .name(format!("load-{k}"))
                .spawn(move || drive(&plan, k, mine))
        })
        .collect::<Result<_, _>>()
        .context("load thread")?;
    let mut all = Outcome::default();
    for h in handles {
        let o = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        all.latencies_us.extend(o.latencies_us);
        all.send_lag_us.extend(o.send_lag_us);
        all.errors += o.errors;
        all.cpu_ns += o.cpu_ns;
        all.run_delay_ns += o.run_delay_ns;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    all.send_lag_us.sort_unstable();
    let lat = &all.latencies_us;
    println!(
        "{}",
        serde_json::json!({
            "scheduled": plan.total,
            "ok": lat.len(),
            "errors": all.errors,
            "achieved_rps": (lat.len() as f64 / elapsed.max(1e-9)).round(),
            "p50_us": percentile(lat, 0.50),
            "p90_us": percentile(lat, 0.90),
            "p99_us": percentile(lat, 0.99),
            "p999_us": percentile(lat, 0.999),
            "max_us": lat.last().copied().unwrap_or(0),
            "send_lag_p50_us": percentile(&all.send_lag_us, 0.50),
            "send_lag_p99_us": percentile(&all.send_lag_us, 0.99),
            "threads": threads,
            "tool_cpu_ms": all.cpu_ns / 1_000_000,
            "tool_run_delay_ms": all.run_delay_ns / 1_000_000,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_chunked_and_partial_responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        assert_eq!(
            parse_response(r).unwrap(),
            Parsed::Complete {
                status: 200,
                len: r.len() - 8,
                close: false
            }
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel").unwrap(),
            Parsed::Incomplete
        );
        let c = b"HTTP/1.1 503 X\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(c).unwrap(),
            Parsed::Complete {
                status: 503,
                len: c.len(),
                close: true
            }
        );
        assert_eq!(
            parse_response(&c[..c.len() - 2]).unwrap(),
            Parsed::Incomplete
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
