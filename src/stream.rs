//! Server-Sent Events streams to server SDKs: the limit on open streams, one task per stream
//! that writes the changes its filter sees (rendered once per filter, see [`crate::delta`]),
//! heartbeats, and the reasons a stream ends.
//!
//! A stream's frames go through a small bounded channel to its response body: a client that
//! does not read fills the connection's buffer, then this channel, and is then closed (it
//! reconnects and resumes) instead of being buffered for without bound. One ticker task per
//! process sends every stream its heartbeat and tells them to check their token again when
//! verdicts or serving scopes change; a draining instance ends its streams so SDKs reconnect
//! elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, AuthError, Authenticator};
use crate::change::ChangeSet;
use crate::config::StreamingSettings;
use crate::delta;
use crate::metrics::Metrics;
use crate::snapshot::{Filter, Store};

/// Frames queued for a stream's connection beyond what it has taken: more and it is too slow.
const QUEUED_FRAMES: usize = 16;

/// What the ticker tells every stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    heartbeat: u64,
    recheck: u64,
    /// Streams opened before this drain generation end.
    drain: u64,
    stopped: bool,
}

/// Why a stream ended (the `reason` label of `flagpost_streams_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client went away.
    Client,
    /// The client did not read fast enough.
    Slow,
    /// Its token is no longer valid.
    Revoked,
    /// Its scope is no longer served.
    Scope,
    /// flagpost is draining.
    Drain,
    /// flagpost is stopping.
    Shutdown,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::Slow => "slow",
            Closed::Revoked => "revoked",
            Closed::Scope => "scope",
            Closed::Drain => "drain",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// The open streams.
#[derive(Debug)]
pub struct Streams {
    settings: StreamingSettings,
    open: AtomicUsize,
    control: watch::Sender<Control>,
    metrics: Arc<Metrics>,
    /// Every stream's task: [`Streams::finished`] waits for them at shutdown.
    tasks: TaskTracker,
}

/// A place among the open streams, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Streams>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.streams_open.dec();
    }
}

/// What a stream's task needs.
#[derive(Debug)]
pub struct Stream {
    pub slot: Slot,
    pub access: Access,
    pub filter: Filter,
    /// The revision the client has (what its first frame brought it to).
    pub sent: u64,
    pub changes: broadcast::Receiver<Arc<ChangeSet>>,
}

impl Streams {
    pub fn new(settings: StreamingSettings, metrics: Arc<Metrics>) -> Arc<Streams> {
        Arc::new(Streams {
            settings,
            open: AtomicUsize::new(0),
            control: watch::Sender::new(Control::default()),
            metrics,
            tasks: TaskTracker::new(),
        })
    }

    pub fn settings(&self) -> &StreamingSettings {
        &self.settings
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more stream, unless `max_streams` are open.
    pub fn try_open(self: &Arc<Self>) -> Option<Slot> {
        let max = self.settings.max_streams;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.streams_open.inc();
        Some(Slot(self.clone()))
    }

    /// Ends the streams open now (flagpost is draining: their SDKs reconnect, to another
    /// instance once the load balancer has noticed). Streams opened from now on last until
    /// [`Streams::stop`].
    pub fn drain(&self) {
        self.control.send_modify(|c| c.drain += 1);
    }

    /// Ends every stream (the listeners are closed).
    pub fn stop(&self) {
        self.control.send_modify(|c| c.stopped = true);
    }

    /// Completes when every stream's task has ended (after [`Streams::stop`]: at once, or
    /// when a task blocked on its client's socket gives up).
    pub async fn finished(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Heartbeats every `heartbeat_interval`, and a token check on every stream whenever
    /// verdicts or serving scopes change, until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        mut verdicts: watch::Receiver<u64>,
        mut scopes: watch::Receiver<u64>,
        cancel: CancellationToken,
    ) {
        let period = self.settings.heartbeat_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.control.send_modify(|c| c.heartbeat += 1),
                Ok(()) = verdicts.changed() => self.control.send_modify(|c| c.recheck += 1),
                Ok(()) = scopes.changed() => self.control.send_modify(|c| c.recheck += 1),
            }
        }
    }

    /// Starts a stream whose first frames are `first`; returns what its response body reads.
    pub fn start(
        self: &Arc<Self>,
        stream: Stream,
        first: Vec<Bytes>,
        auth: Arc<Authenticator>,
        store: Arc<Store>,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(QUEUED_FRAMES + first.len());
        let bytes: usize = first.iter().map(Bytes::len).sum();
        for frame in first {
            // Cannot fail: the channel has room for them all and the receiver is here.
            let _ = tx.try_send(frame);
        }
        self.metrics.stream_events.inc();
        self.metrics.stream_bytes.inc_by(bytes as u64);
        let control = self.control.subscribe();
        let me = self.clone();
        self.tasks.spawn(async move {
            let reason = me.pump(stream, control, &tx, &auth, &store).await;
            me.metrics
                .streams_closed
                .with_label_values(&[reason.label()])
                .inc();
            tracing::debug!(reason = reason.label(), "stream closed");
        });
        rx
    }

    /// Writes a stream's changes and heartbeats until it must end; returns why it ended.
    async fn pump(
        &self,
        mut s: Stream,
        mut control: watch::Receiver<Control>,
        tx: &mpsc::Sender<Bytes>,
        auth: &Authenticator,
        store: &Store,
    ) -> Closed {
        let seen = *control.borrow_and_update();
        if seen.stopped {
            return Closed::Shutdown;
        }
        let (opened_in, mut heartbeat, mut recheck) = (seen.drain, seen.heartbeat, seen.recheck);
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return Closed::Client,
                changed = control.changed() => {
                    if changed.is_err() {
                        return Closed::Shutdown;
                    }
                    let c = *control.borrow_and_update();
                    if c.stopped {
                        return Closed::Shutdown;
                    }
                    if c.drain > opened_in {
                        return Closed::Drain;
                    }
                    if c.recheck != recheck {
                        recheck = c.recheck;
                        if let Some(reason) = still_allowed(&s, auth, store).await {
                            return reason;
                        }
                    }
                    if c.heartbeat != heartbeat {
                        heartbeat = c.heartbeat;
                        if let Err(reason) = self.send(tx, Bytes::from_static(delta::HEARTBEAT)) {
                            return reason;
                        }
                    }
                }
                change = s.changes.recv() => match change {
                    Ok(change) if change.revision > s.sent => {
                        s.sent = change.revision;
                        let rendered = delta::render(&change, &s.filter);
                        if !rendered.frame.is_empty() {
                            if let Err(reason) = self.send(tx, rendered.frame.clone()) {
                                return reason;
                            }
                            self.metrics.stream_events.inc();
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Closed::Slow,
                    Err(broadcast::error::RecvError::Closed) => return Closed::Shutdown,
                },
            }
        }
    }

    fn send(&self, tx: &mpsc::Sender<Bytes>, frame: Bytes) -> Result<(), Closed> {
        let len = frame.len() as u64;
        match tx.try_send(frame) {
            Ok(()) => {
                self.metrics.stream_bytes.inc_by(len);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Closed::Slow),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed::Client),
        }
    }
}

/// Whether a stream's token is still valid with the same scope, and that scope still served:
/// `None` if so, otherwise why the stream ends.
async fn still_allowed(s: &Stream, auth: &Authenticator, store: &Store) -> Option<Closed> {
    let header = s.access.token.expose().as_bytes();
    match auth.resolve(Some(header)).await {
        Ok(now) if now.scope == s.access.scope && now.kind == s.access.kind => {}
        // Upstream cannot be asked now: the stream goes on with what it had.
        Err(AuthError::UpstreamUnavailable) => {}
        Ok(_) | Err(_) => return Some(Closed::Revoked),
    }
    match store.admit(&s.access.scope) {
        Ok(_) => None,
        Err(_) => Some(Closed::Scope),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfiguredToken;
    use crate::document::Document;
    use crate::publish::Publisher;
    use crate::token::{Projects, Scope, Token, TokenKind};
    use std::time::Duration;

    const TOKEN: &str = "*:development.stream-test-token";

    fn settings(max_streams: usize) -> StreamingSettings {
        StreamingSettings {
            max_streams,
            heartbeat_interval: Duration::from_secs(20),
            history: 10,
            advertise: false,
        }
    }

    struct Rig {
        streams: Arc<Streams>,
        publisher: Arc<Publisher>,
        auth: Arc<Authenticator>,
        store: Arc<Store>,
    }

    fn rig(max_streams: usize) -> Rig {
        let metrics = Arc::new(Metrics::new(&[]));
        let scope = Scope::new("development", Projects::All);
        let token = Token::parse(TOKEN).unwrap();
        let auth = Arc::new(Authenticator::offline(vec![ConfiguredToken {
            token,
            kind: TokenKind::Client,
            scope,
        }]));
        let publisher = Arc::new(Publisher::new(
            Store::new([("development".to_string(), Projects::All)]),
            metrics.clone(),
            10,
        ));
        let store = publisher.store();
        publisher.publish_blocking(
            "development",
            Document::parse(br#"{"features":[{"name":"a","enabled":true}]}"#).unwrap(),
        );
        Rig {
            streams: Streams::new(settings(max_streams), metrics),
            publisher,
            auth,
            store,
        }
    }

    fn open(r: &Rig) -> mpsc::Receiver<Bytes> {
        let slot = r.streams.try_open().unwrap();
        let (since, changes) = r.publisher.open("development", None).unwrap();
        let stream = Stream {
            slot,
            access: Access {
                token: Token::parse(TOKEN).unwrap(),
                kind: TokenKind::Client,
                scope: Scope::new("development", Projects::All),
            },
            filter: Filter::new(Projects::All, None),
            sent: since.snapshot.revision(),
            changes,
        };
        r.streams.start(
            stream,
            vec![Bytes::from_static(b"first")],
            r.auth.clone(),
            r.store.clone(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_every_interval_and_changes_at_once() {
        let r = rig(10);
        let cancel = CancellationToken::new();
        tokio::spawn(r.streams.clone().run(
            r.auth.revisions(),
            r.publisher.scope_changes(),
            cancel.clone(),
        ));
        let mut rx = open(&r);
        assert_eq!(rx.recv().await.unwrap(), "first");
        let started = tokio::time::Instant::now();
        assert_eq!(rx.recv().await.unwrap(), delta::HEARTBEAT);
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        assert_eq!(rx.recv().await.unwrap(), delta::HEARTBEAT);
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        r.publisher.publish_blocking(
            "development",
            Document::parse(br#"{"features":[{"name":"a","enabled":false}]}"#).unwrap(),
        );
        let frame = rx.recv().await.unwrap();
        assert!(
            frame.starts_with(b"event: unleash-updated\nid: "),
            "{frame:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(40), "no wait");
        cancel.cancel();
    }

    #[tokio::test]
    async fn the_limit_holds_and_every_end_gives_its_place_back() {
        let r = rig(2);
        let a = open(&r);
        let mut b = open(&r);
        assert!(r.streams.try_open().is_none(), "two is the limit");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), async {
            while r.streams.open() != 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        r.streams.drain();
        assert_eq!(b.recv().await.unwrap(), "first");
        assert!(b.recv().await.is_none(), "ended by the drain");
        let mut c = open(&r);
        assert_eq!(c.recv().await.unwrap(), "first");
        r.streams.stop();
        assert!(c.recv().await.is_none(), "ended at stop");
        // Every stream's task is owned: all of them have ended.
        tokio::time::timeout(Duration::from_secs(5), r.streams.finished())
            .await
            .expect("every stream task ends at stop");
        assert_eq!(r.streams.open(), 0);
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_closed_not_buffered() {
        let r = rig(10);
        let mut rx = open(&r);
        for i in 0..(QUEUED_FRAMES as u64 + 3) {
            let doc =
                format!(r#"{{"features":[{{"name":"a","enabled":true,"description":"{i}"}}]}}"#);
            r.publisher
                .publish_blocking("development", Document::parse(doc.as_bytes()).unwrap());
            tokio::task::yield_now().await;
        }
        let mut frames = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            frames += 1;
        }
        assert!(frames <= QUEUED_FRAMES + 1, "{frames} frames queued");
        assert_eq!(r.streams.open(), 0, "closed as too slow");
    }
}
