//! The OpenAPI document is generated from the handlers: it parses, every
//! served route is in it, every documented route is served, every schema
//! reference resolves, and a method a path does not declare is 405.

use std::collections::BTreeSet;

use bowtie_testkit::gateway::Stack;
use bowtie_testkit::{TestDatabase, backend_test};
use reqwest::{Method, StatusCode};
use serde_json::Value;

backend_test!(
    the_openapi_document_lists_every_route_and_every_route_is_served,
    an_undeclared_method_is_405_with_allow_naming_the_declared_ones,
);

/// The routes the gateway serves, as (method, path) pairs.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/accounts"),
    ("post", "/api/v1/accounts"),
    ("get", "/api/v1/accounts/{id}"),
    ("patch", "/api/v1/accounts/{id}"),
    (
        "put",
        "/api/v1/accounts/by-external-id/{source}/{external_id}",
    ),
    ("get", "/api/v1/accounts/{id}/journey"),
    ("post", "/api/v1/accounts/{id}/transitions"),
    ("get", "/api/v1/funnel"),
    ("get", "/api/v1/funnel/cohorts"),
    ("get", "/api/v1/funnel/sensitivity"),
    ("get", "/api/v1/funnel/stages/{stage}/accounts"),
    ("get", "/api/v1/revenue/mrr"),
    ("get", "/api/v1/revenue/churn"),
    ("get", "/api/v1/revenue/trials"),
    ("get", "/api/v1/revenue/retention"),
    ("get", "/api/v1/revenue/cohorts"),
    ("get", "/api/v1/revenue/movements"),
    ("get", "/api/v1/revenue/renewals"),
    ("get", "/api/v1/revenue/unit-economics"),
    ("post", "/api/v1/subscriptions"),
    ("get", "/api/v1/subscriptions/{id}"),
    ("post", "/api/v1/subscriptions/{id}/changes"),
    ("post", "/api/v1/subscriptions/{id}/cancellation"),
    ("get", "/api/v1/accounts/{id}/health"),
    ("get", "/api/v1/accounts/{id}/churn-risk"),
    ("get", "/api/v1/scoring/health"),
    ("get", "/api/v1/scoring/at-risk"),
    ("get", "/api/v1/scoring/alerts"),
    ("get", "/api/v1/scoring/segments"),
    ("get", "/api/v1/success/playbooks"),
    ("get", "/api/v1/success/playbooks/{id}/effectiveness"),
    ("get", "/api/v1/success/ctas"),
    ("get", "/api/v1/success/ctas/{id}"),
    ("post", "/api/v1/success/ctas/{id}/status"),
    ("get", "/api/v1/accounts/{id}/timeline"),
    ("post", "/api/v1/accounts/{id}/timeline"),
    ("get", "/api/v1/export/accounts"),
    ("get", "/api/v1/export/movements"),
    ("get", "/api/v1/export/subscriptions"),
    ("get", "/api/v1/export/transitions"),
    ("post", "/webhooks/hubspot"),
    ("post", "/webhooks/crm"),
    ("post", "/webhooks/stripe"),
    ("post", "/v1/identify"),
    ("post", "/v1/group"),
    ("post", "/v1/track"),
    ("post", "/v1/batch"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.insert(r.to_owned());
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

async fn the_openapi_document_lists_every_route_and_every_route_is_served(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, doc) = stack.call(Method::GET, "/openapi.json", None, None).await?;
    assert_eq!(status, StatusCode::OK);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi version {version:?}");
    assert_eq!(doc["info"]["title"], "Bowtie API");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut documented = BTreeSet::new();
    for (path, item) in &paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(method) {
                documented.insert((method.to_owned(), path.clone()));
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path} documents no response"
                );
            }
        }
    }
    for (method, path) in ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is missing from the document"
        );
    }

    // Every reference names a schema the document defines.
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }

    // Every documented operation is routed: an unrouted path would be
    // axum's empty 404 or 405, a routed one answers with JSON.
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "0191d6a4-0000-7000-8000-000000000000")
            .replace("{stage}", "AWARENESS")
            .replace("{source}", "hubspot")
            .replace("{external_id}", "1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
        let response = stack.request(method.clone(), &concrete).send().await?;
        let status = response.status();
        let body = response.text().await?;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            serde_json::from_str::<Value>(&body).is_ok(),
            "{method} {path} answered {status} without JSON: {body:?}"
        );
    }
    Ok(())
}

async fn an_undeclared_method_is_405_with_allow_naming_the_declared_ones(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let id = "0191d6a4-0000-7000-8000-000000000000";
    for (method, path, allowed) in [
        (
            Method::DELETE,
            "/api/v1/accounts".to_owned(),
            vec!["GET", "POST"],
        ),
        (
            Method::PUT,
            format!("/api/v1/accounts/{id}"),
            vec!["GET", "PATCH"],
        ),
        (
            Method::POST,
            format!("/api/v1/accounts/{id}/journey"),
            vec!["GET"],
        ),
        (
            Method::GET,
            format!("/api/v1/accounts/{id}/transitions"),
            vec!["POST"],
        ),
        (Method::PATCH, "/api/v1/revenue/mrr".to_owned(), vec!["GET"]),
        (Method::GET, "/webhooks/crm".to_owned(), vec!["POST"]),
    ] {
        let response = stack
            .request(method.clone(), &path)
            .bearer_auth("bowtie-dev-admin")
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow = response
            .headers()
            .get(reqwest::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let listed: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
        for m in &allowed {
            assert!(
                listed.contains(m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "UNIMPLEMENTED", "{method} {path}");
    }
    Ok(())
}
