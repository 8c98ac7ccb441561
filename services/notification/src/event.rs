//! Decoding OrderPlaced events from Kafka records.
//!
//! Exists so that the consumer can tell a good event from a poison message with a precise reason
//! (which becomes the dead-letter header) before any side effect happens. Two shapes are accepted:
//! the full event `{"eventId","eventType":"OrderPlaced","orderNumber","occurredAt","lines","total"}`
//! written by shop-order, and the original tutorial's minimal `{"orderNumber": "..."}`.
//!
//! Event id of a minimal record: the `eventId` header when it carries a UUID, otherwise a UUIDv5
//! derived from the **orderNumber** (not from topic/partition/offset). The original producer can
//! publish the same order twice at different offsets (its `@Retry` re-runs the whole method), and
//! one order must notify once; an offset-based id would turn those into two notifications.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Namespace of the UUIDv5 event ids derived from order numbers (fixed forever: changing it
/// would re-notify every minimal event on a replay).
const ORDER_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_3c2e_9a4b_4e1f_8c7d_5b2a_1e0f_9d3c);

/// Longest accepted order number.
pub const MAX_ORDER_NUMBER: usize = 128;
/// Most order lines accepted in one event.
pub const MAX_LINES: usize = 1000;

/// Why a record is not a usable OrderPlaced event (goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no value.
    #[error("record has no payload")]
    Empty,
    /// The value is not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// A field is missing or wrong.
    #[error("field {field}: {reason}")]
    Field {
        /// The offending JSON field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A different event type on the topic.
    #[error("unsupported eventType {0:?} (expected OrderPlaced)")]
    UnsupportedType(String),
}

impl DecodeError {
    fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Field {
            field,
            reason: reason.into(),
        }
    }
}

/// One order line of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// SKU ordered.
    pub sku_code: String,
    /// Unit price as a decimal string.
    pub price: String,
    /// Quantity ordered.
    pub quantity: i64,
}

/// A decoded OrderPlaced event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    /// Event id (deduplication key).
    pub event_id: Uuid,
    /// True when the id was derived from the order number (minimal event without id).
    pub derived_id: bool,
    /// Order number.
    pub order_number: String,
    /// When the order was placed, if the producer said.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Order lines (empty for the minimal event).
    pub lines: Vec<Line>,
    /// Order total as a decimal string, if given.
    pub total: Option<String>,
}

/// The event id a minimal `{"orderNumber"}` event gets.
pub fn derived_event_id(order_number: &str) -> Uuid {
    Uuid::new_v5(
        &ORDER_EVENT_NAMESPACE,
        format!("OrderPlaced/{order_number}").as_bytes(),
    )
}

/// Decode a record value; `header_event_id` is the `eventId` header if present.
pub fn decode(
    payload: Option<&[u8]>,
    header_event_id: Option<&[u8]>,
) -> Result<OrderPlaced, DecodeError> {
    let payload = payload
        .filter(|p| !p.is_empty())
        .ok_or(DecodeError::Empty)?;
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(map) = v else {
        return Err(DecodeError::field(
            "body",
            "the event must be a JSON object",
        ));
    };
    let order_number = match map.get("orderNumber") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_)) => return Err(DecodeError::field("orderNumber", "is empty")),
        None | Some(Value::Null) => return Err(DecodeError::field("orderNumber", "is missing")),
        Some(_) => return Err(DecodeError::field("orderNumber", "must be a string")),
    };
    if order_number.len() > MAX_ORDER_NUMBER {
        return Err(DecodeError::field(
            "orderNumber",
            format!("longer than {MAX_ORDER_NUMBER} bytes"),
        ));
    }
    match map.get("eventType") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "OrderPlaced" => {}
        Some(Value::String(t)) => return Err(DecodeError::UnsupportedType(t.clone())),
        Some(_) => return Err(DecodeError::field("eventType", "must be a string")),
    }
    let (event_id, derived_id) = match map.get("eventId") {
        Some(Value::String(s)) => (
            Uuid::parse_str(s).map_err(|_| DecodeError::field("eventId", "is not a UUID"))?,
            false,
        ),
        None | Some(Value::Null) => match header_event_id
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| Uuid::parse_str(h.trim()).ok())
        {
            Some(id) => (id, false),
            None => (derived_event_id(&order_number), true),
        },
        Some(_) => return Err(DecodeError::field("eventId", "must be a string")),
    };
    let occurred_at = match map.get("occurredAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| DecodeError::field("occurredAt", "is not an RFC 3339 timestamp"))?
                .with_timezone(&Utc),
        ),
        Some(_) => return Err(DecodeError::field("occurredAt", "must be a string")),
    };
    let lines = match map.get("lines") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_LINES {
                return Err(DecodeError::field(
                    "lines",
                    format!("more than {MAX_LINES} lines"),
                ));
            }
            items.iter().map(decode_line).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(DecodeError::field("lines", "must be an array")),
    };
    let total = match map.get("total") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            decimal(v)
                .ok_or_else(|| DecodeError::field("total", "is not a decimal"))?
                .to_string(),
        ),
    };
    Ok(OrderPlaced {
        event_id,
        derived_id,
        order_number,
        occurred_at,
        lines,
        total,
    })
}

fn decimal(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => Decimal::from_str(s.trim()).ok(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

fn decode_line(v: &Value) -> Result<Line, DecodeError> {
    let Value::Object(m) = v else {
        return Err(DecodeError::field("lines", "each line must be an object"));
    };
    let sku_code = match m.get("skuCode") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(DecodeError::field(
                "lines.skuCode",
                "missing or not a string",
            ));
        }
    };
    let price = m
        .get("price")
        .and_then(decimal)
        .ok_or_else(|| DecodeError::field("lines.price", "missing or not a decimal"))?
        .to_string();
    let quantity = m
        .get("quantity")
        .and_then(Value::as_i64)
        .ok_or_else(|| DecodeError::field("lines.quantity", "missing or not an integer"))?;
    Ok(Line {
        sku_code,
        price,
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_event_decodes() {
        let id = Uuid::new_v4();
        let body = format!(
            r#"{{"eventId":"{id}","eventType":"OrderPlaced","orderNumber":"o-1","occurredAt":"2026-01-02T03:04:05Z",
            "lines":[{{"skuCode":"iphone_13","price":"999.99","quantity":2}}],"total":"1999.98"}}"#
        );
        let e = decode(Some(body.as_bytes()), None).unwrap();
        assert_eq!(e.event_id, id);
        assert!(!e.derived_id);
        assert_eq!(e.order_number, "o-1");
        assert_eq!(e.lines[0].price, "999.99");
        assert_eq!(e.lines[0].quantity, 2);
        assert_eq!(e.total.as_deref(), Some("1999.98"));
        assert!(e.occurred_at.is_some());
    }

    #[test]
    fn minimal_original_event_gets_a_stable_id_from_the_order_number() {
        let a = decode(Some(br#"{"orderNumber":"abc"}"#), None).unwrap();
        let b = decode(Some(br#"{"orderNumber":"abc"}"#), None).unwrap();
        let c = decode(Some(br#"{"orderNumber":"abd"}"#), None).unwrap();
        assert!(a.derived_id);
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
    }

    #[test]
    fn header_event_id_is_used_when_body_has_none() {
        let id = Uuid::new_v4();
        let e = decode(
            Some(br#"{"orderNumber":"abc"}"#),
            Some(id.to_string().as_bytes()),
        )
        .unwrap();
        assert_eq!(e.event_id, id);
        assert!(!e.derived_id);
    }

    #[test]
    fn poison_messages_have_reasons() {
        assert_eq!(decode(None, None), Err(DecodeError::Empty));
        assert!(matches!(
            decode(Some(b"not json"), None),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            decode(Some(br#"{"orderNumber":""}"#), None),
            Err(DecodeError::Field {
                field: "orderNumber",
                ..
            })
        ));
        assert!(matches!(
            decode(Some(br#"{"orderNumber":"a","eventId":"nope"}"#), None),
            Err(DecodeError::Field {
                field: "eventId",
                ..
            })
        ));
        assert!(matches!(
            decode(
                Some(br#"{"orderNumber":"a","eventType":"OrderCancelled"}"#),
                None
            ),
            Err(DecodeError::UnsupportedType(_))
        ));
        assert!(matches!(
            decode(
                Some(
                    br#"{"orderNumber":"a","lines":[{"skuCode":"x","price":"abc","quantity":1}]}"#
                ),
                None
            ),
            Err(DecodeError::Field {
                field: "lines.price",
                ..
            })
        ));
        assert!(matches!(
            decode(Some(br#"[1]"#), None),
            Err(DecodeError::Field { field: "body", .. })
        ));
    }
}
