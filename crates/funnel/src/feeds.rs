//! The change feeds the funnel follows, each through the runtime's consumer
//! (stored cursor, exactly-once application):
//!
//! - accounts: keeps each journey's segment and owner current, so the report
//!   filters follow reassignments.

use std::sync::Arc;

use bowtie_proto::accounts::{self as accounts_pb, accounts_service_client::AccountsServiceClient};
use bowtie_proto::common;
use bowtie_runtime::config::PeerSettings;
use bowtie_runtime::error::Error;
use bowtie_runtime::peer::{self, ApplyEvent, Consumer, EventStream, OpenFeed};
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::store::Store;
use futures::StreamExt;
use prost::Name;
use uuid::Uuid;

use bowtie_runtime::feed::NewEvent;

use crate::convert;
use crate::service::profile_of;
use crate::storage;

/// Event type published when an account's segment or owner changed.
pub const PROFILE_CHANGED: &str = "journey.profile_changed";

/// Cursor name of the accounts feed consumer.
pub const ACCOUNTS_CONSUMER: &str = "funnel.accounts";

/// Decodes an event payload of type `M`; `None` when the payload is another type.
pub fn payload<M: Name + Default>(event: &common::Event) -> Result<Option<M>, Error> {
    let Some(any) = &event.payload else {
        return Ok(None);
    };
    if any.type_url != M::type_url() {
        return Ok(None);
    }
    M::decode(any.value.as_slice())
        .map(Some)
        .map_err(|e| Error::invalid("payload", format!("cannot decode {}: {e}", M::full_name())))
}

/// Follows the accounts feed.
pub fn accounts_consumer(
    settings: &PeerSettings,
    store: Store,
    shutdown: Shutdown,
) -> Result<Consumer, Error> {
    let client = AccountsServiceClient::new(peer::connect(&settings.accounts, settings)?);
    let open: OpenFeed = Arc::new(move |after| {
        let mut client = client.clone();
        Box::pin(async move {
            let stream = client
                .watch_events(accounts_pb::WatchEventsRequest {
                    after_sequence: after,
                })
                .await?
                .into_inner();
            let events: EventStream = stream
                .filter_map(|item| async move {
                    match item {
                        Ok(r) => r.event.map(Ok),
                        Err(status) => Some(Err(status)),
                    }
                })
                .boxed();
            Ok(events)
        })
    });
    let apply: ApplyEvent = Arc::new(|tx, event| {
        Box::pin(async move {
            let Some(account) = payload::<accounts_pb::Account>(&event)? else {
                return Ok(());
            };
            let id = Uuid::parse_str(&account.id)
                .map_err(|_| Error::invalid("payload.id", "is not a UUID"))?;
            if let Some(journey) =
                storage::update_profile(tx.conn(), id, &profile_of(&account)).await?
            {
                tx.emit(NewEvent::new(
                    "account",
                    id.to_string(),
                    PROFILE_CHANGED,
                    &convert::account_in_stage(&journey),
                ));
            }
            Ok(())
        })
    });
    Ok(Consumer::new(
        ACCOUNTS_CONSUMER,
        store,
        open,
        apply,
        shutdown,
    ))
}
