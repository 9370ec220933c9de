//! Imported subscription histories (docs/design.md, "Streaming imports"):
//! the revenue id of a billing system's subscription, and one event of its
//! history applied to the subscriptions it may touch, with the duplicate
//! rules that make re-sending a file change nothing.

use std::collections::HashMap;

use bowtie_runtime::error::Error;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    AccountId, Cancellation, Instant, Invoice, NewSubscription, Subscription, SubscriptionId,
    Terms, format_instant,
};

/// The revenue id of the billing system's subscription `external`: a UUID
/// (version 8) made of the first 16 bytes of SHA-256 of
/// `"bowtie.revenue.subscription:" + external`, the same on every import.
pub fn imported_subscription_id(external: &str) -> SubscriptionId {
    let digest = Sha256::new()
        .chain_update(b"bowtie.revenue.subscription:")
        .chain_update(external.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    SubscriptionId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// What one imported event does to its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEvent {
    /// The subscription starts.
    Start(NewSubscription),
    /// New terms, priced in `currency`, from `at` on.
    Change {
        /// When they take effect.
        at: Instant,
        /// The terms.
        terms: Terms,
        /// Their currency.
        currency: String,
    },
    /// The subscription ends.
    Cancel(Cancellation),
}

/// One event of an imported subscription history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedEvent {
    /// The billing system's id of the subscription.
    pub external: String,
    /// The account the row names: required on a start, optional otherwise.
    pub account_id: Option<AccountId>,
    /// What happens.
    pub event: HistoryEvent,
}

impl ImportedEvent {
    /// The revenue id of the event's subscription.
    pub fn subscription_id(&self) -> SubscriptionId {
        imported_subscription_id(&self.external)
    }

    /// The event type a recorded event is announced with.
    pub fn event_type(&self) -> &'static str {
        match self.event {
            HistoryEvent::Start(_) => "subscription.created",
            HistoryEvent::Change { .. } => "subscription.changed",
            HistoryEvent::Cancel(_) => "subscription.cancelled",
        }
    }
}

/// Whether an imported row changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was recorded.
    Recorded,
    /// The history already held it: nothing changed.
    Duplicate,
}

/// Applies `e` to `subscriptions` (every subscription of the accounts it
/// may touch, by id), exactly as CreateSubscription, ChangeSubscription and
/// CancelSubscription would. A start of a subscription already started at
/// the same instant for the same account, a change to the terms already in
/// force from its instant and a cancellation equal to the recorded one are
/// duplicates. A refused event leaves `subscriptions` as it was.
pub fn apply_event(
    subscriptions: &mut HashMap<SubscriptionId, Subscription>,
    e: &ImportedEvent,
) -> Result<Applied, Error> {
    let id = e.subscription_id();
    if let HistoryEvent::Start(new) = &e.event {
        return match subscriptions.get(&id) {
            Some(s) if s.account_id != new.account_id => Err(Error::invalid(
                "account_id",
                format!(
                    "subscription {:?} belongs to account {}",
                    e.external, s.account_id
                ),
            )),
            Some(s) if s.start == new.start => Ok(Applied::Duplicate),
            Some(s) => Err(Error::FailedPrecondition(format!(
                "subscription {:?} already started at {}",
                e.external,
                format_instant(s.start)
            ))),
            None => {
                subscriptions.insert(id, Subscription::create(id, new.clone()));
                Ok(Applied::Recorded)
            }
        };
    }
    let s = subscriptions.get_mut(&id).ok_or_else(|| {
        Error::not_found("subscription", format!("{:?} (no START of it)", e.external))
    })?;
    if let Some(account) = e.account_id
        && account != s.account_id
    {
        return Err(Error::invalid(
            "account_id",
            format!("must be the subscription's account {}", s.account_id),
        ));
    }
    match &e.event {
        HistoryEvent::Start(_) => Ok(Applied::Duplicate),
        HistoryEvent::Change {
            at,
            terms,
            currency,
        } => {
            let same = *currency == s.currency
                && s.versions
                    .iter()
                    .any(|v| v.effective_at == *at && v.terms == *terms);
            if same {
                return Ok(Applied::Duplicate);
            }
            s.change_priced(*at, terms.clone(), currency)?;
            Ok(Applied::Recorded)
        }
        HistoryEvent::Cancel(c) => {
            if s.cancellation.as_ref() == Some(c) {
                return Ok(Applied::Duplicate);
            }
            s.cancel(c.clone())?;
            Ok(Applied::Recorded)
        }
    }
}

/// What recording an invoice does to what is stored under its external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceChange {
    /// A new invoice, to insert.
    Insert(Invoice),
    /// The payment of a stored unpaid invoice: the invoice as paid.
    Pay(Invoice),
    /// Nothing changes: the stored invoice.
    Keep(Invoice),
}

impl InvoiceChange {
    /// The invoice after the change.
    pub fn invoice(&self) -> &Invoice {
        match self {
            InvoiceChange::Insert(i) | InvoiceChange::Pay(i) | InvoiceChange::Keep(i) => i,
        }
    }
}

/// Records `invoice` over `known`, the invoice stored under its external id:
/// the same invoice, so the payment of an unpaid one is added to it and
/// anything else keeps the stored one; one of another account is refused. A
/// new invoice gets `id`.
pub fn record_over(
    known: Option<Invoice>,
    invoice: Invoice,
    id: Uuid,
) -> Result<InvoiceChange, Error> {
    Ok(match known {
        Some(known) if known.account_id != invoice.account_id => {
            return Err(Error::invalid(
                "invoice.external_id",
                "names an invoice of another account",
            ));
        }
        Some(known) if known.paid_at.is_none() && invoice.paid_at.is_some() => {
            InvoiceChange::Pay(Invoice {
                paid_at: invoice.paid_at,
                ..known
            })
        }
        Some(known) => InvoiceChange::Keep(known),
        None => InvoiceChange::Insert(Invoice { id, ..invoice }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CancellationKind, Interval, Minor};

    fn terms(quantity: i64) -> Terms {
        Terms {
            plan: "pro".into(),
            quantity,
            unit_price: Minor(5_000),
            discount_bp: 0,
        }
    }

    fn event(external: &str, event: HistoryEvent) -> ImportedEvent {
        ImportedEvent {
            external: external.into(),
            account_id: None,
            event,
        }
    }

    fn start(account: AccountId, at: i64) -> HistoryEvent {
        HistoryEvent::Start(NewSubscription {
            account_id: account,
            currency: "USD".into(),
            interval: Interval::Month,
            start: Instant::from_micros(at),
            trial_end: None,
            term_end: None,
            terms: terms(2),
        })
    }

    #[test]
    fn the_revenue_id_of_a_billing_subscription_is_stable_and_its_own() {
        let id = imported_subscription_id("sub_1");
        assert_eq!(id, imported_subscription_id("sub_1"));
        assert_ne!(id, imported_subscription_id("sub_2"));
        assert_eq!(id.uuid().get_version_num(), 8);
    }

    #[test]
    fn a_history_applied_twice_is_recorded_once() -> Result<(), Error> {
        let acme = AccountId(Uuid::from_u128(1));
        let change = HistoryEvent::Change {
            at: Instant::from_micros(200),
            terms: terms(5),
            currency: "USD".into(),
        };
        let cancel = HistoryEvent::Cancel(Cancellation {
            effective_at: Instant::from_micros(300),
            kind: CancellationKind::Voluntary,
            reason: "price".into(),
        });
        let history = [
            event("s1", start(acme, 100)),
            event("s1", change),
            event("s1", cancel),
        ];
        let mut subs = HashMap::new();
        for e in &history {
            assert_eq!(apply_event(&mut subs, e)?, Applied::Recorded);
        }
        let once = subs.clone();
        for e in &history {
            assert_eq!(apply_event(&mut subs, e)?, Applied::Duplicate);
        }
        assert_eq!(subs, once);
        let s = &subs[&imported_subscription_id("s1")];
        assert_eq!((s.versions.len(), s.version), (2, 3));
        Ok(())
    }

    #[test]
    fn a_refused_event_changes_nothing() {
        let acme = AccountId(Uuid::from_u128(1));
        let other = AccountId(Uuid::from_u128(2));
        let mut subs = HashMap::new();
        assert!(apply_event(&mut subs, &event("s1", start(acme, 100))).is_ok());
        let before = subs.clone();
        // Another account, another start, a change before the start, a
        // change in another currency, a subscription never started.
        let refused = [
            event("s1", start(other, 100)),
            event("s1", start(acme, 150)),
            event(
                "s1",
                HistoryEvent::Change {
                    at: Instant::from_micros(50),
                    terms: terms(3),
                    currency: "USD".into(),
                },
            ),
            event(
                "s1",
                HistoryEvent::Change {
                    at: Instant::from_micros(200),
                    terms: terms(3),
                    currency: "EUR".into(),
                },
            ),
            event(
                "s2",
                HistoryEvent::Change {
                    at: Instant::from_micros(200),
                    terms: terms(3),
                    currency: "USD".into(),
                },
            ),
        ];
        for e in &refused {
            assert!(apply_event(&mut subs, e).is_err(), "{e:?}");
        }
        assert_eq!(subs, before);
    }

    #[test]
    fn an_invoice_over_its_stored_self_adds_only_a_payment() -> Result<(), Error> {
        let acme = AccountId(Uuid::from_u128(1));
        let unpaid = Invoice {
            id: Uuid::from_u128(7),
            account_id: acme,
            subscription_id: None,
            currency: "USD".into(),
            amount: Minor(10_000),
            due_at: Instant::from_micros(100),
            paid_at: None,
            external_id: Some("in_1".into()),
        };
        let paid = Invoice {
            id: Uuid::nil(),
            paid_at: Some(Instant::from_micros(150)),
            ..unpaid.clone()
        };
        let fresh = Uuid::from_u128(9);
        assert_eq!(
            record_over(None, unpaid.clone(), fresh)?,
            InvoiceChange::Insert(Invoice {
                id: fresh,
                ..unpaid.clone()
            })
        );
        assert_eq!(
            record_over(Some(unpaid.clone()), paid.clone(), fresh)?,
            InvoiceChange::Pay(Invoice {
                paid_at: Some(Instant::from_micros(150)),
                ..unpaid.clone()
            })
        );
        let stored_paid = Invoice {
            id: unpaid.id,
            ..paid.clone()
        };
        assert_eq!(
            record_over(Some(stored_paid.clone()), unpaid.clone(), fresh)?,
            InvoiceChange::Keep(stored_paid)
        );
        let theirs = Invoice {
            account_id: AccountId(Uuid::from_u128(2)),
            ..paid
        };
        assert!(record_over(Some(unpaid), theirs, fresh).is_err());
        Ok(())
    }
}
