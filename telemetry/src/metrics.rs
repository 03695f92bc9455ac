//! Node metrics, exported over OTLP when telemetry exports.

use std::sync::OnceLock;

use doppel_runtime::internal::TwinsInternals;
use doppel_runtime::twin::Twins;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

fn meter() -> Meter {
    opentelemetry::global::meter("doppel")
}

/// Observes the kernel's counters of `twins`: samples in, applied and rejected (by
/// reason), commands by verdict, safety actions, twin restarts, and samples accepted
/// but not yet durable (the depth of the path to disk).
pub fn register_node_metrics(twins: &Twins) {
    let meter = meter();
    let counters = twins.clone();
    let _samples = meter
        .u64_observable_counter("doppel.samples")
        .with_description("samples by outcome: in, applied, stale, duplicate, rejected")
        .with_callback(move |observer| {
            let c = counters.counters();
            for (outcome, value) in [
                ("in", c.samples_in),
                ("applied", c.samples_applied),
                ("late", c.samples_late),
                ("duplicate", c.samples_duplicate),
            ] {
                observer.observe(value, &[KeyValue::new("outcome", outcome)]);
            }
            for (reason, value) in &c.rejected {
                observer.observe(
                    *value,
                    &[
                        KeyValue::new("outcome", "rejected"),
                        KeyValue::new("reason", *reason),
                    ],
                );
            }
        })
        .build();
    let counters = twins.clone();
    let _commands = meter
        .u64_observable_counter("doppel.commands")
        .with_description("commands by verdict")
        .with_callback(move |observer| {
            let c = counters.counters();
            for (verdict, value) in [
                ("accepted", c.commands_accepted),
                ("clamped", c.commands_clamped),
                ("denied", c.commands_denied),
            ] {
                observer.observe(value, &[KeyValue::new("verdict", verdict)]);
            }
        })
        .build();
    let counters = twins.clone();
    let _safety = meter
        .u64_observable_counter("doppel.safety_actions")
        .with_description("safety actions governors took")
        .with_callback(move |observer| observer.observe(counters.counters().safety_actions, &[]))
        .build();
    let counters = twins.clone();
    let _restarts = meter
        .u64_observable_counter("doppel.twin_restarts")
        .with_description("twin actor restarts")
        .with_callback(move |observer| observer.observe(counters.counters().restarts, &[]))
        .build();
    let counters = twins.clone();
    let _connectors = meter
        .u64_observable_counter("doppel.connector.input")
        .with_description(
            "connector input by outcome: received, applied, late, duplicate, refused (by reason), dropped (by kind)",
        )
        .with_callback(move |observer| {
            for connector in counters.connectors() {
                let name = KeyValue::new("connector", connector.name.clone());
                let outcome = |outcome: &'static str| [name.clone(), KeyValue::new("outcome", outcome)];
                observer.observe(connector.received, &outcome("received"));
                observer.observe(connector.readings.applied, &outcome("applied"));
                observer.observe(connector.readings.late, &outcome("late"));
                observer.observe(connector.readings.duplicate, &outcome("duplicate"));
                for (reason, count) in &connector.refused {
                    let [name, outcome] = outcome("refused");
                    observer.observe(*count, &[name, outcome, KeyValue::new("reason", reason.as_str())]);
                }
                for (kind, count) in &connector.dropped {
                    let [name, outcome] = outcome("dropped");
                    observer.observe(*count, &[name, outcome, KeyValue::new("reason", *kind)]);
                }
            }
        })
        .build();
    let kernel = twins.kernel().clone();
    let _in_flight = meter
        .u64_observable_gauge("doppel.samples.in_flight")
        .with_description("samples accepted and not yet durable")
        .with_callback(move |observer| {
            let limit = kernel
                .settings
                .journal
                .max_in_flight
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
            let free = kernel.limiter.available_permits();
            observer.observe(limit.saturating_sub(free) as u64, &[]);
        })
        .build();
}

/// Counts one API request by method and status code.
pub fn record_request(method: &'static str, code: tonic::Code) {
    static REQUESTS: OnceLock<Counter<u64>> = OnceLock::new();
    REQUESTS
        .get_or_init(|| {
            meter()
                .u64_counter("doppel.rpc.requests")
                .with_description("API requests by method and status code")
                .build()
        })
        .add(
            1,
            &[
                KeyValue::new("method", method),
                KeyValue::new("code", format!("{code:?}")),
            ],
        );
}

/// One observation of a gauge: a value and its attributes.
pub type Observation = (u64, Vec<(&'static str, String)>);

/// Registers a gauge whose observations `observe` returns at each collection (for
/// figures other crates own: outbox depth, replication lag).
pub fn register_gauge(
    name: &'static str,
    description: &'static str,
    observe: impl Fn() -> Vec<Observation> + Send + Sync + 'static,
) {
    let _gauge = meter()
        .u64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |observer| {
            for (value, attributes) in observe() {
                let attributes: Vec<KeyValue> = attributes
                    .into_iter()
                    .map(|(key, value)| KeyValue::new(key, value))
                    .collect();
                observer.observe(value, &attributes);
            }
        })
        .build();
}
