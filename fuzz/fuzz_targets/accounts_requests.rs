//! Arbitrary bytes as each accounts request message, converted as the
//! handlers convert them (`bowtie_accounts::convert`, the runtime's
//! `validate` and paging): every input gets violations or a value, no panic.
//! The first byte picks the request type.

#![no_main]

use bowtie_accounts::convert;
use bowtie_proto::accounts as pb;
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
    let now = bowtie_runtime::Instant::now();
    match pick % 8 {
        0 => {
            if let Ok(req) = pb::CreateAccountRequest::decode(bytes) {
                if let Some(a) = req.account.as_ref() {
                    let _ = convert::account_fields(&mut v, "account", a);
                }
                let _ = validate::idempotency_key(&mut v, &req.idempotency_key);
            }
        }
        1 => {
            if let Ok(req) = pb::UpdateAccountRequest::decode(bytes) {
                if let Some(a) = req.account.as_ref() {
                    let _ = validate::uuid(&mut v, "account.id", &a.id);
                    let _ = convert::account_patch(&mut v, a, req.update_mask.as_ref());
                }
                let _ = convert::expected_version(&mut v, req.expected_version);
            }
        }
        2 => {
            if let Ok(req) = pb::ListAccountsRequest::decode(bytes) {
                let _ = convert::segment_filter(&mut v, "segment", req.segment);
                let _ = convert::status_filter(&mut v, "status", req.status);
                let _ = validate::optional_text(&mut v, "owner", &req.owner, 200);
                let _ = validate::optional_text(&mut v, "text", &req.text, 200);
                let _ = Page::parse(req.page.as_ref(), &req.text);
            }
        }
        3 => {
            if let Ok(req) = pb::UpsertAccountByExternalIdRequest::decode(bytes) {
                if let Some(e) = req.external_id.as_ref() {
                    let _ = convert::external_id(&mut v, "external_id", e);
                }
                if let Some(a) = req.account.as_ref() {
                    let _ = convert::account_fields(&mut v, "account", a);
                }
            }
        }
        4 => {
            if let Ok(req) = pb::CreateContactRequest::decode(bytes)
                && let Some(c) = req.contact.as_ref()
            {
                let _ = validate::uuid(&mut v, "contact.account_id", &c.account_id);
                let _ = convert::contact_fields(&mut v, c);
            }
        }
        5 => {
            if let Ok(req) = pb::UpdateContactRequest::decode(bytes) {
                if let Some(c) = req.contact.as_ref() {
                    let _ = convert::contact_patch(&mut v, c, req.update_mask.as_ref());
                }
                let _ = convert::expected_version(&mut v, req.expected_version);
            }
        }
        6 => {
            if let Ok(req) = pb::MarkContactLeftRequest::decode(bytes) {
                let _ = validate::uuid(&mut v, "id", &req.id);
                let _ = convert::past_time(&mut v, "left_time", req.left_time.as_ref(), now);
            }
        }
        _ => {
            if let Ok(req) = pb::ListContactsRequest::decode(bytes) {
                let _ = validate::uuid(&mut v, "account_id", &req.account_id);
                let _ = Page::parse(req.page.as_ref(), &req.account_id);
            }
        }
    }
    // The violations turn into a status the way every handler's do.
    let _ = tonic_status(v);
});

fn tonic_status(v: FieldViolations) -> Option<String> {
    v.into_result().err().map(|e| e.to_string())
}
