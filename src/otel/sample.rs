//! Head sampling of requests: whether a request gets a traced span is decided before the span
//! is made, so that a request not sampled (99 of 100 at a 1% ratio) costs what it costs with
//! export off: a plain span the OpenTelemetry layer never sees. The decision is the configured
//! sampler's: a caller's `traceparent` flag under a parent-based sampler, the ratio drawn here
//! for a request that starts a trace. `Sampling`, the SDK's sampler, honours a decision drawn
//! here and decides every other span (background work) as configured.

use std::sync::OnceLock;

use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

use crate::config::{ParentRoot, SamplerChoice};

/// The attribute a request span carries when its sampling was drawn here.
pub const DRAWN: &str = "flagpost.sampled";

static CHOICE: OnceLock<SamplerChoice> = OnceLock::new();

pub(super) fn configure(choice: SamplerChoice) {
    let _ = CHOICE.set(choice);
}

/// A request to trace: its parent (the caller's context, or none) and whether the ratio was
/// drawn here (the span then carries [`DRAWN`]).
#[derive(Debug)]
pub struct Head {
    pub parent: Context,
    pub drawn: bool,
}

/// Whether the request with these headers gets a traced span.
pub fn head(headers: &http::HeaderMap) -> Option<Head> {
    let choice = *CHOICE.get().filter(|_| super::enabled())?;
    let parent = if headers.contains_key("traceparent") {
        super::propagate::incoming(headers)
    } else {
        Context::new()
    };
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        return match choice {
            SamplerChoice::ParentBased(_) if !remote.is_sampled() => None,
            SamplerChoice::AlwaysOff => None,
            // The SDK decides the rest by the caller's trace id.
            _ => Some(Head {
                parent,
                drawn: false,
            }),
        };
    }
    let ratio = match choice {
        SamplerChoice::AlwaysOn | SamplerChoice::ParentBased(ParentRoot::AlwaysOn) => 1.0,
        SamplerChoice::AlwaysOff | SamplerChoice::ParentBased(ParentRoot::AlwaysOff) => 0.0,
        SamplerChoice::Ratio(r) | SamplerChoice::ParentBased(ParentRoot::Ratio(r)) => r,
    };
    (ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)).then(|| Head {
        parent,
        drawn: ratio < 1.0,
    })
}

/// The configured sampler, except that a span whose sampling was drawn here is sampled.
#[derive(Debug, Clone)]
pub(super) struct Sampling(pub(super) Sampler);

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if attributes.iter().any(|kv| kv.key.as_str() == DRAWN) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}
