//! OpenTelemetry traces: flagpost's `tracing` spans, exported over OTLP (gRPC or HTTP) when
//! `[otel]` names a collector. Off (no endpoint), no layer is installed and nothing here runs:
//! the request path only checks [`enabled`].
//!
//! - `batch`: the bounded span queue and its export task, with the dropped-span counts.
//! - `client`: the OTLP/HTTP exporter's requests through flagpost's own reqwest.
//! - `logs`: the subscriber (log format, trace ids in JSON log lines, the OTel layer).
//! - `propagate`: W3C `traceparent`/`tracestate` in from SDK requests, out to upstream.
//!
//! Which spans exist and what they carry is decided where the work is done (the `request`
//! span in `server::handler`, the upstream calls in `upstream`, publishing in `publish`…);
//! only spans of flagpost's own code are exported, never the connection span (it lives as long
//! as the keep-alive) and never events (log lines stay in the log).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;

use crate::config::{OtelConfig, OtlpProtocol, ParentRoot, SamplerChoice};

mod batch;
mod client;
pub mod logs;
pub mod propagate;
pub mod sample;

pub use batch::{Exporting, SpanStats, BATCH_DELAY, MAX_BATCH, QUEUE_CAPACITY, STATS};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the request path records its OTel-only fields only then.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A span of background work (a poll, an applied stream event), when traces are exported.
pub fn internal_span(name: &'static str, environment: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!("work", otel.name = name, environment)
}

/// A call to the fleet's shared store, when traces are exported.
pub fn store_span(operation: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "store",
        otel.name = format!("redis {operation}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "redis",
        db.operation.name = operation,
        error.type = tracing::field::Empty,
    )
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up OpenTelemetry export: {0}")]
pub struct OtelError(String);

/// The running export: the provider (kept alive) and its export task.
#[derive(Debug)]
pub struct Pipeline {
    provider: SdkTracerProvider,
    exporting: Exporting,
}

impl Pipeline {
    /// Sends what is queued, within `grace`, and stops exporting.
    pub async fn finish(self, grace: std::time::Duration) {
        ENABLED.store(false, Ordering::Relaxed);
        self.exporting.finish(grace).await;
        let _ = self.provider.shutdown_with_timeout(grace);
    }
}

/// The tracer and its pipeline, for `config`; the export task runs on the current runtime.
pub fn pipeline(config: &OtelConfig, instance_id: &str) -> Result<(Tracer, Pipeline), OtelError> {
    let mut resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id.to_string()),
        ]);
    for (k, v) in &config.resource_attributes {
        if k != "service.name" {
            resource = resource.with_attribute(KeyValue::new(k.clone(), v.clone()));
        }
    }
    let resource = resource.build();
    let mut exporter = exporter(config)?;
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let (queue, exporting) = batch::start(exporter, config.timeout);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(queue)
        .with_sampler(sample::Sampling(sampler(config.sampler)))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("flagpost");
    sample::configure(config.sampler);
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        tracer,
        Pipeline {
            provider,
            exporting,
        },
    ))
}

fn exporter(config: &OtelConfig) -> Result<opentelemetry_otlp::SpanExporter, OtelError> {
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (k, v) in &config.headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| OtelError(format!("{k:?} is not a header name")))?;
                let value = http::HeaderValue::from_str(v.expose())
                    .map_err(|_| OtelError(format!("the value of header {k} is not ASCII")))?;
                headers.insert(name, value);
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_metadata(metadata);
            if config.gzip {
                b.with_compression(opentelemetry_otlp::Compression::Gzip)
                    .build()
            } else {
                b.build()
            }
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let protocol = if config.protocol == OtlpProtocol::HttpJson {
                opentelemetry_otlp::Protocol::HttpJson
            } else {
                opentelemetry_otlp::Protocol::HttpBinary
            };
            let headers = config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect();
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client::Client::new(config.timeout)?)
                .with_endpoint(config.endpoint.clone())
                .with_protocol(protocol)
                .with_timeout(config.timeout)
                .with_headers(headers);
            if config.gzip {
                b.with_compression(opentelemetry_otlp::Compression::Gzip)
                    .build()
            } else {
                b.build()
            }
        }
    };
    built.map_err(|e| OtelError(e.to_string()))
}

fn sampler(choice: SamplerChoice) -> Sampler {
    let root = |r: ParentRoot| match r {
        ParentRoot::AlwaysOn => Sampler::AlwaysOn,
        ParentRoot::AlwaysOff => Sampler::AlwaysOff,
        ParentRoot::Ratio(r) => Sampler::TraceIdRatioBased(r),
    };
    match choice {
        SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
        SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
        SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerChoice::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
    }
}
