//! Trace context across actors and nodes, without tying the actors to a
//! telemetry library.
//!
//! The node installs two hooks at start-up (backed by OpenTelemetry when an
//! OTLP endpoint is configured): one that renders the current span's context
//! as a W3C `traceparent` string, and one that makes a span a child of such a
//! string. Messages that cross actors or nodes carry the string, so one chat
//! message's path from sender to every recipient is one trace. Without hooks
//! both are no-ops.

use std::sync::OnceLock;

/// Renders the current span's context (`traceparent`), if any.
pub type InjectFn = fn() -> Option<String>;
/// Makes `span` a child of the given `traceparent`.
pub type AttachFn = fn(&tracing::Span, &str);

static HOOKS: OnceLock<(InjectFn, AttachFn)> = OnceLock::new();

/// Installs the hooks (once; later calls are ignored).
pub fn install(inject: InjectFn, attach: AttachFn) {
    let _ = HOOKS.set((inject, attach));
}

/// The current span's context, to put in a message.
pub fn current() -> Option<String> {
    HOOKS.get().and_then(|(inject, _)| inject())
}

/// Makes `span` continue the trace carried by a message.
pub fn attach(span: &tracing::Span, parent: Option<&str>) {
    if let (Some((_, attach)), Some(p)) = (HOOKS.get(), parent) {
        attach(span, p);
    }
}
