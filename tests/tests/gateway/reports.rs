//! Figures read through the gateway are the services' figures: a small
//! company written through the REST API, then the reports read over HTTP
//! and over gRPC side by side.

use bowtie_proto::common::{Period, Segment};
use bowtie_proto::funnel::GetFunnelReportRequest;
use bowtie_proto::funnel::funnel_service_client::FunnelServiceClient;
use bowtie_testkit::gateway::Stack;
use bowtie_testkit::revenue::{day, monthly_report};
use bowtie_testkit::{ADMIN_KEY, READ_KEY, TestDatabase, WRITE_KEY, backend_test};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_test!(
    reports_over_http_equal_the_services_figures,
    reports_download_as_csv_that_reads_back_to_the_json_figures,
    a_repeated_idempotency_key_returns_the_first_result,
);

async fn subscribe(
    stack: &Stack,
    account: &str,
    interval: &str,
    quantity: i64,
    price: i64,
    start: &str,
) -> anyhow::Result<Value> {
    let (status, body) = stack
        .post(
            "/api/v1/subscriptions",
            WRITE_KEY,
            &json!({"account_id": account, "billing_interval": interval, "start_at": start,
                    "terms": {"plan": "pro", "quantity": quantity,
                              "unit_price": {"currency": "USD", "minor_units": price}}}),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "{status} {body}");
    Ok(body)
}

async fn reports_over_http_equal_the_services_figures(db: &TestDatabase) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let globex = stack.account(WRITE_KEY, "Globex", "ENTERPRISE").await?;
    for (id, stage, at) in [
        (&acme, "AWARENESS", "2026-01-02T00:00:00Z"),
        (&acme, "SELECTION", "2026-01-05T00:00:00Z"),
        (&globex, "AWARENESS", "2026-01-03T00:00:00Z"),
    ] {
        let (status, body) = stack
            .post(
                &format!("/api/v1/accounts/{id}/transitions"),
                WRITE_KEY,
                &json!({"stage": stage, "occurred_at": at}),
            )
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["applied"], true);
    }
    // Acme: 10 seats at $50.00 a month from 15 January = 50,000 cents MRR.
    // Globex: 1 unit at $1,200.00 a year from 1 February = 120,000 / 12 = 10,000 cents MRR.
    let sub = subscribe(&stack, &acme, "MONTH", 10, 5_000, "2026-01-15T00:00:00Z").await?;
    assert_eq!(sub["mrr"]["minor_units"], 50_000);
    subscribe(&stack, &globex, "YEAR", 1, 120_000, "2026-02-01T00:00:00Z").await?;

    let (status, http) = stack
        .get(
            "/api/v1/revenue/mrr?start_month=2026-01&end_month=2026-03",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{http}");
    let grpc = monthly_report(
        &mut bowtie_testkit::revenue::RevenueClient::new(stack.revenue.with_key(READ_KEY)),
        "2026-01",
        "2026-03",
        Segment::Unspecified,
    )
    .await?;
    let periods = http["periods"].as_array().cloned().unwrap_or_default();
    assert_eq!(periods.len(), grpc.len());
    for (h, g) in periods.iter().zip(&grpc) {
        assert_eq!(h["period"], g.period.as_str());
        let minor =
            |m: &Option<bowtie_proto::common::Money>| m.as_ref().map_or(0, |m| m.minor_units);
        assert_eq!(h["end_mrr"], minor(&g.end_mrr));
        assert_eq!(h["new_mrr"], minor(&g.new_mrr));
        assert_eq!(h["end_arr"], minor(&g.end_arr));
        assert_eq!(h["paying_accounts_end"], g.paying_accounts_end);
    }
    // Hand-worked: January ends at 50,000, March at 60,000 (ARR 720,000).
    assert_eq!(periods[0]["end_mrr"], 50_000);
    assert_eq!(periods[2]["end_mrr"], 60_000);

    // Grouped by segment over HTTP: Acme is the SMB group, Globex the
    // enterprise one, and the groups add up to the total each month.
    let (status, grouped) = stack
        .get(
            "/api/v1/revenue/mrr?start_month=2026-01&end_month=2026-03&group_by=segment",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{grouped}");
    let groups = grouped["groups"].as_array().cloned().unwrap_or_default();
    let end_of = |value: &str, k: usize| {
        groups
            .iter()
            .find(|g| g["value"] == value)
            .map(|g| g["periods"][k]["end_mrr"].clone())
    };
    assert_eq!(end_of("smb", 2), Some(json!(50_000)));
    assert_eq!(end_of("enterprise", 2), Some(json!(10_000)));
    assert_eq!(end_of("enterprise", 0), Some(json!(0)));
    assert_eq!(groups.len(), 2);
    let (status, only) = stack
        .get(
            "/api/v1/revenue/mrr?start_month=2026-01&end_month=2026-03&cut=segment&cut_value=enterprise",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{only}");
    assert_eq!(only["periods"][2]["end_mrr"], 10_000);
    let (status, body) = stack
        .get(
            "/api/v1/revenue/mrr?start_month=2026-01&end_month=2026-03&group_by=colour",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("group_by.dimension"), "{body}");
    assert_eq!(periods[2]["end_arr"], 720_000);
    assert_eq!(http["currency"], "USD");
    // Nothing was lost: the quick ratio is undefined, null rather than a number.
    assert!(periods.iter().all(|p| p["quick_ratio"].is_null()), "{http}");

    // The churn analysis over the same months: nothing churned yet, per period.
    let (status, churn) = stack
        .get(
            "/api/v1/revenue/churn?start_month=2026-01&end_month=2026-03",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{churn}");
    let churn_periods = churn["periods"].as_array().cloned().unwrap_or_default();
    assert_eq!(churn_periods.len(), 3);
    for (c, p) in churn_periods.iter().zip(&periods) {
        assert_eq!(c["period"], p["period"]);
        assert_eq!(c["churn_mrr"], p["churn_mrr"]);
        assert_eq!(c["contraction_mrr"], p["contraction_mrr"]);
    }
    let (status, bad) = stack
        .get(
            "/api/v1/revenue/churn?start_month=2026-05&end_month=2026-03",
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // The funnel learns of the subscriptions from the revenue feed: wait until
    // both accounts are onboarding, so both reads below see the same journeys.
    for id in [&acme, &globex] {
        bowtie_testkit::within(20, "the funnel to follow the revenue feed", async {
            loop {
                let (_, journey) = stack
                    .get(&format!("/api/v1/accounts/{id}/journey"), READ_KEY)
                    .await?;
                if journey["current_stage"] == "ONBOARDING" {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await??;
    }
    // The report reads an index that follows the funnel's own feed: wait
    // until it counts both commits.
    let funnel = bowtie_testkit::within(20, "the report to count both commits", async {
        loop {
            let (status, funnel) = stack
                .get(
                    "/api/v1/funnel?start=2026-01-01T00:00:00Z&end=2026-04-01T00:00:00Z",
                    READ_KEY,
                )
                .await?;
            anyhow::ensure!(status == StatusCode::OK, "{funnel}");
            if funnel["stages"][3]["volume"] == 2 {
                return anyhow::Ok(funnel);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await??;
    let grpc = FunnelServiceClient::new(stack.funnel.with_key(READ_KEY))
        .get_funnel_report(GetFunnelReportRequest {
            period: Some(Period {
                start: Some(day(2026, 1, 1)),
                end: Some(day(2026, 4, 1)),
            }),
            ..GetFunnelReportRequest::default()
        })
        .await?
        .into_inner();
    let stages = funnel["stages"].as_array().cloned().unwrap_or_default();
    assert_eq!(stages.len(), grpc.stages.len());
    for (h, g) in stages.iter().zip(&grpc.stages) {
        assert_eq!(h["volume"], g.volume);
        assert_eq!(h["converted"], g.converted);
    }
    // Two accounts entered AWARENESS; the journey shows Acme's path.
    assert_eq!(stages[0]["stage"], "AWARENESS");
    assert_eq!(stages[0]["volume"], 2);
    let (status, journey) = stack
        .get(&format!("/api/v1/accounts/{acme}/journey"), READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{journey}");
    assert_eq!(journey["transitions"][0]["stage"], "AWARENESS");

    let (status, retention) = stack
        .get(
            "/api/v1/revenue/retention?start=2026-02-15T00:00:00Z&end=2026-03-15T00:00:00Z",
            ADMIN_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{retention}");
    assert_eq!(retention["accounts_start"], 2);
    assert_eq!(retention["nrr"], 1.0);
    Ok(())
}

async fn a_repeated_idempotency_key_returns_the_first_result(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let send = || async {
        let response = stack
            .request(reqwest::Method::POST, "/api/v1/accounts")
            .bearer_auth(WRITE_KEY)
            .header("Idempotency-Key", "create-acme-1")
            .json(&json!({"name": "Acme", "segment": "SMB"}))
            .send()
            .await?;
        anyhow::Ok((response.status(), response.json::<Value>().await?))
    };
    let (first_status, first) = send().await?;
    let (second_status, second) = send().await?;
    assert_eq!(first_status, StatusCode::CREATED);
    assert_eq!(second_status, StatusCode::CREATED);
    assert_eq!(first["id"], second["id"]);
    let (_, list) = stack.get("/api/v1/accounts", READ_KEY).await?;
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(1));
    Ok(())
}

/// `GET path` asking for CSV (by `accept` header or by the query) with the
/// read key: the status, the content type and the records as maps of
/// column to cell, read back by the `csv` crate.
async fn csv_rows(
    stack: &Stack,
    path: &str,
    accept: bool,
) -> anyhow::Result<(
    StatusCode,
    String,
    Vec<std::collections::HashMap<String, String>>,
)> {
    let mut request = stack
        .request(reqwest::Method::GET, path)
        .bearer_auth(READ_KEY);
    if accept {
        request = request.header("Accept", "text/csv");
    }
    let response = request.send().await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await?;
    let rows = csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .collect::<Result<Vec<_>, _>>()?;
    Ok((status, content_type, rows))
}

async fn reports_download_as_csv_that_reads_back_to_the_json_figures(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let stack = Stack::start(db).await?;
    let acme = stack.account(WRITE_KEY, "Acme", "SMB").await?;
    let globex = stack.account(WRITE_KEY, "Globex", "ENTERPRISE").await?;
    // Acme pays 50,000 cents a month from January; Globex 10,000 from
    // February and leaves on 10 March, for its price.
    subscribe(&stack, &acme, "MONTH", 10, 5_000, "2026-01-15T00:00:00Z").await?;
    let globex_sub = subscribe(&stack, &globex, "MONTH", 1, 10_000, "2026-02-01T00:00:00Z").await?;
    let id = globex_sub["id"].as_str().unwrap_or_default();
    let (status, body) = stack
        .post(
            &format!("/api/v1/subscriptions/{id}/cancellation"),
            WRITE_KEY,
            &json!({"effective_at": "2026-03-10T00:00:00Z", "kind": "VOLUNTARY",
                    "reason_code": "price"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");

    let months = "start_month=2026-01&end_month=2026-03";
    let (status, json) = stack
        .get(&format!("/api/v1/revenue/mrr?{months}"), READ_KEY)
        .await?;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, content_type, rows) = csv_rows(
        &stack,
        &format!("/api/v1/revenue/mrr?{months}&format=csv"),
        false,
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let periods = json["periods"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 3);
    for (row, period) in rows.iter().zip(&periods) {
        for column in [
            "period",
            "start_mrr",
            "new_mrr",
            "churn_mrr",
            "end_mrr",
            "end_arr",
        ] {
            let cell = row.get(column).map(String::as_str).unwrap_or("(missing)");
            let expected = match &period[column] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(cell, expected, "{column} of {}", period["period"]);
        }
    }
    // March: Globex's 10,000 churned, Acme's 50,000 remains.
    assert_eq!(rows[2]["churn_mrr"], "10000");
    assert_eq!(rows[2]["end_mrr"], "50000");

    // The churn analysis by the Accept header: one column per reason.
    let (status, _, churn) =
        csv_rows(&stack, &format!("/api/v1/revenue/churn?{months}"), true).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(churn[2]["churn_by_reason.price.lost_mrr"], "10000");
    assert_eq!(churn[2]["churn_by_kind.VOLUNTARY.lost_mrr"], "10000");
    assert_eq!(churn[0]["churn_by_reason.price.lost_mrr"], "");

    // A paged list: one movement per page, the next page's token in a header.
    let response = stack
        .request(
            reqwest::Method::GET,
            "/api/v1/revenue/movements?start=2026-01-01T00:00:00Z&end=2026-04-01T00:00:00Z&page_size=1&format=csv",
        )
        .bearer_auth(READ_KEY)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("next-page-token"));
    let text = response.text().await?;
    assert_eq!(
        csv::Reader::from_reader(text.as_bytes()).records().count(),
        1
    );

    // A format Bowtie does not speak is a 400 naming the parameter.
    let (status, bad) = stack
        .get(
            &format!("/api/v1/revenue/mrr?{months}&format=xlsx"),
            READ_KEY,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(
        bad["error"]["field_violations"][0]["field"], "format",
        "{bad}"
    );
    Ok(())
}
