//! The dashboard's sign-in with a real OpenID Connect provider
//! (oidc-provider, see `bowtie_testkit::oidc`), without a browser: the
//! login redirect, a callback whose state is not the browser's, the CSRF
//! check of writes made with the session cookie, and session cookies that
//! were tampered with or have expired. (The whole sign-in through the
//! provider's login page runs in headless Chromium, in
//! crates/bowtie/tests/browser.rs.)

use bowtie_runtime::oidc::JwtVerifier;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::oidc::{AUDIENCE, DASHBOARD_CLIENT, OidcProvider};
use bowtie_testkit::{TestDatabase, WRITE_KEY, backend_test};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_test!(
    the_login_redirects_to_the_provider_with_pkce_and_remembers_the_state_in_a_cookie,
    a_callback_with_a_state_not_the_browsers_is_400_and_sets_no_session,
    a_write_with_the_session_cookie_needs_the_csrf_header_and_a_bearer_write_does_not,
    a_tampered_or_expired_session_cookie_is_401,
    without_a_client_id_there_is_no_sign_in_and_the_page_asks_for_a_key,
    behind_an_https_url_the_cookies_are_secure_and_the_redirect_uri_is_that_url,
    an_id_token_is_accepted_only_for_the_client_id_with_the_nonce_sent,
);

/// The provider and every service and the gateway, with the dashboard's
/// sign-in at the provider's dashboard client.
async fn start(db: &TestDatabase) -> anyhow::Result<Option<(OidcProvider, Stack)>> {
    let Some(provider) = OidcProvider::start()? else {
        return Ok(None);
    };
    let mut settings = db.server_settings()?;
    settings.auth.oidc = provider.settings(5, 60);
    settings.gateway.sign_in = provider.sign_in_settings();
    let stack = Stack::start_from(settings, |_| {}).await?;
    Ok(Some((provider, stack)))
}

/// A client that shows redirects rather than following them.
fn browser() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// The `name=value` of the cookie `name` a response sets, and its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| {
            let (pair, attributes) = c.split_once(';').unwrap_or((c, ""));
            (pair.to_owned(), attributes.trim().to_owned())
        })
}

/// The value of query parameter `name` in `url`.
fn param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Sends `method path` with the session cookie `session` and, when given,
/// the CSRF header; the status and the JSON answer.
async fn with_session(
    stack: &Stack,
    method: Method,
    path: &str,
    session: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = stack
        .request(method, path)
        .header(COOKIE, format!("bowtie_session={session}"));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The accounts there are, read with the write key.
async fn account_names(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let (status, body) = stack.get("/api/v1/accounts", WRITE_KEY).await?;
    anyhow::ensure!(status == StatusCode::OK, "list accounts: {status} {body}");
    Ok(body["accounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|a| a["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

async fn the_login_redirects_to_the_provider_with_pkce_and_remembers_the_state_in_a_cookie(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db).await? else {
        return Ok(());
    };
    let response = browser()?
        .get(format!("{}/auth/login", stack.url()))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with(&format!("{}/auth?", provider.issuer())),
        "{location}"
    );
    assert_eq!(param(&location, "response_type").as_deref(), Some("code"));
    assert_eq!(
        param(&location, "client_id").as_deref(),
        Some(DASHBOARD_CLIENT)
    );
    assert_eq!(
        param(&location, "redirect_uri"),
        Some(format!("{}/auth/callback", stack.url()))
    );
    assert_eq!(
        param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(param(&location, "resource").as_deref(), Some(AUDIENCE));
    assert_eq!(
        param(&location, "scope").as_deref(),
        Some("openid profile email api")
    );
    let state = param(&location, "state").unwrap_or_default();
    let nonce = param(&location, "nonce").unwrap_or_default();
    let challenge = param(&location, "code_challenge").unwrap_or_default();
    // 256 random bits each, base64url: 43 characters.
    assert_eq!((state.len(), nonce.len(), challenge.len()), (43, 43, 43));
    assert_ne!(state, nonce);
    let (pair, attributes) = set_cookie(&response, "bowtie_login").unwrap_or_default();
    assert!(pair.len() > "bowtie_login=".len(), "{pair}");
    assert!(
        !pair.contains(&state),
        "the state is not readable from the cookie"
    );
    assert!(attributes.contains("HttpOnly"), "{attributes}");
    assert!(attributes.contains("SameSite=Lax"), "{attributes}");
    assert!(attributes.contains("Path=/auth"), "{attributes}");
    // The gateway is reached over http here: the cookie cannot be Secure.
    assert!(!attributes.contains("Secure"), "{attributes}");

    // A second login is a new state.
    let again = browser()?
        .get(format!("{}/auth/login", stack.url()))
        .send()
        .await?;
    let second = again
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| param(l, "state"));
    assert_ne!(second, Some(state));
    Ok(())
}

async fn a_callback_with_a_state_not_the_browsers_is_400_and_sets_no_session(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((_provider, stack)) = start(db).await? else {
        return Ok(());
    };
    let http = browser()?;
    let login = http
        .get(format!("{}/auth/login", stack.url()))
        .send()
        .await?;
    let (pending, _) = set_cookie(&login, "bowtie_login").unwrap_or_default();
    let state = login
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| param(l, "state"))
        .unwrap_or_default();

    let callback = |query: String, cookie: Option<String>| {
        let mut request = http.get(format!("{}/auth/callback?{query}", stack.url()));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send()
    };
    let wrong = callback(
        "code=some-code&state=not-the-state".into(),
        Some(pending.clone()),
    )
    .await?;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(set_cookie(&wrong, "bowtie_session"), None);
    assert_eq!(set_cookie(&wrong, "bowtie_csrf"), None);
    let body: Value = wrong.json().await?;
    assert_eq!(body["error"]["field_violations"][0]["field"], "state");

    // The right state from another browser (no sign-in cookie) is refused too.
    let elsewhere = callback(format!("code=some-code&state={state}"), None).await?;
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    assert_eq!(set_cookie(&elsewhere, "bowtie_session"), None);

    // A sign-in cookie that was altered is no sign-in at all.
    let altered = callback(
        format!("code=some-code&state={state}"),
        Some(format!("{pending}x")),
    )
    .await?;
    assert_eq!(altered.status(), StatusCode::BAD_REQUEST);
    assert_eq!(set_cookie(&altered, "bowtie_session"), None);

    // The provider saying no is 400 with its reason, and no session.
    let refused = callback(
        format!("error=access_denied&error_description=User+aborted&state={state}"),
        Some(pending.clone()),
    )
    .await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(set_cookie(&refused, "bowtie_session"), None);
    let body: Value = refused.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("access_denied") && m.contains("User aborted")),
        "{body}"
    );

    // The right state with a code the provider never issued: the provider
    // refuses the code, still no session.
    let unknown_code = callback(format!("code=made-up&state={state}"), Some(pending)).await?;
    assert_eq!(unknown_code.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(set_cookie(&unknown_code, "bowtie_session"), None);
    Ok(())
}

async fn a_write_with_the_session_cookie_needs_the_csrf_header_and_a_bearer_write_does_not(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db).await? else {
        return Ok(());
    };
    // A token of the provider for Bowtie's audience, as a sign-in leaves in
    // the session cookie.
    let session = provider.token("bowtie-admin").await?;
    let (status, me) = with_session(&stack, Method::GET, "/auth/me", &session, None, None).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["subject"], "bowtie-admin");
    assert_eq!(me["email"], "bowtie-admin@example.com");
    assert_eq!(me["roles"], json!(["admin"]));
    let csrf = me["csrf_token"].as_str().unwrap_or_default().to_owned();
    assert!(!csrf.is_empty(), "{me}");

    // Reads need no CSRF token.
    let (status, _) = with_session(
        &stack,
        Method::GET,
        "/api/v1/accounts",
        &session,
        None,
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);

    let account = |name: &str| json!({"name": name, "segment": "SMB", "owner": "ada@example.com"});
    let (status, body) = with_session(
        &stack,
        Method::POST,
        "/api/v1/accounts",
        &session,
        None,
        Some(&account("Without header")),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    let (status, _) = with_session(
        &stack,
        Method::POST,
        "/api/v1/accounts",
        &session,
        Some("not-the-token"),
        Some(&account("Wrong header")),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The token of another session does not do either.
    let other = provider.token("bowtie-csm").await?;
    let (_, other_me) = with_session(&stack, Method::GET, "/auth/me", &other, None, None).await?;
    let other_csrf = other_me["csrf_token"].as_str().unwrap_or_default();
    assert_ne!(other_csrf, csrf);
    let (status, _) = with_session(
        &stack,
        Method::POST,
        "/api/v1/accounts",
        &session,
        Some(other_csrf),
        Some(&account("Other header")),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        account_names(&stack).await?.is_empty(),
        "nothing was written"
    );

    let (status, body) = with_session(
        &stack,
        Method::POST,
        "/api/v1/accounts",
        &session,
        Some(&csrf),
        Some(&account("With header")),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Bearer and API-key writes are unaffected.
    let (status, _) = stack
        .post("/api/v1/accounts", &session, &account("By bearer token"))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    stack.account(WRITE_KEY, "By API key", "SMB").await?;
    let mut names = account_names(&stack).await?;
    names.sort();
    assert_eq!(names, vec!["By API key", "By bearer token", "With header"]);

    // Signing out is a write too.
    let (status, _) =
        with_session(&stack, Method::POST, "/auth/logout", &session, None, None).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = stack
        .request(Method::POST, "/auth/logout")
        .header(COOKIE, format!("bowtie_session={session}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let (cleared, attributes) = set_cookie(&response, "bowtie_session").unwrap_or_default();
    assert_eq!(cleared, "bowtie_session=");
    assert!(attributes.contains("Max-Age=0"), "{attributes}");
    let body: Value = response.json().await?;
    let end_session = body["end_session_url"].as_str().unwrap_or_default();
    assert!(
        end_session.starts_with(&format!("{}/session/end?", provider.issuer())),
        "{body}"
    );
    assert_eq!(
        param(end_session, "post_logout_redirect_uri"),
        Some(format!("{}/", stack.url()))
    );
    Ok(())
}

async fn a_tampered_or_expired_session_cookie_is_401(db: &TestDatabase) -> anyhow::Result<()> {
    let Some((provider, stack)) = start(db).await? else {
        return Ok(());
    };
    let valid = provider.token("bowtie-viewer").await?;
    let (status, _) =
        with_session(&stack, Method::GET, "/api/v1/accounts", &valid, None, None).await?;
    assert_eq!(status, StatusCode::OK);

    // One character of the payload changed: the signature no longer fits.
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let payload = &mut parts[1];
    let last = payload
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    payload.push(last);
    let tampered = parts.join(".");
    let now = chrono::Utc::now().timestamp();
    let expired = provider
        .sign(&json!({
            "iss": provider.issuer(),
            "aud": AUDIENCE,
            "sub": "bowtie-viewer",
            "iat": now - 1200,
            "exp": now - 600,
            "groups": ["bowtie-viewer"],
        }))
        .await?;
    for (what, session) in [("tampered", &tampered), ("expired", &expired)] {
        let (status, body) =
            with_session(&stack, Method::GET, "/api/v1/accounts", session, None, None).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHENTICATED", "{what}");
        let (status, _) =
            with_session(&stack, Method::GET, "/auth/me", session, None, None).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        // The page itself still loads, to offer the sign-in again.
        let (status, _) = with_session(&stack, Method::GET, "/", session, None, None).await?;
        assert_eq!(status, StatusCode::OK, "{what}");
    }
    // Without any cookie /auth/me says so.
    let (status, body) = stack.call(Method::GET, "/auth/me", None, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    Ok(())
}

async fn without_a_client_id_there_is_no_sign_in_and_the_page_asks_for_a_key(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let (status, body) = stack.call(Method::GET, "/auth/login", None, None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, config) = stack
        .call(Method::GET, "/dashboard/config.json", None, None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["sign_in"], false);
    // A cookie means nothing without sign-in: a key still reads.
    let (status, _) = with_session(
        &stack,
        Method::GET,
        "/api/v1/accounts",
        "whatever",
        None,
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = stack
        .request(Method::GET, "/api/v1/accounts")
        .bearer_auth(WRITE_KEY)
        .header(COOKIE, "bowtie_session=whatever")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(())
}

async fn behind_an_https_url_the_cookies_are_secure_and_the_redirect_uri_is_that_url(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some(provider) = OidcProvider::start()? else {
        return Ok(());
    };
    let mut settings = db.server_settings()?;
    settings.auth.oidc = provider.settings(5, 60);
    settings.gateway.sign_in = provider.sign_in_settings();
    // TLS ends at a proxy in front of the gateway.
    settings.gateway.public_url = "https://bowtie.example.com/".into();
    let stack = Stack::start_from(settings, |_| {}).await?;
    let response = browser()?
        .get(format!("{}/auth/login", stack.url()))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        param(location, "redirect_uri").as_deref(),
        Some("https://bowtie.example.com/auth/callback")
    );
    let (_, attributes) = set_cookie(&response, "bowtie_login").unwrap_or_default();
    assert!(attributes.contains("Secure"), "{attributes}");
    assert!(attributes.contains("HttpOnly"), "{attributes}");
    Ok(())
}

async fn an_id_token_is_accepted_only_for_the_client_id_with_the_nonce_sent(
    _db: &TestDatabase,
) -> anyhow::Result<()> {
    let Some(provider) = OidcProvider::start()? else {
        return Ok(());
    };
    let verifier = JwtVerifier::from_settings(&provider.settings(5, 60))?
        .ok_or_else(|| anyhow::anyhow!("an issuer is configured"))?;
    let now = chrono::Utc::now().timestamp();
    let id_token = async |changes: Value| {
        let mut claims = json!({
            "iss": provider.issuer(),
            "aud": DASHBOARD_CLIENT,
            "sub": "ada",
            "name": "Ada Lovelace",
            "nonce": "the-nonce",
            "iat": now,
            "exp": now + 300,
        });
        if let (Some(claims), Some(changes)) = (claims.as_object_mut(), changes.as_object()) {
            claims.extend(changes.clone());
        }
        provider.sign(&claims).await
    };
    let good = id_token(json!({})).await?;
    let claims = verifier
        .verify_id_token(&good, DASHBOARD_CLIENT, "the-nonce")
        .await
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert_eq!(claims.get("name"), Some(&json!("Ada Lovelace")));

    let refused = |token: String, nonce: &'static str| {
        let verifier = &verifier;
        async move {
            verifier
                .verify_id_token(&token, DASHBOARD_CLIENT, nonce)
                .await
                .err()
                .map(|s| (s.code(), s.message().to_owned()))
        }
    };
    let (code, message) = refused(good.clone(), "another-nonce")
        .await
        .unwrap_or((tonic::Code::Ok, String::new()));
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(message.contains("nonce"), "{message}");
    let (_, message) = refused(id_token(json!({"nonce": null})).await?, "the-nonce")
        .await
        .unwrap_or((tonic::Code::Ok, String::new()));
    assert!(message.contains("nonce"), "{message}");
    // An access token for Bowtie's API is no ID token of the dashboard.
    let (_, message) = refused(id_token(json!({"aud": AUDIENCE})).await?, "the-nonce")
        .await
        .unwrap_or((tonic::Code::Ok, String::new()));
    assert!(message.contains(DASHBOARD_CLIENT), "{message}");
    let (_, message) = refused(
        id_token(json!({"iss": "http://127.0.0.1:1"})).await?,
        "the-nonce",
    )
    .await
    .unwrap_or((tonic::Code::Ok, String::new()));
    assert!(message.contains("issued by"), "{message}");
    let (_, message) = refused(
        id_token(json!({"iat": now - 900, "exp": now - 600})).await?,
        "the-nonce",
    )
    .await
    .unwrap_or((tonic::Code::Ok, String::new()));
    assert!(message.contains("expired"), "{message}");
    Ok(())
}
