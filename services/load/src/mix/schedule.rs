//! The open-loop schedule of a `shop-load mix` run: when each request is due and which route it
//! takes. Open loop means the arrivals are fixed in advance (request `i` is due at `i / rate`)
//! whatever the shop answers, as real users keep arriving when a shop slows down; a closed loop
//! (send the next request when the last one answered) would slow down with the shop and hide
//! its delays. Latencies are measured from these due times (no coordinated omission).
//!
//! The routes are interleaved by smooth weighted round-robin (nginx's upstream algorithm):
//! deterministic, exactly in proportion over every full cycle, and spread out within it, so a
//! short run already has the asked mix and a route with a small weight is not all bunched at the
//! end.

use std::time::Duration;

use super::spec::{Mix, Route};

/// When request `i` is due, from the start of the run, at `rate` requests per second.
pub fn due(i: u64, rate: f64) -> Duration {
    // Exact for any realistic i (below 2^53).
    #[allow(clippy::cast_precision_loss)]
    Duration::from_secs_f64(i as f64 / rate)
}

/// How many requests a run of `duration` at `rate` per second schedules.
pub fn arrivals(rate: f64, duration: Duration) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (rate * duration.as_secs_f64()).floor() as u64;
    n
}

/// Picks the route of each next request.
#[derive(Debug, Clone)]
pub struct Picker {
    routes: Vec<(Route, i64)>,
    current: Vec<i64>,
    total: i64,
}

impl Picker {
    /// A picker for the routes of `mix` with a weight above 0.
    pub fn new(mix: &Mix) -> Self {
        let routes: Vec<(Route, i64)> = mix
            .active()
            .into_iter()
            .map(|(r, w)| (r, i64::from(w)))
            .collect();
        let total = routes.iter().map(|(_, w)| w).sum();
        Picker {
            current: vec![0; routes.len()],
            routes,
            total,
        }
    }

    /// The next route: every route gains its weight, the one ahead is picked and pays the total.
    pub fn next_route(&mut self) -> Route {
        let mut best = 0;
        for (k, (_, w)) in self.routes.iter().enumerate() {
            self.current[k] += w;
            if self.current[k] > self.current[best] {
                best = k;
            }
        }
        self.current[best] -= self.total;
        self.routes[best].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_evenly_spaced_at_the_rate() {
        assert_eq!(due(0, 50.0), Duration::ZERO);
        assert_eq!(due(50, 50.0), Duration::from_secs(1));
        assert_eq!(due(1, 4.0), Duration::from_millis(250));
        assert_eq!(arrivals(50.0, Duration::from_secs(8)), 400);
        assert_eq!(arrivals(2.5, Duration::from_secs(3)), 7);
        assert_eq!(arrivals(0.5, Duration::from_secs(1)), 0);
    }

    #[test]
    fn a_full_cycle_has_exactly_the_mix() {
        let mix: Mix = "browse=60,search=20,order=15,stream=5".parse().unwrap();
        let mut p = Picker::new(&mix);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..100 {
            *counts.entry(p.next_route()).or_insert(0) += 1;
        }
        assert_eq!(counts[&Route::Browse], 60);
        assert_eq!(counts[&Route::Search], 20);
        assert_eq!(counts[&Route::Order], 15);
        assert_eq!(counts[&Route::Stream], 5);
    }

    #[test]
    fn small_weights_are_spread_out_not_bunched() {
        let mix: Mix = "browse=60,search=20,order=15,stream=5".parse().unwrap();
        let mut p = Picker::new(&mix);
        let picks: Vec<Route> = (0..100).map(|_| p.next_route()).collect();
        // Every stretch of 25 requests has at least one stream and some orders.
        for window in picks.chunks(25) {
            assert!(window.contains(&Route::Stream), "{window:?}");
            assert!(window.iter().filter(|r| **r == Route::Order).count() >= 3);
        }
    }

    #[test]
    fn routes_left_out_are_never_picked() {
        let mix: Mix = "order=1".parse().unwrap();
        let mut p = Picker::new(&mix);
        assert!((0..10).all(|_| p.next_route() == Route::Order));
    }
}
