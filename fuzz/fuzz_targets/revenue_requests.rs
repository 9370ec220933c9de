//! Arbitrary bytes as each revenue request message, converted as the
//! handlers convert them (`bowtie_revenue::convert`, the domain's parsers,
//! the runtime's `validate` and paging): every input gets violations or a
//! value, no panic. The first byte picks the request type.

#![no_main]

use bowtie_proto::revenue as pb;
use bowtie_revenue::convert;
use bowtie_revenue::domain::{Rate, parse_month};
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
    match pick % 9 {
        0 => {
            if let Ok(req) = pb::CreateSubscriptionRequest::decode(bytes) {
                let _ = convert::new_subscription(&mut v, req.subscription.as_ref());
            }
        }
        1 => {
            if let Ok(req) = pb::ChangeSubscriptionRequest::decode(bytes) {
                let _ = validate::uuid(&mut v, "id", &req.id);
                let _ = convert::terms(&mut v, "terms", req.terms.as_ref());
                let _ =
                    validate::required_instant(&mut v, "effective_at", req.effective_at.as_ref());
            }
        }
        2 => {
            if let Ok(req) = pb::CancelSubscriptionRequest::decode(bytes) {
                let _ = convert::cancellation(&mut v, req.cancellation.as_ref());
            }
        }
        3 => {
            if let Ok(req) = pb::RecordInvoiceRequest::decode(bytes) {
                let _ = convert::invoice(&mut v, req.invoice.as_ref());
            }
        }
        4 => {
            if let Ok(req) = pb::RecordRenewalOutcomeRequest::decode(bytes) {
                let _ = validate::enum_value::<pb::RenewalOutcome>(
                    &mut v,
                    "outcome",
                    req.outcome,
                    true,
                );
                let _ = validate::required_instant(&mut v, "decided_at", req.decided_at.as_ref());
            }
        }
        5 => {
            if let Ok(req) = pb::SetFxRateRequest::decode(bytes)
                && let Some(r) = req.rate.as_ref()
            {
                let _ = convert::fx_rate(&mut v, Some(r));
                let _ = Rate::parse(&r.rate);
            }
        }
        6 => {
            if let Ok(req) = pb::ListMovementsRequest::decode(bytes) {
                let _ = convert::window(&mut v, req.start_at.as_ref(), req.end_at.as_ref());
                let _ = convert::optional_account_id(&mut v, "account_id", &req.account_id);
                let _ = convert::movement_kind_filter(&mut v, "type", req.r#type);
                let _ = Page::parse(req.page.as_ref(), &req.account_id);
            }
        }
        7 => {
            if let Ok(req) = pb::RecordSpendRequest::decode(bytes) {
                let _ = parse_month(&req.month);
                let _ = convert::amount(
                    &mut v,
                    "sales_and_marketing_spend",
                    req.sales_and_marketing_spend.as_ref(),
                );
            }
        }
        _ => {
            if let Ok(req) = pb::GetMrrReportRequest::decode(bytes) {
                let _ = parse_month(&req.start_month);
                let _ = parse_month(&req.end_month);
                let _ = validate::enum_value::<pb::Granularity>(
                    &mut v,
                    "granularity",
                    req.granularity,
                    false,
                );
            }
        }
    }
    let _ = v.into_result().err().map(|e| e.to_string());
});
