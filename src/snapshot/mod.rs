//! Per-environment immutable [`Snapshot`]s (features as received, their compiled engine,
//! memoised Client API bodies) and the [`Store`] that swaps them whole behind arc-swap, so
//! readers never block and a background task can replace them at any time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use crate::document::{Document, Feature, SegmentEntry};
use crate::evaluate::FrontendView;
use crate::json;

mod store;

use crate::token::Projects;
use bytes::Bytes;
pub use store::{EnvSlot, GateError, ServingScope, Store, StoreWriter};

/// What the memoised Client API bodies and hydrations (one per project filter × name prefix)
/// of one snapshot may take together: four times the whole document (a body for every
/// project, its hydration, and room for filtered ones), and at least 256 small ones. Each body
/// weighs its bytes plus [`BODY_OVERHEAD`]; past the bound the least used are dropped and
/// rendered again when asked for.
const BODY_CACHE_DOCUMENTS: u64 = 4;
const BODY_CACHE_MIN_ENTRIES: u64 = 256;
const BODY_OVERHEAD: u64 = 4096;

/// A Client API body, serialised once, with its strong ETag.
#[derive(Debug)]
pub struct Body {
    pub bytes: Bytes,
    pub etag: String,
}

impl Body {
    pub fn new(bytes: Vec<u8>) -> Body {
        let etag = etag_of(&bytes);
        Body {
            bytes: Bytes::from(bytes),
            etag,
        }
    }
}

/// A strong ETag computed from the bytes of a body.
pub fn etag_of(bytes: &[u8]) -> String {
    etag_value(xxhash_rust::xxh3::xxh3_64(bytes))
}

/// The strong ETag of a body whose xxh3 hash is `hash`.
pub fn etag_value(hash: u64) -> String {
    format!("\"{hash:016x}\"")
}

/// What one client asks for within an environment: the projects its token (and `project`
/// query) allow, and an optional name prefix. A Client API body, a hydration and an update are
/// rendered once per filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    pub projects: Projects,
    pub name_prefix: Option<String>,
}

impl Filter {
    pub fn new(projects: Projects, name_prefix: Option<String>) -> Filter {
        Filter {
            projects,
            name_prefix,
        }
    }

    /// Whether a feature of `project` named `name` is in this filter.
    pub fn admits(&self, project: &str, name: &str) -> bool {
        self.projects.contains(project)
            && self
                .name_prefix
                .as_deref()
                .is_none_or(|p| name.starts_with(p))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BodyKind {
    Client,
    Hydration,
}

/// Everything served for one environment, immutable once built.
pub struct Snapshot {
    environment: Arc<str>,
    document: Document,
    /// The flags compiled and prepared for the Frontend API.
    frontend: FrontendView,
    bodies: moka::sync::Cache<(BodyKind, Filter), Arc<Body>>,
    built_at: SystemTime,
    /// The environment's revision (the id of the last change event) this snapshot is at; set
    /// when it is published.
    revision: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("environment", &self.environment)
            .field("features", &self.document.features.len())
            .finish()
    }
}

fn body_cache(document_size: u64) -> moka::sync::Cache<(BodyKind, Filter), Arc<Body>> {
    moka::sync::Cache::builder()
        .max_capacity(
            document_size.saturating_mul(BODY_CACHE_DOCUMENTS)
                + BODY_CACHE_MIN_ENTRIES * BODY_OVERHEAD,
        )
        .weigher(|_, body: &Arc<Body>| {
            u32::try_from(body.bytes.len() as u64 + BODY_OVERHEAD).unwrap_or(u32::MAX)
        })
        .build()
}

impl Snapshot {
    /// Compiles `document` for `environment`. Returns the snapshot and the engine's warnings
    /// (flags it could not compile: those evaluate as off).
    pub fn build(environment: &str, document: Document) -> (Snapshot, Vec<String>) {
        let size = document.raw_size() as u64;
        let (frontend, warnings) = FrontendView::compile(&document);
        let snapshot = Snapshot {
            environment: Arc::from(environment),
            document,
            frontend,
            bodies: body_cache(size),
            built_at: SystemTime::now(),
            revision: 0,
        };
        (snapshot, warnings)
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    pub fn features(&self) -> &[Feature] {
        &self.document.features
    }

    pub fn document(&self) -> &Document {
        &self.document
    }

    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.frontend
            .engine()
            .index_of(name)
            .and_then(|i| self.document.features.get(i))
    }

    /// The flags compiled and prepared for the Frontend API.
    pub fn frontend(&self) -> &FrontendView {
        &self.frontend
    }

    pub fn built_at(&self) -> SystemTime {
        self.built_at
    }

    /// The revision this snapshot is at (0 before it is published).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Sets the revision, before the snapshot is published.
    pub fn set_revision(&mut self, revision: u64) {
        self.revision = revision;
    }

    /// The Client API body for a project filter (and optional name prefix), built on first use
    /// and memoised for the life of this snapshot.
    pub fn client_body(&self, projects: &Projects, name_prefix: Option<&str>) -> Arc<Body> {
        let filter = Filter::new(projects.clone(), name_prefix.map(str::to_string));
        self.bodies.get_with((BodyKind::Client, filter), || {
            Arc::new(self.render_client_body(projects, name_prefix))
        })
    }

    /// `{"events":[{"type":"hydration",...}]}` for a filter: the same features and segments as
    /// its Client API body, as the first event of a stream or a delta answer. Memoised like
    /// [`Snapshot::client_body`]; its ETag is the revision.
    pub fn hydration(&self, filter: &Filter) -> Arc<Body> {
        self.bodies
            .get_with((BodyKind::Hydration, filter.clone()), || {
                let (features, segments) = self.select(filter);
                let size: usize = features.iter().map(|f| f.raw_json().len() + 1).sum();
                let mut out = String::with_capacity(size + 128);
                out.push_str("{\"events\":[{\"type\":\"hydration\",\"eventId\":");
                out.push_str(&self.revision.to_string());
                out.push_str(",\"features\":[");
                json::push_joined(&mut out, features.iter().map(|f| f.raw_json()));
                out.push_str("],\"segments\":[");
                json::push_joined(&mut out, segments.iter().map(|s| s.raw_json()));
                out.push_str("]}]}");
                Arc::new(Body {
                    bytes: Bytes::from(out),
                    etag: format!("\"{}\"", self.revision),
                })
            })
    }

    /// The features in `filter` (document order) and the segments they use.
    fn select(&self, filter: &Filter) -> (Vec<&Feature>, Vec<&SegmentEntry>) {
        let selected: Vec<&Feature> = self
            .document
            .features
            .iter()
            .filter(|f| filter.admits(&f.project, &f.name))
            .collect();
        let used: BTreeSet<i32> = selected.iter().flat_map(|f| f.segment_ids()).collect();
        let segments = self
            .document
            .segments
            .iter()
            .filter(|s| used.contains(&s.id))
            .collect();
        (selected, segments)
    }

    fn render_client_body(&self, projects: &Projects, name_prefix: Option<&str>) -> Body {
        let filter = Filter::new(projects.clone(), name_prefix.map(str::to_string));
        let (selected, segments) = self.select(&filter);
        let size: usize = selected.iter().map(|f| f.raw_json().len() + 1).sum();
        let mut out = String::with_capacity(size + 256);
        json::push_features_and_segments(
            &mut out,
            selected.iter().map(|f| f.raw_json()),
            segments.iter().map(|s| s.raw_json()),
        );
        out.push_str(",\"query\":{\"environment\":");
        json::push_str(&mut out, &self.environment);
        if let Projects::Some(list) = projects {
            out.push_str(",\"project\":[");
            for (i, p) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::push_str(&mut out, p);
            }
            out.push(']');
        }
        if let Some(prefix) = name_prefix {
            out.push_str(",\"namePrefix\":");
            json::push_str(&mut out, prefix);
        }
        out.push_str(",\"inlineSegmentConstraints\":false}}");
        Body::new(out.into_bytes())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::document::DocumentError;

    const DOC: &str = r#"{"version":2,"features":[
        {"name":"a","project":"default","enabled":true,"strategies":[{"name":"default","segments":[1]}],"extra":{"kept":true}},
        {"name":"b","project":"checkout","enabled":false,"strategies":[]},
        {"name":"ab","project":"default","enabled":true}
      ],
      "segments":[{"id":1,"constraints":[]},{"id":2,"constraints":[]}]}"#;

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot::build("development", Document::parse(DOC.as_bytes()).unwrap()).0
    }

    fn names(body: &Body) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
        v["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Memoised bodies are bounded in bytes, not only in count: a large document's bodies for
    /// many filters do not pile up.
    #[test]
    fn memoised_bodies_are_bounded_in_bytes() {
        let features: Vec<String> = (0..2000)
            .map(|i| {
                format!(
                    r#"{{"name":"f{i:04}","project":"p{}","enabled":true,"description":"{}"}}"#,
                    i % 50,
                    "x".repeat(200)
                )
            })
            .collect();
        let doc = format!(r#"{{"version":2,"features":[{}]}}"#, features.join(","));
        let s = Snapshot::build("development", Document::parse(doc.as_bytes()).unwrap()).0;
        let capacity = s.bodies.policy().max_capacity().unwrap();
        let whole = s.client_body(&Projects::All, None);
        assert!(
            Arc::ptr_eq(&whole, &s.client_body(&Projects::All, None)),
            "memoised"
        );
        let projects: Vec<String> = (0..50).map(|j| format!("p{j}")).collect();
        let mut rendered = 0u64;
        for (i, project) in projects.iter().enumerate() {
            for prefix in [None, Some("f0"), Some("f1")] {
                let one = Projects::from_names([project.as_str()]);
                rendered += s.client_body(&one, prefix).bytes.len() as u64;
                let all_but = Projects::from_names(
                    projects
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, n)| n.as_str()),
                );
                rendered += s.client_body(&all_but, prefix).bytes.len() as u64;
            }
        }
        s.bodies.run_pending_tasks();
        assert!(
            rendered > 2 * capacity,
            "the test renders more than the bound: {rendered}"
        );
        assert!(
            s.bodies.weighted_size() <= capacity,
            "{} > {capacity}",
            s.bodies.weighted_size()
        );
        assert_eq!(names(&s.client_body(&Projects::All, None)).len(), 2000);
    }

    #[test]
    fn client_body_keeps_features_as_received_and_filters() {
        let s = snapshot();
        let all = s.client_body(&Projects::All, None);
        assert_eq!(names(&all), ["a", "b", "ab"]);
        let v: serde_json::Value = serde_json::from_slice(&all.bytes).unwrap();
        assert_eq!(v["features"][0]["extra"]["kept"], true);
        assert_eq!(
            v["segments"].as_array().unwrap().len(),
            1,
            "only used segments"
        );
        assert_eq!(v["query"]["environment"], "development");
        let checkout = s.client_body(&Projects::from_names(["checkout"]), None);
        assert_eq!(names(&checkout), ["b"]);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&checkout.bytes).unwrap()["segments"],
            serde_json::json!([])
        );
        let prefixed = s.client_body(&Projects::All, Some("a"));
        assert_eq!(names(&prefixed), ["a", "ab"]);
        assert_ne!(all.etag, prefixed.etag);
    }

    #[test]
    fn pretty_printed_documents_are_served_compact() {
        let doc = Document::parse(
            b"{\"features\": [\n  {\"name\": \"a b\", \"enabled\" : true,\n \"description\": \"two  spaces \\\" q\"}\n]}",
        )
        .unwrap();
        assert_eq!(
            doc.features[0].raw_json(),
            r#"{"name":"a b","enabled":true,"description":"two  spaces \" q"}"#
        );
    }

    #[test]
    fn client_body_is_built_once_per_filter() {
        let s = snapshot();
        let first = s.client_body(&Projects::All, None);
        let second = s.client_body(&Projects::All, None);
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn rejects_duplicate_and_broken_documents() {
        let dup = r#"{"features":[{"name":"x","enabled":true},{"name":"x","enabled":false}]}"#;
        assert!(matches!(
            Document::parse(dup.as_bytes()),
            Err(DocumentError::DuplicateFeature(n)) if n == "x"
        ));
        assert!(Document::parse(b"{\"features\":[").is_err());
        assert!(Document::parse(b"[]").is_err());
    }

    #[test]
    fn merge_replaces_only_the_given_projects() {
        let mut base = Document::parse(DOC.as_bytes()).unwrap();
        let other = Document::parse(
            br#"{"features":[{"name":"c","project":"checkout","enabled":true},{"name":"z","project":"default","enabled":true}]}"#,
        )
        .unwrap();
        base.merge(&other, &Projects::from_names(["checkout"]));
        let names: Vec<_> = base.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "ab", "c"]);
        base.merge(&other, &Projects::All);
        let names: Vec<_> = base.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c", "z"]);
    }
}
