//! Prometheus remote write (Unleash Edge's `--prometheus-remote-write-url`): every
//! `push_interval`, every metric family is sent to the URL as a remote-write 1.0 request, a
//! snappy-compressed protobuf `WriteRequest`, each series labelled with `app_name` and
//! `instance_id` as Edge labels them. A receiver that is down or refusing costs that push
//! (counted in `flagpost_remote_write_total{outcome}`, logged once per change of state);
//! nothing is queued, so memory does not grow with the outage.

use std::sync::Arc;

use prometheus::proto::{MetricFamily, MetricType};
use tokio_util::sync::CancellationToken;

use crate::config::RemoteWriteConfig;
use crate::metrics::Metrics;

/// `prometheus.WriteRequest` of the remote-write 1.0 protocol (fields used by senders).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// One series: its name, labels (the metric's, then `extra`), one sample at `at_ms`.
fn series(name: &str, labels: Vec<(String, String)>, value: f64, at_ms: i64) -> TimeSeries {
    let mut labels: Vec<Label> = std::iter::once(Label {
        name: "__name__".into(),
        value: name.into(),
    })
    .chain(
        labels
            .into_iter()
            .map(|(name, value)| Label { name, value }),
    )
    .collect();
    // The protocol wants labels sorted by name, each name once (the metric's own win).
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels.dedup_by(|later, earlier| later.name == earlier.name);
    TimeSeries {
        labels,
        samples: vec![Sample {
            value,
            timestamp: at_ms,
        }],
    }
}

/// Prometheus' text for a bucket bound or quantile (`+Inf`, `0.5`).
fn float_label(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        v.to_string()
    }
}

/// The series of `families`, each labelled with `extra` too, sampled at `at_ms`: counters and
/// gauges as they are, histograms as `_bucket{le}`, `_sum` and `_count`, summaries as
/// `{quantile}`, `_sum` and `_count`.
pub fn encode(families: &[MetricFamily], extra: &[(String, String)], at_ms: i64) -> WriteRequest {
    let mut out = Vec::new();
    for family in families {
        let name = family.name();
        for m in family.get_metric() {
            let labels: Vec<(String, String)> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .chain(extra.iter().cloned())
                .collect();
            let with = |k: &str, v: String| {
                let mut l = vec![(k.to_string(), v)];
                l.extend(labels.iter().cloned());
                l
            };
            match family.get_field_type() {
                MetricType::COUNTER => {
                    out.push(series(name, labels, m.get_counter().get_value(), at_ms))
                }
                MetricType::GAUGE => {
                    out.push(series(name, labels, m.get_gauge().get_value(), at_ms))
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let bucket = format!("{name}_bucket");
                    for b in h.get_bucket() {
                        let le = with("le", float_label(b.upper_bound()));
                        out.push(series(&bucket, le, b.cumulative_count() as f64, at_ms));
                    }
                    let count = h.get_sample_count() as f64;
                    out.push(series(&bucket, with("le", "+Inf".into()), count, at_ms));
                    out.push(series(
                        &format!("{name}_sum"),
                        labels.clone(),
                        h.get_sample_sum(),
                        at_ms,
                    ));
                    out.push(series(&format!("{name}_count"), labels, count, at_ms));
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let quantile = with("quantile", float_label(q.quantile()));
                        out.push(series(name, quantile, q.value(), at_ms));
                    }
                    out.push(series(
                        &format!("{name}_sum"),
                        labels.clone(),
                        s.sample_sum(),
                        at_ms,
                    ));
                    let count = s.sample_count() as f64;
                    out.push(series(&format!("{name}_count"), labels, count, at_ms));
                }
                // Not made by flagpost; skipped rather than guessed.
                MetricType::UNTYPED => {}
            }
        }
    }
    WriteRequest { timeseries: out }
}

/// The request body: the protobuf, snappy block-compressed (not framed), as the protocol says.
pub fn body(request: &WriteRequest) -> Result<Vec<u8>, String> {
    let bytes = prost::Message::encode_to_vec(request);
    snap::raw::Encoder::new()
        .compress_vec(&bytes)
        .map_err(|e| e.to_string())
}

/// Pushes `metrics` to the remote-write URL every interval until `cancel`.
pub async fn run(
    metrics: Arc<Metrics>,
    settings: RemoteWriteConfig,
    extra: Vec<(String, String)>,
    cancel: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flagpost/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the remote-write client; metrics are not pushed");
            return;
        }
    };
    let mut failing = false;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: wait one interval, as Edge does
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = push(&client, &settings, &metrics, &extra) => o,
        };
        metrics
            .remote_writes
            .with_label_values(&[outcome_label(&outcome)])
            .inc();
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("remote write works again");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "remote write failed; this push is dropped, the next is tried in one interval (logged again when it works)");
            }
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error("the receiver answered {0}")]
    Refused(u16),
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
    #[error("cannot encode the metrics: {0}")]
    Encode(String),
}

fn outcome_label(o: &Result<(), PushError>) -> &'static str {
    match o {
        Ok(()) => "ok",
        Err(PushError::Refused(_)) => "refused",
        Err(PushError::Unreachable(_)) => "unreachable",
        Err(PushError::Encode(_)) => "encode_error",
    }
}

async fn push(
    client: &reqwest::Client,
    settings: &RemoteWriteConfig,
    metrics: &Metrics,
    extra: &[(String, String)],
) -> Result<(), PushError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let body = body(&encode(&metrics.families(), extra, now_ms)).map_err(PushError::Encode)?;
    let mut req = client
        .post(&settings.url)
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body);
    if let Some(user) = &settings.username {
        req = req.basic_auth(user, settings.password.as_ref().map(|p| p.expose()));
    }
    let response = req
        .send()
        .await
        .map_err(|e| PushError::Unreachable(crate::upstream::describe(&e)))?;
    let status = response.status();
    // The answer's body is not needed; dropping it closes the response.
    if status.is_success() {
        Ok(())
    } else {
        Err(PushError::Refused(status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_kind_becomes_sorted_labelled_series_that_decode_back() {
        let m = Metrics::new(&["/a"]);
        m.observe_request(0, &http::Method::GET, 200, 0.003);
        m.token_decisions.with_label_values(&["accepted"]).inc();
        m.ready.set(1.0);
        let extra = vec![("app_name".to_string(), "edge-app".to_string())];
        let req = encode(&m.families(), &extra, 1_700_000_000_000);
        let find = |name: &str, label: Option<(&str, &str)>| {
            req.timeseries.iter().find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
                    && label
                        .is_none_or(|(k, v)| t.labels.iter().any(|l| l.name == k && l.value == v))
            })
        };
        let counter = find(
            "flagpost_token_decisions_total",
            Some(("result", "accepted")),
        )
        .unwrap();
        assert_eq!(counter.samples[0].value, 1.0);
        assert_eq!(counter.samples[0].timestamp, 1_700_000_000_000);
        assert!(counter
            .labels
            .iter()
            .any(|l| l.name == "app_name" && l.value == "edge-app"));
        let names: Vec<&str> = counter.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(find("flagpost_ready", None).unwrap().samples[0].value, 1.0);
        let bucket = "flagpost_http_request_duration_seconds_bucket";
        assert_eq!(
            find(bucket, Some(("le", "0.005"))).unwrap().samples[0].value,
            1.0
        );
        assert_eq!(
            find(bucket, Some(("le", "0.001"))).unwrap().samples[0].value,
            0.0
        );
        assert_eq!(
            find(bucket, Some(("le", "+Inf"))).unwrap().samples[0].value,
            1.0
        );
        assert_eq!(
            find("flagpost_http_request_duration_seconds_count", None)
                .unwrap()
                .samples[0]
                .value,
            1.0
        );
        let bytes = body(&req).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&bytes).unwrap();
        let back: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn a_metric_label_named_like_an_extra_one_keeps_the_metrics_value() {
        let t = series(
            "x",
            vec![
                ("app_name".into(), "own".into()),
                ("app_name".into(), "extra".into()),
            ],
            1.0,
            0,
        );
        let app: Vec<&Label> = t.labels.iter().filter(|l| l.name == "app_name").collect();
        assert_eq!(app.len(), 1);
        assert_eq!(app[0].value, "own");
    }
}
