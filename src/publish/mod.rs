//! The one way a new snapshot is served: [`Publisher::publish`] compiles a document on the
//! blocking pool, swaps it into the [`Store`], records its metrics, and announces what changed
//! (a [`ChangeSet`]) on the environment's channel. The publisher holds the store's only
//! [`StoreWriter`]: serving scopes change here too ([`Publisher::init_scopes`],
//! [`Publisher::restrict`], [`Publisher::serve`]), announced on [`Publisher::scope_changes`].
//!
//! ```text
//! offline file watcher ─┐                         ┌─► Store (what requests read)
//! edge refresh (polls) ─┼─► Publisher::publish ───┼─► metrics (features, last load, emptied)
//! backup at start ──────┘   (compile off-runtime) └─► per-environment channel: Arc<ChangeSet>
//!                                                       (subscribers: streams, shared stores)
//! ```
//!
//! A change set names the features added or updated, the features removed, the segments
//! updated or removed, and the environment's revision after the change: a counter that only
//! grows, one step per publish that changed something. A publish that changes nothing swaps the
//! snapshot (its build time moves) but announces nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use tokio::sync::broadcast;

use crate::change::{diff, ChangeSet};
use crate::document::Document;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, Store, StoreWriter};
use crate::token::Projects;

/// Change sets kept for a subscriber that has not read them yet; one that falls further behind
/// gets `RecvError::Lagged` and must start again from the current snapshot.
const CHANNEL_CAPACITY: usize = 64;

/// The first revision of an environment whose upstream sends no revision ids: the time in
/// seconds since 1970.
///
/// Every id a client sees (the SSE `id:`, a delta event's `eventId`, the delta `ETag`) must fit
/// the `u32` Unleash's own types read it into (`unleash-types` `DeltaEvent`), or SDKs built on
/// Unleash's engine refuse the whole message; seconds fit until 2106. Within one instance ids
/// grow by one per change. Starting from the clock keeps an id given out before a restart, or
/// by another replica that started earlier, from being taken for one of this instance's: ids
/// run ahead of the clock only if an environment changed more than once a second on average
/// since the instance started (file reloads and polls come every few seconds; upstreams that
/// send revision ids, as Unleash does, have theirs used instead). What remains: two replicas
/// that publish in the same second give the same id, which names the same content when they
/// read the same file or upstream in that second.
fn first_counter_revision() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().clamp(1, u64::from(u32::MAX)))
}

/// The largest id a client can read (see `first_counter_revision`).
pub const MAX_REVISION: u64 = u32::MAX as u64;

/// Per environment: its announcement channel, revision and recent changes.
#[derive(Debug)]
struct Channel {
    tx: broadcast::Sender<Arc<ChangeSet>>,
    revision: u64,
    history: VecDeque<Arc<ChangeSet>>,
}

/// Where a client that last saw some revision stands (see [`Publisher::since`]).
#[derive(Debug)]
pub struct Since {
    /// The environment's current snapshot.
    pub snapshot: Arc<Snapshot>,
    /// The changes after the client's revision, oldest first, when they are all still held
    /// (empty when it is current); `None`: it needs a hydration.
    pub missed: Option<Vec<Arc<ChangeSet>>>,
}

/// Owns publishing: see the module documentation.
#[derive(Debug)]
pub struct Publisher {
    /// The only writer of the store: every change to what is served goes through here.
    writer: StoreWriter,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Changes kept per environment for clients that resume.
    history: usize,
    /// Held while a snapshot is swapped and announced, so change sets go out in revision order.
    channels: Mutex<HashMap<String, Channel>>,
}

impl Publisher {
    /// The publisher of `store`, the only one that may change it ([`Publisher::store`] reads it).
    pub fn new(store: Store, metrics: Arc<Metrics>, history: usize) -> Publisher {
        let writer = StoreWriter::new(store);
        Publisher {
            store: writer.store(),
            writer,
            metrics,
            history,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The store, to read.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The environments and their serving scopes, once the startup tokens are known.
    pub fn init_scopes(&self, serving: impl IntoIterator<Item = (String, Projects)>) {
        self.writer.init(serving);
    }

    /// Narrows what an environment may serve (a startup token was refused); streams check
    /// their tokens again ([`Publisher::scope_changes`]).
    pub fn restrict(&self, environment: &str, projects: &Projects) {
        self.writer.restrict(environment, projects);
    }

    /// Sets what an environment may serve to the union of its live startup tokens' scopes
    /// (one was accepted again, or the fleet's poller serves less); streams check again.
    pub fn serve(&self, environment: &str, projects: &Projects) {
        self.writer.serve(environment, projects);
    }

    /// Changes whenever a serving scope may have changed.
    pub fn scope_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.scope_changes()
    }

    /// The environments flagpost serves.
    pub fn environments(&self) -> Vec<String> {
        self.store.environments()
    }

    /// A source of documents (`file`, ...) failed to give a usable one.
    pub fn load_failed(&self, source: &str) {
        self.metrics
            .snapshot_load_failures
            .with_label_values(&[source])
            .inc();
    }

    /// The change sets published for `environment` from now on (streams take theirs with
    /// [`Publisher::open`]).
    #[cfg(test)]
    pub fn subscribe(&self, environment: &str) -> broadcast::Receiver<Arc<ChangeSet>> {
        self.lock()
            .entry(environment.to_string())
            .or_insert_with(Channel::new)
            .tx
            .subscribe()
    }

    /// The environment's current revision (0: nothing published yet).
    pub fn revision(&self, environment: &str) -> u64 {
        self.lock().get(environment).map_or(0, |c| c.revision)
    }

    /// Where a client that last saw revision `last` stands in `environment` (`None`: nothing
    /// is served there yet).
    pub fn since(&self, environment: &str, last: Option<u64>) -> Option<Since> {
        let channels = self.lock();
        self.since_locked(&channels, environment, last)
    }

    /// [`Publisher::since`] and a subscription to the changes after it, taken together so that
    /// nothing is missed or sent twice.
    pub fn open(
        &self,
        environment: &str,
        last: Option<u64>,
    ) -> Option<(Since, broadcast::Receiver<Arc<ChangeSet>>)> {
        let mut channels = self.lock();
        let rx = channels
            .entry(environment.to_string())
            .or_insert_with(Channel::new)
            .tx
            .subscribe();
        let since = self.since_locked(&channels, environment, last)?;
        Some((since, rx))
    }

    fn since_locked(
        &self,
        channels: &HashMap<String, Channel>,
        environment: &str,
        last: Option<u64>,
    ) -> Option<Since> {
        let snapshot = self.store.snapshot(environment)?;
        let current = snapshot.revision();
        let held = |last: u64| {
            let history = &channels.get(environment)?.history;
            if last == current {
                return Some(Vec::new());
            }
            // Held: the client's revision is one this instance announced and still keeps.
            history.iter().any(|c| c.revision == last).then(|| {
                history
                    .iter()
                    .filter(|c| c.revision > last && c.revision <= current)
                    .cloned()
                    .collect()
            })
        };
        let missed = last.filter(|_| current > 0).and_then(held);
        Some(Since { snapshot, missed })
    }

    /// Compiles `document` for `environment` on the blocking pool (a large one takes long
    /// enough to stall the requests on an async worker), then serves and announces it.
    pub async fn publish(self: &Arc<Self>, environment: &str, document: Document) {
        let this = self.clone();
        let env = environment.to_string();
        // Made here, so that it is a child of the caller's span (a poll, a stream event).
        let span = publish_span(environment);
        let built = tokio::task::spawn_blocking(move || this.publish_within(&span, &env, document));
        if let Err(e) = built.await {
            tracing::error!(environment, error = %e, "building a snapshot failed");
        }
    }

    /// [`Publisher::publish`] for code already on a blocking thread. Returns what changed
    /// (`None`: the environment is not served).
    pub fn publish_blocking(
        &self,
        environment: &str,
        document: Document,
    ) -> Option<Arc<ChangeSet>> {
        self.publish_within(&publish_span(environment), environment, document)
    }

    /// Compiles and swaps in `span` (recording what the publish did on it).
    fn publish_within(
        &self,
        span: &tracing::Span,
        environment: &str,
        document: Document,
    ) -> Option<Arc<ChangeSet>> {
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let (snapshot, warnings) = Snapshot::build(environment, document);
        if !span.is_none() {
            span.record(
                "flagpost.compile_ms",
                started.elapsed().as_secs_f64() * 1000.0,
            );
            span.record("flagpost.features", snapshot.features().len() as i64);
            span.record("flagpost.warnings", warnings.len() as i64);
        }
        for w in &warnings {
            tracing::warn!(environment, warning = %w, "flag cannot be evaluated; it will be off");
        }
        self.metrics.more.count_warnings(environment, &warnings);
        let (changes, replaced) = self.swap(environment, snapshot);
        if let (false, Some(c)) = (span.is_none(), &changes) {
            let size = c.features_updated.len()
                + c.features_removed.len()
                + c.segments_updated.len()
                + c.segments_removed.len();
            span.record("flagpost.changes", size as i64);
            span.record("flagpost.revision", c.revision as i64);
        }
        // The replaced snapshot (maybe large) is freed here, after the lock is released.
        drop(replaced);
        changes
    }

    /// Swaps `snapshot` in and announces what changed, one publish at a time: the change set is
    /// computed against the snapshot it replaces, whatever else was published while this one
    /// compiled. Returns the change set and the replaced snapshot.
    fn swap(
        &self,
        environment: &str,
        mut snapshot: Snapshot,
    ) -> (Option<Arc<ChangeSet>>, Option<Arc<Snapshot>>) {
        let mut channels = self.lock();
        let previous = self.store.snapshot(environment);
        // A first snapshot lists nothing: no client can hold an earlier state of this
        // environment here (streams and deltas start from a hydration), and a change set
        // naming every feature would keep a copy of each name for as long as it is held.
        let mut changes = match &previous {
            Some(p) => diff(Some(p.document()), snapshot.document()),
            None => ChangeSet::default(),
        };
        let count = snapshot.features().len();
        let built = snapshot
            .built_at()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let last = channels.get(environment).map_or(0, |c| c.revision);
        let announce = previous.is_none() || !changes.is_empty();
        let revision = match snapshot.document().revision {
            _ if !announce => last,
            Some(upstream) if upstream > last && upstream <= MAX_REVISION => upstream,
            _ if last == 0 || last >= MAX_REVISION => first_counter_revision(),
            _ => last + 1,
        };
        snapshot.set_revision(revision);
        if !self.writer.publish(snapshot) {
            return (None, previous);
        }
        self.warn_if_emptied(environment, previous.as_deref(), count);
        self.metrics
            .snapshot_features
            .with_label_values(&[environment])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.metrics
            .snapshot_last_load
            .with_label_values(&[environment])
            .set(built);
        let channel = channels
            .entry(environment.to_string())
            .or_insert_with(Channel::new);
        channel.revision = revision;
        self.metrics
            .more
            .last_applied_revision
            .with_label_values(&[environment])
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        changes.environment = environment.to_string();
        changes.revision = revision;
        let changes = Arc::new(changes);
        if announce {
            channel.history.push_back(changes.clone());
            while channel.history.len() > self.history {
                channel.history.pop_front();
            }
            // One span for the fan-out to every stream, not one per stream.
            let fan_out = if crate::otel::enabled() {
                tracing::info_span!(
                    "fan-out",
                    otel.name = "stream fan-out",
                    environment,
                    flagpost.revision = revision as i64,
                    flagpost.streams = channel.tx.receiver_count() as i64,
                )
            } else {
                tracing::Span::none()
            };
            let _entered = fan_out.enter();
            // No subscriber is not an error: nobody is listening yet.
            let _ = channel.tx.send(changes.clone());
        }
        (Some(changes), previous)
    }

    /// An empty list where there were flags is served (upstream is the truth), but it is more
    /// often a broken upstream than a real change: warned about and counted.
    fn warn_if_emptied(&self, environment: &str, previous: Option<&Snapshot>, count: usize) {
        let before = previous.map_or(0, |s| s.features().len());
        if before > 0 && count == 0 {
            tracing::warn!(
                environment,
                before,
                now = count,
                "upstream now lists no features for this environment where it listed some; serving the empty list (the backup keeps the last non-empty one)"
            );
            self.metrics
                .snapshot_emptied
                .with_label_values(&[environment])
                .inc();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The span of one publish, when traces are exported.
fn publish_span(environment: &str) -> tracing::Span {
    if !crate::otel::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "publish",
        otel.name = "publish snapshot",
        environment,
        flagpost.features = tracing::field::Empty,
        flagpost.warnings = tracing::field::Empty,
        flagpost.compile_ms = tracing::field::Empty,
        flagpost.changes = tracing::field::Empty,
        flagpost.revision = tracing::field::Empty,
    )
}

impl Channel {
    fn new() -> Channel {
        Channel {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            revision: 0,
            history: VecDeque::new(),
        }
    }
}

#[cfg(test)]
mod tests;
