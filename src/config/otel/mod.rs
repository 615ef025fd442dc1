//! `[otel]`: exporting traces over OTLP. Flags and environment variables (Unleash Edge's two
//! flags, the OpenTelemetry specification's variables, its `_TRACES_` variants first) win over
//! the file, as everywhere. Without an endpoint, or with `OTEL_SDK_DISABLED=true`, there is no
//! [`OtelConfig`] and nothing connects anywhere.

use std::time::Duration;

use super::cli::OtelArgs;
use super::file::RawOtel;
use super::layer::Layers;
use super::redact::{duration, string, url_without_credentials};
use super::{invalid, ConfigError};
use crate::token::Secret;

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl OtlpProtocol {
    pub fn name(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
        }
    }
}

/// Which traces are recorded: the specification's samplers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    /// A share of new traces, by trace id.
    Ratio(f64),
    /// The caller's decision when a sampled `traceparent` came in; otherwise the inner choice.
    ParentBased(ParentRoot),
}

/// What a parent-based sampler does for a trace that starts here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentRoot {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

#[derive(Debug, Clone)]
pub struct OtelConfig {
    /// Where spans are sent: for HTTP, with `/v1/traces` already on it.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every export (API keys: never printed).
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub gzip: bool,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: SamplerChoice,
    /// Record `url.query` (personal data may be in it).
    pub record_query: bool,
    /// Record the Frontend context (user ids, properties).
    pub record_context: bool,
}

const ENDPOINT_KEY: &str =
    "otel.endpoint (--otel-exporter-otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT)";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `_TRACES_` variable when given, else the general one (flag or variable), else `None`.
fn traces_first<T: Clone>(
    l: &Layers<'_>,
    (traces, t): (&str, &Option<T>),
    (general, g): (&str, &Option<T>),
) -> Option<T> {
    if l.explicit(traces) {
        t.clone()
    } else if l.explicit(general) {
        g.clone()
    } else {
        None
    }
}

/// `[otel]`, or `None` when nothing is to be exported.
pub(super) fn otel(
    a: &OtelArgs,
    l: &Layers<'_>,
    raw: &RawOtel,
) -> Result<Option<OtelConfig>, ConfigError> {
    let disabled = l
        .pick(
            "otel_sdk_disabled",
            a.otel_sdk_disabled.clone(),
            raw.disabled.map(|d| Some(d.to_string())),
        )
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let protocol = protocol(a, l, raw)?;
    let endpoint = if l.explicit("otel_exporter_otlp_traces_endpoint") {
        a.otel_exporter_otlp_traces_endpoint
            .clone()
            .map(Endpoint::AsGiven)
    } else if l.explicit("otel_exporter_otlp_endpoint") {
        a.otel_exporter_otlp_endpoint.clone().map(Endpoint::Base)
    } else {
        raw.endpoint.clone().map(Endpoint::Base)
    };
    let endpoint = endpoint.filter(|e| !e.text().trim().is_empty());
    let headers = headers(a, l, raw)?;
    let timeout = timeout(a, l, raw)?;
    let gzip = gzip(a, l, raw)?;
    let (service_name, resource_attributes) = resource(a, l, raw)?;
    let sampler = sampler(
        l.pick(
            "otel_traces_sampler",
            a.otel_traces_sampler.clone(),
            raw.sampler.clone().map(Some),
        ),
        l.pick(
            "otel_traces_sampler_arg",
            a.otel_traces_sampler_arg.clone(),
            raw.sampler_arg.map(|r| Some(r.to_string())),
        ),
    )?;
    let record_query = l.pick("otel_record_query", a.otel_record_query, raw.record_query);
    let record_context = l.pick(
        "otel_record_context",
        a.otel_record_context,
        raw.record_context,
    );
    let Some(endpoint) = endpoint.filter(|_| !disabled) else {
        return Ok(None);
    };
    Ok(Some(OtelConfig {
        endpoint: endpoint.resolve(protocol)?,
        protocol,
        headers,
        timeout,
        gzip,
        service_name,
        resource_attributes,
        sampler,
        record_query,
        record_context,
    }))
}

fn protocol(a: &OtelArgs, l: &Layers<'_>, raw: &RawOtel) -> Result<OtlpProtocol, ConfigError> {
    let given = traces_first(
        l,
        (
            "otel_exporter_otlp_traces_protocol",
            &a.otel_exporter_otlp_traces_protocol,
        ),
        (
            "otel_exporter_otlp_protocol",
            &a.otel_exporter_otlp_protocol,
        ),
    )
    .or(raw.protocol.clone());
    Ok(match given.as_deref().map(str::trim) {
        None | Some("grpc") => OtlpProtocol::Grpc,
        Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some("http" | "http/json") => OtlpProtocol::HttpJson,
        Some(other) => {
            return Err(invalid(
                "otel.protocol (--otel-exporter-otlp-protocol / OTEL_EXPORTER_OTLP_PROTOCOL)",
                format!("{other:?} is not grpc, http/protobuf, http/json or http"),
            ))
        }
    })
}

/// The export headers, names lowercased and checked.
fn headers(
    a: &OtelArgs,
    l: &Layers<'_>,
    raw: &RawOtel,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    const KEY: &str = "otel.headers (OTEL_EXPORTER_OTLP_HEADERS)";
    let given = traces_first(
        l,
        (
            "otel_exporter_otlp_traces_headers",
            &a.otel_exporter_otlp_traces_headers,
        ),
        ("otel_exporter_otlp_headers", &a.otel_exporter_otlp_headers),
    );
    let headers = match (given, &raw.headers) {
        (Some(text), _) => parse_pairs(&text, KEY)?,
        (None, Some(table)) => table
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect(),
        (None, None) => Vec::new(),
    };
    headers
        .into_iter()
        .map(
            |(name, value)| match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(_) => Ok((name.to_ascii_lowercase(), value)),
                Err(_) => Err(invalid(KEY, format!("{name:?} is not a header name"))),
            },
        )
        .collect()
}

fn timeout(a: &OtelArgs, l: &Layers<'_>, raw: &RawOtel) -> Result<Duration, ConfigError> {
    let given = traces_first(
        l,
        (
            "otel_exporter_otlp_traces_timeout",
            &a.otel_exporter_otlp_traces_timeout,
        ),
        ("otel_exporter_otlp_timeout", &a.otel_exporter_otlp_timeout),
    )
    .map(Duration::from_millis);
    let timeout = match (given, &raw.timeout) {
        (Some(d), _) => d,
        (None, Some(text)) => {
            super::unit::parse_duration(text, false).map_err(|e| invalid("otel.timeout", e))?
        }
        (None, None) => DEFAULT_TIMEOUT,
    };
    if timeout < Duration::from_millis(10) {
        return Err(invalid(
            "otel.timeout (OTEL_EXPORTER_OTLP_TIMEOUT)",
            "must be at least 10 ms",
        ));
    }
    Ok(timeout)
}

fn gzip(a: &OtelArgs, l: &Layers<'_>, raw: &RawOtel) -> Result<bool, ConfigError> {
    let given = traces_first(
        l,
        (
            "otel_exporter_otlp_traces_compression",
            &a.otel_exporter_otlp_traces_compression,
        ),
        (
            "otel_exporter_otlp_compression",
            &a.otel_exporter_otlp_compression,
        ),
    )
    .or(raw.compression.clone());
    match given.as_deref().map(str::trim) {
        None | Some("" | "none") => Ok(false),
        Some("gzip") => Ok(true),
        Some(other) => Err(invalid(
            "otel.compression (OTEL_EXPORTER_OTLP_COMPRESSION)",
            format!("{other:?} is not gzip or none"),
        )),
    }
}

/// `service.name` and the other resource attributes.
fn resource(
    a: &OtelArgs,
    l: &Layers<'_>,
    raw: &RawOtel,
) -> Result<(String, Vec<(String, String)>), ConfigError> {
    let service_name = l
        .pick(
            "otel_service_name",
            a.otel_service_name.clone(),
            raw.service_name.clone().map(Some),
        )
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "flagpost".into());
    let given = l.pick(
        "otel_resource_attributes",
        a.otel_resource_attributes.clone(),
        None,
    );
    let attributes = match given {
        Some(text) => parse_pairs(&text, "otel.resource_attributes (OTEL_RESOURCE_ATTRIBUTES)")?
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_string()))
            .collect(),
        None => raw
            .resource_attributes
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    Ok((service_name, attributes))
}

/// The general endpoint gets the signal's path for HTTP; the traces endpoint is used as given.
enum Endpoint {
    Base(String),
    AsGiven(String),
}

impl Endpoint {
    fn text(&self) -> &str {
        match self {
            Endpoint::Base(s) | Endpoint::AsGiven(s) => s,
        }
    }

    fn resolve(self, protocol: OtlpProtocol) -> Result<String, ConfigError> {
        let text = self.text().trim().to_string();
        match url::Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            _ => {
                return Err(invalid(
                    ENDPOINT_KEY,
                    "not an http:// or https:// URL (e.g. http://otel-collector:4317)",
                ))
            }
        }
        Ok(match (self, protocol) {
            (Endpoint::Base(_), OtlpProtocol::HttpJson | OtlpProtocol::HttpProtobuf) => {
                format!("{}/v1/traces", text.trim_end_matches('/'))
            }
            _ => text,
        })
    }
}

/// `key=value,key2=value2` of the specification, values percent-decoded.
fn parse_pairs(text: &str, key: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(invalid(key, "write key=value pairs separated by commas"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(invalid(key, "a pair has no key"));
        }
        let v = percent_decode(v.trim()).ok_or_else(|| {
            invalid(
                key,
                format!("the value of {k} is not percent-encoded UTF-8"),
            )
        })?;
        out.push((k.to_string(), Secret::new(v)));
    }
    Ok(out)
}

/// `%XX` escapes decoded (as OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES have
/// them); `None` for a `%` that does not start an escape, or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let escapes = text.match_indices('%').all(|(i, _)| {
        text.get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()?;
    escapes.then(|| decoded.into_owned())
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<SamplerChoice, ConfigError> {
    const KEY: &str = "otel.sampler (--otel-traces-sampler / OTEL_TRACES_SAMPLER)";
    let ratio = match arg.as_deref().map(str::trim) {
        None | Some("") => 1.0,
        Some(text) => match text.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                return Err(invalid(
                    "otel.sampler_arg (--otel-traces-sampler-arg / OTEL_TRACES_SAMPLER_ARG)",
                    format!("{text:?} is not a ratio from 0 to 1"),
                ))
            }
        },
    };
    Ok(
        match name
            .as_deref()
            .map(str::trim)
            .unwrap_or("parentbased_always_on")
        {
            "always_on" => SamplerChoice::AlwaysOn,
            "always_off" => SamplerChoice::AlwaysOff,
            "traceidratio" => SamplerChoice::Ratio(ratio),
            "parentbased_always_on" => SamplerChoice::ParentBased(ParentRoot::AlwaysOn),
            "parentbased_always_off" => SamplerChoice::ParentBased(ParentRoot::AlwaysOff),
            "parentbased_traceidratio" => SamplerChoice::ParentBased(ParentRoot::Ratio(ratio)),
            other => {
                return Err(invalid(
                    KEY,
                    format!(
                    "{other:?} is not always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio"
                ),
                ))
            }
        },
    )
}

impl OtelConfig {
    /// The endpoint for the log and `check-config`: without a user or password.
    pub fn redacted_endpoint(&self) -> String {
        url_without_credentials(&self.endpoint)
    }

    pub(super) fn table(&self) -> toml::Table {
        use toml::Value;
        let mut t = toml::Table::new();
        t.insert(
            "endpoint".into(),
            string(&url_without_credentials(&self.endpoint)),
        );
        t.insert("protocol".into(), string(self.protocol.name()));
        if !self.headers.is_empty() {
            let headers = self
                .headers
                .iter()
                .map(|(k, _)| (k.clone(), string("<redacted>")))
                .collect();
            t.insert("headers".into(), Value::Table(headers));
        }
        t.insert("timeout".into(), duration(self.timeout));
        t.insert(
            "compression".into(),
            string(if self.gzip { "gzip" } else { "none" }),
        );
        t.insert("service_name".into(), string(&self.service_name));
        if !self.resource_attributes.is_empty() {
            let attrs = self
                .resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), string(v)))
                .collect();
            t.insert("resource_attributes".into(), Value::Table(attrs));
        }
        let (name, arg) = match self.sampler {
            SamplerChoice::AlwaysOn => ("always_on", None),
            SamplerChoice::AlwaysOff => ("always_off", None),
            SamplerChoice::Ratio(r) => ("traceidratio", Some(r)),
            SamplerChoice::ParentBased(ParentRoot::AlwaysOn) => ("parentbased_always_on", None),
            SamplerChoice::ParentBased(ParentRoot::AlwaysOff) => ("parentbased_always_off", None),
            SamplerChoice::ParentBased(ParentRoot::Ratio(r)) => {
                ("parentbased_traceidratio", Some(r))
            }
        };
        t.insert("sampler".into(), string(name));
        if let Some(r) = arg {
            t.insert("sampler_arg".into(), Value::Float(r));
        }
        t.insert("record_query".into(), Value::Boolean(self.record_query));
        t.insert("record_context".into(), Value::Boolean(self.record_context));
        t
    }
}

#[cfg(test)]
mod tests;
