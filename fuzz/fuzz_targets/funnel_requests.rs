//! Arbitrary bytes as each funnel request message, converted as the
//! handlers convert them (`bowtie_funnel::convert`, the runtime's `validate`
//! and paging): every input gets violations or a value, no panic. The first
//! byte picks the request type.

#![no_main]

use bowtie_funnel::convert;
use bowtie_proto::common::Stage;
use bowtie_proto::funnel as pb;
use bowtie_runtime::FieldViolations;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let mut v = FieldViolations::default();
    match pick % 5 {
        0 => {
            if let Ok(req) = pb::RecordTransitionRequest::decode(bytes) {
                let _ = convert::new_transition(&mut v, &req, bowtie_runtime::Instant::now());
                let _ = validate::idempotency_key(&mut v, &req.idempotency_key);
            }
        }
        1 => {
            if let Ok(req) = pb::GetJourneyRequest::decode(bytes) {
                let _ = validate::uuid(&mut v, "account_id", &req.account_id);
            }
        }
        2 => {
            if let Ok(req) = pb::ListAccountsInStageRequest::decode(bytes) {
                let _: Option<Stage> = validate::enum_value(&mut v, "stage", req.stage, true);
                let _ = convert::filters(&mut v, req.segment, &req.owner);
                let _ = Page::parse(req.page.as_ref(), &req.owner);
            }
        }
        3 => {
            if let Ok(req) = pb::GetFunnelReportRequest::decode(bytes) {
                let _ = validate::period(&mut v, "period", req.period.as_ref());
                let _ = convert::filters(&mut v, req.segment, &req.owner);
                let _ = convert::selection(&mut v, req.cohort_by);
            }
        }
        _ => {
            if let Ok(req) = pb::GetCohortReportRequest::decode(bytes) {
                let _ = validate::period(&mut v, "period", req.period.as_ref());
                let _ = convert::cohort_stage(&mut v, req.cohort_stage);
                let _ = convert::filters(&mut v, req.segment, &req.owner);
            }
        }
    }
    let _ = v.into_result().err().map(|e| e.to_string());
});
