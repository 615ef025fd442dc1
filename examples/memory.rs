//! Where a flag set's memory goes: `cargo run --release --example memory -- features.json`
//! prints the bytes held (jemalloc's own count, exact) and the resident size after each step
//! of building a snapshot as flagpost does: the parsed document, the compiled flags
//! (`unleash-yggdrasil`'s rules), the Frontend API view, the whole snapshot, and a second
//! snapshot (what a swap holds for a moment). A typed copy of every feature, which flagpost
//! does not keep, is shown for comparison.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods // a plain program, no runtime to block
)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The bytes the program holds, as jemalloc counts them.
fn live() -> isize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap() as isize
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / 1048576.0
}
fn rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1048576.0
}
struct Steps(isize);
impl Steps {
    /// Prints what `label` added to the bytes held since the last step.
    fn step(&mut self, label: &str) {
        std::thread::sleep(std::time::Duration::from_secs(2)); // let the allocator purge
        let now = live();
        println!(
            "{label:<28} +{:>6.1} MiB held, {:>6.1} MiB in all, RSS {:>6.1} MiB",
            mib(now - self.0),
            mib(now),
            rss()
        );
        self.0 = now;
    }
}
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mut steps = Steps(live());
    let bytes = std::fs::read(&path).unwrap();
    steps.step("file read");
    let doc = flagpost::document::Document::parse(&bytes).unwrap();
    drop(bytes);
    println!("{} flags", doc.features.len());
    steps.step("document (file dropped)");
    let typed: Vec<_> = doc.features.iter().map(|f| f.typed().unwrap()).collect();
    steps.step("a typed copy (not kept)");
    drop(typed);
    steps.step("typed copy dropped");
    let (engine, _) = flagpost::evaluate::Engine::compile(&doc);
    steps.step("engine");
    drop(engine);
    steps.step("engine dropped");
    let (view, _) = flagpost::evaluate::FrontendView::compile(&doc);
    steps.step("frontend view (engine incl.)");
    drop(view);
    steps.step("view dropped");
    let (snapshot, _) = flagpost::snapshot::Snapshot::build("development", doc.clone());
    steps.step("snapshot (shares the JSON)");
    let (second, _) = flagpost::snapshot::Snapshot::build("development", doc.clone());
    steps.step("+ a second snapshot");
    drop(second);
    drop(snapshot);
    steps.step("snapshots dropped");
}
