//! Custom attributes (docs/design.md "Custom attributes"): the declarations
//! an admin makes and the checks a value must pass against its declaration.
//! Pure rules; the service loads the declarations and applies them.

use std::collections::BTreeMap;

use bowtie_runtime::Instant;

/// Longest attribute name.
pub const MAX_ATTRIBUTE_NAME: usize = 50;
/// Longest string or enum value.
pub const MAX_ATTRIBUTE_TEXT: usize = 200;
/// Longest allowed value of an enum.
pub const MAX_ENUM_VALUE: usize = 100;
/// Most allowed values of an enum.
pub const MAX_ENUM_VALUES: usize = 50;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 500;
/// Most attributes one write may set.
pub const MAX_ATTRIBUTES: usize = 50;

/// The type of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKind {
    /// Text.
    String,
    /// A finite number.
    Number,
    /// True or false.
    Bool,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// One of the declaration's allowed values.
    Enum,
}

impl AttributeKind {
    /// Stable storage code.
    pub fn code(self) -> i32 {
        match self {
            AttributeKind::String => 1,
            AttributeKind::Number => 2,
            AttributeKind::Bool => 3,
            AttributeKind::Date => 4,
            AttributeKind::Enum => 5,
        }
    }

    /// From a storage code.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => AttributeKind::String,
            2 => AttributeKind::Number,
            3 => AttributeKind::Bool,
            4 => AttributeKind::Date,
            5 => AttributeKind::Enum,
            _ => return None,
        })
    }
}

/// What a declaration says; the writable part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclarationFields {
    /// Lower snake case name.
    pub name: String,
    /// Type.
    pub kind: AttributeKind,
    /// For enums, the allowed values in the order declared; else empty.
    pub allowed_values: Vec<String>,
    /// What it means.
    pub description: String,
}

/// A stored declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The declaration.
    pub fields: DeclarationFields,
    /// Version, 1 on creation.
    pub version: i64,
    /// When it was declared.
    pub created_at: Instant,
    /// When it last changed.
    pub updated_at: Instant,
}

/// A value as a request sends it, before its declaration is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `string_value`.
    Text(String),
    /// `number_value`, already checked finite and rendered canonically.
    Number(String),
    /// `bool_value`.
    Bool(bool),
    /// No value: clear the attribute.
    Clear,
}

/// A checked attribute value in its canonical text (what is stored and
/// compared by the filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The declared type it was checked against.
    pub kind: AttributeKind,
    /// Canonical text: the string, the number as Rust renders an `f64`,
    /// `true`/`false`, the date `YYYY-MM-DD`, the enum value.
    pub text: String,
}

/// Attribute values of an account, by name.
pub type Values = BTreeMap<String, Value>;

/// Whether `name` is a lower snake case identifier of at most
/// [`MAX_ATTRIBUTE_NAME`] characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= MAX_ATTRIBUTE_NAME
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The canonical text of a number, `None` when it is not finite.
pub fn canonical_number(n: f64) -> Option<String> {
    // -0 and 0 are one value.
    n.is_finite()
        .then(|| format!("{}", if n == 0.0 { 0.0 } else { n }))
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Whether `text` is a real calendar date `YYYY-MM-DD` (years 1000 to 9999).
pub fn valid_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1000 && (1..=days).contains(&day)
}

/// Checks `input` against `declaration`: `Ok(None)` clears the attribute,
/// `Ok(Some(value))` sets it, `Err` says why the value is refused.
pub fn check(declaration: &DeclarationFields, input: &Input) -> Result<Option<Value>, String> {
    let kind = declaration.kind;
    let text = match (kind, input) {
        (_, Input::Clear) => return Ok(None),
        (AttributeKind::String, Input::Text(t)) => {
            let t = t.trim();
            if t.is_empty()
                || t.chars().count() > MAX_ATTRIBUTE_TEXT
                || t.chars().any(char::is_control)
            {
                return Err(format!(
                    "must be 1 to {MAX_ATTRIBUTE_TEXT} characters without control characters"
                ));
            }
            t.to_owned()
        }
        (AttributeKind::Number, Input::Number(n)) => n.clone(),
        (AttributeKind::Bool, Input::Bool(b)) => b.to_string(),
        (AttributeKind::Date, Input::Text(t)) => {
            let t = t.trim();
            if !valid_date(t) {
                return Err(format!("{t:?} is not a date YYYY-MM-DD"));
            }
            t.to_owned()
        }
        (AttributeKind::Enum, Input::Text(t)) => {
            let t = t.trim();
            if !declaration.allowed_values.iter().any(|a| a == t) {
                return Err(format!(
                    "{t:?} is not one of {}",
                    declaration.allowed_values.join(", ")
                ));
            }
            t.to_owned()
        }
        (AttributeKind::String, _) => return Err("must be a string_value".into()),
        (AttributeKind::Number, _) => return Err("must be a number_value".into()),
        (AttributeKind::Bool, _) => return Err("must be a bool_value".into()),
        (AttributeKind::Date, _) => {
            return Err("must be a string_value holding a date YYYY-MM-DD".into());
        }
        (AttributeKind::Enum, _) => return Err("must be a string_value".into()),
    };
    Ok(Some(Value { kind, text }))
}

/// `values` after the checked `changes` (`None` clears).
pub fn apply(values: &Values, changes: &BTreeMap<String, Option<Value>>) -> Values {
    let mut next = values.clone();
    for (name, change) in changes {
        match change {
            Some(value) => next.insert(name.clone(), value.clone()),
            None => next.remove(name),
        };
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(kind: AttributeKind, allowed: &[&str]) -> DeclarationFields {
        DeclarationFields {
            name: "plan_family".into(),
            kind,
            allowed_values: allowed.iter().map(|a| (*a).to_owned()).collect(),
            description: String::new(),
        }
    }

    fn text(t: &str) -> Input {
        Input::Text(t.into())
    }

    #[test]
    fn names_are_lower_snake_case() {
        assert!(valid_name("plan_family"));
        assert!(valid_name("q4_2026"));
        assert!(!valid_name("Plan"));
        assert!(!valid_name("4plan"));
        assert!(!valid_name("plan-family"));
        assert!(!valid_name(""));
        assert!(valid_name(&"a".repeat(50)));
        assert!(!valid_name(&"a".repeat(51)));
    }

    #[test]
    fn dates_must_exist_on_the_calendar() {
        assert!(valid_date("2024-02-29"));
        assert!(!valid_date("2023-02-29"));
        assert!(valid_date("2000-02-29"));
        assert!(!valid_date("1900-02-29"));
        assert!(!valid_date("2026-04-31"));
        assert!(!valid_date("2026-13-01"));
        assert!(!valid_date("2026-1-01"));
        assert!(!valid_date("2026-01-+1"));
    }

    #[test]
    fn numbers_render_canonically_and_must_be_finite() {
        assert_eq!(canonical_number(3.0).as_deref(), Some("3"));
        assert_eq!(canonical_number(2.5).as_deref(), Some("2.5"));
        assert_eq!(canonical_number(-0.0).as_deref(), Some("0"));
        assert_eq!(canonical_number(f64::NAN), None);
        assert_eq!(canonical_number(f64::INFINITY), None);
    }

    #[test]
    fn a_value_must_match_the_declared_type() {
        let enum_decl = declared(AttributeKind::Enum, &["core", "plus"]);
        assert_eq!(
            check(&enum_decl, &text(" plus ")),
            Ok(Some(Value {
                kind: AttributeKind::Enum,
                text: "plus".into()
            }))
        );
        assert_eq!(
            check(&enum_decl, &text("gold")),
            Err("\"gold\" is not one of core, plus".to_string())
        );
        let number = declared(AttributeKind::Number, &[]);
        assert_eq!(
            check(&number, &Input::Number("12.5".into())).map(|v| v.map(|v| v.text)),
            Ok(Some("12.5".to_string()))
        );
        assert!(check(&number, &text("12")).is_err());
        let flag = declared(AttributeKind::Bool, &[]);
        assert_eq!(
            check(&flag, &Input::Bool(false)).map(|v| v.map(|v| v.text)),
            Ok(Some("false".to_string()))
        );
        let date = declared(AttributeKind::Date, &[]);
        assert!(check(&date, &text("2026-02-30")).is_err());
        let string = declared(AttributeKind::String, &[]);
        assert!(check(&string, &text("  ")).is_err());
        assert_eq!(check(&string, &Input::Clear), Ok(None));
    }

    #[test]
    fn changes_set_and_clear_and_leave_the_rest() {
        let value = |t: &str| Value {
            kind: AttributeKind::String,
            text: t.into(),
        };
        let values: Values = [("a".to_string(), value("1")), ("b".to_string(), value("2"))].into();
        let changes = [("a".to_string(), None), ("c".to_string(), Some(value("3")))].into();
        let next = apply(&values, &changes);
        let names: Vec<&str> = next.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["b", "c"]);
    }
}
