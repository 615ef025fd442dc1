//! Hot functions, on the benchmark data set (`benches/gen_features.py`, generated on first run
//! into `target/bench-data/`): token parsing, the scope check, the whole Frontend API response
//! for one context (evaluate every flag, bytes out), the Client API body for a scope already
//! served (memoised), and building a snapshot (parse, compile, index) for 200 and 5,000 flags;
//! then the frontend response and the snapshot build at 200, 2,000 and 10,000 flags, to show how
//! the cost grows with the work.
//!
//! Run: `cargo bench --bench hot_paths` (the remembered-ETag path and the one-project token too).
//! Results (medians) are in `benches/RESULTS.md`; on a
//! shared 2 vCPU AMD EPYC (Linux 6.18), 2026-11-28:
//!
//! | bench | median |
//! |---|---|
//! | token/parse | 0.09 µs |
//! | scope/covers | 0.03 µs |
//! | frontend/200 flags, GET query | 46.7 µs |
//! | frontend/200 flags, POST body | 51.4 µs |
//! | client/200 flags, memoised body | 0.11 µs (rendered and hashed each time: 8.2 µs) |
//! | snapshot build/200, /5000 | 9.1 ms, 278 ms |
//! | scaling/frontend 200, 2000, 10000 | 40.3 µs, 694 µs, 14.7 ms |
//! | scaling/snapshot build 200, 2000, 10000 | 9.0 ms, 98.8 ms, 538 ms |
//! | scaling/200 flags evaluated out of 200, 2000, 10000 | 40.6 µs, 39.2 µs, 37.7 µs |

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flagpost::document::Document;
use flagpost::evaluate::{
    chance_part, context_from_json, context_from_query, etag_of_parts, fix_current_time_at,
    frontend_answer, Clock, Listing, Memo,
};
use flagpost::snapshot::Snapshot;
use flagpost::token::{Projects, Scope, Token};
use unleash_types::client_features::Context;

/// The data set with `count` flags, generated once.
fn data(count: usize) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let path = dir.join(format!("features-{count}.json"));
    if !path.exists() {
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let status = Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/gen_features.py"))
            .args(["--count", &count.to_string(), "--out"])
            .arg(&path)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "python3 benches/gen_features.py failed"
        );
    }
    std::fs::read(&path).unwrap_or_default()
}

fn snapshot(count: usize) -> Snapshot {
    let bytes = data(count);
    let document = Document::parse(&bytes).unwrap_or_default();
    Snapshot::build("development", document).0
}

const QUERY: &str = "userId=123&appName=bench";
const POST: &[u8] = br#"{"context":{"userId":"123","appName":"bench","sessionId":"s-42","properties":{"country":"NO","tier":"pro","appVersion":"2.3.1"}}}"#;

fn tokens(c: &mut Criterion) {
    let raw = "*:development.558f1c5a2110417c22e619337cff85c66597aab6395e58b9be844f47";
    c.bench_function("token/parse", |b| b.iter(|| Token::parse(black_box(raw))));
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
    let s = snapshot(200);
    // As served: the context read, the clock formatted once, every flag evaluated, bytes out.
    c.bench_function("frontend/200 flags, GET query", |b| {
        b.iter(|| respond(&s, &Projects::All))
    });
    c.bench_function("frontend/200 flags, POST body", |b| {
        b.iter(|| {
            let mut ctx = context_from_json(black_box(POST)).unwrap_or_default();
            fix_current_time_at(&mut ctx, chrono::Utc::now());
            frontend_answer(
                (s.frontend(), s.document()),
                &Projects::All,
                &ctx,
                Clock::Server,
                Listing::Enabled,
            )
            .body
        })
    });
    // Without the clock formatted once: the engine formats it per date constraint.
    c.bench_function("frontend/200 flags, GET query, clock per constraint", |b| {
        b.iter(|| {
            let ctx = context_from_query(black_box(QUERY)).unwrap_or_default();
            frontend_answer(
                (s.frontend(), s.document()),
                &Projects::All,
                &ctx,
                Clock::Server,
                Listing::Enabled,
            )
            .body
        })
    });
}

fn client(c: &mut Criterion) {
    let s = snapshot(200);
    let projects = Projects::All;
    let _ = s.client_body(&projects, None);
    c.bench_function("client/200 flags, memoised body", |b| {
        b.iter(|| s.client_body(black_box(&projects), None))
    });
    // What serving would cost if the body were rendered per request (as Unleash Edge does).
    c.bench_function(
        "client/200 flags, body rendered and hashed each time",
        |b| b.iter(|| flagpost::snapshot::Body::new(s.document().to_json().into_bytes())),
    );
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot build");
    g.sample_size(10);
    for count in [200, 5000] {
        let bytes = data(count);
        g.throughput(Throughput::Elements(count as u64));
        g.bench_with_input(BenchmarkId::from_parameter(count), &bytes, |b, bytes| {
            b.iter(|| {
                let doc = Document::parse(bytes).unwrap_or_default();
                Snapshot::build("development", doc)
            })
        });
    }
    g.finish();
}

/// A Frontend API answer as served for `QUERY`: the context read, the clock read once, the
/// flags of `projects` evaluated, bytes out.
fn respond(s: &Snapshot, projects: &Projects) -> Vec<u8> {
    let mut ctx = context_from_query(black_box(QUERY)).unwrap_or_default();
    fix_current_time_at(&mut ctx, chrono::Utc::now());
    frontend_answer(
        (s.frontend(), s.document()),
        projects,
        &ctx,
        Clock::Server,
        Listing::Enabled,
    )
    .body
}

fn scaling(c: &mut Criterion) {
    let sets: Vec<(usize, Snapshot)> = [200, 2000, 10_000]
        .into_iter()
        .map(|count| (count, snapshot(count)))
        .collect();
    // A one-project token walks only its project's flags (40% of each set).
    let default = Projects::from_names(["default"]);
    for (group, projects) in [
        ("scaling/frontend", &Projects::All),
        ("scaling/frontend, default-project token", &default),
    ] {
        let mut g = c.benchmark_group(group);
        g.sample_size(10);
        for (count, s) in &sets {
            let in_scope = s
                .features()
                .iter()
                .filter(|f| projects.contains(&f.project))
                .count();
            g.throughput(Throughput::Elements(in_scope as u64));
            g.bench_with_input(BenchmarkId::from_parameter(count), s, |b, s| {
                b.iter(|| respond(s, projects))
            });
        }
        g.finish();
    }
    // The same 200 flags (the last ones) evaluated out of ever larger sets, by position: what
    // the set's size alone costs the engine, without the other flags' rules walked.
    let mut g = c.benchmark_group("scaling/200 flags evaluated out of");
    g.sample_size(10);
    let mut ctx = context_from_query(QUERY).unwrap_or_default();
    fix_current_time_at(&mut ctx, chrono::Utc::now());
    for (count, s) in &sets {
        let last = (count - 200)..*count;
        g.bench_with_input(BenchmarkId::from_parameter(count), s, |b, s| {
            b.iter(|| {
                for i in last.clone() {
                    black_box(s.frontend().engine().evaluate_at(i, &ctx));
                }
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("scaling/snapshot build");
    g.sample_size(10);
    for count in [200, 2000, 10_000] {
        let bytes = data(count);
        g.throughput(Throughput::Elements(count as u64));
        g.bench_with_input(BenchmarkId::from_parameter(count), &bytes, |b, bytes| {
            b.iter(|| {
                let doc = Document::parse(bytes).unwrap_or_default();
                Snapshot::build("development", doc)
            })
        });
    }
    g.finish();
}

/// A repeated conditional poll: the remembered path (the key of the request, the memo lookup,
/// the ETag from the remembered hash) against evaluating the answer, at 200 flags without a
/// flag chance decides for this context.
fn remembered(c: &mut Criterion) {
    let s = snapshot(200);
    let projects = Projects::All;
    let memo = Memo::new(100_000, std::time::Duration::from_secs(3600));
    let mut ctx = context_from_query(QUERY).unwrap_or_default();
    fix_current_time_at(&mut ctx, chrono::Utc::now());
    let answer = frontend_answer(
        (s.frontend(), s.document()),
        &projects,
        &ctx,
        Clock::Server,
        Listing::Enabled,
    );
    let key = |ctx: &Context| {
        Memo::key(
            ("development", s.revision()),
            &projects,
            Listing::Enabled,
            ctx,
        )
    };
    memo.put(key(&ctx), answer.stable, i64::MAX);
    // As the handler does: the memo, then the flags chance decides (in this set, random
    // stickiness ones: evaluated on every poll).
    c.bench_function("frontend/200 flags, remembered ETag", |b| {
        b.iter(|| {
            let mut ctx = context_from_query(black_box(QUERY)).unwrap_or_default();
            let stable = memo.get(key(&ctx), 0).unwrap_or_default();
            fix_current_time_at(&mut ctx, chrono::Utc::now());
            let chance = chance_part(
                (s.frontend(), s.document()),
                &projects,
                &ctx,
                Clock::Server,
                Listing::Enabled,
            );
            etag_of_parts(stable, chance) == answer.etag()
        })
    });
    c.bench_function("frontend/200 flags, evaluated answer and ETag", |b| {
        b.iter(|| {
            let mut ctx = context_from_query(black_box(QUERY)).unwrap_or_default();
            fix_current_time_at(&mut ctx, chrono::Utc::now());
            frontend_answer(
                (s.frontend(), s.document()),
                &projects,
                &ctx,
                Clock::Server,
                Listing::Enabled,
            )
            .etag()
        })
    });
}

criterion_group!(benches, tokens, frontend, client, build, scaling, remembered);
criterion_main!(benches);
