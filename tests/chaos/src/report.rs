//! The soak's table, as printed at the end of a run and written to docs/reliability.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::plan::Fault;
use crate::verify::Findings;

/// One fault as the client lived it.
#[derive(Debug, Clone)]
pub struct FaultRow {
    /// The fault.
    pub fault: Fault,
    /// The pod it hit.
    pub pod: String,
    /// Until the target had all its ready pods again.
    pub whole_after: Option<Duration>,
    /// Until the first order started after the fault was accepted.
    pub first_order_after: Option<Duration>,
    /// The longest an order started between this fault and the next waited for its answer.
    pub slowest_order: Option<Duration>,
    /// Orders started in that window, and how many of them needed more than one request.
    pub orders: usize,
    /// Of those, retried at least once.
    pub retried: usize,
    /// Why the retried requests of the window failed, by reason.
    pub retried_because: BTreeMap<String, usize>,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// When it started (UTC).
    pub started: String,
    /// The Shop it ran against.
    pub shop: String,
    /// Load: target orders per second and concurrency.
    pub rate: u32,
    /// How long the load ran.
    pub load_for: Duration,
    /// Orders attempted (distinct Idempotency-Keys).
    pub attempted: usize,
    /// Accepted with an order number.
    pub accepted: usize,
    /// Final refusals, by reason.
    pub refused: BTreeMap<String, usize>,
    /// Given up after the patience, by the last failure.
    pub gave_up: BTreeMap<String, usize>,
    /// Requests sent in all (retries included).
    pub requests: u64,
    /// Orders found in MariaDB for the run's keys.
    pub stored: usize,
    /// Stored orders with exactly one notification in FerretDB.
    pub notified_once: usize,
    /// Each fault.
    pub faults: Vec<FaultRow>,
    /// After the load stopped, until the stores agreed with the client (notifications in,
    /// orphaned reservations released), or until the check gave up.
    pub settled_after: Duration,
    /// What is wrong.
    pub findings: Findings,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn counts(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "0".to_owned();
    }
    let total: usize = m.values().sum();
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!("{total} ({})", parts.join(", "))
}

/// `n reason` pairs, most frequent first (ties by name), or `—`.
fn reasons(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "—".to_owned();
    }
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{n}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// Lost or duplicated orders, or any other finding.
    pub fn passed(&self) -> bool {
        self.findings.is_clean()
    }

    /// The report as Markdown (a heading, the totals, the faults, the findings).
    pub fn markdown(&self) -> String {
        let f = &self.findings;
        let mut s = String::new();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            s,
            "## Chaos soak {}: {verdict}\n\nCommand: `{}` against Shop `{}` on the local real node \
             (debug images, 2 cores). Load: {} orders/s offered, each with its own Idempotency-Key, \
             retried like a real client (transport errors, 5xx, 429, key in flight; backoff to 2 s, \
             patience 120 s); the run lasted {:.0} s.\n",
            self.started,
            self.command,
            self.shop,
            self.rate,
            self.load_for.as_secs_f64()
        );
        let _ = writeln!(s, "| measure | value |\n|---|---|");
        for (k, v) in [
            ("orders attempted", self.attempted.to_string()),
            ("accepted (order number given)", self.accepted.to_string()),
            ("refused (final answer), by reason", counts(&self.refused)),
            (
                "given up after 120 s, by last failure",
                counts(&self.gave_up),
            ),
            (
                "requests sent (retries included)",
                self.requests.to_string(),
            ),
            ("stored in MariaDB", self.stored.to_string()),
            (
                "notified exactly once (FerretDB)",
                self.notified_once.to_string(),
            ),
            ("**lost** (accepted, not stored)", f.lost.len().to_string()),
            (
                "**duplicated** (a key stored twice or under another number)",
                f.duplicated.len().to_string(),
            ),
            ("refused but stored", f.refused_but_stored.len().to_string()),
            (
                "stored but never notified",
                f.not_notified.len().to_string(),
            ),
            (
                "notified more than once",
                f.notified_twice.len().to_string(),
            ),
            (
                "SKUs where available + reserved ≠ initial stock",
                f.stock.len().to_string(),
            ),
            (
                "orphaned reservations after the reconciler's grace",
                f.orphaned.len().to_string(),
            ),
            (
                "stores agreed with the client after the load",
                format!("{:.1} s", self.settled_after.as_secs_f64()),
            ),
        ] {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        let _ = writeln!(
            s,
            "\n| fault | pod | target whole again | first order accepted after | slowest order in its window | orders in window (retried) | failed requests, by reason |\n|---|---|---|---|---|---|---|"
        );
        for r in &self.faults {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} ({}) | {} |",
                r.fault,
                r.pod,
                secs(r.whole_after),
                secs(r.first_order_after),
                secs(r.slowest_order),
                r.orders,
                r.retried,
                reasons(&r.retried_because)
            );
        }
        let max =
            |pick: fn(&FaultRow) -> Option<Duration>| self.faults.iter().filter_map(pick).max();
        let _ = writeln!(
            s,
            "\nMax recovery over the faults: target whole again {}, first order accepted {}, slowest order {}.",
            secs(max(|r| r.whole_after)),
            secs(max(|r| r.first_order_after)),
            secs(max(|r| r.slowest_order)),
        );
        if !self.passed() {
            let _ = writeln!(s, "\nFindings (first 10 of each):\n");
            for (k, v) in [
                ("lost", &f.lost),
                ("duplicated", &f.duplicated),
                ("refused but stored", &f.refused_but_stored),
                ("not notified", &f.not_notified),
                ("notified twice", &f.notified_twice),
                ("stock", &f.stock),
                ("orphaned", &f.orphaned),
            ] {
                if !v.is_empty() {
                    let shown: Vec<&String> = v.iter().take(10).collect();
                    let _ = writeln!(s, "- {k} ({}): {shown:?}", v.len());
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            command: "shop-chaos".into(),
            started: "2026-12-07 03:00 UTC".into(),
            shop: "shop/demo".into(),
            rate: 40,
            load_for: Duration::from_secs(300),
            attempted: 3,
            accepted: 2,
            refused: [("409 out-of-stock".to_owned(), 1)].into(),
            gave_up: BTreeMap::new(),
            requests: 7,
            stored: 2,
            notified_once: 2,
            faults: vec![FaultRow {
                fault: Fault::Kill("order".into()),
                pod: "demo-order-1".into(),
                whole_after: Some(Duration::from_millis(9_400)),
                first_order_after: Some(Duration::from_millis(300)),
                slowest_order: Some(Duration::from_secs(2)),
                orders: 3,
                retried: 1,
                retried_because: [
                    ("503".to_owned(), 1),
                    ("409 idempotency-key-in-flight".to_owned(), 4),
                ]
                .into(),
            }],
            settled_after: Duration::from_secs(1),
            findings: Findings::default(),
        }
    }

    #[test]
    fn a_clean_report_says_passed_with_its_counts_and_faults() {
        let md = report().markdown();
        assert!(md.contains(": PASSED"), "{md}");
        assert!(md.contains("| refused (final answer), by reason | 1 (1 409 out-of-stock) |"));
        assert!(
            md.contains("| kill -9 order pod | demo-order-1 | 9.4 s | 0.3 s | 2.0 s | 3 (1) | 4× 409 idempotency-key-in-flight, 1× 503 |")
        );
        assert!(md.contains("**lost** (accepted, not stored) | 0 |"));
    }

    #[test]
    fn a_finding_fails_the_report_and_is_listed() {
        let mut r = report();
        r.findings.lost.push("n1".into());
        let md = r.markdown();
        assert!(!r.passed());
        assert!(
            md.contains(": FAILED") && md.contains("- lost (1): [\"n1\"]"),
            "{md}"
        );
    }
}
