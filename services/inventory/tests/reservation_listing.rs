//! `GET /api/inventory/reservations` against the real MariaDB, as a real process: the listing the
//! order service's reconciler walks to find stock held for orders that were never stored. It
//! filters by status and age, pages by keyset without skipping or repeating, carries the lines,
//! and refuses bad parameters with a 400 naming the parameter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
mod common;

use common::Inv;

/// The listing calls, on top of the shared process harness.
trait Listing {
    async fn list(&self, query: &str) -> (StatusCode, Value);
    async fn numbers(&self, query: &str) -> Vec<String>;
    async fn reserved(&self, order: &str, lines: Value) -> Value;
}

impl Listing for Inv {
    /// `query` is appended as is (the caller encodes it).
    async fn list(&self, query: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(&format!("/api/inventory/reservations?{query}")))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn numbers(&self, query: &str) -> Vec<String> {
        let (s, v) = self.list(query).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["orderNumber"].as_str().unwrap().to_owned())
            .collect()
    }
    /// Reserves and returns the created reservation (must be created).
    async fn reserved(&self, order: &str, lines: Value) -> Value {
        let (s, v) = self.reserve(order, lines).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn lists_one_status_oldest_first_with_lines_and_pages_by_keyset() {
    let inv = Inv::start().await;
    inv.set("a", 100).await;
    inv.set("b", 100).await;
    let mut created = Vec::new();
    for (i, n) in ["o-3", "o-1", "o-2", "o-4"].iter().enumerate() {
        let q = i64::try_from(i).unwrap() + 1;
        let r = inv
            .reserved(
                n,
                json!([{"skuCode": "b", "quantity": q}, {"skuCode": "a", "quantity": 1}]),
            )
            .await;
        created.push(r["createdAt"].as_str().unwrap().to_owned());
        // Distinct creation instants, so the expected order is the order of creation.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    inv.release("o-2").await;
    inv.release("never-reserved").await;

    let (s, all) = inv.list("status=RESERVED").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let all = all.as_array().unwrap();
    let numbers: Vec<&str> = all
        .iter()
        .map(|r| r["orderNumber"].as_str().unwrap())
        .collect();
    assert_eq!(
        numbers,
        ["o-3", "o-1", "o-4"],
        "oldest first, released ones left out"
    );
    assert_eq!(all[0]["status"], "RESERVED");
    assert_eq!(all[0]["createdAt"].as_str().unwrap(), created[0]);
    assert_eq!(
        all[1]["lines"],
        json!([{"skuCode": "a", "quantity": 1}, {"skuCode": "b", "quantity": 2}]),
        "lines merged and sorted as stored"
    );

    // Keyset pages: the last order number of a page is the position of the next.
    assert_eq!(inv.numbers("status=RESERVED&limit=2").await, ["o-3", "o-1"]);
    assert_eq!(
        inv.numbers("status=RESERVED&limit=2&after=o-1").await,
        ["o-4"]
    );
    assert!(
        inv.numbers("status=RESERVED&limit=2&after=o-4")
            .await
            .is_empty()
    );
    // A reservation made after a page was read still shows up on a later page.
    inv.reserved("o-0", json!([{"skuCode": "a", "quantity": 1}]))
        .await;
    assert_eq!(
        inv.numbers("status=RESERVED&after=o-4").await,
        ["o-0"],
        "created later, so listed later whatever its number"
    );

    // Age window on the creation time.
    assert_eq!(
        inv.numbers(&format!(
            "status=RESERVED&createdBefore={}",
            enc(&created[2])
        ))
        .await,
        ["o-3", "o-1"],
        "createdBefore is exclusive"
    );
    assert_eq!(
        inv.numbers(&format!("status=RESERVED&createdFrom={}", enc(&created[1])))
            .await,
        ["o-1", "o-4", "o-0"],
        "createdFrom is inclusive"
    );
    assert!(
        inv.numbers("status=RESERVED&createdBefore=2000-01-01T00:00:00Z")
            .await
            .is_empty()
    );

    let released = inv.numbers("status=RELEASED").await;
    assert_eq!(
        released.len(),
        2,
        "the release and the tombstone: {released:?}"
    );
    assert!(
        released.contains(&"o-2".to_owned()) && released.contains(&"never-reserved".to_owned())
    );
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_the_parameter() {
    let inv = Inv::start().await;
    inv.set("a", 10).await;
    inv.reserved("o-1", json!([{"skuCode": "a", "quantity": 1}]))
        .await;
    for (query, field) in [
        ("", "status"),
        ("limit=5", "status"),
        ("status=reserved", "status"),
        ("status=SHIPPED", "status"),
        ("status=RESERVED&limit=0", "limit"),
        ("status=RESERVED&limit=1001", "limit"),
        ("status=RESERVED&limit=ten", "limit"),
        ("status=RESERVED&createdBefore=yesterday", "createdBefore"),
        ("status=RESERVED&createdBefore=2024-05-01", "createdBefore"),
        ("status=RESERVED&createdFrom=12345", "createdFrom"),
        ("status=RESERVED&after=", "after"),
        ("status=RESERVED&after=no-such-order", "after"),
        (
            "status=RESERVED&createdbefore=2024-05-01T00:00:00Z",
            "createdbefore",
        ),
        ("status=RESERVED&limit=5&limit=6", "limit"),
    ] {
        let (s, body) = inv.list(query).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(body["detail"].as_str().is_some(), "{query}: {body}");
    }
    // The limits themselves are fine, and an offset timestamp is understood.
    assert_eq!(inv.numbers("status=RESERVED&limit=1000").await, ["o-1"]);
    assert_eq!(inv.numbers("status=RESERVED&limit=1").await, ["o-1"]);
    for (bounds, want) in [
        ("createdBefore=2999-01-01T00:00:00+02:00", &["o-1"][..]),
        ("createdBefore=1900-01-01T00:00:00Z", &[][..]),
        ("createdFrom=1900-01-01T00:00:00-05:00", &["o-1"][..]),
        ("createdFrom=2999-01-01T00:00:00Z", &[][..]),
    ] {
        let (k, v) = bounds.split_once('=').unwrap();
        assert_eq!(
            inv.numbers(&format!("status=RESERVED&{k}={}", enc(v)))
                .await,
            want,
            "{bounds}: bounds beyond the TIMESTAMP range still mean what they say"
        );
    }
}
