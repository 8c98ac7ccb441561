//! What a `shop-load mix` run is asked to do, parsed from its command line: the routes of the mix
//! and their weights (`--mix browse=60,search=20,order=15,stream=5`) and lengths of time
//! (`--duration 8s`). Pure, so every refusal is unit-tested with the message the user will read.

use std::{fmt, str::FromStr, time::Duration};

use serde::Serialize;

/// One kind of user action in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `GET /api/product` (a page of the catalogue) or `GET /api/product/{id}` (one product).
    Browse,
    /// `GET /api/product?q=<word>` (catalogue search).
    Search,
    /// `POST /api/order` with an Idempotency-Key.
    Order,
    /// `GET /api/notifications/stream`, held open for a few seconds, its events counted.
    Stream,
}

impl Route {
    /// Every route, in the order reports list them.
    pub const ALL: [Route; 4] = [Route::Browse, Route::Search, Route::Order, Route::Stream];

    /// The route's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Route::Browse => "browse",
            Route::Search => "search",
            Route::Order => "order",
            Route::Stream => "stream",
        }
    }

    fn index(self) -> usize {
        match self {
            Route::Browse => 0,
            Route::Search => 1,
            Route::Order => 2,
            Route::Stream => 3,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a `--mix` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    /// A part without `=`.
    #[error("`{0}` is not route=weight (routes: browse, search, order, stream)")]
    NotAPair(String),
    /// A name that is not a route.
    #[error("unknown route `{0}` (routes: browse, search, order, stream)")]
    UnknownRoute(String),
    /// A weight that is not a whole number in 0..=1000000.
    #[error("the weight of {route} must be a whole number from 0 to 1000000, not `{value}`")]
    BadWeight {
        /// The route.
        route: Route,
        /// What was given.
        value: String,
    },
    /// The same route twice.
    #[error("{0} is given twice")]
    Repeated(Route),
    /// Nothing to do.
    #[error("at least one route needs a weight above 0")]
    Empty,
}

/// The weights of the routes; a route left out weighs 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    /// The weight of `route`.
    pub fn weight(&self, route: Route) -> u32 {
        self.weights[route.index()]
    }

    /// The routes with a weight above 0, with their weights.
    pub fn active(&self) -> Vec<(Route, u32)> {
        Route::ALL
            .iter()
            .map(|&r| (r, self.weight(r)))
            .filter(|&(_, w)| w > 0)
            .collect()
    }
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            weights: [60, 20, 15, 5],
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .active()
            .iter()
            .map(|(r, w)| format!("{r}={w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = [0u32; 4];
        let mut seen = [false; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| MixError::NotAPair(part.to_owned()))?;
            let route = Route::ALL
                .into_iter()
                .find(|r| r.name().eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| MixError::UnknownRoute(name.trim().to_owned()))?;
            let weight = value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| MixError::BadWeight {
                    route,
                    value: value.trim().to_owned(),
                })?;
            if std::mem::replace(&mut seen[route.index()], true) {
                return Err(MixError::Repeated(route));
            }
            weights[route.index()] = weight;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(MixError::Empty);
        }
        Ok(Mix { weights })
    }
}

/// Parses a length of time: `8` or `8s` (seconds), `500ms`, `2m`, `1h`, decimals allowed
/// (`1.5s`); more than 0 and at most 24 hours.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a length of time such as 8s, 500ms, 2m or 1h"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("`{s}` must be more than 0 and at most 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mix_is_the_documented_one() {
        let m: Mix = "browse=60,search=20,order=15,stream=5".parse().unwrap();
        assert_eq!(m, Mix::default());
        assert_eq!(m.to_string(), "browse=60,search=20,order=15,stream=5");
    }

    #[test]
    fn left_out_routes_weigh_nothing_and_spaces_and_case_do_not_matter() {
        let m: Mix = " Browse = 3 , order=1,".parse().unwrap();
        assert_eq!(m.weight(Route::Browse), 3);
        assert_eq!(m.weight(Route::Order), 1);
        assert_eq!(m.weight(Route::Search), 0);
        assert_eq!(m.active(), vec![(Route::Browse, 3), (Route::Order, 1)]);
    }

    #[test]
    fn bad_mixes_are_refused_with_what_is_wrong() {
        let err = |s: &str| s.parse::<Mix>().unwrap_err();
        assert_eq!(err("browse"), MixError::NotAPair("browse".into()));
        assert_eq!(err("checkout=5"), MixError::UnknownRoute("checkout".into()));
        assert_eq!(
            err("order=-1"),
            MixError::BadWeight {
                route: Route::Order,
                value: "-1".into()
            }
        );
        assert_eq!(
            err("search=x").to_string(),
            "the weight of search must be a whole number from 0 to 1000000, not `x`"
        );
        assert_eq!(err("order=1,order=2"), MixError::Repeated(Route::Order));
        assert_eq!(err("browse=0"), MixError::Empty);
        assert_eq!(err(""), MixError::Empty);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("8").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0s").unwrap_err().contains("more than 0"));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("3 days").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a length"));
    }
}
