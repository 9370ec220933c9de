//! `docs/configuration.md` documents every setting of the built-in defaults
//! and no setting that does not exist, with the default the binary really
//! uses. Its tables give one setting per row, the dotted key in backticks in
//! the first column and the default in the second; `<service>` stands for
//! each of accounts, funnel, revenue, scoring and success.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use bowtie_runtime::config::DEFAULTS_TOML;

use super::read;

/// The services whose settings `<service>` stands for.
const SERVICES: [&str; 5] = ["accounts", "funnel", "revenue", "scoring", "success"];

/// Every leaf of the defaults as a dotted key with its value (a table is a
/// section, an array of tables such as `auth.keys` is one setting).
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&dotted, inner, out),
            leaf => {
                out.insert(dotted, leaf.clone());
            }
        }
    }
}

fn defaults() -> anyhow::Result<BTreeMap<String, toml::Value>> {
    let table = DEFAULTS_TOML
        .parse::<toml::Table>()
        .context("parsing defaults.toml")?;
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    Ok(out)
}

/// The text between the first pair of backticks in `cell`, if any.
fn first_code(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// A documented setting: its key and the default the page gives for it.
struct Documented {
    key: String,
    default: Option<String>,
    /// Written once for the five services (`<service>.listen`).
    per_service: bool,
    line: usize,
}

/// Every table row of the page whose first cell is a setting in backticks.
fn documented(page: &str) -> Vec<Documented> {
    let mut out = Vec::new();
    for (n, line) in page.lines().enumerate() {
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let text = format!("`{row}");
        let cells: Vec<&str> = text.split(" | ").map(str::trim).collect();
        let Some(key) = cells.first().and_then(|c| first_code(c)) else {
            continue;
        };
        let default = cells.get(1).and_then(|c| first_code(c)).map(str::to_owned);
        let per_service = key.contains("<service>");
        let keys: Vec<String> = if per_service {
            SERVICES
                .iter()
                .map(|s| key.replace("<service>", s))
                .collect()
        } else {
            vec![key.to_owned()]
        };
        for key in keys {
            out.push(Documented {
                key,
                default: default.clone(),
                per_service,
                line: n + 1,
            });
        }
    }
    out
}

/// The documented default read as TOML, or as a bare string when it is not
/// TOML (`127.0.0.1:8080`).
fn parse_default(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

#[test]
fn the_configuration_page_lists_exactly_the_settings_of_the_built_in_defaults() -> anyhow::Result<()>
{
    let defaults = defaults()?;
    let page = read("docs/configuration.md")?;
    let documented = documented(&page);
    let keys: BTreeSet<&str> = documented.iter().map(|d| d.key.as_str()).collect();

    let undocumented: Vec<&String> = defaults
        .keys()
        .filter(|k| !keys.contains(k.as_str()))
        .collect();
    let unknown: Vec<String> = documented
        .iter()
        .filter(|d| !defaults.contains_key(&d.key))
        .map(|d| format!("{} (line {})", d.key, d.line))
        .collect();
    assert!(
        undocumented.is_empty(),
        "settings of defaults.toml missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents settings defaults.toml does not have: {unknown:?}"
    );
    Ok(())
}

#[test]
fn the_configuration_page_gives_each_setting_its_real_default() -> anyhow::Result<()> {
    let defaults = defaults()?;
    let page = read("docs/configuration.md")?;
    let mut wrong = Vec::new();
    for doc in documented(&page) {
        // A per-service row gives its default for all four services in words.
        let (Some(default), Some(real)) = (&doc.default, defaults.get(&doc.key)) else {
            continue;
        };
        if doc.per_service {
            continue;
        }
        if &parse_default(default) != real {
            wrong.push(format!(
                "{} (line {}): documented {default}, defaults.toml has {real}",
                doc.key, doc.line
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md gives wrong defaults: {wrong:#?}"
    );
    Ok(())
}
