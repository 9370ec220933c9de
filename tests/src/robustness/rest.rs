//! The same randomised bad input for the gateway's REST routes, generated
//! from its OpenAPI document: hostile path segments, query parameters and
//! JSON bodies (wrong types, nulls, extreme numbers, unknown enum names,
//! deep nesting, bytes that are not JSON, a missing content type).
//!
//! A clear answer is a 2xx, or a 4xx the error table documents (400, 404,
//! 409, 413, 415, 429) carrying the one error shape
//! `{"error": {"code", "message", "field_violations"}}`, with at least one
//! named field on a 400 for a request that was JSON. A 5xx, a dropped
//! connection or a hang is a failure.

use futures::StreamExt as _;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

use super::{CALL_TIMEOUT, CONCURRENCY, Failure, Rng, Summary, plausible, text};

/// Statuses a REST request may get.
pub const CLEAR_STATUSES: [u16; 9] = [200, 201, 204, 400, 404, 409, 413, 415, 429];

/// One route of the OpenAPI document.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The HTTP method.
    pub method: Method,
    /// The path template, e.g. `/api/v1/accounts/{id}`.
    pub path: String,
    /// Path and query parameters: (name, in path, schema).
    pub params: Vec<(String, bool, Value)>,
    /// The JSON body's schema, if the route takes one.
    pub body: Option<Value>,
}

impl Operation {
    /// `METHOD /path`, for reports.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Every route of the document under `/api/`.
pub fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        if !path.starts_with("/api/") {
            continue;
        }
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                continue;
            };
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let name = p["name"].as_str()?.to_owned();
                    let location = p["in"].as_str()?;
                    (location == "path" || location == "query")
                        .then(|| (name, location == "path", p["schema"].clone()))
                })
                .collect();
            let body = op["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|s| Value::Object(s.clone()));
            out.push(Operation {
                method,
                path: path.clone(),
                params,
                body,
            });
        }
    }
    out
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..8 {
        let Some(r) = schema["$ref"].as_str() else {
            break;
        };
        let Some(name) = r.strip_prefix("#/components/schemas/") else {
            break;
        };
        schema = &doc["components"]["schemas"][name];
    }
    schema
}

/// The schema's type name (`string`, `integer`, ...), ignoring `null` in a
/// type list, and the first alternative of a `oneOf`/`anyOf`/`allOf`.
fn kind<'a>(doc: &'a Value, schema: &'a Value) -> (&'a Value, &'a str) {
    let schema = resolve(doc, schema);
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema[combinator].as_array().and_then(|a| {
            a.iter()
                .find(|s| s["type"].as_str() != Some("null"))
                .or_else(|| a.first())
        }) {
            return kind(doc, first);
        }
    }
    let name = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ if schema["properties"].is_object() => "object",
        _ => "string",
    };
    (schema, name)
}

/// A JSON value for `schema` (named `name`), hostile or plausible.
fn value(
    doc: &Value,
    schema: &Value,
    name: &str,
    rng: &mut Rng,
    pool: &[String],
    depth: usize,
) -> Value {
    let (schema, kind) = kind(doc, schema);
    let hostile = rng.hostile();
    if hostile && rng.percent(12) {
        // The wrong type altogether.
        return rng.pick(&[
            Value::Null,
            json!(true),
            json!(-1),
            json!(1e308),
            json!("x"),
            json!([]),
            json!({}),
            json!(18_446_744_073_709_551_615u64),
        ]);
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.is_empty()
    {
        return if hostile && rng.percent(40) {
            json!(rng.pick(&["BOGUS", "", "unspecified", "0", "' OR 1=1 --"]))
        } else {
            rng.pick(options)
        };
    }
    match kind {
        "object" if depth < 4 => {
            let mut object = Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (field, field_schema) in properties {
                    if rng.percent(if hostile { 70 } else { 90 }) {
                        object.insert(
                            field.clone(),
                            value(doc, field_schema, field, rng, pool, depth + 1),
                        );
                    }
                }
            }
            if hostile && rng.percent(10) {
                object.insert("unknown_field".into(), json!("surprise"));
            }
            Value::Object(object)
        }
        "array" if depth < 4 => {
            let count = if hostile && rng.percent(3) {
                300
            } else {
                rng.below(3)
            };
            Value::Array(
                (0..count)
                    .map(|_| value(doc, &schema["items"], name, rng, pool, depth + 1))
                    .collect(),
            )
        }
        "integer" | "number" => {
            if hostile {
                rng.pick(&[
                    json!(0),
                    json!(-1),
                    json!(i64::MAX),
                    json!(i64::MIN),
                    json!(u64::MAX),
                    json!(2_147_483_648u64),
                    json!(1.5),
                    json!(-0.0),
                    json!(1e300),
                ])
            } else {
                json!(1 + rng.below(100))
            }
        }
        "boolean" => json!(rng.below(2) == 1),
        _ => {
            if schema["format"].as_str() == Some("date-time") {
                return json!(date_time(rng, hostile));
            }
            json!(if hostile {
                text(rng, name, pool)
            } else {
                plausible(rng, name, name.ends_with("id"), pool)
            })
        }
    }
}

fn date_time(rng: &mut Rng, hostile: bool) -> String {
    if !hostile {
        return rng
            .pick(&[
                "2026-01-01T00:00:00Z",
                "2026-03-15T09:30:00Z",
                "2025-11-02T00:00:00+02:00",
            ])
            .to_owned();
    }
    rng.pick(&[
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "+275760-09-13T00:00:00Z",
        "2026-01-01",
        "2026-01-01T00:00:00",
        "1970-01-01T00:00:00Z",
        "2026-01-01T00:00:60Z",
    ])
    .to_owned()
}

/// A path or query value for a parameter.
/// At most [`MAX_URL_PARAM`] bytes: URLs have a length limit of their own
/// (the client refuses a URI over 64 KiB).
fn param(doc: &Value, schema: &Value, name: &str, rng: &mut Rng, pool: &[String]) -> String {
    let mut value = match value(doc, schema, name, rng, pool, 3) {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if value.len() > MAX_URL_PARAM {
        let mut end = MAX_URL_PARAM;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// Longest generated path segment or query value.
const MAX_URL_PARAM: usize = 6_000;

/// A body that is not the JSON the route expects, or not JSON at all.
fn broken_body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(7) {
        0 => b"{".to_vec(),
        1 => b"null".to_vec(),
        2 => b"[]".to_vec(),
        3 => vec![0xff, 0xfe, 0x00, 0x7b],
        4 => format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        5 => b"{\"name\": \"a\", \"name\": 1}".to_vec(),
        _ => format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20)).into_bytes(),
    }
}

/// Sends `requests` random requests to the gateway at `base` with `key`,
/// spread over every route of `doc`. Returns the counts, failures included.
pub async fn run(
    doc: &Value,
    base: &str,
    key: &str,
    pool: &[String],
    requests: usize,
    seed: u64,
) -> anyhow::Result<Summary> {
    let ops = operations(doc);
    anyhow::ensure!(!ops.is_empty(), "the OpenAPI document lists no /api/ route");
    // A connection each: HTTP/1.1 lets the server close a kept-alive
    // connection after a response (e.g. one refusing a body it did not
    // read), and a client that reuses it at that moment sees a transport
    // error that says nothing about the request it sent.
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()?;
    let base = Url::parse(base)?;
    let results = futures::stream::iter(0..requests)
        .map(|index| {
            let (http, base, ops) = (http.clone(), base.clone(), &ops);
            async move {
                let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let op = rng.pick(ops);
                let hostility = rng.pick(&[100, 40, 10]);
                rng.set_hostility(hostility);
                let mut url = base.clone();
                let mut segments = Vec::new();
                for segment in op.path.trim_start_matches('/').split('/') {
                    let param = segment
                        .strip_prefix('{')
                        .and_then(|s| s.strip_suffix('}'))
                        .and_then(|name| op.params.iter().find(|p| p.0 == name && p.1));
                    segments.push(match param {
                        Some((name, _, schema)) => self::param(doc, schema, name, &mut rng, pool),
                        None => segment.to_owned(),
                    });
                }
                if let Ok(mut path) = url.path_segments_mut() {
                    path.clear().extend(&segments);
                }
                for (name, _, schema) in op.params.iter().filter(|p| !p.1) {
                    if rng.percent(60) {
                        let v = param(doc, schema, name, &mut rng, pool);
                        url.query_pairs_mut().append_pair(name, &v);
                    }
                }
                let mut request = http
                    .request(op.method.clone(), url.clone())
                    .bearer_auth(key);
                let mut broken = false;
                if let Some(schema) = &op.body {
                    let hostile = rng.hostile();
                    let body = if hostile && rng.percent(8) {
                        broken = true;
                        broken_body(&mut rng)
                    } else {
                        serde_json::to_vec(&value(doc, schema, "body", &mut rng, pool, 0))
                            .unwrap_or_default()
                    };
                    if !(hostile && rng.percent(3)) {
                        request = request.header("content-type", "application/json");
                    } else {
                        broken = true;
                    }
                    request = request.body(body);
                    if rng.percent(50) {
                        request =
                            request.header("idempotency-key", format!("key-{}", rng.below(20)));
                    }
                }
                let outcome = request.send().await;
                let (code, problem) = match outcome {
                    Err(e) if e.is_timeout() => (
                        "hang".to_owned(),
                        Some(format!("no answer within {CALL_TIMEOUT:?}")),
                    ),
                    Err(e) => (
                        "dropped".to_owned(),
                        Some(format!("connection failed: {e}")),
                    ),
                    Ok(response) => {
                        let status = response.status();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        (status.as_u16().to_string(), judge(status, &body, broken))
                    }
                };
                (index, op.name(), url.to_string(), code, problem)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut summary = Summary {
        requests,
        ..Summary::default()
    };
    for (index, name, url, code, problem) in results {
        if code.starts_with('2') {
            summary.reached.insert(name.clone());
        }
        *summary.codes.entry(code).or_default() += 1;
        if let Some(problem) = problem {
            let mut request = url;
            request.truncate(512);
            summary.failures.push(Failure {
                index,
                path: name,
                problem,
                request,
            });
        }
    }
    summary.failures.sort_by_key(|f| f.index);
    Ok(summary)
}

/// Why an answer is not clear, if it is not.
fn judge(status: StatusCode, body: &Value, broken: bool) -> Option<String> {
    if !CLEAR_STATUSES.contains(&status.as_u16()) {
        return Some(format!("HTTP {status}: {body}"));
    }
    if status.is_success() {
        return None;
    }
    let error = &body["error"];
    if !error["code"].is_string() || !error["message"].is_string() {
        return Some(format!("HTTP {status} without the error shape: {body}"));
    }
    if status == StatusCode::BAD_REQUEST && !broken {
        let named = error["field_violations"].as_array().is_some_and(|v| {
            v.iter()
                .any(|f| f["field"].as_str().is_some_and(|s| !s.is_empty()))
        });
        if !named {
            return Some(format!("HTTP 400 names no field: {body}"));
        }
    }
    None
}
