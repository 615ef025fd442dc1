//! OpenTelemetry trace export: Unleash Edge's two flags and the environment variables of the
//! OpenTelemetry specification, global as flagpost's other server settings. The `_TRACES_`
//! variants of the specification win over the general ones (`config::otel` picks).

use clap::Args;

#[derive(Debug, Args)]
pub struct OtelArgs {
    /// Export traces over OTLP to this collector (e.g. http://collector:4317 for gRPC,
    /// http://collector:4318 for HTTP, where /v1/traces is added). Without it nothing is exported
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true,
        value_name = "URL"
    )]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// The traces endpoint, used as given (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        global = true,
        hide_short_help = true,
        value_name = "URL"
    )]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    /// OTLP protocol: grpc (the default, as in Unleash Edge), http/protobuf, or http/json
    /// (Unleash Edge's `http`)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        global = true,
        value_name = "PROTOCOL"
    )]
    pub otel_exporter_otlp_protocol: Option<String>,

    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        global = true,
        hide = true
    )]
    pub otel_exporter_otlp_traces_protocol: Option<String>,

    /// Headers sent with every export, `key=value,key2=value2` (values are never printed)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        global = true,
        value_name = "HEADERS"
    )]
    pub otel_exporter_otlp_headers: Option<String>,

    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        global = true,
        hide = true
    )]
    pub otel_exporter_otlp_traces_headers: Option<String>,

    /// Longest one export may take, in milliseconds (default 10000)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TIMEOUT",
        global = true,
        value_name = "MILLISECONDS"
    )]
    pub otel_exporter_otlp_timeout: Option<u64>,

    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        global = true,
        hide = true
    )]
    pub otel_exporter_otlp_traces_timeout: Option<u64>,

    /// Compression of exports: gzip or none (default none)
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_COMPRESSION",
        global = true,
        value_name = "gzip|none"
    )]
    pub otel_exporter_otlp_compression: Option<String>,

    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        global = true,
        hide = true
    )]
    pub otel_exporter_otlp_traces_compression: Option<String>,

    /// `service.name` of the exported spans (default flagpost)
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true, value_name = "NAME")]
    pub otel_service_name: Option<String>,

    /// More resource attributes, `key=value,key2=value2` (values percent-decoded)
    #[arg(
        long,
        env = "OTEL_RESOURCE_ATTRIBUTES",
        global = true,
        value_name = "ATTRIBUTES"
    )]
    pub otel_resource_attributes: Option<String>,

    /// Sampler: parentbased_always_on (default), parentbased_always_off,
    /// parentbased_traceidratio, always_on, always_off, traceidratio
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        global = true,
        value_name = "SAMPLER"
    )]
    pub otel_traces_sampler: Option<String>,

    /// The ratio of the traceidratio samplers, 0 to 1 (default 1)
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER_ARG",
        global = true,
        value_name = "RATIO"
    )]
    pub otel_traces_sampler_arg: Option<String>,

    /// `true` turns trace export off whatever else is set
    #[arg(long, env = "OTEL_SDK_DISABLED", global = true, value_name = "BOOL")]
    pub otel_sdk_disabled: Option<String>,

    /// Record the request's query string (`url.query`) in spans: it may hold personal data
    #[arg(long, env = "FLAGPOST_OTEL_RECORD_QUERY", global = true)]
    pub otel_record_query: bool,

    /// Record the Frontend API context (user id, session id, properties) in spans: personal data
    #[arg(long, env = "FLAGPOST_OTEL_RECORD_CONTEXT", global = true)]
    pub otel_record_context: bool,
}
