//! What a `shop-load mix` run measured, and its report. Each finished request becomes a
//! [`Sample`]; the [`Tally`] folds them into one latency histogram per route (HdrHistogram:
//! exact percentiles at three significant digits in a fixed few kilobytes, however long the
//! run), status counts and errors by type; [`Tally::report`] turns that into the [`Report`]
//! printed as text and written as JSON. Pure: unit-tested without a network.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::spec::{Mix, Route};

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with this status (its body read to the end).
    Status(u16),
    /// No whole answer within the request timeout.
    Timeout,
    /// No connection to the gateway.
    Connect,
    /// The connection broke, or the answer could not be read.
    Transport,
    /// Still running when the run was stopped (Ctrl-C).
    Interrupted,
}

/// The types of errors a report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ErrorType {
    /// A 4xx answer (refused: bad request, out of stock, rate limited, ...).
    #[serde(rename = "4xx")]
    Client,
    /// A 5xx answer.
    #[serde(rename = "5xx")]
    Server,
    /// An answer of another class (1xx, 3xx).
    #[serde(rename = "other-status")]
    OtherStatus,
    /// See [`Outcome::Timeout`].
    #[serde(rename = "timeout")]
    Timeout,
    /// See [`Outcome::Connect`].
    #[serde(rename = "connect")]
    Connect,
    /// See [`Outcome::Transport`].
    #[serde(rename = "transport")]
    Transport,
    /// See [`Outcome::Interrupted`].
    #[serde(rename = "interrupted")]
    Interrupted,
}

impl ErrorType {
    const ALL: [ErrorType; 7] = [
        ErrorType::Client,
        ErrorType::Server,
        ErrorType::OtherStatus,
        ErrorType::Timeout,
        ErrorType::Connect,
        ErrorType::Transport,
        ErrorType::Interrupted,
    ];

    fn name(self) -> &'static str {
        match self {
            ErrorType::Client => "4xx",
            ErrorType::Server => "5xx",
            ErrorType::OtherStatus => "other-status",
            ErrorType::Timeout => "timeout",
            ErrorType::Connect => "connect",
            ErrorType::Transport => "transport",
            ErrorType::Interrupted => "interrupted",
        }
    }
}

impl Outcome {
    /// The error this outcome is, if any (2xx answers are not errors).
    pub fn error(self) -> Option<ErrorType> {
        match self {
            Outcome::Status(s) if (200..300).contains(&s) => None,
            Outcome::Status(s) if (400..500).contains(&s) => Some(ErrorType::Client),
            Outcome::Status(s) if (500..600).contains(&s) => Some(ErrorType::Server),
            Outcome::Status(_) => Some(ErrorType::OtherStatus),
            Outcome::Timeout => Some(ErrorType::Timeout),
            Outcome::Connect => Some(ErrorType::Connect),
            Outcome::Transport => Some(ErrorType::Transport),
            Outcome::Interrupted => Some(ErrorType::Interrupted),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its route.
    pub route: Route,
    /// How it ended.
    pub outcome: Outcome,
    /// From its due time to its whole answer (for a stream: to the answer's head).
    pub latency: Duration,
    /// How late it went out after its due time (a busy generator or the in-flight cap).
    pub send_lag: Duration,
    /// The number of a placed order (a 201 to `POST /api/order`).
    pub order_number: Option<String>,
    /// Events a stream received while it was open.
    pub events: u64,
}

/// Latency histograms are in microseconds, from 1 us to 1 hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds: cannot fail
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// What was measured on one route.
#[derive(Debug, Clone)]
struct RouteTally {
    latency: Histogram<u64>,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<ErrorType, u64>,
}

impl Default for RouteTally {
    fn default() -> Self {
        RouteTally {
            latency: histogram(),
            requests: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
}

/// Everything a run measured so far.
#[derive(Debug, Clone)]
pub struct Tally {
    routes: BTreeMap<Route, RouteTally>,
    send_lag: Histogram<u64>,
    order_numbers: Vec<String>,
    streams_opened: u64,
    stream_events: u64,
}

/// The order numbers a report lists at most (the count is always exact).
pub const MAX_LISTED_ORDERS: usize = 100_000;

impl Tally {
    /// An empty tally with a row for every route of `mix`.
    pub fn new(mix: &Mix) -> Self {
        Tally {
            routes: mix
                .active()
                .into_iter()
                .map(|(r, _)| (r, RouteTally::default()))
                .collect(),
            send_lag: histogram(),
            order_numbers: Vec::new(),
            streams_opened: 0,
            stream_events: 0,
        }
    }

    /// Adds one finished request.
    pub fn record(&mut self, s: Sample) {
        let route = self.routes.entry(s.route).or_default();
        route.requests += 1;
        if let Outcome::Status(code) = s.outcome {
            *route.statuses.entry(code).or_default() += 1;
            // Saturates at the histogram's top instead of failing.
            route.latency.saturating_record(micros(s.latency));
            if s.route == Route::Stream && (200..300).contains(&code) {
                self.streams_opened += 1;
            }
        }
        if let Some(e) = s.outcome.error() {
            *route.errors.entry(e).or_default() += 1;
        }
        if s.outcome != Outcome::Interrupted {
            self.send_lag.saturating_record(micros(s.send_lag));
        }
        self.stream_events += s.events;
        if let Some(n) = s.order_number
            && self.order_numbers.len() < MAX_LISTED_ORDERS
        {
            self.order_numbers.push(n);
        }
    }

    /// Requests finished so far.
    pub fn completed(&self) -> u64 {
        self.routes.values().map(|r| r.requests).sum()
    }

    /// Errors so far, of every type.
    pub fn errors(&self) -> u64 {
        self.routes.values().flat_map(|r| r.errors.values()).sum()
    }

    /// The report of the run described by `run`.
    pub fn report(&self, run: &RunFacts) -> Report {
        let window = run.send_window.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let achieved = if window > 0.0 {
            run.sent as f64 / window
        } else {
            0.0
        };
        let mut errors: BTreeMap<ErrorType, u64> = ErrorType::ALL.iter().map(|e| (*e, 0)).collect();
        let routes = self
            .routes
            .iter()
            .map(|(route, t)| {
                for (e, n) in &t.errors {
                    *errors.entry(*e).or_default() += n;
                }
                let ok = t
                    .statuses
                    .iter()
                    .filter(|(s, _)| (200..300).contains(*s))
                    .map(|(_, n)| n)
                    .sum();
                (
                    *route,
                    RouteReport {
                        requests: t.requests,
                        ok,
                        statuses: t
                            .statuses
                            .iter()
                            .map(|(s, n)| (s.to_string(), *n))
                            .collect(),
                        errors: t.errors.clone(),
                        latency_ms: Percentiles::of(&t.latency),
                    },
                )
            })
            .collect();
        Report {
            target_rps: run.rate,
            achieved_rps: round2(achieved),
            duration_secs: round2(run.duration.as_secs_f64()),
            elapsed_secs: round2(run.elapsed.as_secs_f64()),
            scheduled: run.scheduled,
            sent: run.sent,
            completed: self.completed(),
            interrupted: run.interrupted,
            mix: run.mix.active().into_iter().collect(),
            send_lag_ms: Percentiles::of(&self.send_lag),
            routes,
            errors,
            orders: OrdersReport {
                accepted: self
                    .routes
                    .get(&Route::Order)
                    .and_then(|t| t.statuses.get(&201))
                    .copied()
                    .unwrap_or(0),
                numbers: self.order_numbers.clone(),
            },
            stream: StreamReport {
                opened: self.streams_opened,
                events: self.stream_events,
            },
        }
    }
}

/// Facts of the run that are not in the samples.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// The target rate, requests per second.
    pub rate: f64,
    /// The asked duration.
    pub duration: Duration,
    /// The mix.
    pub mix: Mix,
    /// Requests the schedule had.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// From the first due time to one interval after the last request went out: the time the
    /// sent requests took to send (the asked duration when the generator kept up).
    pub send_window: Duration,
    /// From the first due time to the end of the report.
    pub elapsed: Duration,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ms = |us: u64| round2(us as f64 / 1000.0);
        if h.is_empty() {
            return Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// One route's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    /// Requests finished.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Errors by type.
    pub errors: BTreeMap<ErrorType, u64>,
    /// Latency from the due time of every answered request (any status).
    pub latency_ms: Percentiles,
}

/// The orders of the run.
#[derive(Debug, Clone, Serialize)]
pub struct OrdersReport {
    /// Orders placed (201).
    pub accepted: u64,
    /// Their numbers (at most [`MAX_LISTED_ORDERS`]).
    pub numbers: Vec<String>,
}

/// The notification streams of the run.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Streams the gateway opened (200).
    pub opened: u64,
    /// `notification` events they received in all.
    pub events: u64,
}

/// The report of a run (`--json` writes it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Asked requests per second.
    pub target_rps: f64,
    /// Sent requests per second.
    pub achieved_rps: f64,
    /// Asked duration.
    pub duration_secs: f64,
    /// Wall time from the first due time to the report.
    pub elapsed_secs: f64,
    /// Requests the schedule had.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Requests finished (answered, failed or interrupted).
    pub completed: u64,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// The weights of the routes.
    pub mix: BTreeMap<Route, u32>,
    /// How late requests went out after their due time (included in the latencies).
    pub send_lag_ms: Percentiles,
    /// Per route.
    pub routes: BTreeMap<Route, RouteReport>,
    /// Errors by type, all routes.
    pub errors: BTreeMap<ErrorType, u64>,
    /// Orders.
    pub orders: OrdersReport,
    /// Streams.
    pub stream: StreamReport,
}

impl Report {
    /// The report as text, for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "shop-load mix: {} of {} requests sent at {:.1}/s (target {}/s) in a {:.1} s run{}; {} finished",
            self.sent,
            self.scheduled,
            self.achieved_rps,
            self.target_rps,
            self.duration_secs,
            if self.interrupted {
                ", interrupted by Ctrl-C"
            } else {
                ""
            },
            self.completed,
        );
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
            "route", "requests", "ok", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for (route, r) in &self.routes {
            let errors: Vec<String> = r
                .errors
                .iter()
                .map(|(e, n)| format!("{} {n}", e.name()))
                .collect();
            let _ = writeln!(
                out,
                "{:<8} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
                route.name(),
                r.requests,
                r.ok,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max,
                if errors.is_empty() {
                    "none".to_owned()
                } else {
                    errors.join(", ")
                }
            );
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(e, n)| format!("{} {n}", e.name()))
            .collect();
        let _ = writeln!(out, "errors: {}", errors.join(", "));
        let _ = writeln!(
            out,
            "orders placed: {}; streams opened: {}, notification events received: {}",
            self.orders.accepted, self.stream.opened, self.stream.events
        );
        let _ = writeln!(
            out,
            "send lag (included in the latencies): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.send_lag_ms.p50, self.send_lag_ms.p99, self.send_lag_ms.max
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(route: Route, outcome: Outcome, ms: u64) -> Sample {
        Sample {
            route,
            outcome,
            latency: Duration::from_millis(ms),
            send_lag: Duration::from_micros(100),
            order_number: None,
            events: 0,
        }
    }

    fn facts(mix: Mix, sent: u64) -> RunFacts {
        RunFacts {
            rate: 50.0,
            duration: Duration::from_secs(2),
            mix,
            scheduled: 100,
            sent,
            send_window: Duration::from_secs(2),
            elapsed: Duration::from_millis(2300),
            interrupted: false,
        }
    }

    #[test]
    fn percentiles_are_per_route_and_from_every_answer() {
        let mix = Mix::default();
        let mut t = Tally::new(&mix);
        for ms in 1..=100 {
            t.record(sample(Route::Browse, Outcome::Status(200), ms));
        }
        t.record(sample(Route::Search, Outcome::Status(503), 900));
        let r = t.report(&facts(mix, 101));
        let browse = &r.routes[&Route::Browse];
        assert_eq!((browse.requests, browse.ok), (100, 100));
        // Three significant digits.
        assert!((browse.latency_ms.p50 - 50.0).abs() < 0.1, "{browse:?}");
        assert!((browse.latency_ms.p90 - 90.0).abs() < 0.1);
        assert!((browse.latency_ms.p99 - 99.0).abs() < 0.1);
        assert!((browse.latency_ms.max - 100.0).abs() < 0.1);
        let search = &r.routes[&Route::Search];
        assert_eq!((search.requests, search.ok), (1, 0));
        assert!((search.latency_ms.max - 900.0).abs() < 1.0);
        assert_eq!(search.statuses["503"], 1);
        // Routes of the mix that saw nothing are still listed, with zeros.
        assert_eq!(r.routes[&Route::Stream].requests, 0);
    }

    #[test]
    fn errors_are_counted_by_type_across_routes() {
        let mix = Mix::default();
        let mut t = Tally::new(&mix);
        t.record(sample(Route::Order, Outcome::Status(409), 5));
        t.record(sample(Route::Order, Outcome::Status(429), 5));
        t.record(sample(Route::Browse, Outcome::Status(502), 5));
        t.record(sample(Route::Browse, Outcome::Timeout, 10_000));
        t.record(sample(Route::Search, Outcome::Connect, 1));
        t.record(sample(Route::Stream, Outcome::Transport, 1));
        t.record(sample(Route::Stream, Outcome::Interrupted, 1));
        t.record(sample(Route::Browse, Outcome::Status(302), 5));
        assert_eq!(t.errors(), 8);
        let r = t.report(&facts(mix, 8));
        assert_eq!(r.errors[&ErrorType::Client], 2);
        assert_eq!(r.errors[&ErrorType::Server], 1);
        assert_eq!(r.errors[&ErrorType::OtherStatus], 1);
        assert_eq!(r.errors[&ErrorType::Timeout], 1);
        assert_eq!(r.errors[&ErrorType::Connect], 1);
        assert_eq!(r.errors[&ErrorType::Transport], 1);
        assert_eq!(r.errors[&ErrorType::Interrupted], 1);
        assert_eq!(r.routes[&Route::Browse].errors[&ErrorType::Timeout], 1);
        // A timeout has no answer: it is not in the latency histogram.
        assert!(r.routes[&Route::Browse].latency_ms.max < 10.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["errors"]["5xx"], 1);
        assert_eq!(json["routes"]["order"]["errors"]["4xx"], 2);
        assert_eq!(json["routes"]["order"]["statuses"]["409"], 1);
    }

    #[test]
    fn orders_streams_and_throughput_are_reported() {
        let mix = Mix::default();
        let mut t = Tally::new(&mix);
        let mut placed = sample(Route::Order, Outcome::Status(201), 20);
        placed.order_number = Some("n-1".into());
        t.record(placed);
        let mut stream = sample(Route::Stream, Outcome::Status(200), 3);
        stream.events = 4;
        t.record(stream);
        let r = t.report(&facts(mix, 100));
        assert_eq!(r.orders.accepted, 1);
        assert_eq!(r.orders.numbers, vec!["n-1".to_owned()]);
        assert_eq!((r.stream.opened, r.stream.events), (1, 4));
        assert!((r.achieved_rps - 50.0).abs() < f64::EPSILON);
        assert_eq!(r.completed, 2);
        let text = r.text();
        assert!(
            text.contains("100 of 100 requests sent at 50.0/s (target 50/s)"),
            "{text}"
        );
        assert!(
            text.contains("orders placed: 1; streams opened: 1, notification events received: 4")
        );
        assert!(text.lines().any(|l| l.starts_with("order ")), "{text}");
    }
}
