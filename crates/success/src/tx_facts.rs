//! What one transaction of a feed consumer has read and written of account
//! facts and health scores (docs/design.md section 5, "Feeds are applied in
//! bursts"). A batch of feed events is one transaction and often mentions an
//! account more than once (scoring's `health.band_changed` and `alert.raised`
//! of the same rescoring): the facts are read once and written only when they
//! changed, and a score already recorded at an instant is not inserted again.
//!
//! It lives in the transaction ([`bowtie_runtime::store::Tx::local`]), so a
//! rolled-back batch drops it with its writes, and it holds nothing but what
//! the transaction itself read or wrote: every fact the service writes in a
//! consumer's transaction goes through it. On PostgreSQL only facts the
//! transaction wrote (and so holds locked) are kept, as another transaction
//! may change a row this one only read.

use std::collections::{HashMap, HashSet};

use bowtie_runtime::{AccountId, Instant};

use crate::domain::AccountFacts;

/// Account facts and health scores as one transaction stored them.
#[derive(Debug, Default)]
pub struct TxFacts {
    facts: HashMap<AccountId, AccountFacts>,
    scores: HashSet<(AccountId, i64)>,
}

impl TxFacts {
    /// The account's facts as this transaction read or wrote them, if it did.
    pub fn get(&self, account: AccountId) -> Option<&AccountFacts> {
        self.facts.get(&account)
    }

    /// Remembers `facts` as they stand in the database (just read or just
    /// written).
    pub fn keep(&mut self, facts: AccountFacts) {
        self.facts.insert(facts.account_id, facts);
    }

    /// Whether `facts` differ from what this transaction knows is stored for
    /// their account (an account it has not read or written always needs
    /// the write).
    pub fn changes(&self, facts: &AccountFacts) -> bool {
        self.facts.get(&facts.account_id) != Some(facts)
    }

    /// Whether the account's score at `at` still needs recording in this
    /// transaction; answers true once per account and instant, false for
    /// any repeat (whose insert would change nothing).
    pub fn first_score(&mut self, account: AccountId, at: Instant) -> bool {
        self.scores.insert((account, at.micros()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn facts(n: u128, red: bool) -> AccountFacts {
        AccountFacts {
            account_id: AccountId(Uuid::from_u128(n)),
            csm: format!("csm-{n}"),
            red,
            ..AccountFacts::default()
        }
    }

    #[test]
    fn an_account_never_seen_has_no_facts_and_needs_its_write() {
        let cache = TxFacts::default();
        assert_eq!(cache.get(facts(1, false).account_id), None);
        assert!(cache.changes(&facts(1, false)));
    }

    #[test]
    fn kept_facts_answer_for_their_own_account_only() {
        let mut cache = TxFacts::default();
        cache.keep(facts(1, true));
        cache.keep(facts(2, false));
        assert_eq!(cache.get(facts(1, true).account_id), Some(&facts(1, true)));
        assert_eq!(cache.get(facts(2, true).account_id), Some(&facts(2, false)));
        assert_eq!(cache.get(facts(3, true).account_id), None);
    }

    #[test]
    fn facts_equal_to_the_kept_ones_need_no_write_and_any_change_does() {
        let mut cache = TxFacts::default();
        cache.keep(facts(1, false));
        assert!(!cache.changes(&facts(1, false)));
        assert!(cache.changes(&facts(1, true)));
        // Another account with the same values is not the same row.
        let mut other = facts(1, false);
        other.account_id = AccountId(Uuid::from_u128(2));
        assert!(cache.changes(&other));
    }

    #[test]
    fn the_last_kept_facts_of_an_account_replace_the_earlier() {
        let mut cache = TxFacts::default();
        cache.keep(facts(1, false));
        cache.keep(facts(1, true));
        assert_eq!(cache.get(facts(1, true).account_id), Some(&facts(1, true)));
        assert!(cache.changes(&facts(1, false)));
    }

    #[test]
    fn a_score_is_recorded_once_per_account_and_instant() {
        let mut cache = TxFacts::default();
        let (a, b) = (AccountId(Uuid::from_u128(1)), AccountId(Uuid::from_u128(2)));
        let at = Instant::from_micros(1_000);
        assert!(cache.first_score(a, at));
        assert!(!cache.first_score(a, at));
        assert!(cache.first_score(b, at));
        assert!(cache.first_score(a, Instant::from_micros(1_001)));
    }
}
