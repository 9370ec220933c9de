//! Declared account attributes from a connector's data: Stripe customer
//! metadata (`connectors.stripe.attributes`) and Segment `group` traits
//! (`connectors.segment.attributes`), each a map of source key -> declared
//! attribute name (docs/connectors.md "Attributes").
//!
//! A value is converted to the type its declaration gives (the accounts
//! service's `DeclareAttribute`) and checked as the service would check it,
//! before anything is written: a value that does not fit fails the whole
//! object (the Stripe event answers 400 naming the key, the Segment event
//! is reported in `rejected`), so an account is never written half.

use std::collections::{BTreeMap, HashMap};

use bowtie_proto::accounts as acc;
use bowtie_proto::accounts::attribute_value::Kind;
use serde_json::Value;

use crate::AppState;
use crate::clients::Caller;
use crate::error::ApiError;

/// Longest string or enum value the accounts service admits.
const MAX_TEXT: usize = 200;

/// A value that does not fit its attribute: the source field and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Misfit {
    /// The source field, e.g. `data.object.metadata.plan`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Misfit {
    /// The misfit as a 400 answer naming the field.
    pub fn into_error(self) -> ApiError {
        ApiError::invalid(self.field, self.reason)
    }
}

/// The attribute values `mapping` takes from `source` (`field` prefixes the
/// name of a misfit). A key absent from `source` leaves its attribute as it
/// is; a JSON `null` clears it. Reads the declarations only when a mapped
/// key is present.
pub async fn mapped(
    state: &AppState,
    caller: &Caller,
    mapping: &BTreeMap<String, String>,
    field: &str,
    source: &serde_json::Map<String, Value>,
) -> Result<Result<HashMap<String, acc::AttributeValue>, Misfit>, ApiError> {
    let present: Vec<(&String, &String, &Value)> = mapping
        .iter()
        .filter_map(|(key, attribute)| source.get(key).map(|v| (key, attribute, v)))
        .collect();
    if present.is_empty() {
        return Ok(Ok(HashMap::new()));
    }
    let declarations: HashMap<String, acc::AttributeDeclaration> = state
        .services
        .accounts
        .clone()
        .list_attribute_declarations(caller.request(acc::ListAttributeDeclarationsRequest {}))
        .await
        .map_err(|s| ApiError::from_status("accounts", &s))?
        .into_inner()
        .declarations
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    Ok(convert_all(&present, &declarations, field))
}

/// Converts every present (key, attribute, value); the first misfit by key.
fn convert_all(
    present: &[(&String, &String, &Value)],
    declarations: &HashMap<String, acc::AttributeDeclaration>,
    field: &str,
) -> Result<HashMap<String, acc::AttributeValue>, Misfit> {
    let mut values = HashMap::new();
    for (key, attribute, raw) in present {
        let misfit = |reason: String| Misfit {
            field: format!("{field}.{key}"),
            reason,
        };
        let Some(declaration) = declarations.get(*attribute) else {
            return Err(misfit(format!(
                "is mapped to the attribute {attribute:?}, which is not declared"
            )));
        };
        let value = convert(declaration, raw).map_err(|r| misfit(format!("{attribute}: {r}")))?;
        values.insert((*attribute).clone(), value);
    }
    Ok(values)
}

/// `raw` as a value of `declaration`'s type (no kind: clears), or why it
/// does not fit.
pub fn convert(
    declaration: &acc::AttributeDeclaration,
    raw: &Value,
) -> Result<acc::AttributeValue, String> {
    let value = |kind| Ok(acc::AttributeValue { kind: Some(kind) });
    let text = match raw {
        Value::Null => return Ok(acc::AttributeValue { kind: None }),
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(_) | Value::Object(_) => {
            return Err("must be a single value, not a list or an object".into());
        }
    };
    match acc::AttributeType::try_from(declaration.r#type).unwrap_or_default() {
        acc::AttributeType::String => {
            if text.is_empty() || text.chars().count() > MAX_TEXT {
                return Err(format!(
                    "{text:?} must be 1 to {MAX_TEXT} characters once trimmed"
                ));
            }
            value(Kind::StringValue(text))
        }
        acc::AttributeType::Number => match raw.as_f64().or_else(|| text.parse().ok()) {
            Some(n) if f64::is_finite(n) => value(Kind::NumberValue(n)),
            _ => Err(format!("{text:?} is not a number")),
        },
        acc::AttributeType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" => value(Kind::BoolValue(true)),
            "false" => value(Kind::BoolValue(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        acc::AttributeType::Date => {
            let date = chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .ok()
                .or_else(|| {
                    chrono::DateTime::parse_from_rfc3339(&text)
                        .ok()
                        .map(|t| t.to_utc().date_naive())
                });
            match date {
                Some(d) => value(Kind::StringValue(d.format("%Y-%m-%d").to_string())),
                None => Err(format!(
                    "{text:?} is not a date (YYYY-MM-DD or an RFC 3339 instant)"
                )),
            }
        }
        acc::AttributeType::Enum => {
            if declaration.allowed_values.contains(&text) {
                value(Kind::StringValue(text))
            } else {
                Err(format!(
                    "{text:?} is not one of {}",
                    declaration.allowed_values.join(", ")
                ))
            }
        }
        acc::AttributeType::Unspecified => Err("the attribute's declaration has no type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared(kind: acc::AttributeType, allowed: &[&str]) -> acc::AttributeDeclaration {
        acc::AttributeDeclaration {
            name: "a".into(),
            r#type: kind as i32,
            allowed_values: allowed.iter().map(|s| (*s).to_owned()).collect(),
            ..acc::AttributeDeclaration::default()
        }
    }

    fn kind(d: &acc::AttributeDeclaration, raw: Value) -> Result<Option<Kind>, String> {
        convert(d, &raw).map(|v| v.kind)
    }

    #[test]
    fn text_from_metadata_converts_to_the_declared_type() {
        let number = declared(acc::AttributeType::Number, &[]);
        assert_eq!(
            kind(&number, json!(" 42.5 ")),
            Ok(Some(Kind::NumberValue(42.5)))
        );
        assert_eq!(kind(&number, json!(7)), Ok(Some(Kind::NumberValue(7.0))));
        let flag = declared(acc::AttributeType::Bool, &[]);
        assert_eq!(kind(&flag, json!("TRUE")), Ok(Some(Kind::BoolValue(true))));
        assert_eq!(kind(&flag, json!(false)), Ok(Some(Kind::BoolValue(false))));
        let date = declared(acc::AttributeType::Date, &[]);
        assert_eq!(
            kind(&date, json!("2026-03-02T23:30:00-02:00")),
            Ok(Some(Kind::StringValue("2026-03-03".into())))
        );
        let plan = declared(acc::AttributeType::Enum, &["core", "plus"]);
        assert_eq!(
            kind(&plan, json!("plus")),
            Ok(Some(Kind::StringValue("plus".into())))
        );
        let text = declared(acc::AttributeType::String, &[]);
        assert_eq!(
            kind(&text, json!(350)),
            Ok(Some(Kind::StringValue("350".into())))
        );
        assert_eq!(kind(&text, Value::Null), Ok(None));
    }

    #[test]
    fn a_value_that_does_not_fit_says_why() {
        let number = declared(acc::AttributeType::Number, &[]);
        assert_eq!(
            kind(&number, json!("lots")),
            Err("\"lots\" is not a number".into())
        );
        let plan = declared(acc::AttributeType::Enum, &["core", "plus"]);
        assert_eq!(
            kind(&plan, json!("gold")),
            Err("\"gold\" is not one of core, plus".into())
        );
        let date = declared(acc::AttributeType::Date, &[]);
        assert!(kind(&date, json!("02/03/2026")).is_err());
        let text = declared(acc::AttributeType::String, &[]);
        assert!(kind(&text, json!("  ")).is_err());
        assert!(kind(&text, json!("x".repeat(201))).is_err());
        assert!(kind(&text, json!(["a"])).is_err());
    }

    #[test]
    fn an_undeclared_attribute_names_the_source_key() {
        let (key, attribute, raw) = ("tier".to_owned(), "plan_tier".to_owned(), json!("x"));
        let got = convert_all(&[(&key, &attribute, &raw)], &HashMap::new(), "traits");
        assert_eq!(got.err().map(|m| m.field), Some("traits.tier".to_owned()));
    }
}
