//! The success application: each operation is one unit of work (change,
//! events and idempotency key in one transaction). Writes answer with the
//! protobuf message an idempotent replay returns again; reads answer with
//! domain values that `convert` renders.
//!
//! Triggers arrive from the feeds (see `feeds`) as [`Event`]s and go through
//! [`Success::apply_event`] inside the consumer's transaction, so a feed event
//! and the CTAs it opens commit together and a replayed event, skipped by the
//! stored cursor, opens nothing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bowtie_proto::success as pb;
use bowtie_runtime::access;
use bowtie_runtime::config::SuccessPolicySettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::NewEvent;
use bowtie_runtime::idempotency::Idempotency;
use bowtie_runtime::paging::Page;
use bowtie_runtime::peer::AccountDirectory;
use bowtie_runtime::store::{Store, Tx};
use bowtie_runtime::types::MICROS_PER_DAY;
use bowtie_runtime::{AccountId, Instant};
use sea_orm::{ConnectionTrait, DbBackend};
use uuid::Uuid;

use crate::convert::{activity_to_pb, cta_to_pb, playbook_to_pb};
use crate::domain::*;
use crate::storage::{
    self, Activity, ActivityFilter, Comment, Cta, CtaFilter, Task, TriggerRow, Turn,
};
use crate::tx_facts::TxFacts;

/// A playbook was created.
pub const PLAYBOOK_CREATED: &str = "playbook.created";
/// A playbook got a new version.
pub const PLAYBOOK_UPDATED: &str = "playbook.updated";
/// A CTA was opened.
pub const CTA_OPENED: &str = "cta.opened";
/// A CTA changed (status, owner, task, comment, another trigger).
pub const CTA_UPDATED: &str = "cta.updated";
/// A CTA was closed.
pub const CTA_CLOSED: &str = "cta.closed";
/// A person logged an activity.
pub const ACTIVITY_LOGGED: &str = "activity.logged";
/// A playbook step with an action came due (payload `StepDue`).
pub const STEP_DUE: &str = "cta.step_due";
/// A person's daily digest is to be sent (payload `Digest`).
pub const DIGEST_DUE: &str = "digest.due";
/// Most CTAs one digest lists.
pub const DIGEST_LIMIT: u64 = 200;

fn cta_event(event_type: &'static str, c: &pb::Cta) -> NewEvent {
    NewEvent::new("cta", c.id.clone(), event_type, c)
}

/// The success service's application.
#[derive(Debug, Clone)]
pub struct Success {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    accounts: AccountDirectory,
    policy: SuccessPolicySettings,
    /// The playbooks as one transaction read them (see [`Success::playbooks`]).
    playbooks: std::sync::Mutex<Option<PlaybookCache>>,
    /// Playbook writes this process committed, so a cached read never
    /// outlives one.
    playbook_writes: AtomicU64,
}

/// Every playbook's current version, as the transaction `key` read them.
#[derive(Debug)]
struct PlaybookCache {
    /// The reading transaction's start and the playbook writes before it.
    key: (i64, u64),
    playbooks: Arc<Vec<Playbook>>,
}

/// What a person asks of a CTA's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The new status.
    pub status: CtaStatus,
    /// CLOSED: the outcome.
    pub outcome: Outcome,
    /// SNOOZED: until when, and why.
    pub snooze: Option<(Instant, String)>,
    /// Who makes the change.
    pub actor: String,
}

/// A CTA opened by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualCta {
    /// The account.
    pub account_id: AccountId,
    /// Its type.
    pub cta_type: CtaType,
    /// Why.
    pub reason: String,
    /// How urgent.
    pub priority: Priority,
    /// Who owns it.
    pub owner: String,
    /// When it is due.
    pub due_at: Instant,
}

/// A timeline entry a person logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedActivity {
    /// The account.
    pub account_id: AccountId,
    /// NOTE, CALL, MEETING or EMAIL.
    pub kind: ActivityKind,
    /// Who.
    pub author: String,
    /// When it happened; `None` for now.
    pub occurred_at: Option<Instant>,
    /// What happened.
    pub text: String,
    /// Who took part.
    pub participants: Vec<String>,
}

/// The effectiveness report of one playbook over a period (docs/design.md
/// section 6.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Effectiveness {
    /// The playbook.
    pub playbook: PlaybookId,
    /// Days after a trigger its outcome is judged.
    pub horizon_days: i32,
    /// The treated arm.
    pub treated: ArmCounts,
    /// The comparison arm.
    pub comparison: ArmCounts,
    /// Whether the comparison is observational (no holdout in the period).
    pub observational: bool,
    /// The effect, or why there is none.
    pub effect: Result<Effect, String>,
    /// CTAs the playbook opened in the period.
    pub ctas_opened: i64,
    /// Of its CTAs whose due time has passed, the share closed before it.
    pub closed_within_sla: Option<f64>,
    /// Median hours from opening to the first action.
    pub median_hours_to_first_action: Option<f64>,
    /// Closed CTAs per outcome, indexed by the outcome's number.
    pub outcomes: [i64; 6],
}

impl Success {
    /// The application over `store`, checking accounts with `accounts`.
    pub fn new(store: Store, accounts: AccountDirectory, policy: SuccessPolicySettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                accounts,
                policy,
                playbooks: std::sync::Mutex::new(None),
                playbook_writes: AtomicU64::new(0),
            }),
        }
    }

    /// The store, for the feed consumers and `WatchEvents`.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    async fn require_account(&self, id: AccountId) -> Result<(), Error> {
        self.inner.accounts.get(id.0).await.map(drop)
    }

    /// The CSM and owner of account `id` the ownership rules decide by
    /// (docs/design.md 9.3): those of its facts (the accounts feed), or,
    /// for an account the feed has not brought yet, the accounts service's.
    async fn people<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        id: AccountId,
    ) -> Result<(String, String), Error> {
        if let Some(facts) = storage::known_facts(conn, id).await? {
            return Ok((facts.csm, facts.owner));
        }
        let account = self.inner.accounts.get(id.0).await?;
        Ok((account.csm, account.owner))
    }

    /// Whether the caller may change a thing of account `id` belonging to
    /// `person` (a CTA's owner, an activity's author).
    async fn may_write_own<C: sea_orm::ConnectionTrait>(
        &self,
        conn: &C,
        id: AccountId,
        person: &str,
    ) -> Result<(), Error> {
        if access::caller().is_none() {
            return Ok(());
        }
        let (csm, owner) = self.people(conn, id).await?;
        access::may_write_own(&id.to_string(), &csm, &owner, person)
    }

    // --- playbooks -------------------------------------------------------------

    /// Creates a playbook at version 1.
    pub async fn create_playbook(
        &self,
        mut spec: PlaybookSpec,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreatePlaybookResponse, Error> {
        keep_secrets(&mut spec.steps, None).map_err(|i| {
            Error::invalid(
                format!("spec.steps[{i}].webhook_secret"),
                "must not be blank: a WEBHOOK step needs its signing secret",
            )
        })?;
        let written = self
            .inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    if storage::playbook_named(tx.conn(), &spec.name)
                        .await?
                        .is_some()
                    {
                        return Err(Error::AlreadyExists(format!(
                            "a playbook called {:?} already exists",
                            spec.name
                        )));
                    }
                    let now = Instant::from_micros(tx.now());
                    let p = Playbook {
                        id: PlaybookId(Uuid::now_v7()),
                        version: 1,
                        spec,
                        created_at: now,
                        updated_at: now,
                    };
                    storage::save_playbook(tx.conn(), &p, None).await?;
                    let out = playbook_to_pb(&p);
                    tx.emit(NewEvent::new(
                        "playbook",
                        out.id.clone(),
                        PLAYBOOK_CREATED,
                        &out,
                    ));
                    Ok(pb::CreatePlaybookResponse {
                        playbook: Some(out),
                    })
                })
            })
            .await;
        self.inner.playbook_writes.fetch_add(1, Ordering::SeqCst);
        written
    }

    /// Writes a new version of a playbook based on `expected_version`.
    pub async fn update_playbook(
        &self,
        id: PlaybookId,
        mut spec: PlaybookSpec,
        expected_version: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::UpdatePlaybookResponse, Error> {
        let written = self
            .inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_playbook(tx.conn(), id).await?;
                    if current.version != expected_version {
                        return Err(Error::Aborted(format!(
                            "playbook {} is at version {}, not {expected_version}; re-read it and retry",
                            id.0, current.version
                        )));
                    }
                    if let Some(other) = storage::playbook_named(tx.conn(), &spec.name).await?
                        && other != id
                    {
                        return Err(Error::AlreadyExists(format!(
                            "a playbook called {:?} already exists",
                            spec.name
                        )));
                    }
                    keep_secrets(&mut spec.steps, Some(&current.spec.steps)).map_err(
                        |i| {
                            Error::invalid(
                                format!("spec.steps[{i}].webhook_secret"),
                                "must not be blank for a webhook_url the current version has no \
                                 secret for (empty keeps the secret stored for the same URL)",
                            )
                        },
                    )?;
                    let next = Playbook {
                        version: current.version + 1,
                        spec,
                        updated_at: Instant::from_micros(tx.now()),
                        ..current
                    };
                    storage::save_playbook(tx.conn(), &next, Some(expected_version)).await?;
                    let out = playbook_to_pb(&next);
                    tx.emit(NewEvent::new("playbook", out.id.clone(), PLAYBOOK_UPDATED, &out));
                    Ok(pb::UpdatePlaybookResponse { playbook: Some(out) })
                })
            })
            .await;
        self.inner.playbook_writes.fetch_add(1, Ordering::SeqCst);
        written
    }

    /// One playbook's current version.
    pub async fn get_playbook(&self, id: PlaybookId) -> Result<Playbook, Error> {
        storage::require_playbook(self.inner.store.db().reader(), id).await
    }

    /// Every playbook's current version.
    pub async fn list_playbooks(&self) -> Result<Vec<Playbook>, Error> {
        storage::list_playbooks(self.inner.store.db().reader()).await
    }

    /// Every version of one playbook, newest first.
    pub async fn playbook_versions(&self, id: PlaybookId) -> Result<Vec<Playbook>, Error> {
        let conn = self.inner.store.db().reader();
        let current = storage::require_playbook(conn, id).await?;
        storage::playbook_versions(conn, &current).await
    }

    // --- CTAs ------------------------------------------------------------------

    /// Opens a CTA by hand.
    pub async fn create_cta(
        &self,
        new: ManualCta,
        idem: Option<Idempotency>,
    ) -> Result<pb::CreateCtaResponse, Error> {
        self.require_account(new.account_id).await?;
        let app = self.clone();
        self.inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    app.may_write_own(tx.conn(), new.account_id, &new.owner)
                        .await?;
                    let now = Instant::from_micros(tx.now());
                    let cta = Cta {
                        id: CtaId(Uuid::now_v7()),
                        account_id: new.account_id,
                        playbook: None,
                        cta_type: new.cta_type,
                        reason: new.reason,
                        priority: new.priority,
                        owner: new.owner,
                        status: CtaStatus::Open,
                        outcome: Outcome::Unspecified,
                        due_at: new.due_at,
                        snooze_until: None,
                        snooze_reason: String::new(),
                        tasks: Vec::new(),
                        comments: Vec::new(),
                        trigger_count: 0,
                        version: 1,
                        created_at: now,
                        updated_at: now,
                        closed_at: None,
                        first_action_at: None,
                    };
                    storage::insert_cta(tx.conn(), &cta).await?;
                    log_cta(tx, &cta, format!("CTA opened: {}", cta.reason)).await?;
                    let out = cta_to_pb(&cta);
                    tx.emit(cta_event(CTA_OPENED, &out));
                    Ok(pb::CreateCtaResponse { cta: Some(out) })
                })
            })
            .await
    }

    /// One CTA.
    pub async fn get_cta(&self, id: CtaId) -> Result<Cta, Error> {
        storage::require_cta(self.inner.store.db().reader(), id).await
    }

    /// One page of CTAs.
    pub async fn list_ctas(
        &self,
        filter: &CtaFilter,
        page: &Page,
    ) -> Result<(Vec<Cta>, bowtie_proto::common::PageResponse), Error> {
        let rows = storage::list_ctas(
            self.inner.store.db().reader(),
            filter,
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        Ok(page.finish(rows, storage::cta_page_key))
    }

    /// Applies a person's change to a CTA at `expected_version` (when given):
    /// the change, the version, the first action and the events.
    async fn change_cta<F>(
        &self,
        id: CtaId,
        expected_version: Option<i64>,
        idem: Option<Idempotency>,
        change: F,
    ) -> Result<pb::Cta, Error>
    where
        F: FnOnce(&mut Cta, Instant) -> Result<Option<String>, Error> + Send + 'static,
    {
        let app = self.clone();
        self.inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    let current = storage::require_cta(tx.conn(), id).await?;
                    app.may_write_own(tx.conn(), current.account_id, &current.owner)
                        .await?;
                    if let Some(expected) = expected_version
                        && expected != current.version
                    {
                        return Err(Error::Aborted(format!(
                            "cta {} is at version {}, not {expected}; re-read it and retry",
                            id.0, current.version
                        )));
                    }
                    let now = Instant::from_micros(tx.now());
                    let mut next = current.clone();
                    let note = change(&mut next, now)?;
                    if current.status == CtaStatus::Closed
                        && next.status != CtaStatus::Closed
                        && let Some((playbook, _)) = next.playbook
                        && storage::open_cta(tx.conn(), next.account_id, playbook)
                            .await?
                            .is_some()
                    {
                        return Err(Error::FailedPrecondition(format!(
                            "the account has another open CTA from playbook {}; close it first",
                            playbook.0
                        )));
                    }
                    next.version = current.version + 1;
                    next.updated_at = now;
                    next.first_action_at.get_or_insert(now);
                    storage::update_cta(tx.conn(), &next, current.version).await?;
                    if let Some(note) = note {
                        log_cta(tx, &next, note).await?;
                    }
                    let out = cta_to_pb(&next);
                    let event = if next.status == CtaStatus::Closed {
                        CTA_CLOSED
                    } else {
                        CTA_UPDATED
                    };
                    tx.emit(cta_event(event, &out));
                    Ok(out)
                })
            })
            .await
    }

    /// Moves a CTA along its lifecycle.
    pub async fn update_status(
        &self,
        id: CtaId,
        change: StatusChange,
        expected_version: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::Cta, Error> {
        self.change_cta(id, Some(expected_version), idem, move |cta, now| {
            check_transition(cta.status, change.status, change.outcome)?;
            let from = cta.status;
            cta.status = change.status;
            cta.snooze_until = None;
            cta.snooze_reason.clear();
            match change.status {
                CtaStatus::Snoozed => {
                    let Some((until, reason)) = change.snooze else {
                        return Err(Error::invalid("snooze_until", "is required to snooze"));
                    };
                    if until <= now {
                        return Err(Error::invalid("snooze_until", "must be in the future"));
                    }
                    cta.snooze_until = Some(until);
                    cta.snooze_reason = reason;
                }
                CtaStatus::Closed => {
                    cta.outcome = change.outcome;
                    cta.closed_at = Some(now);
                }
                _ => {
                    cta.outcome = Outcome::Unspecified;
                    cta.closed_at = None;
                }
            }
            let who = if change.actor.is_empty() {
                String::new()
            } else {
                format!(" by {}", change.actor)
            };
            Ok(
                (from == CtaStatus::Closed || change.status == CtaStatus::Closed).then(|| {
                    if change.status == CtaStatus::Closed {
                        format!("CTA closed{who}: {}", change.outcome.as_str_name())
                    } else {
                        format!("CTA reopened{who}")
                    }
                }),
            )
        })
        .await
    }

    /// Hands a CTA to `owner`.
    pub async fn reassign(
        &self,
        id: CtaId,
        owner: String,
        expected_version: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::Cta, Error> {
        self.change_cta(id, Some(expected_version), idem, move |cta, _| {
            if cta.status == CtaStatus::Closed {
                return Err(Error::FailedPrecondition(
                    "a CTA_STATUS_CLOSED CTA cannot be reassigned; reopen it first".into(),
                ));
            }
            cta.owner = owner;
            Ok(None)
        })
        .await
    }

    /// Sets the status of task `index` of a CTA.
    pub async fn update_task(
        &self,
        id: CtaId,
        index: i32,
        status: TaskStatus,
        expected_version: i64,
        idem: Option<Idempotency>,
    ) -> Result<pb::Cta, Error> {
        self.change_cta(id, Some(expected_version), idem, move |cta, _| {
            let count = cta.tasks.len();
            let task = usize::try_from(index)
                .ok()
                .and_then(|i| cta.tasks.get_mut(i))
                .ok_or_else(|| {
                    Error::invalid(
                        "index",
                        format!("the CTA has {count} tasks, numbered from 0"),
                    )
                })?;
            task.status = status as i32;
            Ok(None)
        })
        .await
    }

    /// Adds a comment to a CTA (no version: comments only add).
    pub async fn add_comment(
        &self,
        id: CtaId,
        author: String,
        text: String,
        idem: Option<Idempotency>,
    ) -> Result<pb::Cta, Error> {
        self.change_cta(id, None, idem, move |cta, now| {
            cta.comments.push(Comment {
                author,
                text,
                at: now,
            });
            Ok(None)
        })
        .await
    }

    // --- timeline --------------------------------------------------------------

    /// Logs a person's activity on an account's timeline.
    pub async fn log_activity(
        &self,
        new: LoggedActivity,
        idem: Option<Idempotency>,
    ) -> Result<pb::LogActivityResponse, Error> {
        self.require_account(new.account_id).await?;
        let app = self.clone();
        self.inner
            .store
            .write(idem, move |tx| {
                Box::pin(async move {
                    app.may_write_own(tx.conn(), new.account_id, &new.author)
                        .await?;
                    let a = Activity {
                        id: ActivityId(Uuid::now_v7()),
                        account_id: new.account_id,
                        kind: new.kind,
                        author: new.author,
                        occurred_at: new.occurred_at.unwrap_or(Instant::from_micros(tx.now())),
                        text: new.text,
                        participants: new.participants,
                    };
                    storage::insert_activity(tx.conn(), &a).await?;
                    let out = activity_to_pb(&a);
                    tx.emit(NewEvent::new(
                        "activity",
                        out.id.clone(),
                        ACTIVITY_LOGGED,
                        &out,
                    ));
                    Ok(pb::LogActivityResponse {
                        activity: Some(out),
                    })
                })
            })
            .await
    }

    /// One page of an account's timeline.
    pub async fn list_activities(
        &self,
        filter: &ActivityFilter,
        page: &Page,
    ) -> Result<(Vec<Activity>, bowtie_proto::common::PageResponse), Error> {
        let rows = storage::list_activities(
            self.inner.store.db().reader(),
            filter,
            page.after.as_deref(),
            page.fetch_limit(),
        )
        .await?;
        Ok(page.finish(rows, storage::activity_page_key))
    }

    // --- notifications -----------------------------------------------------------

    /// Stores a person's notification settings: a csm or manager only its
    /// own (docs/design.md 9.3), a refusal rolled back and audited.
    pub async fn set_notification_settings(
        &self,
        person: Person,
    ) -> Result<pb::SetNotificationSettingsResponse, Error> {
        self.inner
            .store
            .write(None, move |tx| {
                Box::pin(async move {
                    access::may_write_personal(&person.person, "the notification settings")?;
                    storage::save_person(tx.conn(), &person).await?;
                    Ok(pb::SetNotificationSettingsResponse {
                        settings: Some(crate::convert::person_to_pb(&person)),
                    })
                })
            })
            .await
    }

    /// The newest deliveries, of one status when asked.
    pub async fn list_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<storage::Delivery>, Error> {
        storage::list_deliveries(self.inner.store.db().reader(), status, limit).await
    }

    /// Emits `cta.step_due` for the scheduled step actions due at `now`,
    /// each once (a step whose CTA is closed, or whose task is done or
    /// skipped, is dropped without an event). Returns how many came due.
    pub async fn run_due_steps(&self, now: Instant) -> Result<usize, Error> {
        let due = storage::due_steps(self.inner.store.db().reader(), now, 100).await?;
        let count = due.len();
        for (cta, index) in due {
            self.inner
                .store
                .write(None, move |tx| {
                    Box::pin(async move {
                        if !storage::finish_step(tx.conn(), cta, index).await? {
                            return Ok(());
                        }
                        let Some(c) = storage::get_cta(tx.conn(), cta).await? else {
                            return Ok(());
                        };
                        let open = usize::try_from(index)
                            .ok()
                            .and_then(|i| c.tasks.get(i))
                            .is_some_and(|t| t.status == TaskStatus::Open as i32);
                        if c.status != CtaStatus::Closed && open {
                            tx.emit(step_due_event(&cta_to_pb(&c), index));
                        }
                        Ok(())
                    })
                })
                .await?;
        }
        Ok(count)
    }

    /// Queues the daily digest of everyone who asked for one and whose hour
    /// (UTC) has come at `now`, once per person and day: the claim and the
    /// `digest.due` event commit together. Someone with no open CTA gets
    /// none that day. Returns how many were queued.
    pub async fn queue_digests(&self, now: Instant) -> Result<usize, Error> {
        let day_start =
            Instant::from_micros(now.micros().div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY);
        let day: String = day_start.to_string().chars().take(10).collect();
        let mut queued = 0;
        for person in storage::digest_people(self.inner.store.db().reader()).await? {
            let Some(email) = person.digest_address() else {
                continue;
            };
            if !digest_due(day_start, person.digest_hour_utc, now) {
                continue;
            }
            let day = day.clone();
            let sent = self
                .inner
                .store
                .write(None, move |tx| {
                    Box::pin(async move {
                        let filter = CtaFilter {
                            owner: Some(person.person.clone()),
                            ..CtaFilter::default()
                        };
                        let mut ctas: Vec<Cta> =
                            storage::list_ctas(tx.conn(), &filter, None, DIGEST_LIMIT)
                                .await?
                                .into_iter()
                                .filter(|c| c.status != CtaStatus::Snoozed)
                                .collect();
                        // Nothing to list claims nothing: a CTA opened later
                        // that day still gets the day's digest.
                        if ctas.is_empty()
                            || !storage::claim_digest(tx.conn(), &person.person, &day, now).await?
                        {
                            return Ok(false);
                        }
                        digest_order(&mut ctas, now);
                        let digest = pb::Digest {
                            person: person.person.clone(),
                            email,
                            day: day.clone(),
                            ctas: ctas.iter().map(cta_to_pb).collect(),
                            queue_time: Some(now.to_timestamp()),
                        };
                        tx.emit(NewEvent::new(
                            "digest",
                            format!("{}:{day}", person.person),
                            DIGEST_DUE,
                            &digest,
                        ));
                        Ok(true)
                    })
                })
                .await?;
            queued += usize::from(sent);
        }
        Ok(queued)
    }

    // --- effectiveness ---------------------------------------------------------

    /// Measures a playbook over `period` as of `now`.
    pub async fn effectiveness(
        &self,
        id: PlaybookId,
        period: (Instant, Instant),
        now: Instant,
    ) -> Result<Effectiveness, Error> {
        let conn = self.inner.store.db().reader();
        let playbook = storage::require_playbook(conn, id).await?;
        let kind = playbook.spec.trigger.kind;
        let horizon = self.inner.policy.horizon_days;
        // Independent reads, on as many connections.
        let (triggers, churns, scores, reactivations, ctas) = tokio::try_join!(
            storage::counted_triggers(conn, id, period),
            storage::turns_of_triggered(conn, Turn::Churn, id, period),
            storage::scores_of_triggered(conn, id, period),
            async {
                if kind == TriggerKind::Churn {
                    storage::turns_of_triggered(conn, Turn::Reactivation, id, period).await
                } else {
                    Ok(Default::default())
                }
            },
            storage::cta_totals(conn, id, period, now),
        )?;
        let held_out: Vec<&storage::CountedTrigger> =
            triggers.iter().filter(|t| t.arm == Arm::HeldOut).collect();
        let treated: Vec<&storage::CountedTrigger> =
            triggers.iter().filter(|t| t.arm == Arm::Treated).collect();
        let observational = held_out.is_empty();
        let comparison: Vec<&storage::CountedTrigger> = if observational {
            // Without a holdout: the untreated triggers of the segments the
            // treated ones come from.
            let segments: std::collections::HashSet<Segment> =
                treated.iter().map(|t| t.segment).collect();
            triggers
                .iter()
                .filter(|t| t.arm == Arm::Untreated && segments.contains(&t.segment))
                .collect()
        } else {
            held_out
        };
        let none_scores = Vec::new();
        let none = Vec::new();
        let count = |arm: &[&storage::CountedTrigger]| {
            let mut c = ArmCounts {
                triggers: arm.len() as i64,
                ..ArmCounts::default()
            };
            for t in arm {
                c.add_health_change(health_change(
                    scores.get(&t.account_id).unwrap_or(&none_scores),
                    t.at,
                    now,
                ));
                if t.at.plus_days(i64::from(horizon)) <= now {
                    c.matured += 1;
                    let churned = lost_within(
                        kind,
                        t.at,
                        horizon,
                        churns.get(&t.account_id).unwrap_or(&none),
                        reactivations.get(&t.account_id).unwrap_or(&none),
                    );
                    c.churned += i64::from(churned);
                }
            }
            c
        };
        let (treated, comparison) = (count(&treated), count(&comparison));
        let closed_within_sla =
            (ctas.due > 0).then(|| ctas.closed_on_time as f64 / ctas.due as f64);
        let mut hours: Vec<f64> = ctas
            .to_first_action
            .iter()
            .map(|&micros| micros as f64 / 3.6e9)
            .collect();
        let outcomes = ctas.outcomes;
        Ok(Effectiveness {
            playbook: id,
            horizon_days: horizon,
            treated,
            comparison,
            observational,
            effect: effect(treated, comparison),
            ctas_opened: ctas.opened,
            closed_within_sla,
            median_hours_to_first_action: median(&mut hours),
            outcomes,
        })
    }

    // --- triggers from the feeds -------------------------------------------------

    /// Runs `event` through every playbook it may fire, inside the feed
    /// consumer's transaction.
    pub async fn apply_event(&self, tx: &mut Tx, event: &Event) -> Result<(), Error> {
        self.apply_event_with(tx, event, None).await
    }

    /// [`Self::apply_event`] for an account whose `facts` the caller has
    /// just read (or written) in `tx`.
    pub async fn apply_event_with(
        &self,
        tx: &mut Tx,
        event: &Event,
        facts: Option<&AccountFacts>,
    ) -> Result<(), Error> {
        let playbooks: Vec<Playbook> = self
            .playbooks(tx)
            .await?
            .iter()
            .filter(|p| p.spec.trigger.fires_on(event))
            .cloned()
            .collect();
        self.apply_to_with(tx, &playbooks, event, facts).await
    }

    /// Every playbook's current version, by name, read once per
    /// transaction: a burst of feed events applied in one transaction
    /// reads them once, not once an event. On SQLite no playbook can change
    /// while the consumer's write transaction is open; on PostgreSQL a
    /// playbook written meanwhile is seen by the next transaction, as it
    /// would be were each event read on its own.
    async fn playbooks(&self, tx: &Tx) -> Result<Arc<Vec<Playbook>>, Error> {
        let key = (tx.now(), self.inner.playbook_writes.load(Ordering::SeqCst));
        if let Ok(cache) = self.inner.playbooks.lock()
            && let Some(c) = cache.as_ref()
            && c.key == key
        {
            return Ok(c.playbooks.clone());
        }
        let playbooks = Arc::new(storage::list_playbooks(tx.conn()).await?);
        if let Ok(mut cache) = self.inner.playbooks.lock() {
            *cache = Some(PlaybookCache {
                key,
                playbooks: playbooks.clone(),
            });
        }
        Ok(playbooks)
    }

    /// Runs `event` through `playbooks` (those it fires), inside `tx`.
    pub async fn apply_to(
        &self,
        tx: &mut Tx,
        playbooks: &[Playbook],
        event: &Event,
    ) -> Result<(), Error> {
        self.apply_to_with(tx, playbooks, event, None).await
    }

    async fn apply_to_with(
        &self,
        tx: &mut Tx,
        playbooks: &[Playbook],
        event: &Event,
        facts: Option<&AccountFacts>,
    ) -> Result<(), Error> {
        if playbooks.is_empty() {
            return Ok(());
        }
        let facts = match facts {
            Some(f) if f.account_id == event.account_id => f.clone(),
            _ => self.facts(tx, event.account_id).await?,
        };
        for p in playbooks {
            let open = storage::open_cta(tx.conn(), event.account_id, p.id).await?;
            // Only an enrollment limit looks at the last enrollment.
            let last = if p.spec.enrollment_limit_days > 0 {
                let stored = storage::last_enrolled(tx.conn(), p.id, event.account_id).await?;
                let pending = tx
                    .local_ref::<PendingWrites>()
                    .and_then(|w| w.last_enrolled(p.id, event.account_id));
                stored.max(pending)
            } else {
                None
            };
            let decision = decide(
                p,
                &facts,
                open.as_ref().map(Cta::as_open),
                last,
                event.at,
                &self.inner.policy.holdout_seed,
            );
            let enroll = |arm, cta| TriggerRow {
                playbook: p.id,
                playbook_version: p.version,
                account_id: event.account_id,
                at: event.at,
                arm,
                segment: facts.segment,
                cta,
            };
            match decision {
                Decision::Open => {
                    let cta = open_from(tx, p, &facts, event).await?;
                    tx.local::<PendingWrites>()
                        .triggers
                        .push(enroll(Arm::Treated, Some(cta)));
                }
                Decision::Update(_) => {
                    if let Some(current) = open {
                        let mut next = current.clone();
                        next.trigger_count += 1;
                        next.version += 1;
                        next.updated_at = Instant::from_micros(tx.now());
                        storage::update_cta(tx.conn(), &next, current.version).await?;
                        tx.emit(cta_event(CTA_UPDATED, &cta_to_pb(&next)));
                    }
                }
                Decision::HoldOut => {
                    tx.local::<PendingWrites>()
                        .triggers
                        .push(enroll(Arm::HeldOut, None));
                }
                Decision::Observe => {
                    tx.local::<PendingWrites>()
                        .triggers
                        .push(enroll(Arm::Untreated, None));
                }
                Decision::Skip(_) => {}
            }
        }
        Ok(())
    }

    /// What the service knows of an account. The feeds are followed
    /// independently, so an alert can arrive before the accounts feed told
    /// this service who the account's CSM is: for an account it has not heard
    /// of, the accounts service is asked (an unreachable one fails the event,
    /// which the consumer retries).
    ///
    /// Read once per transaction ([`TxFacts`]).
    pub async fn facts(&self, tx: &mut Tx, id: AccountId) -> Result<AccountFacts, Error> {
        if let Some(facts) = self.known_facts(tx, id).await? {
            return Ok(facts);
        }
        let account = self.inner.accounts.get(id.0).await?;
        let facts = AccountFacts {
            account_id: id,
            csm: account.csm,
            owner: account.owner,
            segment: Segment::try_from(account.segment).unwrap_or(Segment::Unspecified),
            ..AccountFacts::default()
        };
        self.save_facts(tx, &facts).await?;
        Ok(facts)
    }

    /// What the service knows of an account, `None` when no feed mentioned
    /// it yet; read once per transaction ([`TxFacts`]).
    pub async fn known_facts(
        &self,
        tx: &mut Tx,
        id: AccountId,
    ) -> Result<Option<AccountFacts>, Error> {
        if let Some(facts) = tx.local_ref::<TxFacts>().and_then(|c| c.get(id)) {
            return Ok(Some(facts.clone()));
        }
        let facts = storage::known_facts(tx.conn(), id).await?;
        // On SQLite the write transaction holds the file: nothing changes
        // the row before it ends. On PostgreSQL another transaction may
        // change a row this one only read, so only a row it wrote (and so
        // holds locked) is kept.
        if let Some(f) = &facts
            && tx.conn().get_database_backend() == DbBackend::Sqlite
        {
            tx.local::<TxFacts>().keep(f.clone());
        }
        Ok(facts)
    }

    /// Stores an account's facts, unless they are what this transaction
    /// already read or wrote ([`TxFacts`]).
    pub async fn save_facts(&self, tx: &mut Tx, facts: &AccountFacts) -> Result<(), Error> {
        if !tx.local::<TxFacts>().changes(facts) {
            return Ok(());
        }
        storage::save_facts(tx.conn(), facts).await?;
        tx.local::<TxFacts>().keep(facts.clone());
        Ok(())
    }

    /// Records an account's health score at `at` (a repeat changes nothing,
    /// and a repeat within the transaction costs no statement).
    pub async fn add_score(
        &self,
        tx: &mut Tx,
        id: AccountId,
        at: Instant,
        score: i32,
    ) -> Result<(), Error> {
        if !tx.local::<TxFacts>().first_score(id, at) {
            return Ok(());
        }
        tx.local::<PendingWrites>().scores.push((id, at, score));
        Ok(())
    }

    /// Closes the account's open CTAs whose playbook's auto-close condition
    /// the new `facts` meet.
    pub async fn auto_close(&self, tx: &mut Tx, facts: &AccountFacts) -> Result<(), Error> {
        self.close_where(tx, facts.account_id, |spec| {
            auto_closes(spec.auto_close, spec.risk_threshold_bp, facts)
        })
        .await
    }

    /// Closes the account's open CTAs whose playbook closes them when
    /// revenue records the outcome of a renewal.
    pub async fn renewal_recorded(&self, tx: &mut Tx, account: AccountId) -> Result<(), Error> {
        self.close_where(tx, account, |spec| {
            spec.auto_close == AutoClose::RenewalRecorded
        })
        .await
    }

    /// Closes (AUTO_CLOSED) the account's open CTAs whose playbook's spec
    /// meets `closes`.
    async fn close_where(
        &self,
        tx: &mut Tx,
        account: AccountId,
        closes: impl Fn(&PlaybookSpec) -> bool,
    ) -> Result<(), Error> {
        // Only a CTA whose playbook's spec closes can close: when no
        // playbook's does, the account's CTAs need not be read.
        let playbooks = self.playbooks(tx).await?;
        if !playbooks.iter().any(|p| closes(&p.spec)) {
            return Ok(());
        }
        let open = storage::open_ctas_of(tx.conn(), account).await?;
        if open.is_empty() {
            return Ok(());
        }
        for current in open {
            let Some((playbook, _)) = current.playbook else {
                continue;
            };
            let Some(p) = playbooks.iter().find(|p| p.id == playbook) else {
                continue;
            };
            if !closes(&p.spec) {
                continue;
            }
            let now = Instant::from_micros(tx.now());
            let mut next = current.clone();
            next.status = CtaStatus::Closed;
            next.outcome = Outcome::AutoClosed;
            next.closed_at = Some(now);
            next.snooze_until = None;
            next.snooze_reason.clear();
            next.version += 1;
            next.updated_at = now;
            storage::update_cta(tx.conn(), &next, current.version).await?;
            log_cta(
                tx,
                &next,
                format!("CTA closed by itself: {}", p.spec.auto_close.as_str_name()),
            )
            .await?;
            tx.emit(cta_event(CTA_CLOSED, &cta_to_pb(&next)));
        }
        Ok(())
    }
}

/// A digest's order: the overdue (due before `now`) first, each part by
/// due time.
pub fn digest_order(ctas: &mut [Cta], now: Instant) {
    ctas.sort_by_key(|c| (c.due_at >= now, c.due_at, c.id));
}

/// Opens a CTA of playbook `p` for the event's account.
async fn open_from(
    tx: &mut Tx,
    p: &Playbook,
    facts: &AccountFacts,
    event: &Event,
) -> Result<CtaId, Error> {
    let needs_pool = facts.csm.is_empty() && facts.owner.is_empty();
    let load = if needs_pool {
        storage::open_counts(tx.conn(), &p.spec.owner_pool).await?
    } else {
        Default::default()
    };
    let owner = assign_owner(facts, &p.spec.owner_pool, |m| {
        load.get(m).copied().unwrap_or(0)
    })
    .unwrap_or_default();
    let opened = event.at;
    let cta = Cta {
        id: CtaId(Uuid::now_v7()),
        account_id: event.account_id,
        playbook: Some((p.id, p.version)),
        cta_type: p.spec.cta_type,
        reason: event.reason.clone(),
        priority: p.spec.priority,
        owner,
        status: CtaStatus::Open,
        outcome: Outcome::Unspecified,
        due_at: opened.plus_days(i64::from(p.spec.sla_days)),
        snooze_until: None,
        snooze_reason: String::new(),
        tasks: p
            .spec
            .steps
            .iter()
            .map(|s| Task {
                title: s.title.clone(),
                due_at: opened.plus_days(i64::from(s.due_offset_days)),
                status: TaskStatus::Open as i32,
            })
            .collect(),
        comments: Vec::new(),
        trigger_count: 1,
        version: 1,
        created_at: opened,
        updated_at: Instant::from_micros(tx.now()),
        closed_at: None,
        first_action_at: None,
    };
    storage::insert_cta(tx.conn(), &cta).await?;
    // Written at the end of the transaction with the batch's other entries.
    let now = Instant::from_micros(tx.now());
    defer_system(
        tx,
        cta.account_id,
        ActivityKind::Cta,
        now,
        format!("{}: {}", p.spec.name, cta.reason),
    );
    let out = cta_to_pb(&cta);
    tx.emit(cta_event(CTA_OPENED, &out));
    // Each step's action: at once when it is already due (offset 0), else
    // when the schedule finds it due (`Success::run_due_steps`).
    let now = Instant::from_micros(tx.now());
    for (index, (step, task)) in p.spec.steps.iter().zip(&cta.tasks).enumerate() {
        if step.action.is_none() {
            continue;
        }
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        let due_now = task.due_at <= now;
        storage::schedule_step(tx.conn(), cta.id, index, task.due_at, due_now).await?;
        if due_now {
            tx.emit(step_due_event(&out, index));
        }
    }
    Ok(cta.id)
}

fn step_due_event(cta: &pb::Cta, index: i32) -> NewEvent {
    NewEvent::new(
        "cta",
        cta.id.clone(),
        STEP_DUE,
        &pb::StepDue {
            cta: Some(cta.clone()),
            step_index: index,
        },
    )
}

/// Writes an automatic timeline entry about a CTA.
async fn log_cta(tx: &mut Tx, cta: &Cta, text: String) -> Result<(), Error> {
    log_system(
        tx,
        cta.account_id,
        ActivityKind::Cta,
        Instant::from_micros(tx.now()),
        text,
    )
    .await
}

/// Automatic timeline entries a feed event has made but not yet written
/// ([`defer_system`]): the next [`log_system`] of the transaction, or
/// [`flush_system`], writes them together with its own in one statement.
#[derive(Debug, Default)]
struct PendingEntries(Vec<Activity>);

fn system_entry(account_id: AccountId, kind: ActivityKind, at: Instant, text: String) -> Activity {
    Activity {
        id: ActivityId(Uuid::now_v7()),
        account_id,
        kind,
        author: SYSTEM_AUTHOR.into(),
        occurred_at: at,
        text,
        participants: Vec::new(),
    }
}

/// Writes an automatic timeline entry (with any deferred ones).
pub async fn log_system(
    tx: &mut Tx,
    account_id: AccountId,
    kind: ActivityKind,
    at: Instant,
    text: String,
) -> Result<(), Error> {
    let mut entries = std::mem::take(&mut tx.local::<PendingEntries>().0);
    entries.push(system_entry(account_id, kind, at, text));
    storage::insert_activities(tx.conn(), &entries).await
}

/// Makes an automatic timeline entry that is written with the
/// transaction's next one: a feed event that writes an entry and then
/// perhaps opens a CTA (which writes its own) writes both in one statement.
/// The transaction must [`flush_system`] (or [`flush_pending`]) before it
/// ends.
pub fn defer_system(
    tx: &mut Tx,
    account_id: AccountId,
    kind: ActivityKind,
    at: Instant,
    text: String,
) {
    tx.local::<PendingEntries>()
        .0
        .push(system_entry(account_id, kind, at, text));
}

/// Writes the deferred timeline entries, if any are left.
pub async fn flush_system(tx: &mut Tx) -> Result<(), Error> {
    let entries = std::mem::take(&mut tx.local::<PendingEntries>().0);
    storage::insert_activities(tx.conn(), &entries).await
}

/// Rows the events of a transaction have decided on but not yet written
/// (docs/design.md section 5, "Feeds are applied in bursts"): the
/// enrollments and health scores of a whole batch of feed events are
/// inserted at its end ([`flush_pending`]), one statement per table, not
/// one per event. Nothing in the transaction reads them back from the
/// database before then; the enrollment limit consults them here.
#[derive(Debug, Default)]
struct PendingWrites {
    triggers: Vec<TriggerRow>,
    scores: Vec<(AccountId, Instant, i32)>,
}

impl PendingWrites {
    /// The latest pending enrollment of `account` in `playbook`.
    fn last_enrolled(&self, playbook: PlaybookId, account: AccountId) -> Option<Instant> {
        self.triggers
            .iter()
            .filter(|t| t.playbook == playbook && t.account_id == account)
            .map(|t| t.at)
            .max()
    }
}

/// Writes everything the transaction deferred: timeline entries,
/// enrollments and health scores. Every transaction that applies feed
/// events or sweeps ends with it (the consumers run it after the last event
/// of each batch).
pub async fn flush_pending(tx: &mut Tx) -> Result<(), Error> {
    flush_system(tx).await?;
    let pending = std::mem::take(tx.local::<PendingWrites>());
    storage::insert_triggers(tx.conn(), &pending.triggers).await?;
    storage::add_scores(tx.conn(), &pending.scores).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolled(playbook: u128, account: u128, at: i64) -> TriggerRow {
        TriggerRow {
            playbook: PlaybookId(Uuid::from_u128(playbook)),
            playbook_version: 1,
            account_id: AccountId(Uuid::from_u128(account)),
            at: Instant::from_micros(at),
            arm: Arm::HeldOut,
            segment: Segment::Unspecified,
            cta: None,
        }
    }

    #[test]
    fn a_pending_enrollment_counts_only_for_its_own_playbook_and_account() {
        let pending = PendingWrites {
            triggers: vec![
                enrolled(1, 10, 300),
                enrolled(1, 10, 700),
                enrolled(1, 11, 900),
                enrolled(2, 10, 800),
            ],
            scores: Vec::new(),
        };
        let playbook = PlaybookId(Uuid::from_u128(1));
        assert_eq!(
            pending.last_enrolled(playbook, AccountId(Uuid::from_u128(10))),
            Some(Instant::from_micros(700))
        );
        assert_eq!(
            pending.last_enrolled(playbook, AccountId(Uuid::from_u128(12))),
            None
        );
    }
}
