//! Traces: OpenTelemetry spans sent to an OTLP/HTTP collector (`[telemetry] otlp_endpoint`).
//!
//! ```text
//!  webhook POST (traceparent?) ──► span "webhook <source>" ─┬─► "route"
//!  CDC transaction (Begin…Commit) ► span "cdc.transaction" ─┘   └─► per route: "encode", "produce"
//!                                                                   └─► Kafka header `traceparent`
//! ```
//!
//! Invariant: with no endpoint configured nothing is created: [`Traces::off`] hands out no
//! spans, so the event path pays one `Option` check. The `traceparent` written into a record's
//! headers is the context of its `produce` span, so a consumer's span continues the trace as a
//! child of the publish. Spans are exported in batches by the SDK's own thread; a collector
//! that is down costs dropped spans, never a stalled event.

use std::sync::Arc;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::TelemetryConfig;

/// The W3C header that carries a trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace exporter: {0}")]
pub struct TracesError(String);

/// Where spans go; cheap to clone. [`Traces::off`] creates none.
#[derive(Clone, Default)]
pub struct Traces {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Traces {
    /// No traces.
    pub fn off() -> Traces {
        Traces::default()
    }

    /// Spans batched to the OTLP endpoint of `cfg`; off when it has none.
    pub(crate) fn from_config(cfg: &TelemetryConfig) -> Result<Traces, TracesError> {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(Traces::off());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TracesError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler(cfg.sample_ratio))
            .with_resource(resource(&cfg.service_name))
            .build();
        Ok(Traces::with_provider(provider))
    }

    /// Spans handed to `exporter` as each ends (tests: the SDK's in-memory exporter).
    #[cfg(test)]
    fn with_exporter(exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static) -> Traces {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource("switchyard"))
            .build();
        Traces::with_provider(provider)
    }

    fn with_provider(provider: SdkTracerProvider) -> Traces {
        let tracer = provider.tracer("switchyard");
        Traces {
            inner: Some(Arc::new(Inner { provider, tracer })),
        }
    }

    /// True when spans are recorded.
    pub(crate) fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// A root span (or a child of `remote`, a context taken from an incoming request).
    pub fn root(
        &self,
        name: &'static str,
        kind: SpanKind,
        remote: Option<&Context>,
        attributes: Vec<KeyValue>,
    ) -> Traced {
        let Some(inner) = &self.inner else {
            return Traced::none();
        };
        let parent = remote.cloned().unwrap_or_default();
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&inner.tracer, &parent);
        Traced(Some((self.clone(), parent.with_span(span))))
    }

    /// Sends the spans not yet exported and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner
            && let Err(e) = inner.provider.shutdown()
        {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_string())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The trace context of an incoming `traceparent` (and `tracestate`) header, if valid.
pub fn extract(headers: &axum::http::HeaderMap) -> Option<Context> {
    headers.get(TRACEPARENT)?;
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A span in progress, ended when dropped; empty (and free) when traces are off.
#[derive(Default)]
pub struct Traced(Option<(Traces, Context)>);

impl Traced {
    /// No span.
    pub fn none() -> Traced {
        Traced(None)
    }

    /// The span's context, to start children from elsewhere (another task).
    pub fn context(&self) -> Option<Context> {
        self.0.as_ref().map(|(_, cx)| cx.clone())
    }

    /// A child span of `parent` (none when `parent` is none).
    pub(crate) fn child_of(
        parent: Option<&Context>,
        traces: &Traces,
        name: &'static str,
        attributes: Vec<KeyValue>,
    ) -> Traced {
        let (Some(parent), Some(inner)) = (parent, &traces.inner) else {
            return Traced::none();
        };
        let span = inner
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&inner.tracer, parent);
        Traced(Some((traces.clone(), parent.with_span(span))))
    }

    /// A child of this span.
    pub fn child(&self, name: &'static str, attributes: Vec<KeyValue>) -> Traced {
        match &self.0 {
            Some((traces, cx)) => Traced::child_of(Some(cx), traces, name, attributes),
            None => Traced::none(),
        }
    }

    /// True when this span records (tracing is on and the event has a parent span).
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Adds an attribute.
    pub fn set(&self, attribute: KeyValue) {
        if let Some((_, cx)) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// Marks the span failed with `message`.
    pub fn fail(&self, message: &str) {
        if let Some((_, cx)) = &self.0 {
            cx.span().set_status(Status::error(message.to_string()));
        }
    }

    /// The W3C `traceparent` of this span, for a Kafka record header.
    pub fn traceparent(&self) -> Option<String> {
        let (_, cx) = self.0.as_ref()?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some((_, cx)) = &self.0 {
            cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_creates_no_span_and_no_header() {
        let t = Traces::off();
        let root = t.root("webhook", SpanKind::Server, None, vec![]);
        assert!(root.context().is_none());
        assert!(root.child("route", vec![]).traceparent().is_none());
    }

    #[test]
    fn an_incoming_traceparent_is_continued() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            axum::http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let remote = extract(&headers).expect("valid traceparent");
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let t = Traces::with_exporter(exporter.clone());
        let root = t.root("webhook", SpanKind::Server, Some(&remote), vec![]);
        let produce = root.child("produce", vec![]);
        let header = produce.traceparent().expect("traceparent");
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(header.ends_with("-01"));
        drop(produce);
        drop(root);
        let spans = exporter.get_finished_spans().expect("spans");
        let produce = spans.iter().find(|s| s.name == "produce").expect("produce");
        let root = spans.iter().find(|s| s.name == "webhook").expect("root");
        assert_eq!(produce.parent_span_id, root.span_context.span_id());
        assert_eq!(
            root.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "the sender's span is the parent"
        );
        assert!(header.contains(&produce.span_context.span_id().to_string()));
        assert!(extract(&axum::http::HeaderMap::new()).is_none());
    }
}
