//! Hand-worked books of business and touches.

use uuid::Uuid;

use super::*;

fn id(n: u128) -> AccountId {
    AccountId(Uuid::from_u128(n))
}

/// 7 December 2026, a Monday, at midnight UTC.
fn monday() -> Instant {
    Instant::from_micros(1_796_601_600_000_000)
}

fn facts(n: u128, csm: &str, owner: &str, mrr: i64, red: bool, risk: Option<i32>) -> BookFacts {
    BookFacts {
        account_id: id(n),
        csm: csm.into(),
        owner: owner.into(),
        mrr: Minor(mrr),
        red,
        churn_risk_bp: risk,
    }
}

/// CTAs not closed: account and due time.
type Dues = Vec<(AccountId, Instant)>;

/// Cara looks after 1 (red, risk 70%) and 2 (risk exactly 60%), Dan after
/// 3; 4 has no CSM. Olga owns 1 and 3, Piet 2 and 4.
fn portfolio() -> (Vec<BookFacts>, Dues, HashMap<AccountId, i32>) {
    let facts = vec![
        facts(1, "cara", "olga", 10_000, true, Some(7_000)),
        facts(2, "cara", "piet", 5_000, false, Some(6_000)),
        facts(3, "dan", "olga", 30_000, false, None),
        facts(4, "", "piet", 0, false, Some(5_999)),
    ];
    let now = monday();
    let dues = vec![
        (id(1), now.plus_days(-1)),
        (id(1), now.plus_days(1)),
        (id(3), now.plus_days(3)),
        (id(9), now.plus_days(-5)),
    ];
    let health = [(id(1), 40), (id(2), 71), (id(3), 90)]
        .into_iter()
        .collect();
    (facts, dues, health)
}

#[test]
fn a_book_per_csm_counts_its_accounts_health_risk_and_ctas() {
    let (facts, dues, health) = portfolio();
    let rows = ranked(books(
        &facts,
        &dues,
        &health,
        Grouping::Csm,
        None,
        6_000,
        monday(),
    ));
    let people: Vec<&str> = rows.iter().map(|r| r.person.as_str()).collect();
    assert_eq!(people, vec!["dan", "cara", ""]);
    let cara = &rows[1];
    // Two accounts, 150.00 MRR (1,800.00 ARR), health (40 + 71) / 2, one red,
    // two at or above 60%, one CTA overdue and one not.
    assert_eq!(
        (cara.accounts, cara.arr(), cara.red, cara.high_risk),
        (2, Minor(180_000), 1, 2)
    );
    assert_eq!(cara.average_health(), Some(55.5));
    assert_eq!((cara.open_ctas, cara.overdue_ctas), (2, 1));
    let dan = &rows[0];
    assert_eq!(
        (dan.accounts, dan.arr(), dan.average_health(), dan.open_ctas),
        (1, Minor(360_000), Some(90.0), 1)
    );
    let unassigned = &rows[2];
    assert_eq!(
        (
            unassigned.accounts,
            unassigned.high_risk,
            unassigned.average_health()
        ),
        (1, 0, None)
    );
}

#[test]
fn one_owner_s_book_holds_only_their_accounts() {
    let (facts, dues, health) = portfolio();
    let rows = ranked(books(
        &facts,
        &dues,
        &health,
        Grouping::Owner,
        Some("olga"),
        6_000,
        monday(),
    ));
    assert_eq!(rows.len(), 1);
    let olga = &rows[0];
    assert_eq!(
        (
            olga.person.as_str(),
            olga.accounts,
            olga.mrr,
            olga.red,
            olga.high_risk
        ),
        ("olga", 2, Minor(40_000), 1, 1)
    );
    assert_eq!(olga.average_health(), Some(65.0));
    assert_eq!((olga.open_ctas, olga.overdue_ctas), (3, 1));
}

#[test]
fn iso_weeks_start_on_monday_and_the_last_days_of_a_year_can_belong_to_it() {
    let day = |n| monday().plus_days(n);
    assert_eq!(iso_week(day(0)), "2026-W50");
    assert_eq!(iso_week(day(7).plus_micros(-1)), "2026-W50");
    assert_eq!(iso_week(day(7)), "2026-W51");
    // Friday 1 January 2027 is in the 53rd week of 2026.
    assert_eq!(iso_week(day(25)), "2026-W53");
    assert_eq!(iso_week(day(28)), "2027-W01");
}

fn touch(account: u128, kind: ActivityKind, author: &str, days: i64) -> Touch {
    Touch {
        account_id: id(account),
        kind,
        author: author.into(),
        at: monday().plus_days(days),
    }
}

#[test]
fn touches_count_per_author_and_week_and_split_by_owner() {
    let touches = vec![
        touch(1, ActivityKind::Call, "ana", 0),
        touch(1, ActivityKind::Note, "ana", 2),
        touch(2, ActivityKind::Email, "ana", 4),
        touch(3, ActivityKind::Meeting, "ana", 7),
        touch(3, ActivityKind::Call, "bob", 1),
    ];
    let owners: HashMap<AccountId, String> = [(id(1), "olga"), (id(2), "piet"), (id(3), "olga")]
        .into_iter()
        .map(|(a, o)| (a, o.to_owned()))
        .collect();
    let row = |author: &str, week: &str, owner: &str, counts: [i64; 4], accounts| TouchRow {
        author: author.into(),
        week: week.into(),
        owner: owner.into(),
        notes: counts[0],
        calls: counts[1],
        meetings: counts[2],
        emails: counts[3],
        accounts,
    };
    let rows = touch_rows(&touches, &owners, None, false);
    assert_eq!(
        rows,
        vec![
            row("ana", "2026-W50", "", [1, 1, 0, 1], 2),
            row("ana", "2026-W51", "", [0, 0, 1, 0], 1),
            row("bob", "2026-W50", "", [0, 1, 0, 0], 1),
        ]
    );
    assert_eq!(rows[0].total(), 3);
    assert_eq!(
        touch_rows(&touches, &owners, None, true)[..2],
        [
            row("ana", "2026-W50", "olga", [1, 1, 0, 0], 1),
            row("ana", "2026-W50", "piet", [0, 0, 0, 1], 1),
        ]
    );
    assert_eq!(
        touch_rows(&touches, &owners, Some("piet"), false),
        vec![row("ana", "2026-W50", "", [0, 0, 0, 1], 1)]
    );
}

#[test]
fn a_book_is_the_callers_when_its_person_is_one_of_its_people_in_any_case() {
    let people = vec!["ada@example.com".to_owned(), "ada".to_owned()];
    assert!(in_book(&people, " Ada@Example.com"));
    assert!(in_book(&people, "ADA"));
    assert!(!in_book(&people, "grace@example.com"));
    assert!(!in_book(&people, ""));
}
