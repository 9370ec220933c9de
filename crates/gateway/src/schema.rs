//! The constraints the services enforce on request values, written as the
//! JSON Schemas of the request fields that carry them, so the OpenAPI
//! document calls valid exactly what the services accept.
//!
//! Text is checked by `bowtie_runtime::validate`: trimmed of Unicode white
//! space, then at most N characters and no control character (and, when
//! required, not blank). JSON Schema lengths count the untrimmed text, so
//! these are patterns: any white space around a core that starts and ends
//! with a visible character and holds no control character. Times are
//! RFC 3339 between 1970 and 9999 (query parameters say so with a
//! `pattern` attribute beside the type), ids UUIDs, and money one of the currencies the revenue service knows.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use crate::common::or_null;

/// The white space Rust's `str::trim` removes (Unicode `White_Space`).
const SPACE: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters (`char::is_control`, Unicode `Cc`).
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// Years a service accepts in a time or a month: 1970 to 9999.
const YEAR: &str = "(?:19[7-9][0-9]|[2-9][0-9]{3})";

/// The ISO-4217 codes the revenue service knows (its `CURRENCIES`).
pub const CURRENCIES: &[&str] = &[
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "INR", "JPY", "KRW",
    "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "USD", "ZAR",
];

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn done(object: ObjectBuilder) -> RefOr<Schema> {
    RefOr::T(Schema::Object(object.build()))
}

/// A pattern for text of at most `max` characters once trimmed, without
/// control characters; `required` also refuses blank text.
fn text_pattern(max: usize, required: bool) -> String {
    let space = format!("[{SPACE}]*");
    let visible =
        format!("[^ {CONTROL}\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]");
    let inner = format!("[^{CONTROL}]{{0,{}}}", max.saturating_sub(2));
    let core = format!("{visible}(?:{inner}{visible})?");
    if required {
        format!("^{space}{core}{space}$")
    } else {
        format!("^{space}(?:{core})?{space}$")
    }
}

/// Required text of at most `MAX` characters.
pub fn text<const MAX: usize>() -> RefOr<Schema> {
    done(string().pattern(Some(text_pattern(MAX, true))))
}

/// Optional text (may be empty) of at most `MAX` characters.
pub fn optional_text<const MAX: usize>() -> RefOr<Schema> {
    done(string().pattern(Some(text_pattern(MAX, false))))
}

/// [`text`] or `null` (a field a change may leave out).
pub fn nullable_text<const MAX: usize>() -> RefOr<Schema> {
    or_null(text::<MAX>())
}

/// [`optional_text`] or `null`.
pub fn nullable_optional_text<const MAX: usize>() -> RefOr<Schema> {
    or_null(optional_text::<MAX>())
}

/// A UUID, hyphenated.
pub fn uuid() -> RefOr<Schema> {
    done(
        string()
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .pattern(Some(
                "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            )),
    )
}

/// An RFC 3339 time between 1970 and 9999.
pub fn time() -> RefOr<Schema> {
    done(
        string()
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(format!("^{YEAR}-"))),
    )
}

/// [`time`] or `null`.
pub fn nullable_time() -> RefOr<Schema> {
    or_null(time())
}

/// An ISO-4217 currency the revenue service knows.
pub fn currency() -> RefOr<Schema> {
    done(string().enum_values(Some(CURRENCIES.iter().copied())))
}

/// The system an external id comes from: 1 to 50 lower-case letters,
/// digits, `-` or `_` (not trimmed).
pub fn source() -> RefOr<Schema> {
    done(string().pattern(Some("^[a-z0-9_-]{1,50}$")))
}

/// A reason code of the funnel: at most 64 lower-case letters, digits or
/// underscores once trimmed.
pub fn reason() -> RefOr<Schema> {
    done(string().pattern(Some(format!("^[{SPACE}]*[a-z0-9_]{{0,64}}[{SPACE}]*$"))))
}

/// An account tag as the accounts service accepts it: 1 to 40 ASCII
/// letters, digits, `-`, `_`, `:` or `.`, with white space around.
pub fn tag() -> RefOr<Schema> {
    done(string().pattern(Some(format!(
        "^[{SPACE}]*[A-Za-z0-9_:.-]{{1,40}}[{SPACE}]*$"
    ))))
}

/// A tag filter: a [`tag`], or blank for any.
pub fn optional_tag() -> RefOr<Schema> {
    done(string().pattern(Some(format!(
        "^[{SPACE}]*[A-Za-z0-9_:.-]{{0,40}}[{SPACE}]*$"
    ))))
}

/// At most 20 [`tag`]s.
pub fn tags() -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(tag())
            .max_items(Some(20))
            .build(),
    ))
}

/// [`tags`] or `null`.
pub fn nullable_tags() -> RefOr<Schema> {
    or_null(tags())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_patterns_allow_space_around_a_visible_core() {
        let p = text_pattern(200, true);
        assert!(p.starts_with('^') && p.ends_with('$'));
        assert!(p.contains("{0,198}"));
        assert!(text_pattern(200, false).contains(")?["));
    }
}
