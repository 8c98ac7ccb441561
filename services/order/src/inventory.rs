//! Client of shop-inventory's reservation API, found through the registry and guarded by the
//! runtime's circuit breaker and deadline. Out-of-stock is an answer, not a failure: it is
//! returned at once and never retried; an unreachable inventory becomes "unavailable, retry
//! after N s" instead of the original's 10 s wait and fake 201.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use shop_runtime::batch::{BatchConfig, Batcher};
use shop_runtime::client::{CallError, ServiceClient};

use crate::model::OrderLine;

/// App name of the inventory service in the registry.
pub const INVENTORY_APP: &str = "inventory";

/// Why a reservation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Some lines cannot be served; `unavailable` is inventory's list.
    #[error("out of stock")]
    OutOfStock {
        /// `[{skuCode, requested, available}]`.
        unavailable: Vec<Value>,
    },
    /// Inventory refused the reservation for another reason (e.g. the number was reserved with
    /// other lines).
    #[error("reservation conflict: {0}")]
    Conflict(String),
    /// The order number's reservation was released: the number cannot be reserved again.
    #[error("reservation released: {0}")]
    Released(String),
    /// Inventory could not be reached in time, or its breaker is open.
    #[error("inventory unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// Suggested client wait.
        retry_after: Duration,
        /// The request may have reached inventory (timeout, broken connection, 5xx), so a
        /// reservation may exist and must be released.
        maybe_reserved: bool,
    },
    /// Inventory answered something we do not understand.
    #[error("unexpected inventory answer: {0}")]
    Protocol(String),
}

/// Why a release failed.
#[derive(Debug, thiserror::Error)]
#[error("release failed: {0}")]
pub struct ReleaseError(String);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReservationLine<'a> {
    sku_code: &'a str,
    quantity: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReservationRequest<'a> {
    order_number: &'a str,
    lines: Vec<ReservationLine<'a>>,
}

/// The reservation client.
#[derive(Debug, Clone)]
pub struct InventoryClient {
    client: ServiceClient,
    timeout: Duration,
    /// When set, reservations that arrive together go to inventory in one call.
    batch: Option<Batcher<ReserveJob, Result<(), ReserveError>>>,
}

/// One order's reservation waiting for a batch call: order number and lines.
pub type ReserveJob = (String, Vec<OrderLine>);

#[derive(Serialize)]
struct BatchRequest<'a> {
    reservations: Vec<ReservationRequest<'a>>,
}

fn unavailable(e: &CallError) -> ReserveError {
    let retry_after = match e {
        CallError::BreakerOpen { retry_after, .. } => *retry_after,
        _ => Duration::from_secs(1),
    };
    let reason = match e {
        CallError::BreakerOpen { .. } => "circuit breaker open".to_owned(),
        CallError::Timeout { timeout, .. } => format!("no answer within {timeout:?}"),
        CallError::NoInstance { .. } => "no instance registered".to_owned(),
        other => other.to_string(),
    };
    ReserveError::Unavailable {
        reason,
        retry_after: retry_after.max(Duration::from_secs(1)),
        maybe_reserved: !matches!(
            e,
            CallError::BreakerOpen { .. }
                | CallError::NoInstance { .. }
                | CallError::InvalidRequest { .. }
        ),
    }
}

/// A 409 from inventory: out of stock (with the list of short lines), a released number, or
/// another conflict.
fn conflict(problem: &Value) -> ReserveError {
    if let Some(list) = problem.get("unavailable").and_then(Value::as_array) {
        return ReserveError::OutOfStock {
            unavailable: list.clone(),
        };
    }
    let detail = problem
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("conflict")
        .to_owned();
    let released = problem
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(":reservation-released"));
    if released {
        ReserveError::Released(detail)
    } else {
        ReserveError::Conflict(detail)
    }
}

impl InventoryClient {
    /// A client over the runtime's service client; `timeout` bounds each call.
    pub fn new(client: ServiceClient, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            batch: None,
        }
    }

    /// Sends the reservations of orders that arrive together in one call to inventory's
    /// `POST /api/inventory/reservations/batch` (a lone order still uses the single endpoint), so
    /// inventory writes them in one transaction and the HTTP hop is paid once per batch.
    #[must_use]
    pub fn with_batching(mut self, cfg: BatchConfig) -> Self {
        let plain = Self {
            batch: None,
            ..self.clone()
        };
        self.batch = Some(Batcher::spawn(cfg, move |jobs: Vec<ReserveJob>| {
            let client = plain.clone();
            async move { client.reserve_many(jobs).await }
        }));
        self
    }

    /// Reserves the order's lines (idempotent by order number on the inventory side).
    pub async fn reserve(
        &self,
        order_number: &str,
        lines: &[OrderLine],
    ) -> Result<(), ReserveError> {
        match &self.batch {
            Some(b) => b
                .submit((order_number.to_owned(), lines.to_vec()))
                .await
                .unwrap_or_else(|_| {
                    Err(ReserveError::Unavailable {
                        reason: "the reservation sender stopped".to_owned(),
                        retry_after: Duration::from_secs(1),
                        maybe_reserved: true,
                    })
                }),
            None => self.reserve_one(order_number, lines).await,
        }
    }

    /// Several orders' reservations in one call; one answer per order, in order.
    async fn reserve_many(&self, jobs: Vec<ReserveJob>) -> Vec<Result<(), ReserveError>> {
        if jobs.len() == 1 {
            let (n, lines) = &jobs[0];
            return vec![self.reserve_one(n, lines).await];
        }
        let body = BatchRequest {
            reservations: jobs
                .iter()
                .map(|(n, lines)| ReservationRequest {
                    order_number: n,
                    lines: lines
                        .iter()
                        .map(|l| ReservationLine {
                            sku_code: &l.sku_code,
                            quantity: l.quantity,
                        })
                        .collect(),
                })
                .collect(),
        };
        let all = |f: &dyn Fn() -> ReserveError| jobs.iter().map(|_| Err(f())).collect::<Vec<_>>();
        let resp = match self
            .client
            .post(INVENTORY_APP, "/api/inventory/reservations/batch")
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return all(&|| unavailable(&e)),
        };
        let status = resp.status();
        if status.as_u16() == 404 || status.as_u16() == 405 {
            // An inventory without the batch endpoint: one call per order.
            return futures::future::join_all(
                jobs.iter().map(|(n, lines)| self.reserve_one(n, lines)),
            )
            .await;
        }
        let maybe = |reason: String| ReserveError::Unavailable {
            reason,
            retry_after: Duration::from_secs(1),
            maybe_reserved: true,
        };
        if !status.is_success() {
            return all(&|| maybe(format!("inventory answered {}", status.as_u16())));
        }
        let answer: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => return all(&|| maybe(format!("unreadable batch answer: {e}"))),
        };
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .filter(|r| r.len() == jobs.len());
        let Some(results) = results else {
            return all(&|| maybe("batch answer does not match the request".to_owned()));
        };
        results
            .iter()
            .map(|r| {
                let code = r.get("status").and_then(Value::as_u64).unwrap_or(0);
                let problem = r.get("body").cloned().unwrap_or(Value::Null);
                match code {
                    200 | 201 => Ok(()),
                    409 => Err(conflict(&problem)),
                    500..=599 => Err(maybe(format!("inventory answered {code}"))),
                    _ => Err(ReserveError::Protocol(format!(
                        "{code} {}",
                        problem.to_string().chars().take(300).collect::<String>()
                    ))),
                }
            })
            .collect()
    }

    /// One order's reservation through the single endpoint.
    async fn reserve_one(
        &self,
        order_number: &str,
        lines: &[OrderLine],
    ) -> Result<(), ReserveError> {
        let body = ReservationRequest {
            order_number,
            lines: lines
                .iter()
                .map(|l| ReservationLine {
                    sku_code: &l.sku_code,
                    quantity: l.quantity,
                })
                .collect(),
        };
        let resp = self
            .client
            .post(INVENTORY_APP, "/api/inventory/reservations")
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        if status.is_server_error() {
            return Err(ReserveError::Unavailable {
                reason: format!("inventory answered {}", status.as_u16()),
                retry_after: Duration::from_secs(1),
                maybe_reserved: true,
            });
        }
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.as_u16() == 409 {
            return Err(conflict(&problem));
        }
        Err(ReserveError::Protocol(format!(
            "{} {}",
            status.as_u16(),
            text.chars().take(300).collect::<String>()
        )))
    }

    /// Releases the order's reservation (idempotent; DELETE is retried by the client).
    pub async fn release(&self, order_number: &str) -> Result<(), ReleaseError> {
        let resp = self
            .client
            .delete(
                INVENTORY_APP,
                &format!("/api/inventory/reservations/{order_number}"),
            )
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ReleaseError(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ReleaseError(format!(
                "inventory answered {}",
                resp.status()
            )))
        }
    }
}

/// A reservation as `GET /api/inventory/reservations` lists it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedReservation {
    /// The order the stock is held for.
    pub order_number: String,
    /// `RESERVED` or `RELEASED`.
    pub status: String,
    /// When inventory made the reservation (inventory's clock).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `[{skuCode, quantity}]`.
    #[serde(default)]
    pub lines: Vec<Value>,
}

/// Why a reservation listing failed.
#[derive(Debug, thiserror::Error)]
#[error("listing reservations failed: {message}")]
pub struct ListError {
    /// Inventory's HTTP status, when it answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub message: String,
}

/// One page of [`InventoryClient::list_reserved`].
#[derive(Debug, Clone)]
pub struct ReservedPage {
    /// The reservations, oldest first.
    pub reservations: Vec<ListedReservation>,
    /// Inventory's clock when it answered (its `Date` header, whole seconds rounded down), so
    /// ages can be judged on the clock that stamped `createdAt`.
    pub inventory_now: Option<chrono::DateTime<chrono::Utc>>,
}

impl InventoryClient {
    /// One keyset page of inventory's RESERVED reservations created before `created_before`
    /// (and at or after `created_from`), after the order number `after`, oldest first.
    pub async fn list_reserved(
        &self,
        created_before: chrono::DateTime<chrono::Utc>,
        created_from: Option<chrono::DateTime<chrono::Utc>>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ReservedPage, ListError> {
        let rfc3339 = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        let mut query = form_urlencoded_pairs(&[
            ("status", "RESERVED".to_owned()),
            ("createdBefore", rfc3339(created_before)),
            ("limit", limit.to_string()),
        ]);
        if let Some(from) = created_from {
            query.push('&');
            query.push_str(&form_urlencoded_pairs(&[("createdFrom", rfc3339(from))]));
        }
        if let Some(a) = after {
            query.push('&');
            query.push_str(&form_urlencoded_pairs(&[("after", a.to_owned())]));
        }
        let resp = self
            .client
            .get(
                INVENTORY_APP,
                &format!("/api/inventory/reservations?{query}"),
            )
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ListError {
                status: None,
                message: e.to_string(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ListError {
                status: Some(status.as_u16()),
                message: format!(
                    "inventory answered {}: {}",
                    status.as_u16(),
                    text.chars().take(300).collect::<String>()
                ),
            });
        }
        let inventory_now = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let reservations = resp.json().await.map_err(|e| ListError {
            status: Some(status.as_u16()),
            message: format!("unreadable listing: {e}"),
        })?;
        Ok(ReservedPage {
            reservations,
            inventory_now,
        })
    }
}

/// `k=v&k=v` with percent-encoding of everything but unreserved characters.
fn form_urlencoded_pairs(pairs: &[(&str, String)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_number_is_told_apart_from_other_conflicts() {
        let released = serde_json::json!({"type": "urn:shopkeeper:problem:reservation-released",
            "detail": "the reservation for order x was released; use a new order number"});
        assert!(matches!(conflict(&released), ReserveError::Released(d) if d.contains("released")));
        let other = serde_json::json!({"type": "urn:shopkeeper:problem:reservation-conflict",
            "detail": "order number x was already reserved with different lines"});
        assert!(matches!(conflict(&other), ReserveError::Conflict(_)));
        let short = serde_json::json!({"unavailable": [{"skuCode": "a"}]});
        assert!(matches!(conflict(&short), ReserveError::OutOfStock { .. }));
    }

    #[test]
    fn an_open_breaker_sent_nothing_but_a_timeout_may_have_reserved() {
        let open = unavailable(&CallError::BreakerOpen {
            service: "inventory".into(),
            retry_after: Duration::from_secs(4),
        });
        match open {
            ReserveError::Unavailable {
                retry_after,
                maybe_reserved,
                reason,
            } => {
                assert_eq!(retry_after, Duration::from_secs(4));
                assert!(!maybe_reserved);
                assert!(reason.contains("circuit breaker open"));
            }
            other => panic!("{other:?}"),
        }
        let timeout = unavailable(&CallError::Timeout {
            service: "inventory".into(),
            timeout: Duration::from_millis(800),
        });
        match timeout {
            ReserveError::Unavailable {
                retry_after,
                maybe_reserved,
                ..
            } => {
                assert_eq!(retry_after, Duration::from_secs(1), "at least one second");
                assert!(maybe_reserved, "the request may have been served");
            }
            other => panic!("{other:?}"),
        }
    }
}
