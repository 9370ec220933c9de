//! People for the ownership rules (docs/design.md 9.3): API keys given a
//! role, each named by the person's e-mail address, and the team "emea"
//! that `lead@example.com` leads and `grace@example.com` is a member of.

use bowtie_runtime::auth::hash_key;
use bowtie_runtime::config::{ApiKeySettings, Settings, TeamSettings};

/// The people most ownership tests use: ada (csm), lead (manager of the
/// team "emea", whose member is grace) and root (admin).
pub const PEOPLE: [(&str, &str); 3] = [
    ("ada@example.com", "csm"),
    ("lead@example.com", "manager"),
    ("root@example.com", "admin"),
];

/// The secret of the person key named `name`.
pub fn secret(name: &str) -> String {
    format!("bt_test_person_{}", name.replace(['@', '.'], "_"))
}

/// `settings` with a key given `role` for each (name, role) pair, and the
/// team "emea".
pub fn with_people(settings: &mut Settings, keys: &[(&str, &str)]) {
    for (name, role) in keys {
        settings.auth.keys.push(ApiKeySettings {
            name: (*name).to_owned(),
            hash: hash_key(&secret(name)),
            scopes: Vec::new(),
            expires_at: None,
            rate_limit: None,
            role: Some((*role).to_owned()),
        });
    }
    settings.auth.teams = vec![TeamSettings {
        name: "emea".into(),
        managers: vec!["lead@example.com".into()],
        members: vec!["grace@example.com".into()],
    }];
}

/// An audit entry as (principal, method name without its service, result
/// code): what the ownership tests compare.
pub fn audited_as(e: bowtie_proto::common::AuditEvent) -> [String; 3] {
    let method = e.rpc.rsplit('/').next().unwrap_or_default().to_owned();
    [e.principal, method, e.result_code]
}
