//! What the runtime knows of each service's generated gRPC code, one line a
//! service: its `WatchEvents` messages (so one handler serves every feed and
//! one consumer follows any of them), its `ListAuditEvents` messages (one
//! handler reads every audit log) and its generated server (so one
//! bootstrap serves every service with the shared message limits). A new service adds its line here.

use bowtie_proto::common;

use crate::audit::AuditQuery;
use crate::bootstrap::ServiceServer;
use crate::feed::{WatchRequest, WatchResponse};
use crate::server::GrpcServer;

/// The `WatchEvents` messages and the server of the service whose generated
/// code is `bowtie_proto::$package`.
macro_rules! contract {
    ($package:ident, $module:ident, $server:ident, $trait:ident) => {
        impl WatchRequest for bowtie_proto::$package::WatchEventsRequest {
            fn after_sequence(&self) -> i64 {
                self.after_sequence
            }

            fn consumer(&self) -> &str {
                &self.consumer
            }

            fn include_audit(&self) -> bool {
                self.include_audit
            }

            fn after(after_sequence: i64, consumer: &str) -> Self {
                Self {
                    after_sequence,
                    consumer: consumer.to_owned(),
                    include_audit: false,
                }
            }
        }

        impl WatchResponse for bowtie_proto::$package::WatchEventsResponse {
            fn wrap(event: common::Event) -> Self {
                Self { event: Some(event) }
            }

            fn into_event(self) -> Option<common::Event> {
                self.event
            }
        }

        impl AuditQuery for bowtie_proto::$package::ListAuditEventsRequest {
            type Answer = bowtie_proto::$package::ListAuditEventsResponse;

            fn parts(&self) -> (Option<&common::AuditFilter>, Option<&common::PageRequest>) {
                (self.filter.as_ref(), self.page.as_ref())
            }

            fn answer(events: Vec<common::AuditEvent>, page: common::PageResponse) -> Self::Answer {
                Self::Answer {
                    events,
                    page: Some(page),
                }
            }
        }

        impl<T: bowtie_proto::$package::$module::$trait> ServiceServer
            for bowtie_proto::$package::$module::$server<T>
        {
            fn add_to(self, server: GrpcServer, max_message_bytes: usize) -> GrpcServer {
                server.add_service(
                    self.max_decoding_message_size(max_message_bytes)
                        .max_encoding_message_size(max_message_bytes),
                )
            }
        }
    };
}

contract!(
    accounts,
    accounts_service_server,
    AccountsServiceServer,
    AccountsService
);
contract!(
    funnel,
    funnel_service_server,
    FunnelServiceServer,
    FunnelService
);
contract!(
    revenue,
    revenue_service_server,
    RevenueServiceServer,
    RevenueService
);
contract!(
    scoring,
    scoring_service_server,
    ScoringServiceServer,
    ScoringService
);
contract!(
    success,
    success_service_server,
    SuccessServiceServer,
    SuccessService
);
