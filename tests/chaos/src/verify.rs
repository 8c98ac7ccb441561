//! The soak's verdict: what the client was told, held against what the stores hold. Pure, so each
//! way of losing or doubling an order has a unit test that makes it fail.
//!
//! - **lost**: the client was given an order number that no stored order has;
//! - **duplicated**: one Idempotency-Key stored as more than one order, or stored under another
//!   number than the client was given, or a stored order notified more than once;
//! - **refused but stored**: a final refusal whose order exists anyway;
//! - **not notified**: a stored order without its notification (its OrderPlaced event never
//!   reached shop-notification);
//! - **stock**: for each SKU, available + reserved ≠ the initial stock (a unit lost or made up);
//! - **orphaned reservation**: stock held for an order that was never stored, still there after
//!   the order service's reconciler had its grace to release it.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::{Attempted, Outcome};
use crate::stores::Snapshot;

/// Everything that is wrong, by kind (empty when the run is clean).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Accepted order numbers not stored.
    pub lost: Vec<String>,
    /// Keys stored as more than one order, or under another number than the client got.
    pub duplicated: Vec<String>,
    /// Refused keys whose order was stored.
    pub refused_but_stored: Vec<String>,
    /// Stored orders without a notification.
    pub not_notified: Vec<String>,
    /// Stored orders notified more than once.
    pub notified_twice: Vec<String>,
    /// `sku: initial ≠ available + reserved`.
    pub stock: Vec<String>,
    /// RESERVED reservations without a stored order.
    pub orphaned: Vec<String>,
}

impl Findings {
    /// Nothing lost, doubled or left behind.
    pub fn is_clean(&self) -> bool {
        *self == Findings::default()
    }

    /// Only what time may still settle (notifications on their way, reservations within the
    /// reconciler's grace) is left.
    pub fn only_settling(&self) -> bool {
        Findings {
            not_notified: Vec::new(),
            orphaned: Vec::new(),
            ..self.clone()
        }
        .is_clean()
    }
}

/// Holds the client's view against the stores' for a run with `initial` stock per SKU.
pub fn check(
    attempted: &[Attempted],
    initial: &BTreeMap<String, i64>,
    stores: &Snapshot,
) -> Findings {
    let mut f = Findings::default();
    for a in attempted {
        let stored = stores.orders.get(&a.key).map(Vec::as_slice).unwrap_or(&[]);
        if stored.len() > 1 {
            f.duplicated
                .push(format!("{} stored {} times", a.key, stored.len()));
        }
        match &a.outcome {
            Outcome::Accepted(n) if stored.is_empty() => f.lost.push(n.clone()),
            Outcome::Accepted(n) if !stored.contains(n) => f
                .duplicated
                .push(format!("{}: told {n}, stored {stored:?}", a.key)),
            Outcome::Refused(why) if !stored.is_empty() => f
                .refused_but_stored
                .push(format!("{} ({why}) stored as {stored:?}", a.key)),
            _ => {}
        }
    }
    let numbers: BTreeSet<&String> = stores.orders.values().flatten().collect();
    for n in &numbers {
        match stores.notifications.get(*n).copied().unwrap_or(0) {
            0 => f.not_notified.push((*n).clone()),
            1 => {}
            k => f.notified_twice.push(format!("{n} ×{k}")),
        }
    }
    for (sku, start) in initial {
        let available = stores.stock.get(sku).copied();
        let reserved = stores.reserved.get(sku).copied().unwrap_or(0);
        if available.map(|a| a + reserved) != Some(*start) {
            f.stock.push(format!(
                "{sku}: initial {start} ≠ available {} + reserved {reserved}",
                available.map_or_else(|| "none".to_owned(), |a| a.to_string())
            ));
        }
    }
    f.orphaned = stores
        .reservations
        .iter()
        .filter(|n| !numbers.contains(n))
        .cloned()
        .collect();
    f
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn attempted(key: &str, outcome: Outcome) -> Attempted {
        Attempted {
            key: key.into(),
            sku: "s".into(),
            quantity: 1,
            started: Instant::now(),
            finished: Instant::now(),
            requests: 1,
            retried_because: Vec::new(),
            outcome,
        }
    }

    /// A clean run: k1 placed as n1, k2 refused, one unit of s reserved for n1.
    fn clean() -> (Vec<Attempted>, BTreeMap<String, i64>, Snapshot) {
        let runs = vec![
            attempted("k1", Outcome::Accepted("n1".into())),
            attempted("k2", Outcome::Refused("409 out-of-stock".into())),
        ];
        let snap = Snapshot {
            orders: [("k1".to_owned(), vec!["n1".to_owned()])].into(),
            notifications: [("n1".to_owned(), 1)].into(),
            stock: [("s".to_owned(), 9)].into(),
            reserved: [("s".to_owned(), 1)].into(),
            reservations: vec!["n1".into()],
            outbox_pending: 0,
        };
        (runs, [("s".to_owned(), 10)].into(), snap)
    }

    #[test]
    fn a_clean_run_has_no_findings() {
        let (runs, initial, snap) = clean();
        assert!(check(&runs, &initial, &snap).is_clean());
    }

    #[test]
    fn an_accepted_order_missing_from_the_store_is_lost() {
        let (runs, initial, mut snap) = clean();
        snap.orders.clear();
        let f = check(&runs, &initial, &snap);
        assert_eq!(f.lost, vec!["n1".to_owned()]);
        // Its reservation is now an orphan, and nothing was notified for it.
        assert_eq!(f.orphaned, vec!["n1".to_owned()]);
        assert!(!f.is_clean() && !f.only_settling());
    }

    #[test]
    fn a_key_stored_twice_or_under_another_number_is_a_duplicate() {
        let (runs, initial, mut snap) = clean();
        snap.orders
            .insert("k1".into(), vec!["n1".into(), "n9".into()]);
        snap.notifications.insert("n9".into(), 1);
        assert_eq!(check(&runs, &initial, &snap).duplicated.len(), 1);
        snap.orders.insert("k1".into(), vec!["n9".into()]);
        let f = check(&runs, &initial, &snap);
        assert!(f.duplicated[0].contains("told n1"), "{f:?}");
    }

    #[test]
    fn a_refused_order_that_was_stored_anyway_is_found() {
        let (runs, initial, mut snap) = clean();
        snap.orders.insert("k2".into(), vec!["n2".into()]);
        snap.notifications.insert("n2".into(), 1);
        assert_eq!(check(&runs, &initial, &snap).refused_but_stored.len(), 1);
    }

    #[test]
    fn notifications_must_arrive_exactly_once() {
        let (runs, initial, mut snap) = clean();
        snap.notifications.insert("n1".into(), 2);
        assert_eq!(
            check(&runs, &initial, &snap).notified_twice,
            vec!["n1 ×2".to_owned()]
        );
        snap.notifications.clear();
        let f = check(&runs, &initial, &snap);
        assert_eq!(f.not_notified, vec!["n1".to_owned()]);
        assert!(f.only_settling(), "a notification may still be on its way");
    }

    #[test]
    fn a_unit_lost_or_made_up_breaks_the_stock_equation() {
        let (runs, initial, mut snap) = clean();
        snap.stock.insert("s".into(), 8);
        let f = check(&runs, &initial, &snap);
        assert_eq!(f.stock.len(), 1);
        assert!(f.stock[0].contains("initial 10 ≠ available 8 + reserved 1"));
        snap.stock.clear();
        assert!(check(&runs, &initial, &snap).stock[0].contains("available none"));
    }

    #[test]
    fn an_order_the_client_gave_up_on_may_exist_once_but_not_twice() {
        let (mut runs, initial, mut snap) = clean();
        runs.push(attempted("k3", Outcome::GaveUp("503".into())));
        snap.orders.insert("k3".into(), vec!["n3".into()]);
        snap.notifications.insert("n3".into(), 1);
        snap.stock.insert("s".into(), 8);
        snap.reserved.insert("s".into(), 2);
        snap.reservations.push("n3".into());
        assert!(check(&runs, &initial, &snap).is_clean());
        snap.orders
            .insert("k3".into(), vec!["n3".into(), "n4".into()]);
        assert_eq!(check(&runs, &initial, &snap).duplicated.len(), 1);
    }
}
