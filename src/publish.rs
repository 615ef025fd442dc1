//! The one way a new snapshot is served: [`Publisher::publish`] compiles a document on the
//! blocking pool, swaps it into the [`Store`], records its metrics, and announces what changed
//! (a [`ChangeSet`]) on the environment's channel.
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::snapshot::{Document, Snapshot, Store};

/// Change sets kept for a subscriber that has not read them yet; one that falls further behind
/// gets `RecvError::Lagged` and must start again from the current snapshot.
const CHANNEL_CAPACITY: usize = 64;

/// What one publish changed in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeSet {
    pub environment: String,
    /// The environment's revision after this change (1 for the first snapshot).
    pub revision: u64,
    /// Names of the features that are new or whose definition changed, in document order.
    pub features_updated: Vec<String>,
    /// Names of the features no longer listed, sorted.
    pub features_removed: Vec<String>,
    /// Ids of the segments that are new or changed, in document order.
    pub segments_updated: Vec<i32>,
    /// Ids of the segments no longer listed, sorted.
    pub segments_removed: Vec<i32>,
}

impl ChangeSet {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.features_updated.is_empty()
            && self.features_removed.is_empty()
            && self.segments_updated.is_empty()
            && self.segments_removed.is_empty()
    }
}

/// What changed from `before` (nothing, for a first snapshot) to `after`, by comparing each
/// feature's and segment's JSON as upstream sent it (compacted).
pub fn diff(before: Option<&Document>, after: &Document) -> ChangeSet {
    let old_features: HashMap<&str, &str> = before
        .map(|d| {
            d.features
                .iter()
                .map(|f| (f.name.as_str(), f.raw_json()))
                .collect()
        })
        .unwrap_or_default();
    let old_segments: HashMap<i32, &str> = before
        .map(|d| d.segments.iter().map(|s| (s.id, s.raw_json())).collect())
        .unwrap_or_default();
    let features_updated = after
        .features
        .iter()
        .filter(|f| old_features.get(f.name.as_str()) != Some(&f.raw_json()))
        .map(|f| f.name.clone())
        .collect();
    let listed: std::collections::HashSet<&str> =
        after.features.iter().map(|f| f.name.as_str()).collect();
    let mut features_removed: Vec<String> = old_features
        .keys()
        .filter(|name| !listed.contains(*name))
        .map(|name| name.to_string())
        .collect();
    features_removed.sort();
    let segments_updated = after
        .segments
        .iter()
        .filter(|s| old_segments.get(&s.id) != Some(&s.raw_json()))
        .map(|s| s.id)
        .collect();
    let mut segments_removed: Vec<i32> = old_segments
        .keys()
        .filter(|id| !after.segments.iter().any(|s| s.id == **id))
        .copied()
        .collect();
    segments_removed.sort_unstable();
    ChangeSet {
        features_updated,
        features_removed,
        segments_updated,
        segments_removed,
        ..ChangeSet::default()
    }
}

/// Per environment: its announcement channel and revision.
#[derive(Debug)]
struct Channel {
    tx: broadcast::Sender<Arc<ChangeSet>>,
    revision: u64,
}

/// Owns publishing: see the module documentation.
#[derive(Debug)]
pub struct Publisher {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Held while a snapshot is swapped and announced, so change sets go out in revision order.
    channels: Mutex<HashMap<String, Channel>>,
}

impl Publisher {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Publisher {
        Publisher {
            store,
            metrics,
            channels: Mutex::new(HashMap::new()),
        }
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

    /// The change sets published for `environment` from now on.
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

    /// Compiles `document` for `environment` on the blocking pool (a large one takes long
    /// enough to stall the requests on an async worker), then serves and announces it.
    pub async fn publish(self: &Arc<Self>, environment: &str, document: Document) {
        let this = self.clone();
        let env = environment.to_string();
        let built = tokio::task::spawn_blocking(move || this.publish_blocking(&env, document));
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
        let (snapshot, warnings) = Snapshot::build(environment, document);
        for w in warnings {
            tracing::warn!(environment, warning = %w, "flag cannot be evaluated; it will be off");
        }
        let (changes, replaced) = self.swap(environment, snapshot);
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
        snapshot: Snapshot,
    ) -> (Option<Arc<ChangeSet>>, Option<Arc<Snapshot>>) {
        let mut channels = self.lock();
        let previous = self.store.snapshot(environment);
        let mut changes = diff(previous.as_ref().map(|s| s.document()), snapshot.document());
        let count = snapshot.features().len();
        self.warn_if_emptied(environment, previous.as_deref(), count);
        let built = snapshot
            .built_at()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if !self.store.publish(snapshot) {
            return (None, previous);
        }
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
        let announce = previous.is_none() || !changes.is_empty();
        if announce {
            channel.revision += 1;
        }
        changes.environment = environment.to_string();
        changes.revision = channel.revision;
        let changes = Arc::new(changes);
        if announce {
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

impl Channel {
    fn new() -> Channel {
        Channel {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            revision: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Projects;

    fn doc(features: &[(&str, bool)], segments: &[(i32, &str)]) -> Document {
        let features: Vec<String> = features
            .iter()
            .map(|(name, on)| {
                format!(
                    r#"{{"name":"{name}","enabled":{on},"project":"default","strategies":[{{"name":"default"}}]}}"#
                )
            })
            .collect();
        let segments: Vec<String> = segments
            .iter()
            .map(|(id, value)| {
                format!(
                    r#"{{"id":{id},"constraints":[{{"contextName":"userId","operator":"IN","values":["{value}"]}}]}}"#
                )
            })
            .collect();
        let text = format!(
            r#"{{"version":2,"features":[{}],"segments":[{}]}}"#,
            features.join(","),
            segments.join(",")
        );
        Document::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn diff_names_what_was_added_changed_and_removed() {
        let a = doc(
            &[("a", true), ("b", true), ("c", true)],
            &[(1, "x"), (2, "y")],
        );
        let b = doc(
            &[("d", true), ("a", true), ("b", false)],
            &[(2, "z"), (3, "w")],
        );
        let changes = diff(Some(&a), &b);
        assert_eq!(changes.features_updated, ["d", "b"]);
        assert_eq!(changes.features_removed, ["c"]);
        assert_eq!(changes.segments_updated, [2, 3]);
        assert_eq!(changes.segments_removed, [1]);
        let first = diff(None, &a);
        assert_eq!(first.features_updated, ["a", "b", "c"]);
        assert_eq!(first.segments_updated, [1, 2]);
        assert!(diff(Some(&a), &a).is_empty());
    }

    #[tokio::test]
    async fn every_change_is_announced_once_in_revision_order() {
        let store = Arc::new(Store::new([("development".to_string(), Projects::All)]));
        let publisher = Arc::new(Publisher::new(store.clone(), Arc::new(Metrics::new(&[]))));
        let mut rx = publisher.subscribe("development");
        publisher
            .publish("development", doc(&[("a", true)], &[]))
            .await;
        publisher
            .publish("development", doc(&[("a", true)], &[]))
            .await;
        publisher
            .publish("development", doc(&[("a", false), ("b", true)], &[]))
            .await;
        let first = rx.recv().await.unwrap();
        assert_eq!(
            (first.revision, first.features_updated.clone()),
            (1, vec!["a".into()])
        );
        // The unchanged publish announced nothing: the next one is revision 2.
        let second = rx.recv().await.unwrap();
        assert_eq!(second.revision, 2);
        assert_eq!(second.features_updated, ["a", "b"]);
        assert!(rx.try_recv().is_err(), "nothing else was announced");
        assert_eq!(publisher.revision("development"), 2);
        assert_eq!(store.snapshot("development").unwrap().features().len(), 2);
        // An environment flagpost does not serve is neither served nor announced.
        assert!(publisher
            .publish_blocking("staging", doc(&[("a", true)], &[]))
            .is_none());
        assert_eq!(publisher.revision("staging"), 0);
    }
}
