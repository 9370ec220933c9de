//! The change feeds the funnel follows, each through the runtime's consumer
//! (stored cursor, exactly-once application):
//!
//! - accounts: keeps each journey's segment and owner current, so the report
//!   filters follow reassignments.
//! - revenue: moves journeys on their own. The first subscription (or a
//!   reactivation) enters COMMIT then ONBOARDING, an expansion or a renewal
//!   GROWTH, losing all revenue CHURNED (with the reason `kind:reason_code`
//!   of the cancellation revenue attributes the churn to), each at the
//!   movement's business time with source "revenue". A movement that revenue retracts (a back-dated
//!   change reclassified it) takes its transitions back out.
//!
//! - scoring: first value reached (`first_value.reached`) moves the journey
//!   to IMPACT at the time it was reached, with source "scoring".

use bowtie_proto::accounts as accounts_pb;
use bowtie_proto::common::{Event, Stage};
use bowtie_proto::revenue as revenue_pb;
use bowtie_proto::scoring as scoring_pb;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::{Error, FieldViolations};
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::peer::{AccountDirectory, AppApply, Consumer, Upstream};
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::{AccountId, Instant, validate};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::convert;
use crate::convert::profile_of;
use crate::domain::{NewTransition, Profile};
use crate::service::{apply_transition, retract_transitions};
use crate::storage;

/// Event type published when an account's segment or owner changed.
pub const PROFILE_CHANGED: &str = "journey.profile_changed";

/// Cursor name of the accounts feed consumer.
pub const ACCOUNTS_CONSUMER: &str = "funnel.accounts";

pub use bowtie_runtime::peer::payload;

/// The account id an upstream event names in `field`.
fn payload_account(field: &str, raw: &str) -> Result<AccountId, Error> {
    Uuid::parse_str(raw)
        .map(AccountId)
        .map_err(|_| Error::invalid(field, "is not a UUID"))
}

/// The required time an upstream event carries in `field`.
fn payload_instant(field: &str, ts: Option<&Timestamp>) -> Result<Instant, Error> {
    let mut v = FieldViolations::default();
    let at = validate::required_instant(&mut v, field, ts);
    v.into_result()?;
    at.ok_or_else(|| Error::invalid(field, "is required"))
}

/// The profile of an account a feed moves: its journey's, or the accounts
/// service's for an account without one yet.
async fn profile(tx: &Tx, accounts: &AccountDirectory, id: AccountId) -> Result<Profile, Error> {
    Ok(match storage::get_journey(tx.conn(), id).await? {
        Some(row) => row.profile,
        None => profile_of(&accounts.get(id.uuid()).await?),
    })
}

/// Starts the consumers of the accounts, revenue and scoring feeds, in
/// that order; the revenue and scoring ones ask `accounts` for the profile
/// of an account they move that has no journey yet.
pub fn spawn_consumers(
    settings: &PeerSettings,
    store: &Store,
    accounts: &AccountDirectory,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let follow = |name, upstream, apply: AppApply<AccountDirectory>| -> Result<(), Error> {
        let (store, directory) = (store.clone(), accounts.clone());
        Consumer::of(
            name,
            upstream,
            settings,
            store,
            directory,
            shutdown.clone(),
            apply,
        )?
        .spawn();
        Ok(())
    };
    follow(ACCOUNTS_CONSUMER, Upstream::Accounts, |_, tx, event| {
        Box::pin(apply_account(tx, event))
    })?;
    follow(
        REVENUE_CONSUMER,
        Upstream::Revenue,
        |directory, tx, event| Box::pin(apply_revenue(tx, event, directory)),
    )?;
    follow(
        SCORING_CONSUMER,
        Upstream::Scoring,
        |directory, tx, event| Box::pin(apply_scoring(tx, event, directory)),
    )
}

/// An accounts event: keeps the journey's segment and owner current.
async fn apply_account(tx: &mut Tx, event: Event) -> Result<(), Error> {
    let Some(account) = payload::<accounts_pb::Account>(&event)? else {
        return Ok(());
    };
    let id = payload_account("payload.id", &account.id)?;
    // Like every writer of a journey row, under the journey's lock.
    storage::lock_journey(tx.conn(), id).await?;
    if let Some(journey) = storage::update_profile(tx.conn(), id, &profile_of(&account)).await? {
        tx.emit(NewEvent::new(
            "account",
            id.to_string(),
            PROFILE_CHANGED,
            &convert::account_in_stage(&journey),
        ));
    }
    Ok(())
}

/// Cursor name of the revenue feed consumer.
pub const REVENUE_CONSUMER: &str = "funnel.revenue";
/// Source recorded on the transitions the revenue feed causes.
pub const REVENUE_SOURCE: &str = "revenue";
/// Reason recorded when all revenue is gone and the movement names no
/// cancellation (events of revenue versions before churn causes).
pub const REVENUE_CHURN_REASON: &str = "all_revenue_gone";

/// The reason a CHURNED transition records for a CHURN movement: the
/// cancellation's kind and reason code revenue attributed it to, as
/// `voluntary:price` or `involuntary:payment_failure`, else
/// [`REVENUE_CHURN_REASON`].
pub fn churn_reason(m: &revenue_pb::Movement) -> String {
    use revenue_pb::CancellationKind as K;
    let kind = match m.cancellation_kind() {
        K::Voluntary => "voluntary",
        K::Involuntary => "involuntary",
        K::Unspecified => "unspecified",
    };
    if m.reason_code.is_empty() {
        REVENUE_CHURN_REASON.to_owned()
    } else {
        format!("{kind}:{}", m.reason_code)
    }
}

/// The stages an MRR movement moves an account into: the first subscription
/// (or a reactivation) is COMMIT then ONBOARDING, an expansion is GROWTH and
/// losing all revenue is CHURNED; a contraction moves no stage.
pub fn stages_for_movement(kind: revenue_pb::MovementType) -> &'static [Stage] {
    use revenue_pb::MovementType as M;
    match kind {
        M::New | M::Reactivation => &[Stage::Commit, Stage::Onboarding],
        M::Expansion => &[Stage::Growth],
        M::Churn => &[Stage::Churned],
        M::Contraction | M::Unspecified => &[],
    }
}

/// The stage a renewal decision moves an account into: any renewal is GROWTH;
/// a churned renewal moves nothing here (its CHURN movement does).
pub fn stages_for_renewal(outcome: revenue_pb::RenewalOutcome) -> &'static [Stage] {
    use revenue_pb::RenewalOutcome as R;
    match outcome {
        R::Renewed | R::RenewedWithExpansion | R::RenewedWithContraction => &[Stage::Growth],
        R::Churned | R::Unspecified => &[],
    }
}

/// A revenue event: moves the journey on its own (or takes back what a
/// retracted movement moved).
async fn apply_revenue(tx: &mut Tx, event: Event, accounts: AccountDirectory) -> Result<(), Error> {
    let (account_id, stages, at, retract, churn) = match event.event_type.as_str() {
        "movement.recorded" | "movement.retracted" => {
            let Some(m) = payload::<revenue_pb::Movement>(&event)? else {
                return Ok(());
            };
            (
                m.account_id.clone(),
                stages_for_movement(m.r#type()),
                m.occurred_at,
                event.event_type == "movement.retracted",
                churn_reason(&m),
            )
        }
        "renewal.recorded" => {
            let Some(r) = payload::<revenue_pb::Renewal>(&event)? else {
                return Ok(());
            };
            (
                r.account_id.clone(),
                stages_for_renewal(r.outcome()),
                r.decided_at,
                false,
                REVENUE_CHURN_REASON.to_owned(),
            )
        }
        _ => return Ok(()),
    };
    if stages.is_empty() {
        return Ok(());
    }
    let account_id = payload_account("payload.account_id", &account_id)?;
    let at = payload_instant("payload.occurred_at", at.as_ref())?;
    if retract {
        retract_transitions(tx, account_id, stages, at, REVENUE_SOURCE).await?;
        return Ok(());
    }
    let profile = profile(tx, &accounts, account_id).await?;
    for stage in stages {
        let reason = if *stage == Stage::Churned {
            churn.as_str()
        } else {
            ""
        };
        apply_transition(
            tx,
            NewTransition {
                account_id,
                stage: *stage,
                occurred_at: at,
                reason: reason.to_owned(),
                source: REVENUE_SOURCE.to_owned(),
            },
            &profile,
        )
        .await?;
    }
    Ok(())
}

/// Cursor name of the scoring feed consumer.
pub const SCORING_CONSUMER: &str = "funnel.scoring";
/// Source recorded on the transitions the scoring feed causes.
pub const SCORING_SOURCE: &str = "scoring";

/// A scoring event: first value reached enters IMPACT.
async fn apply_scoring(tx: &mut Tx, event: Event, accounts: AccountDirectory) -> Result<(), Error> {
    if event.event_type != "first_value.reached" {
        return Ok(());
    }
    let Some(reached) = payload::<scoring_pb::FirstValueReached>(&event)? else {
        return Ok(());
    };
    let account_id = payload_account("payload.account_id", &reached.account_id)?;
    let at = payload_instant("payload.reached_at", reached.reached_at.as_ref())?;
    let profile = profile(tx, &accounts, account_id).await?;
    let new = NewTransition {
        account_id,
        stage: Stage::Impact,
        occurred_at: at,
        reason: String::new(),
        source: SCORING_SOURCE.to_owned(),
    };
    apply_transition(tx, new, &profile).await?;
    Ok(())
}
