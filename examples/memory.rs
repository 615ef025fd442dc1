//! Where a flag set's memory goes: `cargo run --release --example memory -- features.json`
//! prints the resident size after parsing the document, after compiling Unleash's engine
//! (`unleash-yggdrasil`), after preparing the Frontend API view, and after a second whole view
//! (what a snapshot swap holds for a moment). Each step waits two seconds so that the allocator
//! has given back what the step freed.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods // a plain program, no runtime to block
)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
fn rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1048576.0
}
fn main() {
    let settle = || std::thread::sleep(std::time::Duration::from_secs(2));
    let path = std::env::args().nth(1).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    println!(
        "start {:.1} MiB (file {:.1} MiB)",
        rss(),
        bytes.len() as f64 / 1048576.0
    );
    let doc = flagpost::document::Document::parse(&bytes).unwrap();
    drop(bytes);
    settle();
    println!("document {:.1} MiB", rss());
    let typed: Vec<_> = doc.features.iter().map(|f| f.typed().unwrap()).collect();
    settle();
    println!("typed copies {:.1} MiB", rss());
    drop(typed);
    let (engine, _) = flagpost::evaluate::Engine::compile(&doc);
    settle();
    println!("engine {:.1} MiB", rss());
    let prepared = engine.prepare(&doc);
    settle();
    println!("prepared {:.1} MiB ({} flags)", rss(), prepared.len());
    let (view, _) = flagpost::evaluate::FrontendView::compile(&doc);
    settle();
    println!("+ a second full view {:.1} MiB", rss());
    drop(view);
    drop(engine);
    settle();
    println!("engines dropped {:.1} MiB", rss());
}
