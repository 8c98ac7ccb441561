//! A typed client of a Shop's gateway, as a shop's user drives it: stocks products, and places one
//! order with one Idempotency-Key, retried the way a real client does (transport errors, 5xx, 429 and "still in progress" are retried with the same key until a
//! patience runs out; any other answer is final). What each answer means is decided by the pure
//! [`classify`], unit-tested apart from the network. The chaos soak (tests/chaos) and the real-node
//! fault tests (tests/e2e) use it.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// What one HTTP answer means to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Placed (201, or 200 for a replay of a placed key): the order number.
    Accepted(String),
    /// Ask again with the same key shortly (why, for the report).
    Retry(String),
    /// A final refusal (its problem type, or the status).
    Refused(String),
}

/// The problem type's last segment (`urn:shopkeeper:problem:out-of-stock` → `out-of-stock`), or
/// an untyped problem's title (`Upstream circuit open`), or the status code alone.
fn reason(status: u16, body: &str) -> String {
    let v = serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    let typed = v["type"]
        .as_str()
        .filter(|t| *t != "about:blank")
        .and_then(|t| t.rsplit(':').next())
        .filter(|t| !t.is_empty());
    match typed.or_else(|| v["title"].as_str()) {
        Some(why) => format!("{status} {why}"),
        None => status.to_string(),
    }
}

/// Decides what an answer to `POST /api/order` means.
pub fn classify(status: u16, body: &str) -> Decision {
    match status {
        200 | 201 => match serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["orderNumber"].as_str().map(str::to_owned))
        {
            Some(n) if !n.is_empty() => Decision::Accepted(n),
            _ => Decision::Refused(format!("{status} without an orderNumber")),
        },
        // The gateway's rate limit, and the first try of this key still running: both say
        // "again, shortly".
        429 => Decision::Retry(reason(status, body)),
        409 if body.contains("idempotency-key-in-flight") => Decision::Retry(reason(status, body)),
        s if s >= 500 => Decision::Retry(reason(status, body)),
        s => Decision::Refused(reason(s, body)),
    }
}

/// How one order ended for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The order number it was given.
    Accepted(String),
    /// A final refusal.
    Refused(String),
    /// Still failing when the patience ran out: the last failure. The order may or may not exist.
    GaveUp(String),
}

/// One order as the client saw it.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// Its Idempotency-Key.
    pub key: String,
    /// The SKU and quantity ordered.
    pub sku: String,
    /// Units ordered.
    pub quantity: u32,
    /// When its first request was sent.
    pub started: Instant,
    /// When the client stopped (answer or patience).
    pub finished: Instant,
    /// Requests sent for it.
    pub requests: u32,
    /// Why each request that was retried failed (in order).
    pub retried_because: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
}

/// A client of one Shop's gateway.
#[derive(Clone)]
pub struct ShopClient {
    http: Client,
    gateway: String,
    token: String,
}

impl ShopClient {
    /// A client of `gateway` (e.g. `http://127.0.0.1:8080`) with a bearer token; each request
    /// gives up after 10 s (then it is retried like a refused connection).
    pub fn new(gateway: &str, token: &str) -> anyhow::Result<Self> {
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            gateway: gateway.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// Places `quantity` of `sku` under `key`, retrying for up to `patience`.
    pub async fn place(
        &self,
        key: &str,
        sku: &str,
        quantity: u32,
        patience: Duration,
    ) -> Attempted {
        let started = Instant::now();
        let deadline = started + patience;
        let body = json!({"orderLineItemsDtoList": [{"skuCode": sku, "price": "10.00", "quantity": quantity}]});
        let mut requests = 0;
        let mut retried_because = Vec::new();
        let mut pause = Duration::from_millis(100);
        let outcome = loop {
            requests += 1;
            let answer = self
                .http
                .post(format!("{}/api/order", self.gateway))
                .bearer_auth(&self.token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await;
            let decision = match answer {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    classify(status, &text)
                }
                Err(e) if e.is_timeout() => Decision::Retry("timeout".to_owned()),
                Err(e) if e.is_connect() => Decision::Retry("connection refused".to_owned()),
                Err(_) => Decision::Retry("connection broken".to_owned()),
            };
            match decision {
                Decision::Accepted(n) => break Outcome::Accepted(n),
                Decision::Refused(why) => break Outcome::Refused(why),
                Decision::Retry(why) if Instant::now() + pause >= deadline => {
                    break Outcome::GaveUp(why);
                }
                Decision::Retry(why) => {
                    retried_because.push(why);
                    tokio::time::sleep(pause).await;
                    // Backs off to 2 s between tries, as client libraries do.
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        };
        Attempted {
            key: key.to_owned(),
            sku: sku.to_owned(),
            quantity,
            started,
            finished: Instant::now(),
            requests,
            retried_because,
            outcome,
        }
    }

    /// Creates a product with `quantity` in stock (product pushes it to inventory) and waits until
    /// inventory reports that quantity, retrying while the Shop is still settling.
    pub async fn stocked_product(&self, sku: &str, quantity: u64) -> anyhow::Result<()> {
        let body = json!({"name": format!("Chaos {sku}"), "description": "chaos soak",
                          "price": "10.00", "skuCode": sku, "quantity": quantity});
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .http
                .post(format!("{}/api/product", self.gateway))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await;
            let last = match r {
                Ok(r) if r.status() == StatusCode::CREATED => break,
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "could not create product {sku}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        loop {
            if self.available(sku).await == Some(quantity) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the stock of {sku} never reached {quantity} in inventory"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// What inventory reports as available for `sku`.
    pub async fn available(&self, sku: &str) -> Option<u64> {
        let r = self
            .http
            .get(format!("{}/api/inventory?skuCode={sku}", self.gateway))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v[0]["availableQuantity"].as_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placed_order_or_its_replay_is_accepted_with_its_number() {
        assert_eq!(
            classify(201, r#"{"orderNumber":"n-1","status":"PLACED"}"#),
            Decision::Accepted("n-1".into())
        );
        assert_eq!(
            classify(200, r#"{"orderNumber":"n-1"}"#),
            Decision::Accepted("n-1".into())
        );
        assert!(matches!(classify(201, "{}"), Decision::Refused(_)));
    }

    #[test]
    fn busy_and_broken_answers_are_retried_with_the_same_key() {
        let in_flight =
            r#"{"type":"urn:shopkeeper:problem:idempotency-key-in-flight","status":409}"#;
        assert_eq!(
            classify(409, in_flight),
            Decision::Retry("409 idempotency-key-in-flight".into())
        );
        assert_eq!(classify(503, ""), Decision::Retry("503".into()));
        assert_eq!(classify(502, "bad gateway"), Decision::Retry("502".into()));
        assert!(matches!(classify(429, ""), Decision::Retry(_)));
    }

    #[test]
    fn a_refusal_is_final_and_named_by_its_problem_type() {
        let oos = r#"{"type":"urn:shopkeeper:problem:out-of-stock","status":409}"#;
        assert_eq!(
            classify(409, oos),
            Decision::Refused("409 out-of-stock".into())
        );
        assert_eq!(classify(401, ""), Decision::Refused("401".into()));
        assert_eq!(
            classify(422, r#"{"type":"about:blank"}"#),
            Decision::Refused("422".into())
        );
        assert_eq!(
            classify(
                503,
                r#"{"type":"about:blank","title":"Upstream circuit open"}"#
            ),
            Decision::Retry("503 Upstream circuit open".into())
        );
    }
}
