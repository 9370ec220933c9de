//! Random and boundary requests to every funnel RPC: each gets a clear
//! status (never INTERNAL, never a dropped connection from a panic), and the
//! server keeps serving.

use bowtie_proto::common::{PageRequest, Period};
use bowtie_proto::funnel::{
    GetCohortReportRequest, GetFunnelReportRequest, GetJourneyRequest, ListAccountsInStageRequest,
    RecordTransitionRequest,
};
use bowtie_testkit::{TestDatabase, backend_test};
use prost_types::Timestamp;
use tonic::Code;

use crate::*;

backend_test!(random_and_boundary_requests_get_a_clear_status);

/// A small deterministic generator (64-bit LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[(self.step() % items.len() as u64) as usize].clone()
    }
}

fn text(rng: &mut Lcg, valid_id: &str) -> String {
    rng.pick(&[
        String::new(),
        " ".into(),
        valid_id.to_owned(),
        "00000000-0000-0000-0000-000000000000".into(),
        "not-a-uuid".into(),
        "' OR 1=1 --".into(),
        "x".repeat(5_000),
        "\u{0}\u{7}".into(),
        "émile_ñ".into(),
        "price".into(),
    ])
}

fn time(rng: &mut Lcg) -> Option<Timestamp> {
    rng.pick(&[
        None,
        Some(Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        Some(Timestamp {
            seconds: -1,
            nanos: 0,
        }),
        Some(Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        }),
        Some(Timestamp {
            seconds: i64::MIN,
            nanos: 0,
        }),
        Some(Timestamp {
            seconds: 253_402_300_799,
            nanos: 999_999_999,
        }),
        Some(Timestamp {
            seconds: 1_767_225_600,
            nanos: -5,
        }),
        Some(Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
        Some(Timestamp {
            seconds: 1_780_000_000,
            nanos: 1,
        }),
    ])
}

fn number(rng: &mut Lcg) -> i32 {
    rng.pick(&[0, 1, 3, 4, 7, 8, 9, 10, -1, i32::MAX, i32::MIN])
}

fn period(rng: &mut Lcg) -> Option<Period> {
    rng.pick(&[
        None,
        Some(Period {
            start: None,
            end: None,
        }),
    ])
    .map(|_| Period {
        start: time(rng),
        end: time(rng),
    })
}

fn page(rng: &mut Lcg) -> Option<PageRequest> {
    Some(PageRequest {
        page_size: number(rng),
        page_token: rng.pick(&[String::new(), "bogus".into(), "MTIz".into()]),
    })
}

async fn random_and_boundary_requests_get_a_clear_status(db: &TestDatabase) -> anyhow::Result<()> {
    let suite = Suite::start(db).await?;
    let acme = suite
        .customer("Acme", bowtie_proto::common::Segment::Smb, "ana")
        .await?;
    let mut funnel = suite.funnel();
    let mut rng = Lcg(42);
    let clear = [
        Code::Ok,
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
    ];
    for i in 0..400 {
        let code = match i % 5 {
            0 => funnel
                .record_transition(RecordTransitionRequest {
                    account_id: text(&mut rng, &acme),
                    to_stage: number(&mut rng),
                    occurred_at: time(&mut rng),
                    reason: text(&mut rng, &acme),
                    source: text(&mut rng, &acme),
                    idempotency_key: text(&mut rng, &acme),
                })
                .await
                .map(|_| ()),
            1 => funnel
                .get_journey(GetJourneyRequest {
                    account_id: text(&mut rng, &acme),
                })
                .await
                .map(|_| ()),
            2 => funnel
                .list_accounts_in_stage(ListAccountsInStageRequest {
                    stage: number(&mut rng),
                    segment: number(&mut rng),
                    owner: text(&mut rng, &acme),
                    page: page(&mut rng),
                })
                .await
                .map(|_| ()),
            3 => funnel
                .get_funnel_report(GetFunnelReportRequest {
                    period: period(&mut rng),
                    segment: number(&mut rng),
                    owner: text(&mut rng, &acme),
                    cohort_by: number(&mut rng),
                })
                .await
                .map(|_| ()),
            _ => funnel
                .get_cohort_report(GetCohortReportRequest {
                    period: period(&mut rng),
                    cohort_stage: number(&mut rng),
                    segment: number(&mut rng),
                    owner: text(&mut rng, &acme),
                })
                .await
                .map(|_| ()),
        }
        .map_or_else(
            |s| (s.code(), s.message().to_owned()),
            |()| (Code::Ok, String::new()),
        );
        assert!(
            clear.contains(&code.0),
            "request {i}: {:?} {}",
            code.0,
            code.1
        );
    }
    // Still serving.
    record(
        &mut funnel,
        &acme,
        bowtie_proto::common::Stage::Awareness,
        0,
    )
    .await?;
    Ok(())
}
