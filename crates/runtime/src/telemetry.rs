//! Telemetry in one place: the tracing subscriber (text or JSON logs), the
//! OpenTelemetry pipeline (OTLP export of traces and metrics when an endpoint
//! is configured), a tower layer that opens a span per RPC and continues the
//! caller's W3C trace context, and a client interceptor that passes the
//! current context on to the next service.
//!
//! Logs go to stderr, so that what a command prints for people (the banner
//! of `bowtie dev`, a report) owns stdout, and carry ANSI colours only when
//! stderr is a terminal, so a file or a pipe receives plain text.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::metrics::Histogram;
use opentelemetry::propagation::Injector;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, TelemetrySettings};

/// Flushes and stops the exporters when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            let _ = tracer.shutdown();
        }
        if let Some(meter) = self.meter.take() {
            let _ = meter.shutdown();
        }
    }
}

/// The log filter to run with, the most explicit ask first: the command
/// line's `--log`, then `RUST_LOG`, then the command's own default (the
/// configured `telemetry.log_filter`, or `warn` under `bowtie dev`, where
/// the banner is what a person reads). A blank value asks for nothing.
pub fn log_filter(flag: Option<&str>, env: Option<&str>, default: &str) -> String {
    [flag, env]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|f| !f.is_empty())
        .unwrap_or(default)
        .to_owned()
}

/// Installs the global subscriber, logging to stderr with `filter` (see
/// [`log_filter`]), and, with an endpoint, the OTLP pipeline. Call once per
/// process, from inside the Tokio runtime.
pub fn init(
    service_name: &str,
    settings: &TelemetrySettings,
    filter: &str,
) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("log filter {filter:?} is not valid: {e}"))?;
    let ansi = std::io::stderr().is_terminal();
    let fmt = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel = if settings.otlp_endpoint.is_empty() {
        None
    } else {
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .build()?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .build()?;
        let meter_provider = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        global::set_meter_provider(meter_provider.clone());
        let tracer = tracer_provider.tracer("bowtie");
        global::set_tracer_provider(tracer_provider.clone());
        guard.tracer = Some(tracer_provider);
        guard.meter = Some(meter_provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(guard)
}

/// Quiet logging for tests: installs a subscriber only when `TEST_LOG` is set.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("debug,h2=info,hyper=info,sqlx=info"))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Tower layer: one span per RPC, child of the caller's trace context, and an
/// `rpc.server.duration` histogram by method and status.
#[derive(Debug, Clone)]
pub struct RpcTraceLayer {
    duration: Histogram<f64>,
}

impl Default for RpcTraceLayer {
    fn default() -> Self {
        Self {
            duration: global::meter("bowtie")
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Time to the first response byte of each RPC")
                .build(),
        }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// The service produced by [`RpcTraceLayer`].
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, B, R> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let method = method.to_owned();
        let duration = self.duration.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(
            async move {
                let response = future.await;
                // Errors travel in the headers of a trailers-only response;
                // a call that has not failed by its first byte counts as OK.
                let code = match &response {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                tracing::Span::current().record("rpc.grpc.status_code", code);
                duration.record(
                    elapsed,
                    &[
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.grpc.status_code", i64::from(code)),
                    ],
                );
                tracing::debug!(elapsed_ms = elapsed, grpc.status = code, "rpc finished");
                response
            }
            .instrument(span),
        )
    }
}

/// Client interceptor that injects the current trace context into outgoing
/// gRPC metadata (W3C `traceparent` / `tracestate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTraceContext;

impl tonic::service::Interceptor for PropagateTraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let context = tracing::Span::current().context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
        });
        Ok(request)
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    const CONFIGURED: &str = "info,sqlx=warn";

    #[test]
    fn the_flag_wins_over_rust_log_which_wins_over_the_default() {
        assert_eq!(log_filter(Some("debug"), Some("info"), "warn"), "debug");
        assert_eq!(log_filter(None, Some("info"), "warn"), "info");
        assert_eq!(log_filter(None, None, "warn"), "warn");
        assert_eq!(log_filter(None, None, CONFIGURED), CONFIGURED);
    }

    #[test]
    fn a_blank_flag_or_rust_log_asks_for_nothing() {
        assert_eq!(log_filter(Some(""), Some(" "), "warn"), "warn");
        assert_eq!(log_filter(Some(" "), Some("info "), "warn"), "info");
    }
}
