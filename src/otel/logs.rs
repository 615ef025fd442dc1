//! The process's tracing subscriber: the log (plain or JSON, filtered by `RUST_LOG`, default
//! `info`) and, when traces are exported, the OpenTelemetry layer beside it with its own filter
//! (flagpost's spans at any level, never the connection span, never events). In JSON, a line
//! written inside a traced span carries that span's `trace_id` and `span_id`.

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::trace::Tracer;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Installs the process's subscriber; with `tracer`, spans are exported too.
pub fn install(format: LogFormat, tracer: Option<Tracer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(tracer) = tracer else {
        // Without export, the subscriber flagpost always had: nothing more on the hot path.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Plain => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
        return;
    };
    // Only the spans made for export (they name themselves with `otel.name`): not the
    // connection span, not a request's plain span when it is not sampled, not events.
    let spans = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span()
            && meta.target().starts_with("flagpost")
            && meta.fields().field("otel.name").is_some()
    });
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(spans);
    let registry = tracing_subscriber::registry().with(otel);
    match format {
        LogFormat::Plain => {
            let log = tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .with_filter(filter);
            registry.with(log).init();
        }
        LogFormat::Json => {
            let log = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .fmt_fields(JsonFields::new())
                .event_format(WithTraceIds(
                    tracing_subscriber::fmt::format().json().flatten_event(true),
                ))
                .with_filter(filter);
            registry.with(TraceIds::default()).with(log).init();
        }
    }
}

/// The ids a JSON log line shows, kept on the span the first time a line is written in it.
struct Ids {
    trace_id: String,
    span_id: String,
}

/// Notes [`Ids`] on the innermost traced span of each event, before the log formats it.
#[derive(Default)]
struct TraceIds {
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TraceIds {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade()) else {
            return;
        };
        for span in scope {
            if span.extensions().get::<Ids>().is_some() {
                return;
            }
            let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) else {
                continue;
            };
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                span.extensions_mut().insert(Ids {
                    trace_id: sc.trace_id().to_string(),
                    span_id: sc.span_id().to_string(),
                });
                return;
            }
        }
    }
}

/// The JSON line, with `trace_id` and `span_id` first when the event is in a traced span.
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let ext = span.extensions();
                ext.get::<Ids>()
                    .map(|ids| (ids.trace_id.clone(), ids.span_id.clone()))
            })
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}
