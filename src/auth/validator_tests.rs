//! The validator's fleet branch, with a fake of [`SharedVerdicts`]: no Redis needed.

use std::sync::Mutex;

use tokio::sync::watch;

use super::*;
use crate::auth::BoxFuture;
use crate::auth::SharedVerdict;
use crate::token::{Projects, Scope, TokenKind};

/// A fleet in memory: the verdicts it holds, the tokens another instance has claimed.
struct Fake {
    held: Mutex<HashMap<String, SharedVerdict>>,
    claimed_elsewhere: Vec<String>,
    announced: watch::Sender<u64>,
    ttl: Duration,
}

impl Fake {
    fn new(ttl: Duration) -> Arc<Fake> {
        Arc::new(Fake {
            held: Mutex::new(HashMap::new()),
            claimed_elsewhere: vec!["*:development.claimed-0002".into()],
            announced: watch::Sender::new(0),
            ttl,
        })
    }

    /// Another instance got its answer: stored, then announced.
    fn answer(&self, raw: &str, verdict: SharedVerdict) {
        self.held.lock().unwrap().insert(raw.into(), verdict);
        self.announced.send_modify(|n| *n += 1);
    }
}

impl SharedVerdicts for Fake {
    fn verdicts<'a>(&'a self, raws: &'a [String]) -> BoxFuture<'a, HashMap<String, SharedVerdict>> {
        let held = self.held.lock().unwrap();
        let found = raws
            .iter()
            .filter_map(|r| Some((r.clone(), held.get(r)?.clone())))
            .collect();
        Box::pin(async move { found })
    }

    fn claim<'a>(&'a self, raws: &'a [String]) -> BoxFuture<'a, Vec<bool>> {
        let mine = raws
            .iter()
            .map(|r| !self.claimed_elsewhere.contains(r))
            .collect();
        Box::pin(async move { mine })
    }

    fn claim_ttl(&self) -> Duration {
        self.ttl
    }

    fn share<'a>(&'a self, _: &'a [(String, SharedVerdict)], _: &'a [String]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn announced(&self) -> watch::Receiver<u64> {
        self.announced.subscribe()
    }
}

fn lane() -> Lane {
    let (_tx, rx) = mpsc::channel(1);
    Lane {
        rx,
        caches: Caches {
            valid: moka::sync::Cache::new(100),
            invalid: moka::sync::Cache::new(100),
            digests: moka::sync::Cache::new(100),
        },
        upstream: crate::auth::tests::unreached_upstream(),
        metrics: Arc::new(Metrics::new(&[])),
        fleet: None,
    }
}

type Waiting = HashMap<String, Vec<oneshot::Sender<Verdict>>>;

fn waiting(raws: &[&str]) -> (Waiting, Vec<oneshot::Receiver<Verdict>>) {
    let mut w = HashMap::new();
    let mut rxs = Vec::new();
    for raw in raws {
        let (tx, rx) = oneshot::channel();
        w.insert(raw.to_string(), vec![tx]);
        rxs.push(rx);
    }
    (w, rxs)
}

fn valid() -> SharedVerdict {
    SharedVerdict::Valid(
        TokenKind::Frontend,
        Scope::new("development", Projects::All),
    )
}

#[tokio::test(start_paused = true)]
async fn a_verdict_the_fleet_holds_is_answered_without_upstream() {
    let fake = Fake::new(Duration::from_secs(5));
    fake.answer("*:development.known-0001", valid());
    let lane = lane();
    let (mut w, mut rxs) = waiting(&["*:development.known-0001", "*:development.new-0003"]);
    lane.ask_fleet(fake.as_ref(), &mut w).await;
    assert!(matches!(rxs[0].try_recv(), Ok(Verdict::Valid(_))));
    assert!(lane
        .caches
        .by_digest(&crate::token::digest("*:development.known-0001"))
        .is_some());
    // Nobody else asks about the new one: left for this lane to ask upstream, at once.
    assert_eq!(w.keys().collect::<Vec<_>>(), ["*:development.new-0003"]);
    assert!(rxs[1].try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_lane_waiting_for_another_instance_is_woken_by_the_announcement() {
    let fake = Fake::new(Duration::from_secs(5));
    let lane = lane();
    let (mut w, mut rxs) = waiting(&["*:development.claimed-0002"]);
    let other = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        other.answer("*:development.claimed-0002", SharedVerdict::Invalid);
    });
    let started = tokio::time::Instant::now();
    lane.ask_fleet(fake.as_ref(), &mut w).await;
    let took = started.elapsed();
    assert!(matches!(rxs[0].try_recv(), Ok(Verdict::Refused(_))));
    assert!(w.is_empty());
    // Woken by the announcement, not by the fallback look.
    assert!(took < FLEET_WAIT_FALLBACK, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_verdict_that_never_comes_is_waited_for_at_most_the_claim() {
    let fake = Fake::new(Duration::from_secs(2));
    let lane = lane();
    let (mut w, _rxs) = waiting(&["*:development.claimed-0002"]);
    let started = tokio::time::Instant::now();
    lane.ask_fleet(fake.as_ref(), &mut w).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2300),
        "{took:?}"
    );
    assert_eq!(w.len(), 1, "left for this lane to ask upstream");
}
