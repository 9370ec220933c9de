//! Arbitrary bytes as each scoring request message, converted as the
//! handlers convert them (`bowtie_scoring::convert`, the runtime's
//! `validate` and paging): every input gets violations, a rejection or a
//! value, no panic. The first byte picks the request type.

#![no_main]

use bowtie_proto::scoring as pb;
use bowtie_runtime::FieldViolations;
use bowtie_runtime::paging::Page;
use bowtie_runtime::validate;
use bowtie_scoring::convert;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let mut v = FieldViolations::default();
    match pick % 5 {
        0 => {
            if let Ok(req) = pb::RecordSignalBatchRequest::decode(bytes) {
                let now = bowtie_runtime::Instant::now();
                for (i, s) in req.signals.iter().enumerate() {
                    if let Err(r) = convert::signal(s, now, 86_400_000_000) {
                        let _ = convert::rejected(i, &r);
                    }
                }
            }
        }
        1 => {
            if let Ok(req) = pb::ListHealthRequest::decode(bytes) {
                let _: Option<bowtie_proto::common::Segment> =
                    convert::filter(&mut v, "segment", req.segment);
                let _: Option<pb::Band> = validate::enum_value(&mut v, "band", req.band, false);
                let _: Option<pb::Tier> = validate::enum_value(&mut v, "tier", req.tier, false);
                let _ = Page::parse(req.page.as_ref(), "health");
            }
        }
        2 => {
            if let Ok(req) = pb::UpdateScorecardRequest::decode(bytes) {
                let _ = convert::scorecard(&mut v, req.scorecard.as_ref());
                let _ = validate::idempotency_key(&mut v, &req.idempotency_key);
            }
        }
        3 => {
            if let Ok(req) = pb::GetScorecardRequest::decode(bytes) {
                let _ = convert::segment(&mut v, "segment", req.segment);
            }
        }
        _ => {
            if let Ok(req) = pb::ListAlertsRequest::decode(bytes) {
                let _: Option<pb::AlertState> =
                    validate::enum_value(&mut v, "state", req.state, false);
                let _: Option<pb::AlertKind> =
                    validate::enum_value(&mut v, "kind", req.kind, false);
                let _ = Page::parse(req.page.as_ref(), "alerts");
            }
        }
    }
    let _ = v.into_result().err().map(|e| e.to_string());
});
