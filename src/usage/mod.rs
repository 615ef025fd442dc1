//! SDK usage metrics and registrations: accepted, aggregated in bounded memory, forwarded
//! upstream (edge mode), and never silently lost: whatever does not fit, or cannot be
//! delivered, is dropped and counted by reason.
//!
//! Usage is summed per (environment, app, flag, hour), variants by name; registrations are
//! kept per (environment, app, instance), with flagpost appended to `connectVia`. The bound is
//! on entries and on (estimated) bytes, from configuration.

pub mod body;
pub mod forward;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::token::Projects;
pub use body::{BodyError, Registration, Row};

/// Bytes counted for one aggregated row besides its strings.
const ROW_OVERHEAD: usize = 96;
/// Bytes counted for one registration besides its JSON text.
const REGISTRATION_OVERHEAD: usize = 128;

/// Where a body came from (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Frontend,
    Bulk,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Frontend => "frontend",
            Source::Bulk => "bulk",
        }
    }
}

/// How usage is handled.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Edge mode forwards; offline mode counts and discards.
    pub forward: bool,
    pub max_entries: usize,
    pub max_bytes: usize,
    /// Count evaluations per known flag in Prometheus (label cardinality: off by default).
    pub per_flag_metrics: bool,
    /// flagpost's own name and instance, appended to `connectVia`.
    pub app_name: String,
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub app: String,
    pub flag: String,
    pub hour: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub yes: u64,
    pub no: u64,
    pub variants: BTreeMap<String, u64>,
}

impl Counts {
    fn total(&self) -> u64 {
        self.yes.saturating_add(self.no)
    }
}

/// One environment's buffered usage.
#[derive(Debug, Default)]
pub struct EnvUsage {
    pub rows: BTreeMap<RowKey, Counts>,
    pub apps: BTreeMap<(String, String), Value>,
}

#[derive(Debug, Default)]
struct Buffer {
    envs: HashMap<String, EnvUsage>,
    entries: usize,
    bytes: usize,
}

/// The usage buffer.
#[derive(Debug)]
pub struct Usage {
    config: UsageConfig,
    buffer: Mutex<Buffer>,
    metrics: Arc<Metrics>,
}

fn row_bytes(key: &RowKey, counts: &Counts) -> usize {
    ROW_OVERHEAD
        + key.app.len()
        + key.flag.len()
        + counts.variants.keys().map(|v| v.len() + 24).sum::<usize>()
}

impl Usage {
    pub fn new(config: UsageConfig, metrics: Arc<Metrics>) -> Usage {
        Usage {
            config,
            buffer: Mutex::new(Buffer::default()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the data: keep going with what is there.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts rows as dropped for `reason`.
    pub fn dropped(&self, reason: &'static str, rows: u64, evaluations: u64) {
        self.metrics
            .usage_rows_dropped
            .with_label_values(&[reason])
            .inc_by(rows);
        self.metrics
            .usage_evaluations
            .with_label_values(&["dropped"])
            .inc_by(evaluations);
    }

    /// Accepts usage rows posted with a token of `environment`. `known` says whether a flag
    /// exists there (for the optional per-flag counters).
    pub fn record(
        &self,
        environment: &str,
        source: Source,
        rows: Vec<Row>,
        known: impl Fn(&str) -> bool,
    ) {
        let received: u64 = rows.iter().map(|r| r.yes.saturating_add(r.no)).sum();
        self.metrics
            .usage_rows_received
            .with_label_values(&[source.label()])
            .inc_by(rows.len() as u64);
        self.metrics
            .usage_evaluations
            .with_label_values(&["received"])
            .inc_by(received);
        if self.config.per_flag_metrics {
            for r in rows.iter().filter(|r| known(&r.flag)) {
                let c = &self.metrics.flag_evaluations;
                c.with_label_values(&[environment, &r.flag, "yes"])
                    .inc_by(r.yes);
                c.with_label_values(&[environment, &r.flag, "no"])
                    .inc_by(r.no);
            }
        }
        let (rows, mismatched): (Vec<Row>, Vec<Row>) = rows
            .into_iter()
            .partition(|r| r.environment.as_deref().is_none_or(|e| e == environment));
        if !mismatched.is_empty() {
            let evaluations = mismatched.iter().map(|r| r.yes.saturating_add(r.no)).sum();
            self.dropped("environment_mismatch", mismatched.len() as u64, evaluations);
        }
        if !self.config.forward {
            let evaluations = rows.iter().map(|r| r.yes.saturating_add(r.no)).sum();
            self.dropped("offline", rows.len() as u64, evaluations);
            return;
        }
        let rows = rows.into_iter().map(|r| {
            (
                RowKey {
                    app: r.app,
                    flag: r.flag,
                    hour: r.hour,
                },
                Counts {
                    yes: r.yes,
                    no: r.no,
                    variants: r.variants,
                },
            )
        });
        self.merge_rows(environment, rows);
    }

    /// Adds rows to the buffer within the bound; the rest is dropped as `buffer_full`.
    fn merge_rows(&self, environment: &str, rows: impl IntoIterator<Item = (RowKey, Counts)>) {
        let (mut lost_rows, mut lost_evaluations) = (0u64, 0u64);
        {
            let mut buffer = self.lock();
            let Buffer {
                envs,
                entries,
                bytes,
            } = &mut *buffer;
            let env = envs.entry(environment.to_string()).or_default();
            for (key, counts) in rows {
                match env.rows.get_mut(&key) {
                    Some(existing) => {
                        let new_variant_bytes: usize = counts
                            .variants
                            .keys()
                            .filter(|v| !existing.variants.contains_key(*v))
                            .map(|v| v.len() + 24)
                            .sum();
                        if *bytes + new_variant_bytes > self.config.max_bytes {
                            lost_rows += 1;
                            lost_evaluations += counts.total();
                            continue;
                        }
                        *bytes += new_variant_bytes;
                        existing.yes = existing.yes.saturating_add(counts.yes);
                        existing.no = existing.no.saturating_add(counts.no);
                        for (v, n) in counts.variants {
                            let slot = existing.variants.entry(v).or_default();
                            *slot = slot.saturating_add(n);
                        }
                    }
                    None => {
                        let size = row_bytes(&key, &counts);
                        if *entries >= self.config.max_entries
                            || *bytes + size > self.config.max_bytes
                        {
                            lost_rows += 1;
                            lost_evaluations += counts.total();
                            continue;
                        }
                        *entries += 1;
                        *bytes += size;
                        env.rows.insert(key, counts);
                    }
                }
            }
            self.set_gauges(*entries, *bytes);
        }
        if lost_rows > 0 {
            self.dropped("buffer_full", lost_rows, lost_evaluations);
        }
    }

    /// Keeps a registration (the latest per environment, app and instance), with flagpost
    /// appended to `connectVia`, the environment and projects of the token it came with, and
    /// `sdkType` kept (or set for frontend registrations).
    pub fn register(
        &self,
        environment: &str,
        projects: &Projects,
        source: Source,
        registration: Registration,
    ) {
        self.metrics
            .usage_registrations
            .with_label_values(&[source.label()])
            .inc();
        let drop_registration = |reason: &str| {
            self.metrics
                .usage_registrations_dropped
                .with_label_values(&[reason])
                .inc();
        };
        if let Some(e) = &registration.environment {
            if e != environment && source == Source::Bulk {
                drop_registration("environment_mismatch");
                return;
            }
        }
        if !self.config.forward {
            drop_registration("offline");
            return;
        }
        let mut fields = registration.fields;
        let mut via = match fields.remove("connectVia") {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        via.push(json!({"appName": self.config.app_name, "instanceId": self.config.instance_id}));
        fields.insert("connectVia".into(), Value::Array(via));
        fields.insert("environment".into(), Value::String(environment.to_string()));
        fields.insert("appName".into(), Value::String(registration.app.clone()));
        fields.insert(
            "instanceId".into(),
            Value::String(registration.instance.clone()),
        );
        if source == Source::Frontend && !fields.contains_key("sdkType") {
            fields.insert("sdkType".into(), Value::String("frontend".into()));
        }
        let project_list: Vec<Value> = match projects {
            Projects::All => vec![Value::String("*".into())],
            Projects::Some(set) => set.iter().map(|p| Value::String(p.clone())).collect(),
        };
        fields.insert("projects".into(), Value::Array(project_list));
        let value = Value::Object(fields);
        self.merge_apps(
            environment,
            [((registration.app, registration.instance), value)],
        );
    }

    fn merge_apps(
        &self,
        environment: &str,
        apps: impl IntoIterator<Item = ((String, String), Value)>,
    ) {
        let mut lost = 0u64;
        {
            let mut buffer = self.lock();
            let Buffer {
                envs,
                entries,
                bytes,
            } = &mut *buffer;
            let env = envs.entry(environment.to_string()).or_default();
            for (key, value) in apps {
                let size = REGISTRATION_OVERHEAD + value.to_string().len();
                let old = env
                    .apps
                    .get(&key)
                    .map(|v| REGISTRATION_OVERHEAD + v.to_string().len());
                let grows = old.is_none();
                let after = *bytes - old.unwrap_or(0) + size;
                if (grows && *entries >= self.config.max_entries) || after > self.config.max_bytes {
                    lost += 1;
                    continue;
                }
                if grows {
                    *entries += 1;
                }
                *bytes = after;
                env.apps.insert(key, value);
            }
            self.set_gauges(*entries, *bytes);
        }
        if lost > 0 {
            self.metrics
                .usage_registrations_dropped
                .with_label_values(&["buffer_full"])
                .inc_by(lost);
        }
    }

    fn set_gauges(&self, entries: usize, bytes: usize) {
        self.metrics
            .usage_buffer_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.metrics
            .usage_buffer_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Takes everything buffered, per environment.
    pub fn take(&self) -> HashMap<String, EnvUsage> {
        let mut buffer = self.lock();
        let taken = std::mem::take(&mut buffer.envs);
        buffer.entries = 0;
        buffer.bytes = 0;
        self.set_gauges(0, 0);
        taken
    }

    /// What is buffered now, in Unleash Edge's `/internal-backstage/metricsbatch` shape
    /// (`{"applications":[…],"metrics":[{"key":{…},"bucket":{…}}]}`), without taking it.
    pub fn peek(&self) -> Value {
        let buffer = self.lock();
        let mut applications = Vec::new();
        let mut metrics = Vec::new();
        let mut envs: Vec<(&String, &EnvUsage)> = buffer.envs.iter().collect();
        envs.sort_by(|a, b| a.0.cmp(b.0));
        for (env, usage) in envs {
            applications.extend(usage.apps.values().cloned());
            for (key, counts) in &usage.rows {
                let timestamp = chrono::DateTime::from_timestamp(key.hour, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                metrics.push(serde_json::json!({
                    "key": {
                        "app_name": key.app,
                        "feature_name": key.flag,
                        "environment": env,
                        "timestamp": timestamp,
                    },
                    "bucket": {
                        "yes": counts.yes,
                        "no": counts.no,
                        "variants": counts.variants,
                    },
                }));
            }
        }
        serde_json::json!({ "applications": applications, "metrics": metrics })
    }

    /// Puts back usage that could not be delivered (within the bound; the rest is dropped).
    pub fn restore(&self, environment: &str, usage: EnvUsage) {
        self.merge_rows(environment, usage.rows);
        self.merge_apps(environment, usage.apps);
    }

    /// Rows and evaluations buffered now.
    #[cfg(test)]
    fn buffered(&self) -> (usize, u64) {
        let buffer = self.lock();
        let rows = buffer.envs.values().map(|e| e.rows.len()).sum();
        let evaluations = buffer
            .envs
            .values()
            .flat_map(|e| e.rows.values())
            .map(Counts::total)
            .sum();
        (rows, evaluations)
    }
}

#[cfg(test)]
mod tests;
