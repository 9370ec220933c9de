//! The ownership rules of writes (docs/design.md 9.3), the same in every
//! service: each service checks the accounts its writes touch with the
//! CSM and owner it knows of them (the accounts service its own rows, the
//! others their projection of the accounts feed).
//!
//! - a key configured with scopes only, and an admin, write everything
//!   their scope allows;
//! - a csm writes the accounts whose CSM or owner is the caller (its
//!   e-mail address or subject, compared case-insensitively), and the
//!   CTAs, notes, activities and signals that are its own;
//! - a manager writes those of its book: its own and its teams' members'
//!   (`auth.teams`, or the teams its token's `teams_claim` names);
//! - configuration (the admin methods) needs the admin scope, which no
//!   csm or manager has.
//!
//! A refusal is [`Error::Forbidden`]: PERMISSION_DENIED naming the account
//! and the role. [`crate::store::Store::write`] rolls the write back and
//! records the refusal in the audit log in a transaction of its own.
//!
//! Writes a service makes on its own (feed consumers, sweeps) run outside
//! any call and follow no caller's rules.

use std::sync::Arc;

use crate::audit::AuditContext;
use crate::auth::{Principal, Role};
use crate::error::Error;

/// The principal of the call being served; `None` for the service's own work.
pub fn caller() -> Option<Arc<Principal>> {
    AuditContext::caller()
}

/// Whether the caller may change account `account_id`, whose CSM and
/// owner are `csm` and `owner` (empty when unknown or unset).
pub fn may_write_account(account_id: &str, csm: &str, owner: &str) -> Result<(), Error> {
    decide(caller().as_deref(), account_id, csm, owner, None)
}

/// Whether the caller may change a thing of account `account_id` that
/// belongs to `person` (a CTA's owner, an activity's author): allowed on
/// the account's own terms, or when `person` is in the caller's book.
pub fn may_write_own(account_id: &str, csm: &str, owner: &str, person: &str) -> Result<(), Error> {
    decide(caller().as_deref(), account_id, csm, owner, Some(person))
}

/// Whether the caller may make a write that is about no account (`what`,
/// e.g. company-wide spend): a csm or manager may not, since no book holds
/// it; an admin, a key with scopes only and the service's own work may.
pub fn may_write_unowned(what: &str) -> Result<(), Error> {
    decide_unowned(caller().as_deref(), what)
}

/// [`may_write_unowned`]'s rule, for `caller`.
pub fn decide_unowned(caller: Option<&Principal>, what: &str) -> Result<(), Error> {
    let Some(caller) = caller else {
        return Ok(());
    };
    match caller.rules {
        None | Some(Role::Admin) => Ok(()),
        Some(role) => Err(Error::Forbidden {
            account_id: String::new(),
            message: format!(
                "{what} is in nobody's book, so {:?} (role {}) may not change it: only an admin or a key with scopes only may",
                caller.name,
                role.as_str()
            ),
        }),
    }
}

/// Whether the caller may change `what` of `person` (e.g. its
/// notification settings), a thing of that person alone: a csm or manager
/// only its own (`person` is the caller, its e-mail address or subject,
/// compared case-insensitively); an admin, a key with scopes only and the
/// service's own work anyone's.
pub fn may_write_personal(person: &str, what: &str) -> Result<(), Error> {
    decide_personal(caller().as_deref(), person, what)
}

/// [`may_write_personal`]'s rule, for `caller`.
pub fn decide_personal(caller: Option<&Principal>, person: &str, what: &str) -> Result<(), Error> {
    let Some(caller) = caller else {
        return Ok(());
    };
    match caller.rules {
        None | Some(Role::Admin) => Ok(()),
        Some(_) if caller.is(person) => Ok(()),
        Some(role) => Err(Error::Forbidden {
            account_id: String::new(),
            message: format!(
                "{what} of {person:?} are not {:?}'s (role {}): a csm or manager changes only its own",
                caller.name,
                role.as_str()
            ),
        }),
    }
}

/// The rules themselves, for `caller`.
pub fn decide(
    caller: Option<&Principal>,
    account_id: &str,
    csm: &str,
    owner: &str,
    person: Option<&str>,
) -> Result<(), Error> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let Some(role) = caller.rules else {
        return Ok(());
    };
    let allowed = match role {
        Role::Admin => true,
        Role::Viewer => false,
        Role::Csm | Role::Manager => {
            caller.has_in_book(csm)
                || caller.has_in_book(owner)
                || person.is_some_and(|p| caller.has_in_book(p))
        }
    };
    if allowed {
        return Ok(());
    }
    let whose = match role {
        Role::Manager => "its CSM or owner, or their manager,",
        _ => "its CSM or owner",
    };
    Err(Error::Forbidden {
        account_id: account_id.to_owned(),
        message: format!(
            "account {account_id} is not in the book of {:?} (role {}): only {whose} may change it",
            caller.name,
            role.as_str()
        ),
    })
}

/// The book `mine=true` asks for (`field` names the request's flag): `None`
/// when not asked, the people whose accounts are the caller's when asked,
/// INVALID_ARGUMENT naming `field` when the caller is no person (a key
/// configured with scopes only).
pub fn mine(field: &str, asked: bool) -> Result<Option<Vec<String>>, Error> {
    if !asked {
        return Ok(None);
    }
    match caller() {
        Some(p) if p.is_personal() => Ok(Some(p.book.clone())),
        _ => Err(Error::invalid(
            field,
            "needs a caller with a book of its own (a token, or a key given a role); this key has scopes only",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{PrincipalKind, Scope};

    fn person(role: Role, book: &[&str]) -> Principal {
        Principal {
            name: "ada".into(),
            scope: role.scope(),
            kind: PrincipalKind::Jwt,
            subject: "ada".into(),
            email: Some("ada@example.com".into()),
            roles: vec![role],
            rules: Some(role),
            book: book.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn code(result: Result<(), Error>) -> Option<String> {
        result.err().map(|e| e.to_string())
    }

    #[test]
    fn a_csm_writes_the_accounts_it_is_csm_or_owner_of_in_any_case() {
        let ada = person(Role::Csm, &["ada", "ada@example.com"]);
        assert!(decide(Some(&ada), "a1", "Ada@Example.com", "", None).is_ok());
        assert!(decide(Some(&ada), "a1", "grace@example.com", "ada", None).is_ok());
        assert_eq!(
            code(decide(Some(&ada), "a2", "grace@example.com", "", None)),
            Some(
                "account a2 is not in the book of \"ada\" (role csm): only its CSM or owner may change it"
                    .into()
            )
        );
    }

    #[test]
    fn a_csm_writes_its_own_things_on_another_account_and_a_manager_its_teams() {
        let ada = person(Role::Csm, &["ada@example.com"]);
        assert!(
            decide(
                Some(&ada),
                "a2",
                "grace@example.com",
                "",
                Some("ada@example.com")
            )
            .is_ok()
        );
        let lead = person(Role::Manager, &["lead@example.com", "grace@example.com"]);
        assert!(decide(Some(&lead), "a2", "grace@example.com", "", None).is_ok());
        assert!(decide(Some(&lead), "a3", "lin@example.com", "", None).is_err());
    }

    #[test]
    fn admins_keys_with_scopes_only_and_the_services_own_work_are_unrestricted() {
        let admin = person(Role::Admin, &[]);
        assert!(decide(Some(&admin), "a1", "grace", "", None).is_ok());
        let key = Principal {
            rules: None,
            book: Vec::new(),
            scope: Scope::Write,
            kind: PrincipalKind::Key,
            ..person(Role::Manager, &[])
        };
        assert!(decide(Some(&key), "a1", "grace", "", None).is_ok());
        assert!(decide(None, "a1", "grace", "", None).is_ok());
    }

    #[test]
    fn a_write_about_no_account_is_refused_to_csms_and_managers_only() {
        let ada = person(Role::Csm, &["ada"]);
        assert_eq!(
            code(decide_unowned(Some(&ada), "the company's spend")),
            Some(
                "the company's spend is in nobody's book, so \"ada\" (role csm) may not change it: only an admin or a key with scopes only may"
                    .into()
            )
        );
        assert!(decide_unowned(Some(&person(Role::Manager, &["ada"])), "x").is_err());
        assert!(decide_unowned(Some(&person(Role::Admin, &[])), "x").is_ok());
        assert!(decide_unowned(None, "x").is_ok());
    }

    #[test]
    fn a_person_changes_only_its_own_things_and_an_admin_anyones() {
        let ada = person(Role::Csm, &["ada", "ada@example.com"]);
        assert!(decide_personal(Some(&ada), " ADA@example.com", "the settings").is_ok());
        assert!(decide_personal(Some(&ada), "ada", "the settings").is_ok());
        assert_eq!(
            code(decide_personal(Some(&ada), "grace@example.com", "the settings")),
            Some(
                "the settings of \"grace@example.com\" are not \"ada\"'s (role csm): a csm or manager changes only its own"
                    .into()
            )
        );
        // A manager's book holds its team, but what is a person's own is not
        // the team's.
        let lead = person(Role::Manager, &["lead@example.com", "grace@example.com"]);
        assert!(decide_personal(Some(&lead), "grace@example.com", "x").is_err());
        assert!(decide_personal(Some(&person(Role::Admin, &[])), "grace", "x").is_ok());
        assert!(decide_personal(None, "grace", "x").is_ok());
    }

    #[test]
    fn an_account_without_csm_or_owner_is_nobodys_book() {
        let ada = person(Role::Csm, &["ada"]);
        assert!(decide(Some(&ada), "a1", "", "  ", None).is_err());
    }
}
