//! Bearer JWTs of a real OpenID Connect provider (oidc-provider, see
//! `bowtie_testkit::oidc`) at a service over gRPC and through the gateway:
//! a token with a role reads (and writes when the role does), a bad token
//! of any kind is UNAUTHENTICATED at the service and 401 at the gateway,
//! made-up key ids cannot make Bowtie hammer the provider's JWKS, and a
//! rotated signing key is picked up after one refresh while tokens of the
//! old key keep working until they expire.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bowtie_proto::accounts::{
    Account, CreateAccountRequest, GetAccountRequest, ListAuditEventsRequest,
};
use bowtie_proto::common::AuditFilter;
use bowtie_proto::common::Segment;
use bowtie_proto::success::success_service_client::SuccessServiceClient;
use bowtie_proto::success::{CreateCtaRequest, CtaType, ListCtasRequest, Priority};
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::oidc::{AUDIENCE, OidcProvider};
use bowtie_testkit::{ADMIN_KEY, Bearer, TestDatabase, WRITE_KEY, backend_test};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tonic::Code;

backend_test!(
    a_token_with_a_role_reads_and_writes_as_its_role_allows,
    every_kind_of_bad_token_is_unauthenticated_at_a_service_and_401_at_the_gateway,
    made_up_key_ids_fetch_the_jwks_at_most_once_per_cooldown,
    after_a_key_rotation_new_tokens_work_after_one_refresh_and_old_ones_until_they_expire,
    a_token_subject_over_its_budget_is_429_and_resource_exhausted_while_another_passes,
    a_csm_token_writes_its_own_account_and_is_denied_on_another_csms_with_the_denial_audited,
    a_manager_token_writes_for_the_team_its_claim_names,
);

/// The provider and every service and the gateway, accepting its tokens
/// with `leeway` seconds of leeway and a JWKS cooldown of `cooldown` seconds.
async fn start(
    db: &TestDatabase,
    leeway: u64,
    cooldown: u64,
) -> anyhow::Result<Option<(OidcProvider, Stack)>> {
    start_with(db, leeway, cooldown, |_| {}).await
}

/// [`start`] with the settings further changed by `configure`.
async fn start_with(
    db: &TestDatabase,
    leeway: u64,
    cooldown: u64,
    configure: impl FnOnce(&mut bowtie_runtime::config::Settings),
) -> anyhow::Result<Option<(OidcProvider, Stack)>> {
    let Some(provider) = OidcProvider::start()? else {
        return Ok(None);
    };
    let mut settings = db.server_settings()?;
    settings.auth.oidc = provider.settings(leeway, cooldown);
    configure(&mut settings);
    let stack = Stack::start_from(settings, |_| {}).await?;
    Ok(Some((provider, stack)))
}

/// The code of `GetAccount` at the accounts service with `token`.
async fn service_read(stack: &Stack, token: &str, id: &str) -> anyhow::Result<Code> {
    let accounts = stack
        .accounts
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("accounts is running"))?;
    let answer = accounts
        .accounts_with(Bearer::new(token))
        .get_account(GetAccountRequest { id: id.to_owned() })
        .await;
    Ok(answer.err().map_or(Code::Ok, |s| s.code()))
}

/// The status of `GET /api/v1/accounts/{id}` at the gateway with `token`.
async fn gateway_read(stack: &Stack, token: &str, id: &str) -> anyhow::Result<StatusCode> {
    Ok(stack.get(&format!("/api/v1/accounts/{id}"), token).await?.0)
}

/// Claims like the provider's own, for `sub`, valid now for ten minutes.
fn claims(provider: &OidcProvider, groups: &[&str]) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": provider.issuer(),
        "aud": AUDIENCE,
        "sub": "forged-subject",
        "iat": now,
        "exp": now + 600,
        "groups": groups,
    })
}

fn segment(value: &Value) -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(value)?))
}

fn decoded(segment: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment)?)?)
}

async fn a_token_with_a_role_reads_and_writes_as_its_role_allows(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db, 5, 60).await? else {
        return Ok(());
    };
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let viewer = provider.token("bowtie-viewer").await?;
    assert_eq!(service_read(&stack, &viewer, &id).await?, Code::Ok);
    let (status, body) = stack
        .get(&format!("/api/v1/accounts/{id}"), &viewer)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "Acme");

    // A viewer may not write; a CSM may.
    let create = |token: &str| {
        let token = token.to_owned();
        let accounts = stack
            .accounts
            .as_ref()
            .map(|a| a.accounts_with(Bearer::new(&token)));
        async move {
            let mut accounts = accounts.ok_or_else(|| anyhow::anyhow!("accounts is running"))?;
            let answer = accounts
                .create_account(CreateAccountRequest {
                    account: Some(Account {
                        csm: "bowtie-csm@example.com".into(),
                        ..bowtie_testkit::fixtures::account("Globex", Segment::Smb)
                    }),
                    idempotency_key: String::new(),
                })
                .await;
            anyhow::Ok(answer.err().map(|s| (s.code(), s.message().to_owned())))
        }
    };
    assert_eq!(
        create(&viewer).await?,
        Some((
            Code::PermissionDenied,
            "\"bowtie-viewer\" has the roles viewer; this call needs the write scope".into()
        ))
    );
    let csm = provider.token("bowtie-csm").await?;
    assert_eq!(create(&csm).await?, None);
    let (status, _) = stack
        .post(
            "/api/v1/accounts",
            &csm,
            &json!({"name": "Initech", "segment": "SMB", "owner": "bowtie-csm@example.com"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);

    // A valid token that names no Bowtie role may call nothing.
    let nobody = provider.token("bowtie-nobody").await?;
    assert_eq!(
        service_read(&stack, &nobody, &id).await?,
        Code::PermissionDenied
    );
    assert_eq!(
        gateway_read(&stack, &nobody, &id).await?,
        StatusCode::FORBIDDEN
    );
    Ok(())
}

async fn every_kind_of_bad_token_is_unauthenticated_at_a_service_and_401_at_the_gateway(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db, 5, 60).await? else {
        return Ok(());
    };
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let real = provider.token("bowtie-viewer").await?;
    // The real token reads, so what follows fails for its own reason.
    assert_eq!(service_read(&stack, &real, &id).await?, Code::Ok);
    assert_eq!(gateway_read(&stack, &real, &id).await?, StatusCode::OK);
    let parts: Vec<&str> = real.split('.').collect();
    let (header, payload) = (decoded(parts[0])?, decoded(parts[1])?);
    let now = chrono::Utc::now().timestamp();
    let mut bad: Vec<(&str, String)> = Vec::new();

    // Signed by the provider's own key, with claims that must be refused.
    let expired = json!({"iat": now - 700, "exp": now - 100});
    let not_yet = json!({"nbf": now + 300});
    let elsewhere = json!({"iss": "https://id.elsewhere.test"});
    let other_api = json!({"aud": ["https://other.test/api"]});
    for (name, change) in [
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong issuer", elsewhere),
        ("wrong audience", other_api),
    ] {
        let mut claims = claims(&provider, &["bowtie-admin"]);
        if let (Some(claims), Some(change)) = (claims.as_object_mut(), change.as_object()) {
            claims.extend(change.clone());
        }
        bad.push((name, provider.sign(&claims).await?));
    }

    // alg none: the real payload, no signature.
    bad.push((
        "alg none",
        format!(
            "{}.{}.",
            segment(&json!({"alg": "none", "typ": "JWT"}))?,
            parts[1]
        ),
    ));

    // HS256 with the provider's public key as the HMAC secret.
    let hs_input = format!(
        "{}.{}",
        segment(&json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}))?,
        parts[1]
    );
    let pem = provider.public_pem().await?;
    let mut mac = Hmac::<Sha256>::new_from_slice(pem.as_bytes())?;
    mac.update(hs_input.as_bytes());
    let hs_signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    bad.push((
        "HS256 with the public key",
        format!("{hs_input}.{hs_signature}"),
    ));

    // A key the test made, under a key id the provider never published.
    let forged_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut forged_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    forged_header.kid = Some("forged-kid".into());
    bad.push((
        "unknown kid",
        jsonwebtoken::encode(
            &forged_header,
            &payload,
            &jsonwebtoken::EncodingKey::from_ec_der(&forged_key.serialize_der()),
        )?,
    ));

    // The real token with its groups changed and its signature kept.
    let mut promoted = payload.clone();
    promoted["groups"] = json!(["bowtie-admin"]);
    bad.push((
        "tampered",
        format!("{}.{}.{}", parts[0], segment(&promoted)?, parts[2]),
    ));

    for (name, token) in &bad {
        assert_eq!(
            service_read(&stack, token, &id).await?,
            Code::Unauthenticated,
            "{name} at the service"
        );
        assert_eq!(
            gateway_read(&stack, token, &id).await?,
            StatusCode::UNAUTHORIZED,
            "{name} at the gateway"
        );
    }
    Ok(())
}

async fn made_up_key_ids_fetch_the_jwks_at_most_once_per_cooldown(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db, 5, 60).await? else {
        return Ok(());
    };
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let real = provider.token("bowtie-viewer").await?;
    assert_eq!(provider.jwks_requests().await?, 0);
    assert_eq!(service_read(&stack, &real, &id).await?, Code::Ok);
    assert_eq!(provider.jwks_requests().await?, 1);
    let parts: Vec<&str> = real.split('.').collect();
    let mut header = decoded(parts[0])?;
    for n in 0..20 {
        header["kid"] = json!(format!("made-up-{n}"));
        let token = format!("{}.{}.{}", segment(&header)?, parts[1], parts[2]);
        assert_eq!(
            service_read(&stack, &token, &id).await?,
            Code::Unauthenticated
        );
    }
    // The first fetch was moments ago: none of the made-up kids fetched again.
    assert_eq!(provider.jwks_requests().await?, 1);
    assert_eq!(service_read(&stack, &real, &id).await?, Code::Ok);
    Ok(())
}

async fn after_a_key_rotation_new_tokens_work_after_one_refresh_and_old_ones_until_they_expire(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let cooldown = 1;
    let Some((provider, stack)) = start(db, 0, cooldown).await? else {
        return Ok(());
    };
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let old = provider.token("bowtie-viewer").await?;
    let old_short = provider.token("bowtie-short").await?;
    let short_exp = decoded(old_short.split('.').nth(1).unwrap_or_default())?["exp"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("the short token has an exp"))?;
    assert_eq!(service_read(&stack, &old_short, &id).await?, Code::Ok);
    let before = provider.jwks_requests().await?;

    let new_kid = provider.rotate().await?;
    let new = provider.token("bowtie-viewer").await?;
    assert_eq!(
        decoded(new.split('.').next().unwrap_or_default())?["kid"],
        json!(new_kid)
    );
    tokio::time::sleep(Duration::from_secs(cooldown) + Duration::from_millis(100)).await;
    assert_eq!(service_read(&stack, &new, &id).await?, Code::Ok);
    assert_eq!(provider.jwks_requests().await? - before, 1);
    assert_eq!(gateway_read(&stack, &new, &id).await?, StatusCode::OK);

    // The old key is still published: its tokens work until they expire.
    assert_eq!(service_read(&stack, &old, &id).await?, Code::Ok);
    assert_eq!(gateway_read(&stack, &old_short, &id).await?, StatusCode::OK);
    let wait = short_exp - chrono::Utc::now().timestamp() + 1;
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())).await;
    }
    assert_eq!(
        service_read(&stack, &old_short, &id).await?,
        Code::Unauthenticated
    );
    assert_eq!(
        gateway_read(&stack, &old_short, &id).await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(service_read(&stack, &old, &id).await?, Code::Ok);
    Ok(())
}

async fn a_token_subject_over_its_budget_is_429_and_resource_exhausted_while_another_passes(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    // Readers may make 2 calls at once, then one every 10 s.
    let Some((provider, stack)) = start_with(db, 5, 60, |settings| {
        settings.auth.rate_limits.read = bowtie_runtime::config::RateBudget {
            per_second: 0.1,
            burst: 2,
        };
    })
    .await?
    else {
        return Ok(());
    };
    let id = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let (ada, lin) = (
        provider.token("bowtie-viewer").await?,
        provider.token("bowtie-short").await?,
    );
    assert_eq!(gateway_read(&stack, &ada, &id).await?, StatusCode::OK);
    assert_eq!(gateway_read(&stack, &ada, &id).await?, StatusCode::OK);
    let refused = stack
        .request(reqwest::Method::GET, &format!("/api/v1/accounts/{id}"))
        .bearer_auth(&ada)
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("10")
    );
    let body: Value = refused.json().await?;
    assert_eq!(
        body["error"]["message"],
        "token subject \"bowtie-viewer\" (scope read) is over its rate limit of 0.1 calls/s; retry after 10 s"
    );
    // Another person's calls still pass, through the gateway and at the service.
    assert_eq!(gateway_read(&stack, &lin, &id).await?, StatusCode::OK);
    assert_eq!(service_read(&stack, &lin, &id).await?, Code::Ok);
    // The service keeps its own bucket per subject: Ada's two calls emptied it.
    assert_eq!(
        service_read(&stack, &ada, &id).await?,
        Code::ResourceExhausted
    );
    Ok(())
}

/// Creates an account whose CSM is `csm` with the write key; its id.
async fn account_of(stack: &Stack, name: &str, csm: &str) -> anyhow::Result<String> {
    let (status, body) = stack
        .post(
            "/api/v1/accounts",
            WRITE_KEY,
            &json!({"name": name, "segment": "SMB", "csm": csm}),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "{status} {body}");
    Ok(body["id"].as_str().unwrap_or_default().to_owned())
}

/// Renames account `id` through the gateway with `token`: the status and
/// the error message (empty on success).
async fn rename(
    stack: &Stack,
    token: &str,
    id: &str,
    name: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let (status, body) = stack
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/accounts/{id}"),
            Some(token),
            Some(&json!({"name": name})),
        )
        .await?;
    Ok((
        status,
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// The names `GET /api/v1/accounts?mine=true` lists for `token`.
async fn my_book(stack: &Stack, token: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = stack.get("/api/v1/accounts?mine=true", token).await?;
    anyhow::ensure!(status == StatusCode::OK, "{status} {body}");
    Ok(body["accounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

async fn a_csm_token_writes_its_own_account_and_is_denied_on_another_csms_with_the_denial_audited(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db, 5, 60).await? else {
        return Ok(());
    };
    let own = account_of(&stack, "Acme", "bowtie-csm@example.com").await?;
    let other = account_of(&stack, "Globex", "grace@example.com").await?;
    let csm = provider.token("bowtie-csm").await?;

    assert_eq!(
        rename(&stack, &csm, &own, "Acme Corp").await?.0,
        StatusCode::OK
    );
    assert_eq!(
        rename(&stack, &csm, &other, "Mine now").await?,
        (
            StatusCode::FORBIDDEN,
            format!(
                "account {other} is not in the book of \"bowtie-csm\" (role csm): only its CSM or owner may change it"
            )
        )
    );
    // Nothing was written, and the refusal is in the accounts audit log.
    let (_, globex) = stack
        .get(&format!("/api/v1/accounts/{other}"), WRITE_KEY)
        .await?;
    assert_eq!(
        (&globex["name"], &globex["version"]),
        (&json!("Globex"), &json!(1))
    );
    let accounts = stack
        .accounts
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("accounts is running"))?;
    let audit = accounts
        .accounts_with(Bearer::new(ADMIN_KEY))
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditFilter {
                account_id: other.clone(),
                ..AuditFilter::default()
            }),
            page: None,
        })
        .await?
        .into_inner()
        .events;
    let entries: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|e| {
            (
                e.principal.as_str(),
                e.rpc.rsplit('/').next().unwrap_or_default(),
                e.result_code.as_str(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("bowtie-csm", "UpdateAccount", "PERMISSION_DENIED"),
            ("test-writer", "CreateAccount", "OK"),
        ]
    );

    // The success service applies the same rules to CTAs, with the CSM it
    // knows of each account.
    let mut success = SuccessServiceClient::new(stack.success.with_key(&csm));
    let cta = |account: &str, owner: &str| CreateCtaRequest {
        account_id: account.to_owned(),
        r#type: CtaType::Risk as i32,
        reason: "Usage dropped".into(),
        priority: Priority::High as i32,
        owner: owner.to_owned(),
        due_time: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 86_400,
            nanos: 0,
        }),
        idempotency_key: String::new(),
    };
    assert!(
        success
            .create_cta(cta(&own, "bowtie-csm@example.com"))
            .await
            .is_ok()
    );
    let refused = success
        .create_cta(cta(&other, "grace@example.com"))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused, Some(Code::PermissionDenied));
    let mine = success
        .list_ctas(ListCtasRequest {
            mine: true,
            ..ListCtasRequest::default()
        })
        .await?
        .into_inner()
        .ctas;
    assert_eq!(
        mine.iter()
            .map(|c| c.account_id.as_str())
            .collect::<Vec<_>>(),
        vec![own.as_str()]
    );

    // Its book, through the gateway; an API key with scopes only has none.
    assert_eq!(my_book(&stack, &csm).await?, vec!["Acme Corp"]);
    let (status, body) = stack.get("/api/v1/accounts?mine=true", WRITE_KEY).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("mine"), "{body}");
    Ok(())
}

async fn a_manager_token_writes_for_the_team_its_claim_names(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start_with(db, 5, 60, |settings| {
        settings.auth.teams = vec![bowtie_runtime::config::TeamSettings {
            name: "emea".into(),
            managers: Vec::new(),
            members: vec!["grace@example.com".into()],
        }];
    })
    .await?
    else {
        return Ok(());
    };
    let team = account_of(&stack, "Acme", "grace@example.com").await?;
    let other = account_of(&stack, "Globex", "lin@example.com").await?;
    let mut claims = claims(&provider, &["bowtie-manager"]);
    claims["sub"] = json!("00u-lead");
    claims["email"] = json!("lead@example.com");
    claims["teams"] = json!(["emea"]);
    let lead = provider.sign(&claims).await?;
    assert_eq!(
        rename(&stack, &lead, &team, "Acme Corp").await?.0,
        StatusCode::OK
    );
    let (status, message) = rename(&stack, &lead, &other, "Globex Corp").await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("(role manager)"), "{message}");
    assert_eq!(my_book(&stack, &lead).await?, vec!["Acme Corp"]);
    Ok(())
}
