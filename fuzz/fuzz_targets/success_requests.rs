//! Arbitrary bytes as each success request message, converted as the
//! handlers convert them (`bowtie_success::convert`, the runtime's
//! `validate` and paging): every input gets violations, a rejection or a
//! value, no panic. The first byte picks the request type.

#![no_main]

use bowtie_proto::success as pb;
use bowtie_runtime::FieldViolations;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use bowtie_success::convert;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let mut v = FieldViolations::default();
    match pick % 4 {
        0 => {
            if let Ok(req) = pb::CreatePlaybookRequest::decode(bytes) {
                let _ = convert::spec_from_pb(&mut v, "spec", req.spec.as_ref());
                let _ = validate::idempotency_key(&mut v, &req.idempotency_key);
            }
        }
        1 => {
            if let Ok(req) = pb::LogActivityRequest::decode(bytes) {
                let _ = convert::logged_kind(&mut v, "kind", req.kind);
                let _ = convert::participants(&mut v, "participants", &req.participants);
                let _ = validate::optional_instant(&mut v, "occur_time", req.occur_time.as_ref());
            }
        }
        2 => {
            if let Ok(req) = pb::ListActivitiesRequest::decode(bytes) {
                let _ = convert::kinds(&mut v, "kinds", &req.kinds);
                let _ = Page::parse(req.page.as_ref(), "activities");
            }
        }
        _ => {
            if let Ok(req) = pb::GetPlaybookEffectivenessRequest::decode(bytes) {
                let _ = validate::instant_period(&mut v, "period", req.period.as_ref());
                let _ = validate::uuid(&mut v, "playbook_id", &req.playbook_id);
            }
        }
    }
    let _ = v.into_result();
});
