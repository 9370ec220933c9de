//! The deployment files under `deploy/` (compose, secret examples, Kubernetes
//! manifests and docs) configure Bowtie only with settings that exist: every
//! `BOWTIE__SECTION__KEY` they name is a key of the built-in defaults
//! (`bowtie_runtime::config::DEFAULTS_TOML`), and every listen address and peer
//! address they give uses the service's default port. A renamed or removed
//! setting, or a port moved in one place only, fails here instead of at
//! start-up in a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bowtie_runtime::config::DEFAULTS_TOML;

/// One mention of a setting in a deployment file.
#[derive(Debug, Clone)]
struct Mention {
    /// The variable, e.g. `BOWTIE__FUNNEL__LISTEN`.
    key: String,
    /// The value assigned to it on that line (`KEY=value` or `KEY: value`), if any.
    value: Option<String>,
    /// Where: file and line.
    place: String,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn defaults() -> anyhow::Result<toml::Table> {
    DEFAULTS_TOML
        .parse::<toml::Table>()
        .context("parsing defaults.toml")
}

/// The text files of `deploy/` that configure Bowtie: YAML, env files and
/// their examples, TOML, shell and Markdown. The checker script is skipped: it
/// builds variable names from service names rather than naming settings.
fn deploy_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            deploy_files(&path, out)?;
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let wanted = [".yaml", ".env", ".example", ".toml", ".sh", ".md"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if wanted {
            out.push(path);
        }
    }
    Ok(())
}

/// Every `BOWTIE__...` variable named in `text`. A name that a script
/// completes at run time (`BOWTIE__${SERVICE}__...`) is not a setting and is
/// left out.
fn mentions(text: &str, file: &str) -> Vec<Mention> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("BOWTIE__") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let key = &tail[..end];
            let after = &tail[end..];
            let templated = key.ends_with('_') || after.starts_with(['$', '{']);
            if !templated {
                let value = after
                    .strip_prefix('=')
                    .or_else(|| after.strip_prefix(':'))
                    .map(|v| v.trim().trim_matches('"').to_owned());
                found.push(Mention {
                    key: key.to_owned(),
                    value,
                    place: format!("{file}:{}", number + 1),
                });
            }
            rest = &tail[end..];
        }
    }
    found
}

/// The setting a variable names, as a path into the defaults:
/// `BOWTIE__FUNNEL__DATABASE__URL` is `funnel.database.url`.
fn setting_path(key: &str) -> Option<Vec<String>> {
    let path = key.strip_prefix("BOWTIE__")?;
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    Some(parts)
}

/// Whether the defaults have a value at `key`'s path.
fn is_known(defaults: &toml::Table, key: &str) -> bool {
    let Some(path) = setting_path(key) else {
        return false;
    };
    let mut table = defaults;
    for (i, part) in path.iter().enumerate() {
        match table.get(part) {
            Some(toml::Value::Table(inner)) if i + 1 < path.len() => table = inner,
            Some(toml::Value::Table(_)) => return false,
            Some(_) => return i + 1 == path.len(),
            None => return false,
        }
    }
    false
}

fn all_mentions() -> anyhow::Result<Vec<Mention>> {
    let root = deploy_dir();
    let mut files = Vec::new();
    deploy_files(&root, &mut files)?;
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        all.extend(mentions(&text, &format!("deploy/{shown}")));
    }
    Ok(all)
}

/// The port of every service with a listen address in the defaults.
fn default_ports(defaults: &toml::Table) -> anyhow::Result<BTreeMap<String, u16>> {
    let mut ports = BTreeMap::new();
    for (name, value) in defaults {
        let Some(listen) = value.get("listen").and_then(toml::Value::as_str) else {
            continue;
        };
        ports.insert(name.clone(), port_of(listen)?);
    }
    Ok(ports)
}

/// The port at the end of `host:port` or `scheme://host:port`.
fn port_of(address: &str) -> anyhow::Result<u16> {
    let Some((_, port)) = address.rsplit_once(':') else {
        bail!("{address:?} has no port");
    };
    port.trim_end_matches('/')
        .parse()
        .with_context(|| format!("port of {address:?}"))
}

#[test]
fn every_setting_named_in_deploy_exists_in_the_defaults() -> anyhow::Result<()> {
    let defaults = defaults()?;
    let all = all_mentions()?;
    // compose, the secret examples and the ConfigMap name well over twenty
    // settings between them; finding fewer means the scan itself is broken.
    assert!(
        all.len() >= 20,
        "only {} settings found under deploy/",
        all.len()
    );
    let unknown: Vec<String> = all
        .iter()
        .filter(|m| !is_known(&defaults, &m.key))
        .map(|m| format!("{} at {}", m.key, m.place))
        .collect();
    assert!(
        unknown.is_empty(),
        "settings not in crates/runtime/src/defaults.toml:\n{}",
        unknown.join("\n")
    );
    Ok(())
}

#[test]
fn every_listen_address_in_deploy_uses_the_default_port_of_its_service() -> anyhow::Result<()> {
    let ports = default_ports(&defaults()?)?;
    assert!(
        ports.len() >= 5,
        "defaults.toml lists {} services",
        ports.len()
    );
    let all = all_mentions()?;
    for (service, port) in &ports {
        let key = format!("BOWTIE__{}__LISTEN", service.to_ascii_uppercase());
        let assigned: Vec<&Mention> = all
            .iter()
            .filter(|m| m.key == key && m.value.is_some())
            .collect();
        assert!(!assigned.is_empty(), "deploy/ never sets {key}");
        for mention in assigned {
            let value = mention.value.as_deref().unwrap_or_default();
            assert_eq!(
                port_of(value)?,
                *port,
                "{key}={value} at {} is not the default port of {service}",
                mention.place
            );
        }
    }
    Ok(())
}

#[test]
fn every_peer_address_in_deploy_uses_the_default_port_of_the_peer() -> anyhow::Result<()> {
    let defaults = defaults()?;
    let ports = default_ports(&defaults)?;
    let Some(toml::Value::Table(peers)) = defaults.get("peers") else {
        bail!("defaults.toml has no [peers]");
    };
    let all = all_mentions()?;
    let mut checked = 0;
    for mention in &all {
        let Some(path) = setting_path(&mention.key) else {
            continue;
        };
        let [section, peer] = path.as_slice() else {
            continue;
        };
        // peers.<service> holds an address; peers.api_key and the timeouts do not.
        if section != "peers" || !ports.contains_key(peer.as_str()) {
            continue;
        }
        let Some(value) = mention.value.as_deref() else {
            continue;
        };
        assert!(
            peers.contains_key(peer.as_str()),
            "peers.{peer} is not a setting"
        );
        assert_eq!(
            port_of(value)?,
            ports[peer.as_str()],
            "{}={value} at {} is not the default port of {peer}",
            mention.key,
            mention.place
        );
        assert!(
            value.starts_with(&format!("http://{peer}:")),
            "{}={value} at {}: peers are reached by their service name",
            mention.key,
            mention.place
        );
        checked += 1;
    }
    // accounts, funnel, revenue and scoring are each a peer of some service.
    assert!(
        checked >= 4,
        "only {checked} peer addresses found under deploy/"
    );
    Ok(())
}

#[test]
fn a_misspelt_or_partial_setting_is_not_taken_for_a_known_one() -> anyhow::Result<()> {
    let defaults = defaults()?;
    assert!(is_known(&defaults, "BOWTIE__FUNNEL__DATABASE__SCHEMA"));
    assert!(is_known(&defaults, "BOWTIE__AUTH__KEYS"));
    assert!(!is_known(&defaults, "BOWTIE__FUNNEL__DATABASE__SCHEME"));
    assert!(!is_known(&defaults, "BOWTIE__FUNNEL__DATABASE"));
    assert!(!is_known(&defaults, "BOWTIE__FUNNEL__LISTEN__PORT"));
    assert!(!is_known(&defaults, "BOWTIE__"));
    let found = mentions(
        "BOWTIE__${UPPER}__DATABASE__URL=x\n  BOWTIE__FUNNEL__LISTEN: \"0.0.0.0:50052\"",
        "example",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "BOWTIE__FUNNEL__LISTEN");
    assert_eq!(found[0].value.as_deref(), Some("0.0.0.0:50052"));
    assert_eq!(found[0].place, "example:2");
    Ok(())
}
