//! Limits every service enforces the same way: the deadline of a call and
//! clear statuses for requests tonic rejects before a handler sees them.
//!
//! **Deadlines.** A call gets the client's `grpc-timeout` or the configured
//! `server.request_timeout_ms`, whichever is shorter, and ends with
//! DEADLINE_EXCEEDED when its answer has not started by then. tonic's own
//! `Server::timeout` answers CANCELLED instead, which tells a client the
//! call was cancelled by someone rather than that it ran out of time, so it
//! is not used. As with any unary deadline, only the time to the answer
//! counts: a server stream (a change feed) that has started runs on.
//!
//! **Statuses tonic makes.** A request larger than `server.max_message_bytes`
//! gets OUT_OF_RANGE from tonic and one that is not valid protobuf gets
//! INTERNAL. Neither is what the gRPC status code guide or clients expect:
//! the first becomes RESOURCE_EXHAUSTED (as grpc-go and grpc-java answer) and
//! the second INVALID_ARGUMENT, since INTERNAL would page someone for a
//! client's mistake. The rewrite applies to trailers-only answers and to the
//! trailers of streams alike.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::HeaderMap;
use http_body::Frame;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::error::{MAX_MESSAGE_BYTES, bounded};

/// Tower layer applying the deadline and the status rewrite (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct LimitsLayer {
    default_deadline: Duration,
}

impl LimitsLayer {
    /// Calls without a shorter `grpc-timeout` end after `default_deadline`.
    pub fn new(default_deadline: Duration) -> Self {
        Self { default_deadline }
    }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limits {
            inner,
            default_deadline: self.default_deadline,
        }
    }
}

/// The service produced by [`LimitsLayer`].
#[derive(Debug, Clone)]
pub struct Limits<S> {
    inner: S,
    default_deadline: Duration,
}

impl<S, B> Service<http::Request<B>> for Limits<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.default_deadline, |t| t.min(self.default_deadline));
        let future = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = tokio::time::timeout(deadline, future).await else {
                return Ok(Status::deadline_exceeded(format!(
                    "deadline of {} ms exceeded",
                    deadline.as_millis()
                ))
                .into_http());
            };
            let mut response = response?;
            clarify_headers(response.headers_mut());
            Ok(response.map(|body| tonic::body::Body::new(ClarifiedBody { inner: body })))
        })
    }
}

/// Parses a `grpc-timeout` header value: 1 to 8 digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The clear status for one tonic makes before a handler runs, if `status`
/// is one of those.
pub fn clarify(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(bounded(
                &format!(
                    "request message too large: {}",
                    message.trim_start_matches("Error, decoded message length too large: ")
                ),
                MAX_MESSAGE_BYTES,
            )))
        }
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Some(Status::invalid_argument(bounded(
                &format!("the request is not a valid protobuf message ({message})"),
                MAX_MESSAGE_BYTES,
            )))
        }
        _ => None,
    }
}

/// Rewrites the status in `headers` (a trailers-only answer or trailers).
fn clarify_headers(headers: &mut HeaderMap) {
    if !headers.contains_key("grpc-status") {
        return;
    }
    let Some(clear) = Status::from_header_map(headers).and_then(|s| clarify(&s)) else {
        return;
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if clear.add_header(headers).is_err() {
        tracing::warn!("could not encode a clarified status");
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers go through [`clarify`].
    struct ClarifiedBody {
        #[pin]
        inner: tonic::body::Body,
    }
}

impl http_body::Body for ClarifiedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    clarify_headers(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse_to_durations() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for value in ["", "S", "123456789S", "10x", "-1S", "1.5S", "10é"] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn an_oversized_request_becomes_resource_exhausted() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        let clear = clarify(&tonic);
        assert_eq!(
            clear.as_ref().map(Status::code),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(
            clear.as_ref().map(Status::message),
            Some("request message too large: found 5000000 bytes, the limit is: 4194304 bytes")
        );
    }

    #[test]
    fn an_undecodable_request_becomes_invalid_argument() {
        let tonic =
            Status::internal("failed to decode Protobuf message: invalid wire type value: 7");
        assert_eq!(
            clarify(&tonic).map(|s| s.code()),
            Some(Code::InvalidArgument)
        );
    }

    #[test]
    fn statuses_the_services_chose_are_left_alone() {
        assert!(clarify(&Status::internal("internal error")).is_none());
        assert!(clarify(&Status::out_of_range("page 9 of 3")).is_none());
        assert!(clarify(&Status::not_found("account 1 not found")).is_none());
    }

    #[test]
    fn trailers_carrying_a_tonic_status_are_rewritten() {
        let mut trailers = HeaderMap::new();
        let added = Status::internal("failed to decode Protobuf message: buffer underflow")
            .add_header(&mut trailers);
        assert!(added.is_ok());
        clarify_headers(&mut trailers);
        let status = Status::from_header_map(&trailers);
        assert_eq!(status.map(|s| s.code()), Some(Code::InvalidArgument));
    }
}
