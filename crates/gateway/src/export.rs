//! Reports as CSV (RFC 4180) beside JSON: `?format=csv` or `Accept:
//! text/csv` answers a report's table - its rows array, one line per row,
//! nested objects flattened into dotted columns (`start_mrr.minor_units`) -
//! instead of the JSON document. A paged list puts its next page token in
//! the `Next-Page-Token` header. docs/api/rest.md ("CSV") describes it.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::IntoParams;

use crate::error::ApiError;

/// The representation a report is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The JSON document (the default).
    #[default]
    Json,
    /// The report's table as CSV.
    Csv,
}

/// The `format` query parameter every report takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json` (default) or `csv`; `Accept: text/csv` also asks for CSV.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Format {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(asked) =
            axum::extract::Query::<FormatQuery>::try_from_uri(&parts.uri)
                .map_err(|_| ApiError::invalid("format", "must be json or csv"))?;
        match asked.format.as_deref() {
            Some("csv") => return Ok(Format::Csv),
            Some("json") => return Ok(Format::Json),
            Some(_) => return Err(ApiError::invalid("format", "must be json or csv")),
            None => {}
        }
        let accept = parts
            .headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let wants_csv = accept
            .split(',')
            .any(|t| t.split(';').next().is_some_and(|m| m.trim() == "text/csv"));
        Ok(if wants_csv { Format::Csv } else { Format::Json })
    }
}

/// A report's answer: `body` as JSON, or as CSV the array under the
/// top-level field `rows`.
pub struct Report<T> {
    format: Format,
    rows: &'static str,
    name: &'static str,
    body: T,
}

impl<T: Serialize> Report<T> {
    /// `body`, in `format`; `rows` names its table's field and `name` the
    /// file a browser saves the CSV as (`name.csv`).
    pub fn new(format: Format, name: &'static str, rows: &'static str, body: T) -> Self {
        Self {
            format,
            rows,
            name,
            body,
        }
    }
}

impl<T: Serialize> IntoResponse for Report<T> {
    fn into_response(self) -> Response {
        if self.format == Format::Json {
            return Json(self.body).into_response();
        }
        let document = match serde_json::to_value(&self.body) {
            Ok(v) => v,
            Err(e) => return ApiError::internal(&format!("report to JSON: {e}")).into_response(),
        };
        let csv = match to_csv(&document, self.rows) {
            Ok(csv) => csv,
            Err(e) => return ApiError::internal(&format!("report to CSV: {e}")).into_response(),
        };
        let mut response = (StatusCode::OK, csv).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.csv\"", self.name))
        {
            headers.insert(CONTENT_DISPOSITION, v);
        }
        let token = document
            .pointer("/page/next_page_token")
            .or_else(|| document.get("next_page_token"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !token.is_empty()
            && let Ok(v) = HeaderValue::from_str(token)
        {
            headers.insert("next-page-token", v);
        }
        response
    }
}

/// The array under `rows` in `document` (the document itself, as one row,
/// when `rows` is empty) as CSV: a header of every column
/// any row has (first seen first, fields in the order the JSON document
/// has them), then one record per row; no rows is an empty file.
pub fn to_csv(document: &Value, rows: &str) -> Result<String, csv::Error> {
    let whole = std::slice::from_ref(document);
    let items = if rows.is_empty() {
        whole
    } else {
        document
            .get(rows)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
    };
    let flat: Vec<Vec<(String, String)>> = items
        .iter()
        .map(|row| {
            let mut cells = Vec::new();
            flatten("", row, &mut cells);
            cells
        })
        .collect();
    let mut columns: Vec<&str> = Vec::new();
    for row in &flat {
        for (name, _) in row {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    if columns.is_empty() {
        return Ok(String::new());
    }
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    out.write_record(&columns)?;
    for row in &flat {
        let record = columns.iter().map(|c| {
            row.iter()
                .find(|(name, _)| name == c)
                .map_or("", |(_, v)| v.as_str())
        });
        out.write_record(record)?;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The cells of `value` under the column prefix `prefix`: an object's
/// fields as `prefix.field`, a list of plain values joined by `;`, a list
/// of objects as its JSON text, null as an empty cell.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let name = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Object(fields) => {
            for (key, v) in fields {
                flatten(&name(key), v, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let joined: Vec<String> = items.iter().map(plain).collect();
            out.push((prefix.to_owned(), joined.join(";")));
        }
        Value::Array(items) => match keyed(items) {
            Some(keyed) => {
                for (key, fields) in keyed {
                    for (field, v) in fields.iter().skip(1) {
                        flatten(&name(&format!("{key}.{field}")), v, out);
                    }
                }
            }
            None => out.push((prefix.to_owned(), value.to_string())),
        },
        other => out.push((prefix.to_owned(), plain(other))),
    }
}

/// A list of objects whose first field is a distinct, non-empty text (a
/// reason code, a kind, a stage), each with that text: such a list becomes
/// one column per key and field (`churn_by_reason.price.lost_mrr`).
fn keyed(items: &[Value]) -> Option<Vec<(&str, &serde_json::Map<String, Value>)>> {
    let mut out: Vec<(&str, &serde_json::Map<String, Value>)> = Vec::with_capacity(items.len());
    for item in items {
        let fields = item.as_object()?;
        let key = fields.values().next()?.as_str().filter(|k| !k.is_empty())?;
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        out.push((key, fields));
    }
    Some(out)
}

/// A plain JSON value as a cell: strings unquoted, null empty.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_flatten_into_dotted_columns_with_a_header() -> Result<(), csv::Error> {
        let report = json!({
            "currency": "USD",
            "periods": [
                {"period": "2026-01", "end_mrr": {"currency": "USD", "minor_units": 120_000}, "paying": 3},
                {"period": "2026-02", "end_mrr": {"currency": "USD", "minor_units": 99_950}, "paying": 2, "note": "a, \"quoted\" one"},
            ]
        });
        assert_eq!(
            to_csv(&report, "periods")?,
            "period,end_mrr.currency,end_mrr.minor_units,paying,note\r\n\
             2026-01,USD,120000,3,\r\n\
             2026-02,USD,99950,2,\"a, \"\"quoted\"\" one\"\r\n"
        );
        Ok(())
    }

    #[test]
    fn lists_inside_a_row_join_plain_values_and_key_objects_by_their_first_field()
    -> Result<(), csv::Error> {
        let report = json!({"rows": [
            {"tags": ["vip", "eu"], "reasons": [{"code": "price", "lost": 2}, {"code": "fit", "lost": 5}], "gone": null},
            {"tags": [], "reasons": [{"code": "fit", "lost": 1}], "gone": true},
        ]});
        assert_eq!(
            to_csv(&report, "rows")?,
            "tags,reasons.price.lost,reasons.fit.lost,gone\r\n\
             vip;eu,2,5,\r\n\
             ,,1,true\r\n"
        );
        Ok(())
    }

    #[test]
    fn a_list_of_objects_without_distinct_keys_stays_json() -> Result<(), csv::Error> {
        let report = json!({"rows": [{"points": [{"x": 1}, {"x": 2}]}]});
        assert_eq!(
            to_csv(&report, "rows")?,
            "points\r\n\"[{\"\"x\"\":1},{\"\"x\"\":2}]\"\r\n"
        );
        Ok(())
    }

    #[test]
    fn a_report_without_a_rows_field_is_one_row() -> Result<(), csv::Error> {
        let report = json!({"grr": 0.9, "mrr_start": {"currency": "EUR", "minor_units": 5}});
        assert_eq!(
            to_csv(&report, "")?,
            "grr,mrr_start.currency,mrr_start.minor_units\r\n0.9,EUR,5\r\n"
        );
        Ok(())
    }

    #[test]
    fn a_report_without_rows_is_an_empty_file() -> Result<(), csv::Error> {
        assert_eq!(to_csv(&json!({"periods": []}), "periods")?, "");
        Ok(())
    }
}
