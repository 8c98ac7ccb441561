//! Product input validation and wire shapes.
//!
//! Exists so that every rule of the product contract (non-empty name, a non-negative price with at
//! most two decimal places that is never a float, a non-negative quantity, a URL-safe SKU code) is
//! checked in one pure function before anything touches MongoDB, and so that each failure names
//! the offending field. Bodies are parsed from a `serde_json::Value` by hand rather than derived,
//! because a derived `Deserialize` cannot tell the client *which* field had the wrong type.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

/// Longest accepted product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Longest accepted SKU code, in bytes (it is ASCII only).
pub const MAX_SKU_CHARS: usize = 64;
/// Largest stock quantity a product may seed (fits every integer column the inventory may use).
pub const MAX_QUANTITY: i64 = 1_000_000_000;

/// Whether a rejected input was malformed (wrong JSON type: 400) or well-formed but invalid (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The field has the wrong JSON type or the body is not an object: 400 Bad Request.
    Malformed,
    /// The field has the right type but a forbidden value: 422 Unprocessable Content.
    Invalid,
}

/// One rejected field, named the way the client spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON field name (`name`, `price`, ...), or `body` when the whole document is wrong.
    pub field: &'static str,
    /// Human-readable reason.
    pub detail: String,
    /// Malformed (400) or invalid (422).
    pub severity: Severity,
}

impl FieldError {
    fn malformed(field: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field,
            detail: detail.into(),
            severity: Severity::Malformed,
        }
    }
    fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field,
            detail: detail.into(),
            severity: Severity::Invalid,
        }
    }
}

/// A validated create/replace request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInput {
    /// Trimmed, non-empty name.
    pub name: String,
    /// Description; empty when the client sent none.
    pub description: String,
    /// Non-negative price with at most two decimal places, normalised (`19.90` → `19.9` is *not*
    /// done: the scale is kept at 2 so `19.90` prints as `19.90`).
    pub price: Decimal,
    /// SKU code when the client supplied one.
    pub sku_code: Option<String>,
    /// Stock to seed into inventory when supplied.
    pub quantity: Option<i64>,
}

/// Parse and validate a product body (`{name, description, price, skuCode?, quantity?}`).
///
/// The original tutorial's body `{name, description, price}` is accepted unchanged; unknown
/// fields (the original sometimes sends `id`) are ignored.
pub fn parse_product(body: &Value) -> Result<ProductInput, FieldError> {
    let Value::Object(map) = body else {
        return Err(FieldError::malformed(
            "body",
            "the body must be a JSON object",
        ));
    };
    let raw_name = match map.get("name") {
        None | Some(Value::Null) => return Err(FieldError::invalid("name", "name is required")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(FieldError::malformed("name", "name must be a string")),
    };
    let name = raw_name.trim().to_owned();
    if name.is_empty() {
        return Err(FieldError::invalid("name", "name must not be empty"));
    }
    // The name as sent, spaces included, as the document's maxLength counts it (a 201-character
    // name ending in a space was accepted though the document refuses it; found by fuzzing).
    if raw_name.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::invalid(
            "name",
            format!("name must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let description = match map.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(FieldError::malformed(
                "description",
                "description must be a string",
            ));
        }
    };
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(FieldError::invalid(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    let price = parse_price(map.get("price"))?;
    let sku_code = match map.get("skuCode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            validate_sku(s)?;
            Some(s.clone())
        }
        Some(_) => return Err(FieldError::malformed("skuCode", "skuCode must be a string")),
    };
    let quantity = match map.get("quantity") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(q) if q < 0 => {
                return Err(FieldError::invalid("quantity", "quantity must be >= 0"));
            }
            Some(q) if q > MAX_QUANTITY => {
                return Err(FieldError::invalid(
                    "quantity",
                    format!("quantity must be <= {MAX_QUANTITY}"),
                ));
            }
            Some(q) => Some(q),
            None if n.as_u64().is_some() => {
                return Err(FieldError::invalid(
                    "quantity",
                    format!("quantity must be <= {MAX_QUANTITY}"),
                ));
            }
            None => {
                return Err(FieldError::malformed(
                    "quantity",
                    "quantity must be a whole number",
                ));
            }
        },
        Some(_) => {
            return Err(FieldError::malformed(
                "quantity",
                "quantity must be a whole number",
            ));
        }
    };
    Ok(ProductInput {
        name,
        description,
        price,
        sku_code,
        quantity,
    })
}

/// A price arrives as a JSON number (`19.99`, as the original sent it) or a string (`"19.99"`).
/// Numbers are read through their shortest decimal text, so no binary-float rounding is stored.
fn parse_price(v: Option<&Value>) -> Result<Decimal, FieldError> {
    let text = match v {
        None | Some(Value::Null) => return Err(FieldError::invalid("price", "price is required")),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => {
            return Err(FieldError::malformed(
                "price",
                "price must be a decimal number or a decimal string",
            ));
        }
    };
    // Exponent notation (1e3) is refused: a price is written as plain decimal digits.
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
    {
        return Err(FieldError::malformed(
            "price",
            format!("price {text:?} is not a plain decimal number"),
        ));
    }
    let d = Decimal::from_str(&text).map_err(|_| {
        FieldError::malformed("price", format!("price {text:?} is not a decimal number"))
    })?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(FieldError::invalid("price", "price must not be negative"));
    }
    let normalized = d.normalize();
    if normalized.scale() > 2 {
        return Err(FieldError::invalid(
            "price",
            "price must have at most two decimal places",
        ));
    }
    if normalized > Decimal::from(1_000_000_000_000i64) {
        return Err(FieldError::invalid("price", "price is unreasonably large"));
    }
    let mut price = normalized.abs();
    price.rescale(2);
    Ok(price)
}

/// SKU codes travel in the inventory URL path (`PUT /api/inventory/{skuCode}`), so they are kept
/// to URL-safe ASCII.
pub fn validate_sku(s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::invalid("skuCode", "skuCode must not be empty"));
    }
    if s.len() > MAX_SKU_CHARS {
        return Err(FieldError::invalid(
            "skuCode",
            format!("skuCode must be at most {MAX_SKU_CHARS} characters"),
        ));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(FieldError::invalid(
            "skuCode",
            "skuCode may contain only letters, digits, '_', '-' and '.'",
        ));
    }
    Ok(())
}

/// Generate a SKU code from the product name plus a random suffix, e.g. `iphone_13-4f1c9a2b`.
pub fn generate_sku(name: &str) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while slug.contains("__") {
        slug = slug.replace("__", "_");
    }
    let slug = slug.trim_matches('_');
    let slug: String = slug.chars().take(40).collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let suffix = &suffix[..8];
    if slug.is_empty() {
        format!("sku-{suffix}")
    } else {
        format!("{slug}-{suffix}")
    }
}

/// Whether the product's stock has reached inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum StockSync {
    /// A stock quantity is recorded on the product but inventory has not confirmed it yet.
    Pending,
    /// Inventory confirmed the last quantity (or the product never carried one).
    Synced,
}

/// The product as returned by the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Product)]
pub struct ProductView {
    /// MongoDB ObjectId as hex, like the original's `id`.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price as a decimal string with two places (never a float).
    #[schema(example = "1200.00")]
    pub price: String,
    /// SKU code (generated when the client gave none).
    pub sku_code: String,
    /// Last stock quantity set through this product, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    /// PENDING until inventory confirmed the quantity.
    pub stock_sync: StockSync,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn original_body_is_accepted_unchanged() {
        let p = parse_product(&json!({"name":"iPhone 13","description":"iPhone 13","price":1200}))
            .unwrap();
        assert_eq!(p.name, "iPhone 13");
        assert_eq!(p.price.to_string(), "1200.00");
        assert_eq!(p.sku_code, None);
        assert_eq!(p.quantity, None);
    }

    #[test]
    fn price_as_number_keeps_exact_cents() {
        let p = parse_product(&json!({"name":"a","price":19.99})).unwrap();
        assert_eq!(p.price.to_string(), "19.99");
        let p = parse_product(&json!({"name":"a","price":"0.10"})).unwrap();
        assert_eq!(p.price.to_string(), "0.10");
        let p = parse_product(&json!({"name":"a","price":"5.500"})).unwrap();
        assert_eq!(p.price.to_string(), "5.50");
    }

    #[test]
    fn price_rules_name_the_price_field() {
        for (body, sev) in [
            (json!({"name":"a","price":-1}), Severity::Invalid),
            (json!({"name":"a","price":"1.999"}), Severity::Invalid),
            (json!({"name":"a","price":0.001}), Severity::Invalid),
            (json!({"name":"a","price":"abc"}), Severity::Malformed),
            (json!({"name":"a","price":"1e3"}), Severity::Malformed),
            (json!({"name":"a","price":true}), Severity::Malformed),
            (json!({"name":"a"}), Severity::Invalid),
        ] {
            let e = parse_product(&body).unwrap_err();
            assert_eq!(e.field, "price", "{body}");
            assert_eq!(e.severity, sev, "{body}");
        }
    }

    #[test]
    fn name_rules() {
        assert_eq!(
            parse_product(&json!({"name":"  ","price":1}))
                .unwrap_err()
                .field,
            "name"
        );
        let e = parse_product(&json!({"name":5,"price":1})).unwrap_err();
        assert_eq!((e.field, e.severity), ("name", Severity::Malformed));
        let e = parse_product(&json!({"price":1})).unwrap_err();
        assert_eq!((e.field, e.severity), ("name", Severity::Invalid));
        // Found by fuzzing: the limit counts the name as sent, as the document's maxLength does.
        let padded = format!("{} ", "a".repeat(MAX_NAME_CHARS));
        let e = parse_product(&json!({"name": padded, "price": 1})).unwrap_err();
        assert_eq!((e.field, e.severity), ("name", Severity::Invalid));
        let p = parse_product(&json!({"name": format!(" {} ", "a".repeat(198)), "price": 1}));
        assert_eq!(p.unwrap().name.chars().count(), 198);
    }

    #[test]
    fn quantity_rules() {
        let e = parse_product(&json!({"name":"a","price":1,"quantity":-1})).unwrap_err();
        assert_eq!((e.field, e.severity), ("quantity", Severity::Invalid));
        let e = parse_product(&json!({"name":"a","price":1,"quantity":1.5})).unwrap_err();
        assert_eq!((e.field, e.severity), ("quantity", Severity::Malformed));
        let e = parse_product(&json!({"name":"a","price":1,"quantity":"3"})).unwrap_err();
        assert_eq!(e.field, "quantity");
        let p = parse_product(&json!({"name":"a","price":1,"quantity":0})).unwrap();
        assert_eq!(p.quantity, Some(0));
    }

    #[test]
    fn sku_rules() {
        let e = parse_product(&json!({"name":"a","price":1,"skuCode":"a b"})).unwrap_err();
        assert_eq!(e.field, "skuCode");
        let e = parse_product(&json!({"name":"a","price":1,"skuCode":""})).unwrap_err();
        assert_eq!(e.field, "skuCode");
        let p = parse_product(&json!({"name":"a","price":1,"skuCode":"iphone_13"})).unwrap();
        assert_eq!(p.sku_code.as_deref(), Some("iphone_13"));
    }

    #[test]
    fn non_object_body_is_malformed() {
        let e = parse_product(&json!([1, 2])).unwrap_err();
        assert_eq!((e.field, e.severity), ("body", Severity::Malformed));
    }

    #[test]
    fn generated_sku_is_valid_and_unique() {
        let a = generate_sku("iPhone 13 Red!");
        let b = generate_sku("iPhone 13 Red!");
        assert!(a.starts_with("iphone_13_red-"), "{a}");
        assert_ne!(a, b);
        validate_sku(&a).unwrap();
        validate_sku(&generate_sku("ÄÖÜ")).unwrap();
    }
}
