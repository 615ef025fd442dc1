//! What one publish changed in one environment: a [`ChangeSet`] computed by [`diff`] from the
//! documents before and after, and the renderings of it that `delta` makes once per filter and
//! keeps on it. Below both `publish` (which announces change sets) and `delta` (which renders
//! them), so that neither needs the other.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::document::{Document, Feature, SegmentEntry};
use crate::snapshot::Filter;

/// One change as one filter sees it.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The event objects, comma-separated (empty: nothing for this filter).
    pub events: Bytes,
    /// The `unleash-updated` frame carrying them (empty when there are none).
    pub frame: Bytes,
}

/// A change's renderings, by filter (bounded by `delta`).
#[derive(Debug, Default)]
pub struct Renderings(pub(crate) Mutex<HashMap<Filter, Arc<Rendered>>>);

/// A feature a change added or updated.
#[derive(Debug, Clone)]
pub struct Updated {
    pub feature: Feature,
    /// The project it was in before, when it moved to another one.
    pub moved_from: Option<String>,
}

/// What one publish changed in one environment.
#[derive(Debug, Default)]
pub struct ChangeSet {
    pub environment: String,
    /// The environment's revision after this change: the event id, at most `u32::MAX` (see
    /// `first_counter_revision`). Upstream's `meta.revisionId` when it sent one greater than
    /// the last, otherwise the last plus one.
    pub revision: u64,
    /// The features that are new or whose definition changed, in document order.
    pub features_updated: Vec<Updated>,
    /// The features no longer listed, as they were, sorted by name.
    pub features_removed: Vec<Feature>,
    /// Ids of the segments that are new or changed, in document order.
    pub segments_updated: Vec<i32>,
    /// Ids of the segments no longer listed, sorted.
    pub segments_removed: Vec<i32>,
    /// The segments a client may need with this change: the updated ones and those the
    /// updated features use.
    pub segments: HashMap<i32, SegmentEntry>,
    /// For each updated segment, the features (project, name) that use it now.
    pub segment_users: HashMap<i32, Vec<(String, String)>>,
    /// This change rendered per filter, once (by `delta::render`).
    pub rendered: Renderings,
}

impl ChangeSet {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.features_updated.is_empty()
            && self.features_removed.is_empty()
            && self.segments_updated.is_empty()
            && self.segments_removed.is_empty()
    }

    /// Names of the updated features (document order).
    #[cfg(test)]
    pub fn updated_names(&self) -> Vec<&str> {
        self.features_updated
            .iter()
            .map(|u| u.feature.name.as_str())
            .collect()
    }
}

/// What changed from `before` (nothing, for a first snapshot) to `after`, by comparing each
/// feature's and segment's JSON as upstream sent it (compacted).
pub fn diff(before: Option<&Document>, after: &Document) -> ChangeSet {
    let old_features: HashMap<&str, &Feature> = before
        .map(|d| d.features.iter().map(|f| (f.name.as_str(), f)).collect())
        .unwrap_or_default();
    let old_segments: HashMap<i32, &str> = before
        .map(|d| d.segments.iter().map(|s| (s.id, s.raw_json())).collect())
        .unwrap_or_default();
    let features_updated: Vec<Updated> = after
        .features
        .iter()
        .filter_map(|f| match old_features.get(f.name.as_str()) {
            Some(old) if old.raw_json() == f.raw_json() => None,
            old => Some(Updated {
                feature: f.clone(),
                moved_from: old
                    .filter(|o| o.project != f.project)
                    .map(|o| o.project.clone()),
            }),
        })
        .collect();
    let listed: HashSet<&str> = after.features.iter().map(|f| f.name.as_str()).collect();
    let mut features_removed: Vec<Feature> = old_features
        .values()
        .filter(|f| !listed.contains(f.name.as_str()))
        .map(|f| (*f).clone())
        .collect();
    features_removed.sort_by(|a, b| a.name.cmp(&b.name));
    let segments_updated: Vec<i32> = after
        .segments
        .iter()
        .filter(|s| old_segments.get(&s.id) != Some(&s.raw_json()))
        .map(|s| s.id)
        .collect();
    let current: HashSet<i32> = after.segments.iter().map(|s| s.id).collect();
    let mut segments_removed: Vec<i32> = old_segments
        .keys()
        .filter(|id| !current.contains(id))
        .copied()
        .collect();
    segments_removed.sort_unstable();
    let wanted: HashSet<i32> = segments_updated
        .iter()
        .copied()
        .chain(
            features_updated
                .iter()
                .flat_map(|u| u.feature.segment_ids()),
        )
        .collect();
    let segments = after
        .segments
        .iter()
        .filter(|s| wanted.contains(&s.id))
        .map(|s| (s.id, s.clone()))
        .collect();
    let mut segment_users: HashMap<i32, Vec<(String, String)>> = HashMap::new();
    if !segments_updated.is_empty() {
        let updated: HashSet<i32> = segments_updated.iter().copied().collect();
        for f in &after.features {
            for id in f.segment_ids().filter(|id| updated.contains(id)) {
                segment_users
                    .entry(id)
                    .or_default()
                    .push((f.project.clone(), f.name.clone()));
            }
        }
    }
    ChangeSet {
        features_updated,
        features_removed,
        segments_updated,
        segments_removed,
        segments,
        segment_users,
        ..ChangeSet::default()
    }
}
