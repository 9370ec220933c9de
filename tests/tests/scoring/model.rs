//! The churn model over the API: nothing to report before training, too
//! little history is a clear FAILED_PRECONDITION, and only admins train.

use bowtie_proto::common::Segment;
use bowtie_proto::scoring::{GetChurnRiskRequest, GetModelRequest, TrainModelRequest};
use bowtie_testkit::scoring::{Scoring, logins, record};
use bowtie_testkit::{TestDatabase, backend_test};
use tonic::Code;

backend_test!(without_churn_history_there_is_no_model_to_train_or_ask);

async fn without_churn_history_there_is_no_model_to_train_or_ask(
    db: &TestDatabase,
) -> anyhow::Result<()> {
    let suite = Scoring::start(db).await?;
    let acme = suite.account("Acme", Segment::Smb).await?;
    record(&mut suite.client(), logins("l", &acme, 3, 3)).await?;
    let model = suite
        .reader()
        .get_model(GetModelRequest {})
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(model, Some(Code::FailedPrecondition));
    let risk = suite
        .reader()
        .get_churn_risk(GetChurnRiskRequest {
            account_id: acme.clone(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(risk, Some(Code::FailedPrecondition));
    let train = suite
        .admin()
        .train_model(TrainModelRequest { seed: 0 })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("trained without history"))?;
    assert_eq!(train.code(), Code::FailedPrecondition);
    assert!(
        train.message().contains("0 labelled accounts"),
        "{}",
        train.message()
    );
    let denied = suite
        .client()
        .train_model(TrainModelRequest { seed: 0 })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(denied, Some(Code::PermissionDenied));
    Ok(())
}
