//! Hot functions: token parsing, the scope check, and evaluating the example feature set for one
//! context (the whole Frontend API body, bytes out).
//!
//! Run: `cargo bench --bench hot_paths`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flagpost::evaluate::{context_from_query, frontend_response, Listing};
use flagpost::snapshot::{Document, Snapshot};
use flagpost::token::{Projects, Scope, Token};

fn tokens(c: &mut Criterion) {
    c.bench_function("token/parse", |b| {
        b.iter(|| {
            Token::parse(black_box(
                "*:development.558f1c5a2110417c22e619337cff85c66597aab6395e58b9be844f47",
            ))
        })
    });
    let serving = Scope::new(
        "development",
        Projects::from_names(["default", "checkout", "mobile"]),
    );
    let asked = Scope::new("development", Projects::from_names(["default", "mobile"]));
    c.bench_function("scope/covers", |b| {
        b.iter(|| black_box(&serving).covers(black_box(&asked)))
    });
}

fn frontend(c: &mut Criterion) {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/features.json"
    ))
    .unwrap_or_default();
    let Ok(document) = Document::parse(&bytes) else {
        return;
    };
    let (snapshot, _) = Snapshot::build("development", document);
    c.bench_function("frontend/examples", |b| {
        b.iter(|| {
            let ctx = context_from_query(black_box("userId=123&appName=bench")).unwrap_or_default();
            frontend_response(&snapshot, &Projects::All, &ctx, Listing::Enabled)
        })
    });
}

criterion_group!(benches, tokens, frontend);
criterion_main!(benches);
