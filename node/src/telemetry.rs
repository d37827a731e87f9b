//! Logs, traces and OTLP metrics.
//!
//! - Logs: JSON lines by default, pretty with `--log-format pretty`; level
//!   from `RUST_LOG` (default `info`). Never tokens or passwords.
//! - Traces and metrics over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   the per-signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//!   `..._METRICS_ENDPOINT`) is set; the other standard `OTEL_*` variables
//!   (service name, resource attributes, headers, timeouts, batch and export
//!   intervals) are honoured by the OpenTelemetry SDK.
//! - Trace context crosses actors and nodes as a W3C `traceparent` string,
//!   through the hooks installed in `parley_actors::trace`.

use std::collections::HashMap;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use parley_actors::metrics::METRICS;

use crate::config::LogFormat;

/// Exporters to flush at exit.
#[derive(Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn resource(node_name: &str) -> Resource {
    let mut b = Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        b = b.with_service_name("parley-node");
    }
    b.with_attribute(KeyValue::new("service.instance.id", node_name.to_string()))
        .build()
}

/// Drops the WebSocket library's trace events, whatever RUST_LOG asks: they
/// hold whole frames, access tokens and message bodies included.
fn no_frame_dumps() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().contains("tungstenite"))
    })
}

/// Installs logging, and OTLP export when configured. Call outside any async runtime.
pub fn init(format: LogFormat, node_name: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let mut telemetry = Telemetry::default();
    let mut problems = Vec::new();
    let otlp = env_set("OTEL_EXPORTER_OTLP_ENDPOINT");
    let otel_layer = if otlp || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(node_name))
                    .build();
                let tracer = provider.tracer("parley-node");
                telemetry.traces = Some(provider);
                parley_actors::trace::install(inject, attach);
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(e) => {
                problems.push(format!("OTLP traces disabled: {e}"));
                None
            }
        }
    } else {
        None
    };
    if otlp || env_set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        match opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => {
                let provider = SdkMeterProvider::builder()
                    .with_periodic_exporter(exporter)
                    .with_resource(resource(node_name))
                    .build();
                register_instruments(&provider);
                telemetry.metrics = Some(provider);
            }
            Err(e) => problems.push(format!("OTLP metrics disabled: {e}")),
        }
    }
    // Logs follow RUST_LOG; traces keep the info-level spans whatever the log level.
    // (Only Parley's own spans: the actor runtime's per-actor spans are noise in a trace.)
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("parley_node", tracing::Level::INFO)
        .with_target("parley_actors", tracing::Level::INFO);
    let otel_layer = otel_layer.map(|l| l.with_filter(ours));
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(no_frame_dumps()))
        .with(otel_layer)
        .init();
    for p in problems {
        tracing::warn!("{p}");
    }
    if telemetry.traces.is_some() || telemetry.metrics.is_some() {
        tracing::info!(
            traces = telemetry.traces.is_some(),
            metrics = telemetry.metrics.is_some(),
            "exporting OpenTelemetry over OTLP/HTTP"
        );
    }
    telemetry
}

impl Telemetry {
    /// Flushes and stops the exporters. Call outside any async runtime.
    pub fn shutdown(self) {
        if let Some(t) = self.traces {
            let _ = t.shutdown();
        }
        if let Some(m) = self.metrics {
            let _ = m.shutdown();
        }
    }
}

/// The current span's context as a W3C `traceparent`.
fn inject() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of a `traceparent`.
fn attach(span: &tracing::Span, traceparent: &str) {
    let carrier: HashMap<String, String> =
        HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// OTLP instruments that read the node's counters at each export.
fn register_instruments(provider: &SdkMeterProvider) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let meter = provider.meter("parley-node");
    let counters: [(&'static str, &'static str, &'static AtomicU64); 8] = [
        (
            "parley.messages.committed",
            "messages newly committed",
            &METRICS.messages_committed,
        ),
        (
            "parley.messages.duplicate",
            "sends answered as duplicates",
            &METRICS.messages_duplicate,
        ),
        (
            "parley.deliveries",
            "events pushed into local session queues",
            &METRICS.deliveries,
        ),
        (
            "parley.slow_consumer.closes",
            "sessions closed with 1013",
            &METRICS.slow_consumer_closes,
        ),
        (
            "parley.commit.head_moved",
            "commits retried after another owner moved the head",
            &METRICS.head_moved,
        ),
        (
            "parley.peer.messages.out",
            "inter-node messages sent",
            &METRICS.peer_messages_out,
        ),
        (
            "parley.peer.bytes.out",
            "inter-node bytes sent",
            &METRICS.peer_bytes_out,
        ),
        (
            "parley.peer.messages.in",
            "inter-node messages received",
            &METRICS.peer_messages_in,
        ),
    ];
    for (name, help, counter) in counters {
        let _ = meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |o| o.observe(counter.load(Ordering::Relaxed), &[]))
            .build();
    }
    let _ = meter
        .f64_observable_gauge("parley.send_to_ack.mean_seconds")
        .with_description("mean time from a send reaching its room to its ack, since start")
        .with_callback(|o| {
            if let Some(mean) = METRICS.send_to_ack_seconds.mean() {
                o.observe(mean, &[]);
            }
        })
        .build();
}
