//! `alerts`: raised alerts and their state. An account has at most one
//! unresolved alert of a kind: `dedupe` is "open" until the alert is
//! resolved, then its own id, under a unique index with the account and kind.

use std::collections::HashSet;

use bowtie_proto::scoring::{AlertKind, AlertState};
use bowtie_runtime::error::Error;
use bowtie_runtime::sql::{corrupt, execute, internal, query, stored_uuid};
use bowtie_runtime::{AccountId, Instant};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::alert::{self, Column as A, Entity as Alerts};
use super::stored_account;
use crate::domain::AlertId;

/// `dedupe` of an alert that is not resolved.
const OPEN: &str = "open";

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Its id (ordered by creation).
    pub id: AlertId,
    /// The account.
    pub account_id: AccountId,
    /// What raised it.
    pub kind: AlertKind,
    /// Open, acknowledged or resolved.
    pub state: AlertState,
    /// One line for a person.
    pub message: String,
    /// The score when it was raised.
    pub score: i32,
    /// The churn risk when it was raised (0 without a model).
    pub risk_bp: i32,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// The last transition's note.
    pub note: String,
    /// When it was raised.
    pub created_at: Instant,
    /// When it last changed.
    pub updated_at: Instant,
}

impl TryFrom<alert::Model> for Alert {
    type Error = Error;

    fn try_from(m: alert::Model) -> Result<Self, Error> {
        Ok(Self {
            id: AlertId(stored_uuid(&m.id)?),
            account_id: stored_account(&m.account_id)?,
            kind: AlertKind::try_from(m.kind)
                .map_err(|_| corrupt(format_args!("alert {}: kind {}", m.id, m.kind)))?,
            state: AlertState::try_from(m.state)
                .map_err(|_| corrupt(format_args!("alert {}: state {}", m.id, m.state)))?,
            message: m.message,
            score: m.score,
            risk_bp: m.risk_bp,
            version: m.version,
            note: m.note,
            created_at: Instant::from_micros(m.created_at),
            updated_at: Instant::from_micros(m.updated_at),
        })
    }
}

/// Inserts alerts, skipping any whose account already has an unresolved
/// alert of its kind; returns the ids of those inserted.
pub async fn insert_alerts<C: ConnectionTrait>(
    conn: &C,
    alerts: &[&Alert],
) -> Result<HashSet<AlertId>, Error> {
    let mut inserted = HashSet::new();
    // 12 values a row: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    for chunk in alerts.chunks(1000) {
        let mut insert = Query::insert();
        insert
            .into_table(Alerts)
            .columns([
                A::Id,
                A::AccountId,
                A::Kind,
                A::State,
                A::Dedupe,
                A::Message,
                A::Score,
                A::RiskBp,
                A::Version,
                A::Note,
                A::CreatedAt,
                A::UpdatedAt,
            ])
            .on_conflict(
                OnConflict::columns([A::AccountId, A::Kind, A::Dedupe])
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(A::Id);
        for a in chunk {
            insert
                .values([
                    a.id.to_string().into(),
                    a.account_id.to_string().into(),
                    (a.kind as i32).into(),
                    (a.state as i32).into(),
                    OPEN.into(),
                    a.message.clone().into(),
                    a.score.into(),
                    a.risk_bp.into(),
                    a.version.into(),
                    a.note.clone().into(),
                    a.created_at.micros().into(),
                    a.updated_at.micros().into(),
                ])
                .map_err(internal)?;
        }
        if chunk.is_empty() {
            continue;
        }
        for row in query(conn, &insert).await? {
            inserted.insert(AlertId(stored_uuid(&row.try_get_by_index::<String>(0)?)?));
        }
    }
    Ok(inserted)
}

/// One alert.
pub async fn get_alert<C: ConnectionTrait>(conn: &C, id: AlertId) -> Result<Option<Alert>, Error> {
    Alerts::find_by_id(id.to_string())
        .one(conn)
        .await?
        .map(Alert::try_from)
        .transpose()
}

/// Alerts newest first (by UUIDv7 id), after the id `after`.
pub async fn list_alerts<C: ConnectionTrait>(
    conn: &C,
    state: Option<AlertState>,
    kind: Option<AlertKind>,
    account: Option<AccountId>,
    after: Option<AlertId>,
    limit: u64,
) -> Result<Vec<Alert>, Error> {
    let mut find = Alerts::find();
    if let Some(s) = state {
        find = find.filter(A::State.eq(s as i32));
    }
    if let Some(k) = kind {
        find = find.filter(A::Kind.eq(k as i32));
    }
    if let Some(a) = account {
        find = find.filter(A::AccountId.eq(a.to_string()));
    }
    if let Some(a) = after {
        find = find.filter(A::Id.lt(a.to_string()));
    }
    find.order_by_desc(A::Id)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(Alert::try_from)
        .collect()
}

/// Writes an alert's new state (resolution frees its dedupe slot).
pub async fn update_alert<C: ConnectionTrait>(conn: &C, a: &Alert) -> Result<(), Error> {
    let dedupe = if a.state == AlertState::Resolved {
        a.id.to_string()
    } else {
        OPEN.to_owned()
    };
    let update = Query::update()
        .table(Alerts)
        .values([
            (A::State, (a.state as i32).into()),
            (A::Dedupe, dedupe.into()),
            (A::Version, a.version.into()),
            (A::Note, a.note.clone().into()),
            (A::UpdatedAt, a.updated_at.micros().into()),
        ])
        .and_where(Expr::col(A::Id).eq(a.id.to_string()))
        .to_owned();
    execute(conn, &update).await
}
