//! The fault schedule: what breaks, in which order. Pure (parsed from the command line, printed in
//! the report, unit-tested); [`crate::faults`] carries each step out on the cluster.
//!
//! A step names a *target*: a component of the Shop (`registry`, `gateway`, `product`,
//! `inventory`, `order`, `notification`) or one of its managed stores (`mysql`, `mongodb`,
//! `kafka`, `zipkin`), which is the `app.kubernetes.io/component` label of their pods.

use std::fmt;
use std::time::Duration;

/// Every target a fault may name: the label of the Shop's pods.
pub const TARGETS: [&str; 10] = [
    "registry",
    "gateway",
    "product",
    "inventory",
    "order",
    "notification",
    "mysql",
    "mongodb",
    "kafka",
    "zipkin",
];

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// One ready pod of the target deleted with grace period 0 (`kubectl delete pod
    /// --grace-period=0`): the process dies with requests in flight, as on a node failure.
    Kill(String),
    /// Every process of one ready pod of the target stopped (SIGSTOP) for the duration, then
    /// continued: a network pause. Its connections stay open and nothing answers on them.
    Pause(String, Duration),
}

impl Fault {
    /// The target's pod label.
    pub fn target(&self) -> &str {
        match self {
            Fault::Kill(t) | Fault::Pause(t, _) => t,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(t) => write!(f, "kill -9 {t} pod"),
            Fault::Pause(t, d) => write!(f, "pause {t} {}s (SIGSTOP)", d.as_secs()),
        }
    }
}

/// The full soak's schedule (`make chaos`): each component killed in turn, gateway and registry
/// included, inventory paused, then each stateful store restarted the hard way.
pub const FULL: &str = "kill:registry,kill:gateway,kill:product,kill:inventory,kill:order,\
kill:notification,pause:inventory:8,kill:kafka,kill:mysql,kill:mongodb,kill:order";

/// The short tier inside `make test`: the order path's own pods, a pause and the gateway.
pub const SHORT: &str =
    "kill:order,kill:inventory,pause:inventory:6,kill:gateway,kill:notification";

/// Parses `kill:<target>` and `pause:<target>:<seconds>` steps separated by commas, or the names
/// `full` and `short`.
pub fn parse(spec: &str) -> Result<Vec<Fault>, String> {
    let spec = match spec.trim() {
        "full" => FULL,
        "short" => SHORT,
        s => s,
    };
    let mut plan = Vec::new();
    for step in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = step.split(':').collect();
        let target = |t: &str| -> Result<String, String> {
            if TARGETS.contains(&t) {
                Ok(t.to_owned())
            } else {
                Err(format!(
                    "fault `{step}`: unknown target `{t}` (one of {})",
                    TARGETS.join(", ")
                ))
            }
        };
        let fault = match parts.as_slice() {
            ["kill", t] => Fault::Kill(target(t)?),
            ["pause", t, secs] => {
                let secs: u64 = secs.parse().map_err(|_| {
                    format!("fault `{step}`: `{secs}` is not a whole number of seconds")
                })?;
                // The kubelet restarts a container whose liveness probe fails 3 times 10 s
                // apart: a longer pause would turn into a kill.
                if !(1..=25).contains(&secs) {
                    return Err(format!(
                        "fault `{step}`: a pause lasts 1 to 25 s (longer, the liveness probe restarts the pod)"
                    ));
                }
                Fault::Pause(target(t)?, Duration::from_secs(secs))
            }
            _ => {
                return Err(format!(
                    "fault `{step}`: expected kill:<target> or pause:<target>:<seconds>"
                ));
            }
        };
        plan.push(fault);
    }
    if plan.is_empty() {
        return Err("the fault schedule is empty".to_owned());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_schedules_parse_and_the_full_one_hits_every_component_and_store() {
        let full = parse("full").unwrap();
        // Every target but Zipkin (losing traces loses no order).
        for t in TARGETS.into_iter().filter(|t| *t != "zipkin") {
            assert!(
                full.iter().any(|f| f.target() == t),
                "{t} missing: {full:?}"
            );
        }
        assert!(matches!(full[6], Fault::Pause(ref t, d) if t == "inventory" && d.as_secs() == 8));
        assert_eq!(parse("short").unwrap().len(), 5);
    }

    #[test]
    fn steps_are_parsed_in_order_with_whitespace_ignored() {
        assert_eq!(
            parse(" kill:order , pause:mysql:3 ").unwrap(),
            vec![
                Fault::Kill("order".into()),
                Fault::Pause("mysql".into(), Duration::from_secs(3))
            ]
        );
    }

    #[test]
    fn bad_steps_are_refused_naming_the_step() {
        for (spec, says) in [
            ("kill:orders", "unknown target `orders`"),
            ("pause:inventory", "expected kill:<target>"),
            ("pause:inventory:x", "`x` is not a whole number"),
            ("pause:inventory:60", "1 to 25 s"),
            ("reboot:order", "expected kill:<target>"),
            ("", "empty"),
        ] {
            let err = parse(spec).unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }
}
