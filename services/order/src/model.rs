//! The order domain: the original's request shape (`orderLineItemsDtoList`), its validation,
//! money handling (rust_decimal, never floats), the response and the OrderPlaced event.
//!
//! Money on the wire: prices are ACCEPTED as a JSON number (`19.99`) or string (`"19.99"`) and
//! always EMITTED as a string with two decimals (`"19.99"`), so no client ever parses a float.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::Value;

use shop_runtime::Problem;

/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_LINE_QUANTITY: i64 = 10_000;
/// Longest SKU code.
pub const MAX_SKU_LEN: usize = 128;
/// Longest Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Largest unit price (fits DECIMAL(19,2) with room for totals).
pub fn max_price() -> Decimal {
    Decimal::new(99_999_999_999, 2)
}

/// A price as received: number or string, parsed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub Decimal);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match Value::deserialize(d)? {
            Value::String(s) => s,
            // serde_json prints a parsed number back in its shortest exact form ("19.99").
            Value::Number(n) => n.to_string(),
            other => {
                return Err(D::Error::custom(format!(
                    "expected a decimal number or string, got {other}"
                )));
            }
        };
        let t = text.trim();
        Decimal::from_str_exact(t)
            .or_else(|_| Decimal::from_scientific(t))
            .map(Money)
            .map_err(|_| D::Error::custom(format!("'{text}' is not a decimal number")))
    }
}

/// Serialises a decimal as a string with two places ("19.90").
pub fn money_string(d: &Decimal) -> String {
    let mut v = *d;
    v.rescale(2);
    v.to_string()
}

fn ser_money<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&money_string(d))
}

/// One line of the original's request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineItemDto {
    /// Ignored, whatever it holds (the original's JPA id).
    #[serde(default)]
    #[schema(value_type = Value)]
    pub id: Option<Value>,
    /// SKU code: 1..=128 characters, without commas, control characters or surrounding spaces.
    #[schema(min_length = 1, max_length = 128)]
    pub sku_code: String,
    /// Unit price, >= 0 with at most two decimal places, at most 999999999.99: a JSON number
    /// (`19.99`) or a decimal string (`"19.99"`).
    #[schema(schema_with = price_schema)]
    pub price: Money,
    /// Units, 1..=10000.
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: i64,
}

/// `price` in a request line: a JSON number or a decimal string (both parsed exactly).
fn price_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0.0))
                .maximum(Some(999_999_999.99)),
        )
        .item(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "Unit price, >= 0 with at most two decimal places, at most 999999999.99: a JSON \
             number (the original's shape) or a decimal string.",
        ))
        .build()
        .into()
}

/// The original's `OrderRequest`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    /// Lines, 1..=100.
    #[schema(min_items = 1, max_items = 100)]
    pub order_line_items_dto_list: Vec<OrderLineItemDto>,
}

/// A validated order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// SKU code.
    pub sku_code: String,
    /// Unit price (two places).
    #[serde(serialize_with = "ser_money")]
    pub price: Decimal,
    /// Units.
    pub quantity: i64,
}

/// Validates the request; every error names the offending field.
pub fn validate(req: OrderRequest) -> Result<Vec<OrderLine>, Problem> {
    let list = req.order_line_items_dto_list;
    if list.is_empty() {
        return Err(Problem::invalid(
            "orderLineItemsDtoList",
            "orderLineItemsDtoList must contain at least one line",
        ));
    }
    if list.len() > MAX_LINES {
        return Err(Problem::invalid(
            "orderLineItemsDtoList",
            format!("at most {MAX_LINES} lines per order"),
        ));
    }
    let mut lines = Vec::with_capacity(list.len());
    for (i, l) in list.into_iter().enumerate() {
        let f = |name: &str| format!("orderLineItemsDtoList[{i}].{name}");
        let sku = l.sku_code;
        // Characters, as the utf8mb4 VARCHAR column and the document's maxLength count them.
        if sku.trim().is_empty()
            || sku.chars().count() > MAX_SKU_LEN
            || sku.trim() != sku
            || sku.chars().any(|c| c.is_control() || c == ',')
        {
            return Err(Problem::invalid(
                f("skuCode"),
                format!(
                    "{} must be 1..={MAX_SKU_LEN} characters, without commas, control characters or surrounding spaces",
                    f("skuCode")
                ),
            ));
        }
        let price = l.price.0;
        if price.is_sign_negative() && !price.is_zero() {
            return Err(Problem::invalid(
                f("price"),
                format!("{} must not be negative", f("price")),
            ));
        }
        if price.normalize().scale() > 2 {
            return Err(Problem::invalid(
                f("price"),
                format!("{} must have at most two decimal places", f("price")),
            ));
        }
        if price > max_price() {
            return Err(Problem::invalid(
                f("price"),
                format!("{} must be at most {}", f("price"), max_price()),
            ));
        }
        if !(1..=MAX_LINE_QUANTITY).contains(&l.quantity) {
            return Err(Problem::invalid(
                f("quantity"),
                format!(
                    "{} must be between 1 and {MAX_LINE_QUANTITY}",
                    f("quantity")
                ),
            ));
        }
        let mut price = price;
        price.rescale(2);
        lines.push(OrderLine {
            sku_code: sku,
            price,
            quantity: l.quantity,
        });
    }
    Ok(lines)
}

/// Canonical form of a validated request, compared for Idempotency-Key reuse (so `19.9`,
/// `"19.90"` and `19.90` are the same body, a different quantity is not).
pub fn fingerprint(lines: &[OrderLine]) -> String {
    serde_json::to_string(lines).unwrap_or_default()
}

/// Sum of price × quantity.
pub fn total(lines: &[OrderLine]) -> Decimal {
    lines
        .iter()
        .map(|l| l.price * Decimal::from(l.quantity))
        .sum()
}

/// Status of a stored order.
pub const STATUS_PLACED: &str = "PLACED";
/// Status of the row the reservation reconciler writes for an order number whose stock it gives
/// back: it holds the number, so a request that comes back to life after that cannot store the
/// order (its stock is gone). Never shown by the API.
pub const STATUS_ABANDONED: &str = "ABANDONED";

/// An order as returned by the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order number (UUID).
    pub order_number: String,
    /// Status (`PLACED`).
    pub status: String,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines.
    #[serde(serialize_with = "ser_money")]
    pub total: Decimal,
    /// When the order was stored.
    #[serde(serialize_with = "ser_time")]
    pub created_at: DateTime<Utc>,
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The OrderPlaced event published through the outbox.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlacedEvent {
    /// Unique event id (UUID) for consumer de-duplication.
    pub event_id: String,
    /// Always `OrderPlaced`.
    pub event_type: &'static str,
    /// The order.
    pub order_number: String,
    /// When the order was placed (RFC 3339).
    #[serde(serialize_with = "ser_time")]
    pub occurred_at: DateTime<Utc>,
    /// Lines.
    pub lines: Vec<OrderLine>,
    /// Total as a decimal string.
    #[serde(serialize_with = "ser_money")]
    pub total: Decimal,
}

/// Parses a decimal stored by MySQL (used when reading rows back).
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    Decimal::from_str(s).ok()
}

/// Validates an `Idempotency-Key` header value.
pub fn validate_idempotency_key(raw: &[u8]) -> Result<String, Problem> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && raw.iter().all(|b| (0x21..=0x7e).contains(b));
    if !ok {
        return Err(Problem::malformed(
            "Idempotency-Key",
            format!(
                "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ),
        ));
    }
    // Structured-field string form ("abc") is accepted as well as a bare token.
    let s = String::from_utf8_lossy(raw);
    Ok(s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(&s)
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_runtime::problem::parse_api_json as parse_json;

    fn parse(body: &str) -> Result<Vec<OrderLine>, Problem> {
        validate(parse_json::<OrderRequest>(body.as_bytes())?)
    }

    #[test]
    fn original_body_with_number_or_string_prices_is_accepted_exactly() {
        let lines = parse(
            r#"{"orderLineItemsDtoList":[{"id":1,"skuCode":"iphone_13","price":1200.1,"quantity":2},
                {"skuCode":"iphone_13_red","price":"0.30","quantity":1}]}"#,
        )
        .unwrap();
        assert_eq!(lines[0].price.to_string(), "1200.10");
        assert_eq!(lines[1].price.to_string(), "0.30");
        assert_eq!(money_string(&total(&lines)), "2400.50");
        let json = serde_json::to_value(&lines[0]).unwrap();
        assert_eq!(json["price"], "1200.10");
    }

    #[test]
    fn invalid_lines_name_the_field() {
        let cases = [
            (r#"{"orderLineItemsDtoList":[]}"#, "orderLineItemsDtoList"),
            (
                r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":1.234,"quantity":1}]}"#,
                "orderLineItemsDtoList[0].price",
            ),
            (
                r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":-1,"quantity":1}]}"#,
                "orderLineItemsDtoList[0].price",
            ),
            (
                r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":1,"quantity":1},{"skuCode":"b","price":1,"quantity":0}]}"#,
                "orderLineItemsDtoList[1].quantity",
            ),
            (
                r#"{"orderLineItemsDtoList":[{"skuCode":"","price":1,"quantity":1}]}"#,
                "orderLineItemsDtoList[0].skuCode",
            ),
            (
                r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":"abc","quantity":1}]}"#,
                "orderLineItemsDtoList[0].price",
            ),
            (
                r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":1}]}"#,
                "orderLineItemsDtoList[0].quantity",
            ),
        ];
        for (body, field) in cases {
            let p = parse(body).unwrap_err();
            assert_eq!(p.status().as_u16(), 422, "{body}");
            assert_eq!(p.body()["field"], field, "{body}");
        }
    }

    #[test]
    fn fingerprint_ignores_price_spelling_but_not_content() {
        let a = parse(r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":19.9,"quantity":1}]}"#)
            .unwrap();
        let b =
            parse(r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":"19.90","quantity":1}]}"#)
                .unwrap();
        let c =
            parse(r#"{"orderLineItemsDtoList":[{"skuCode":"a","price":"19.90","quantity":2}]}"#)
                .unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn idempotency_key_validation() {
        assert_eq!(validate_idempotency_key(b"abc-123").unwrap(), "abc-123");
        assert_eq!(validate_idempotency_key(b"\"abc\"").unwrap(), "abc");
        assert!(validate_idempotency_key(b"").is_err());
        assert!(validate_idempotency_key(b"has space").is_err());
        assert!(validate_idempotency_key(&[b'x'; 256]).is_err());
    }
}
