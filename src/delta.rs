//! The delta wire format of streams and `/api/client/delta` (PROTOCOL.md §6): a [`ChangeSet`]
//! rendered as the events one filter (token projects and name prefix) may see, once per filter
//! and then shared by every client with that filter; and the Server-Sent Events frames.
//!
//! For a filter, a change is: `feature-removed` for its features that left (or moved to another
//! project: removed from the old one first), `segment-updated` for changed segments its
//! features use and for the segments an updated feature uses (before that feature),
//! `feature-updated` for its new or changed features, and `segment-removed` last.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::change::ChangeSet;
pub use crate::change::Rendered;
use crate::json;
use crate::snapshot::Filter;

/// Filters a change keeps rendered; more are rendered for each client (never unbounded).
const MEMO_FILTERS: usize = 1024;

/// The SSE comment that keeps a stream alive.
pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

/// `change` as `filter` sees it, rendered on first use.
pub fn render(change: &ChangeSet, filter: &Filter) -> Arc<Rendered> {
    let mut memo = change.rendered.0.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = memo.get(filter) {
        return r.clone();
    }
    let events = events(change, filter);
    let frame = if events.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(frame(
            "unleash-updated",
            change.revision,
            &[events.as_bytes()],
        ))
    };
    let rendered = Arc::new(Rendered {
        events: Bytes::from(events),
        frame,
    });
    if memo.len() < MEMO_FILTERS {
        memo.insert(filter.clone(), rendered.clone());
    }
    rendered
}

/// The events of `change` for `filter`, comma-separated.
fn events(change: &ChangeSet, filter: &Filter) -> String {
    let mut out = Events {
        out: String::new(),
        id: change.revision,
    };
    for f in &change.features_removed {
        if filter.admits(&f.project, &f.name) {
            out.removed(&f.name, &f.project);
        }
    }
    for u in &change.features_updated {
        if let Some(old) = u.moved_from.as_deref() {
            if filter.admits(old, &u.feature.name) {
                out.removed(&u.feature.name, old);
            }
        }
    }
    let mut sent: HashSet<i32> = HashSet::new();
    for id in &change.segments_updated {
        let used = change
            .segment_users
            .get(id)
            .is_some_and(|users| users.iter().any(|(p, n)| filter.admits(p, n)));
        if let Some(segment) = change.segments.get(id).filter(|_| used) {
            out.segment(segment.raw_json());
            sent.insert(*id);
        }
    }
    for u in &change.features_updated {
        let f = &u.feature;
        if !filter.admits(&f.project, &f.name) {
            continue;
        }
        for id in f.segment_ids() {
            if let Some(segment) = change.segments.get(&id).filter(|_| sent.insert(id)) {
                out.segment(segment.raw_json());
            }
        }
        out.start("feature-updated");
        out.out.push_str(",\"feature\":");
        out.out.push_str(f.raw_json());
        out.out.push('}');
    }
    for id in &change.segments_removed {
        out.start("segment-removed");
        out.out.push_str(",\"segmentId\":");
        out.out.push_str(&id.to_string());
        out.out.push('}');
    }
    out.out
}

struct Events {
    out: String,
    id: u64,
}

impl Events {
    /// Opens an event object: `{"type":"…","eventId":N` (the caller closes it).
    fn start(&mut self, kind: &str) {
        if !self.out.is_empty() {
            self.out.push(',');
        }
        self.out.push_str("{\"type\":\"");
        self.out.push_str(kind);
        self.out.push_str("\",\"eventId\":");
        self.out.push_str(&self.id.to_string());
    }

    fn removed(&mut self, name: &str, project: &str) {
        self.start("feature-removed");
        self.out.push_str(",\"featureName\":");
        json::push_str(&mut self.out, name);
        self.out.push_str(",\"project\":");
        json::push_str(&mut self.out, project);
        self.out.push('}');
    }

    fn segment(&mut self, raw: &str) {
        self.start("segment-updated");
        self.out.push_str(",\"segment\":");
        self.out.push_str(raw);
        self.out.push('}');
    }
}

/// `{"events":[…]}` from comma-separated event lists (empty ones skipped).
pub fn events_body(lists: &[&[u8]]) -> Vec<u8> {
    let size: usize = lists.iter().map(|l| l.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 13);
    out.extend_from_slice(b"{\"events\":[");
    let mut first = true;
    for list in lists.iter().filter(|l| !l.is_empty()) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(list);
    }
    out.extend_from_slice(b"]}");
    out
}

/// An SSE frame: `event: <name>`, `id: <id>`, and `data: {"events":[…]}` built from the
/// comma-separated event lists.
pub fn frame(name: &str, id: u64, lists: &[&[u8]]) -> Vec<u8> {
    let mut out = frame_head(name, id);
    out.extend_from_slice(&events_body(lists));
    out.extend_from_slice(b"\n\n");
    out
}

/// The start of an SSE frame up to and including `data: `; the data must follow on one line,
/// then `\n\n`.
pub fn frame_head(name: &str, id: u64) -> Vec<u8> {
    format!("event: {name}\nid: {id}\ndata: ").into_bytes()
}

/// Parses an event id a client sent back (`Last-Event-ID`, or an ETag with or without quotes
/// and `W/`).
pub fn parse_id(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    let t = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests;
