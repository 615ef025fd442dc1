//! A Client API document as received: each feature's and segment's JSON kept as sent
//! (compacted), with the few facts read from it that requests need; parsing, merging the
//! answers of several project tokens, and writing it back. Near the bottom of the layers: it
//! uses only the JSON writer and the token module.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use unleash_types::client_features::{ClientFeature, Segment};

use crate::json;
use crate::token::Projects;

/// A features document that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("not a features document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("feature #{0} is not a feature: {1}")]
    Feature(usize, serde_json::Error),
    #[error("segment #{0} is not a segment: {1}")]
    Segment(usize, serde_json::Error),
    #[error("feature {0:?} appears more than once")]
    DuplicateFeature(String),
    #[error("feature #{0} has an empty name")]
    EmptyName(usize),
    #[error("bad delta event: {0}")]
    Event(String),
}

/// One feature: the JSON exactly as received (served as is, and parsed again only to compile a
/// snapshot), and the few facts read from it that requests need. Keeping no typed copy halves
/// the memory a large flag set takes (the engine keeps its own).
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub project: String,
    pub impression_data: bool,
    /// Whether every context gets the same result (see [`context_free`]).
    pub context_free: bool,
    segments: Arc<[i32]>,
    raw: Arc<RawValue>,
}

impl Feature {
    fn new(typed: &ClientFeature, raw: Arc<RawValue>) -> Feature {
        let segments: Vec<i32> = typed
            .strategies
            .iter()
            .flatten()
            .flat_map(|s| s.segments.iter().flatten().copied())
            .collect();
        Feature {
            name: typed.name.clone(),
            project: typed.project.clone().unwrap_or_else(|| "default".into()),
            impression_data: typed.impression_data.unwrap_or(false),
            context_free: context_free(typed),
            segments: Arc::from(segments),
            raw,
        }
    }

    pub fn raw_json(&self) -> &str {
        self.raw.get()
    }

    /// The typed form, parsed from the JSON.
    pub fn typed(&self) -> Result<ClientFeature, serde_json::Error> {
        serde_json::from_str(self.raw.get())
    }

    pub fn segment_ids(&self) -> impl Iterator<Item = i32> + '_ {
        self.segments.iter().copied()
    }
}

/// A segment, raw and typed.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    pub id: i32,
    raw: Arc<RawValue>,
    typed: Arc<Segment>,
}

impl SegmentEntry {
    pub fn typed(&self) -> &Segment {
        &self.typed
    }

    pub fn raw_json(&self) -> &str {
        self.raw.get()
    }
}

/// A parsed Client API document (`{"version":2,"features":[...],"segments":[...]}`).
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub features: Vec<Feature>,
    pub segments: Vec<SegmentEntry>,
    /// Upstream's `meta.revisionId`, when it sent one: the id of the last change it includes
    /// (the same numbers as Unleash's delta event ids).
    pub revision: Option<u64>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default, rename = "revisionId")]
    revision_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawDocument<'a> {
    #[serde(borrow)]
    features: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    segments: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    meta: Option<&'a RawValue>,
}

impl Document {
    /// Parses a Client API response body. Every feature must have a unique name. Each feature
    /// is read into its typed form one at a time (for its facts and to check it), so a large
    /// document never exists as a whole typed copy.
    pub fn parse(bytes: &[u8]) -> Result<Document, DocumentError> {
        let raw: RawDocument<'_> = serde_json::from_slice(bytes)?;
        let mut seen = BTreeSet::new();
        let mut features = Vec::with_capacity(raw.features.len());
        for (i, raw) in raw.features.into_iter().enumerate() {
            let typed: ClientFeature =
                serde_json::from_str(raw.get()).map_err(|e| DocumentError::Feature(i, e))?;
            if typed.name.is_empty() {
                return Err(DocumentError::EmptyName(i));
            }
            if !seen.insert(typed.name.clone()) {
                return Err(DocumentError::DuplicateFeature(typed.name));
            }
            features.push(Feature::new(&typed, compact(raw)?));
        }
        let segments = raw
            .segments
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let typed: Segment =
                    serde_json::from_str(raw.get()).map_err(|e| DocumentError::Segment(i, e))?;
                Ok(SegmentEntry {
                    id: typed.id,
                    raw: compact(raw)?,
                    typed: Arc::new(typed),
                })
            })
            .collect::<Result<_, DocumentError>>()?;
        // A `meta` that is not what Unleash sends is ignored, not an error: the revision only
        // names events.
        let revision = raw
            .meta
            .and_then(|m| serde_json::from_str::<Meta>(m.get()).ok())
            .and_then(|m| m.revision_id);
        Ok(Document {
            features,
            segments,
            revision,
        })
    }

    /// Its segments, typed.
    pub fn typed_segments(&self) -> Vec<Segment> {
        self.segments.iter().map(|s| s.typed().clone()).collect()
    }

    /// The bytes of its features' and segments' JSON.
    pub fn raw_size(&self) -> usize {
        let features: usize = self.features.iter().map(|f| f.raw.get().len()).sum();
        features
            + self
                .segments
                .iter()
                .map(|s| s.raw.get().len())
                .sum::<usize>()
    }

    /// The document as Client API JSON (`{"version":2,"features":[...],"segments":[...]}`),
    /// features and segments exactly as received.
    pub fn to_json(&self) -> String {
        let size: usize = self
            .features
            .iter()
            .map(|f| f.raw.get().len() + 1)
            .sum::<usize>()
            + self
                .segments
                .iter()
                .map(|s| s.raw.get().len() + 1)
                .sum::<usize>();
        let mut out = String::with_capacity(size + 48);
        json::push_features_and_segments(
            &mut out,
            self.features.iter().map(|f| f.raw.get()),
            self.segments.iter().map(|s| s.raw.get()),
        );
        if let Some(revision) = self.revision {
            out.push_str(",\"meta\":{\"revisionId\":");
            out.push_str(&revision.to_string());
            out.push('}');
        }
        out.push('}');
        out
    }

    /// Replaces the features of `projects` with those of `other` (all of them when `projects`
    /// is `All`), keeping the others: how answers for several project-scoped tokens of one
    /// environment become one view. Segments are merged by id, `other` winning.
    pub fn merge(&mut self, other: &Document, projects: &Projects) {
        self.features.retain(|f| !projects.contains(&f.project));
        self.features.extend(
            other
                .features
                .iter()
                .filter(|f| projects.contains(&f.project))
                .cloned(),
        );
        for seg in &other.segments {
            match self.segments.iter_mut().find(|s| s.id == seg.id) {
                Some(existing) => *existing = seg.clone(),
                None => self.segments.push(seg.clone()),
            }
        }
        self.revision = self.revision.max(other.revision);
    }
}

/// One delta event as sent (PROTOCOL.md §6); fields by type.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "eventId")]
    event_id: Option<u64>,
    #[serde(default, borrow)]
    features: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    segments: Option<Vec<&'a RawValue>>,
    #[serde(default, borrow)]
    feature: Option<&'a RawValue>,
    #[serde(default, rename = "featureName")]
    feature_name: Option<String>,
    #[serde(default, borrow)]
    segment: Option<&'a RawValue>,
    #[serde(default, rename = "segmentId")]
    segment_id: Option<i32>,
}

#[derive(Deserialize)]
struct RawEvents<'a> {
    #[serde(borrow)]
    events: Vec<RawEvent<'a>>,
}

impl Document {
    /// Applies the delta events of `{"events":[...]}` in order (a hydration replaces
    /// everything); the document's revision becomes the last `eventId`. Either every event
    /// applies or the document is left as it was. Unknown event types are skipped.
    pub fn apply_events(&mut self, data: &[u8]) -> Result<usize, DocumentError> {
        let parsed: RawEvents<'_> = serde_json::from_slice(data)?;
        let mut next = self.clone();
        for event in &parsed.events {
            let missing =
                |what: &str| DocumentError::Event(format!("a {} event without {what}", event.kind));
            match event.kind.as_str() {
                "hydration" => {
                    let features = event.features.as_ref().ok_or_else(|| missing("features"))?;
                    let mut text = String::from("{\"features\":[");
                    json::push_joined(&mut text, features.iter().map(|f| f.get()));
                    text.push_str("],\"segments\":[");
                    let segments = event.segments.iter().flatten().map(|s| s.get());
                    json::push_joined(&mut text, segments);
                    text.push_str("]}");
                    next = Document::parse(text.as_bytes())?;
                }
                "feature-updated" => {
                    let raw = event.feature.ok_or_else(|| missing("feature"))?;
                    let typed: ClientFeature = serde_json::from_str(raw.get())?;
                    if typed.name.is_empty() {
                        return Err(missing("a feature name"));
                    }
                    let feature = Feature::new(&typed, compact(raw)?);
                    match next.features.iter_mut().find(|f| f.name == feature.name) {
                        Some(existing) => *existing = feature,
                        None => next.features.push(feature),
                    }
                }
                "feature-removed" => {
                    let name = event
                        .feature_name
                        .as_ref()
                        .ok_or_else(|| missing("featureName"))?;
                    next.features.retain(|f| &f.name != name);
                }
                "segment-updated" => {
                    let raw = event.segment.ok_or_else(|| missing("segment"))?;
                    let typed: Segment = serde_json::from_str(raw.get())?;
                    let entry = SegmentEntry {
                        id: typed.id,
                        raw: compact(raw)?,
                        typed: Arc::new(typed),
                    };
                    match next.segments.iter_mut().find(|s| s.id == entry.id) {
                        Some(existing) => *existing = entry,
                        None => next.segments.push(entry),
                    }
                }
                "segment-removed" => {
                    let id = event.segment_id.ok_or_else(|| missing("segmentId"))?;
                    next.segments.retain(|s| s.id != id);
                }
                _ => continue,
            }
            if let Some(id) = event.event_id {
                next.revision = Some(next.revision.map_or(id, |r| r.max(id)));
            }
        }
        *self = next;
        Ok(parsed.events.len())
    }
}

/// The JSON text of `raw` without the whitespace between tokens (a pretty-printed file is
/// served compact), field order and string contents untouched.
fn compact(raw: &RawValue) -> Result<Arc<RawValue>, DocumentError> {
    let text = raw.get();
    if !text.contains(['\n', '\r', '\t', ' ']) {
        return Ok(Arc::from(raw.to_owned()));
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    Ok(Arc::from(RawValue::from_string(out)?))
}

/// Whether a flag's result is the same for every context: it is off, or its first strategy is
/// an unconditional `default` (no constraints, segments or strategy variants) and it has no
/// variants and no dependencies.
pub fn context_free(feature: &ClientFeature) -> bool {
    if !feature.enabled {
        return true;
    }
    if feature.dependencies.as_ref().is_some_and(|d| !d.is_empty())
        || feature.variants.as_ref().is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    let Some(first) = feature.strategies.as_ref().and_then(|s| s.first()) else {
        return false;
    };
    first.name == "default"
        && first.constraints.as_ref().is_none_or(|c| c.is_empty())
        && first.segments.as_ref().is_none_or(|s| s.is_empty())
        && first.variants.as_ref().is_none_or(|v| v.is_empty())
}
