//! The shape of the source, kept by a test: every `crate::`/`super::` path in `src/` is an
//! edge from its file to the module it names. Between top-level modules an edge must go down
//! the layer table below (an upward import fails here, not in review); between the files of one
//! top-level module, edges must not form a cycle. Test code (`tests.rs`, `*_tests.rs`, modules
//! declared under `#[cfg(test)]`, the inline `mod tests`) is left out, as are comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, bottom layer first. A module may use those of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["token", "json", "backoff", "watch", "sse", "explain"],
    &["document", "config"],
    &["evaluate", "otel"],
    &["snapshot", "metrics"],
    &["change", "upstream"],
    &["delta", "publish", "auth", "persist", "remote_write"],
    &["stream", "fleet", "offline"],
    &["refresh"],
    &["usage"],
    &["server"],
    &["instance"],
    &["start"],
];

/// A file's module path (`server::handler::api`), from its path under `src/`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments and without the inline test module at the end.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Modules declared `#[cfg(test)] mod name;` in `code` of module `module`.
fn test_children(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        rest = &rest[at + "#[cfg(test)]".len()..];
        let item = rest.trim_start();
        let item = item.strip_prefix("pub(super) ").unwrap_or(item);
        let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
        if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.split(';').next()) {
            if !name.contains('{') && !name.contains('\n') {
                out.push(
                    format!("{module}::{}", name.trim())
                        .trim_start_matches("::")
                        .into(),
                );
            }
        }
    }
    out
}

/// The paths after `crate::` and `super::` in `code`, expanded through `{…}` groups, as
/// segment lists with their root (`crate` or `super`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["crate::", "super::"]
            .iter()
            .find(|root| bytes[i..].iter().take(root.len()).copied().eq(root.chars()));
        let boundary = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        match starts {
            Some(root) if boundary => {
                let (mut found, end) = path_at(&bytes, i);
                out.append(&mut found);
                i = end.max(i + root.len());
            }
            _ => i += 1,
        }
    }
    out
}

/// The path(s) starting at `i`; returns them and where they end.
fn path_at(s: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    loop {
        let start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        if i > start {
            segments.push(s[start..i].iter().collect::<String>());
        }
        if s.get(i) == Some(&':') && s.get(i + 1) == Some(&':') {
            i += 2;
            if s.get(i) == Some(&'{') {
                // A group: each item continues this path.
                let mut out = Vec::new();
                i += 1;
                loop {
                    while s.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        i += 1;
                    }
                    if s.get(i).is_none_or(|c| *c == '}') {
                        return (out, i + 1);
                    }
                    let (items, end) = path_at(s, i);
                    for item in items {
                        out.push(segments.iter().cloned().chain(item).collect());
                    }
                    // Skip `as name` and anything else up to the next item.
                    i = end;
                    while s.get(i).is_some_and(|c| *c != ',' && *c != '}') {
                        i += 1;
                    }
                }
            }
            continue;
        }
        return (vec![segments], i);
    }
}

/// The module `path` (from a file of `module`) names: its longest prefix that is a module.
fn resolve(module: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut base: Vec<String> = module.split("::").map(str::to_string).collect();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    (0..=rest.len()).rev().find_map(|n| {
        let candidate: Vec<String> = base.iter().chain(&rest[..n]).cloned().collect();
        let name = candidate.join("::");
        modules.contains(&name).then_some(name)
    })
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn imports_go_down_the_layers_and_no_files_form_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut code = BTreeMap::new();
    let mut tests = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = code_of(&std::fs::read_to_string(f).unwrap());
        tests.extend(test_children(&module, &text));
        let name = rel.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            tests.insert(module.clone());
        }
        code.insert(module, text);
    }
    let modules: BTreeSet<String> = code.keys().cloned().collect();
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&top(m)));
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &code {
        if tests.contains(module) {
            continue;
        }
        let Some(from) = layer(module) else {
            problems.push(format!("{module} is in no layer of the table"));
            continue;
        };
        for path in paths(text) {
            let Some(target) = resolve(module, &path, &modules) else {
                continue;
            };
            if target == *module || tests.contains(&target) {
                continue;
            }
            if top(&target) == top(module) {
                edges.entry(module.clone()).or_default().insert(target);
            } else if layer(&target).is_none_or(|to| to >= from) {
                problems.push(format!("{module} uses {target} ({})", path.join("::")));
            }
        }
    }
    problems.extend(cycles(&edges));
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each cycle among the files of one top-level module, as `a -> b -> a`.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            found.push(format!("import cycle: {}", cycle.join(" -> ")));
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn the_path_reader_sees_groups_nested_groups_and_super() {
    let found = paths("use crate::{a::{B, c::D}, e as f};\nlet x = super::super::g::h();");
    let shown: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        [
            "crate::a::B",
            "crate::a::c::D",
            "crate::e",
            "super::super::g::h"
        ]
    );
}
