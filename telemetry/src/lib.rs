//! Tracing and OpenTelemetry for Doppel nodes.
//!
//! [`Telemetry::init`] installs the process's `tracing` subscriber: log lines on stderr
//! (coloured only when stderr is a terminal, or one JSON object per line for log
//! shippers), and, when an OTLP endpoint is configured, every span exported over OTLP/gRPC (off by
//! default). W3C trace context travels in gRPC metadata: [`set_parent_from_metadata`]
//! continues a caller's trace in a server span, [`inject_current`] sends the current
//! span's context on an outgoing call.

mod metrics;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use metrics::{Observation, record_request, register_gauge, register_node_metrics};

/// What to export and log.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The service name spans carry (`doppel`).
    pub service_name: String,
    /// OTLP/gRPC collector endpoint (`http://127.0.0.1:4317`); `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Log filter for stderr when `RUST_LOG` is not set (`warn`, `info`, …).
    pub log_filter: String,
    /// How often metrics are exported.
    pub metrics_interval: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
}

/// How log lines on stderr are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Text; coloured when stderr is a terminal, plain when it is a file, a pipe or
    /// journald.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans), for log
    /// shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}`: expected text or json")),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "doppel".into(),
            otlp_endpoint: None,
            log_filter: "warn".into(),
            metrics_interval: Duration::from_secs(10),
            log_format: LogFormat::Text,
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes what is still buffered.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Installs the global subscriber and, with an endpoint, the OTLP exporters. Must
    /// run inside a tokio runtime when exporting. A second call leaves the first
    /// subscriber in place.
    pub fn init(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let filter = || {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter))
        };
        let logs = match config.log_format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
        }
        .with_filter(filter());
        let Some(endpoint) = &config.otlp_endpoint else {
            let _ = tracing_subscriber::registry().with(logs).try_init();
            return Ok(Self {
                tracer_provider: None,
                meter_provider: None,
            });
        };
        let failed = |error: &dyn std::fmt::Display| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            message: error.to_string(),
        };
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| failed(&e))?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| failed(&e))?;
        let reader = PeriodicReader::builder(metrics)
            .with_interval(config.metrics_interval)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(meter_provider.clone());
        let tracer = tracer_provider.tracer("doppel");
        // Spans at info and above are exported; the log filter only shapes stderr.
        let export = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new("info,h2=off,tonic=off,tower=off,hyper=off"));
        let _ = tracing_subscriber::registry()
            .with(logs)
            .with(export)
            .try_init();
        Ok(Self {
            tracer_provider: Some(tracer_provider),
            meter_provider: Some(meter_provider),
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Exports what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|entry| match entry {
                KeyAndValueRef::Ascii(key, _) => Some(key.as_str()),
                KeyAndValueRef::Binary(_, _) => None,
            })
            .collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Makes `span` a child of the trace context (`traceparent`, `tracestate`) in
/// `metadata`, if there is a valid one.
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &MetadataMap) {
    let context = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    use opentelemetry::trace::TraceContextExt;
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Writes the current span's trace context into outgoing `metadata`.
pub fn inject_current(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_read_and_garbage_is_ignored() {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let extracted = TraceContextPropagator::new().extract(&MetadataExtractor(&metadata));
        use opentelemetry::trace::TraceContextExt;
        let span = extracted.span();
        let context = span.span_context();
        assert!(context.is_valid());
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut garbage = MetadataMap::new();
        garbage.insert("traceparent", "not-a-trace".parse().unwrap());
        let extracted = TraceContextPropagator::new().extract(&MetadataExtractor(&garbage));
        assert!(!extracted.span().span_context().is_valid());
        set_parent_from_metadata(&tracing::Span::none(), &garbage);
    }
}
