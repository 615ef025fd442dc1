//! Connection timeouts hyper does not give separately: a client must send a request's headers
//! within the header-read timeout once it starts (and a new connection must start one within it),
//! while a keep-alive connection may sit idle between requests for the (longer) idle timeout.
//! [`TimedIo`] enforces both on the socket; the request handler marks requests in progress on
//! the connection's [`ConnClock`], during which neither applies.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface: a client speaking h2 cleartext starts with it.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the handler tells the socket about a connection.
#[derive(Debug)]
pub struct ConnClock {
    opened: Instant,
    active: AtomicUsize,
    /// Requests finished on this connection.
    completed: AtomicU64,
    /// Nanoseconds since `opened` when the last request finished.
    last_done: AtomicU64,
}

impl ConnClock {
    pub fn new() -> Arc<ConnClock> {
        Arc::new(ConnClock {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
        })
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the last request finished, if one has.
    fn idle_from(&self) -> Option<Instant> {
        (self.completed.load(Ordering::Acquire) > 0)
            .then(|| self.opened + Duration::from_nanos(self.last_done.load(Ordering::Acquire)))
    }

    /// A request's headers arrived: no socket deadline until it is answered.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }
}

/// Marks the end of a request when dropped (also when the client went away).
#[derive(Debug)]
pub struct RequestGuard(Arc<ConnClock>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.last_done.store(self.0.nanos(), Ordering::Release);
        self.0.completed.fetch_add(1, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Unknown,
    Http1,
    Http2,
}

/// A socket with the header-read and idle deadlines.
pub struct TimedIo<S> {
    inner: S,
    clock: Arc<ConnClock>,
    header_timeout: Duration,
    idle_timeout: Duration,
    protocol: Protocol,
    preface_seen: usize,
    /// When the first bytes of a request not yet handed to the handler arrived, and how many
    /// requests had finished then (a later finish means those bytes were that request's).
    head_started: Option<(Instant, u64)>,
    /// Last time bytes arrived (HTTP/2 idle accounting).
    last_read: Instant,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl<S> TimedIo<S> {
    pub fn new(
        inner: S,
        clock: Arc<ConnClock>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        TimedIo {
            inner,
            clock,
            header_timeout,
            idle_timeout,
            protocol: Protocol::Unknown,
            preface_seen: 0,
            head_started: None,
            last_read: now,
            sleep: Box::pin(tokio::time::sleep_until(now + header_timeout)),
            armed: None,
        }
    }

    fn classify(&mut self, bytes: &[u8]) {
        if self.protocol != Protocol::Unknown {
            return;
        }
        for &b in bytes {
            if H2_PREFACE.get(self.preface_seen) == Some(&b) {
                self.preface_seen += 1;
                if self.preface_seen == H2_PREFACE.len() {
                    self.protocol = Protocol::Http2;
                    return;
                }
            } else {
                self.protocol = Protocol::Http1;
                return;
            }
        }
    }

    /// The start of a request whose headers are still arriving, if there is one.
    fn pending_head(&self) -> Option<Instant> {
        let completed = self.clock.completed.load(Ordering::Acquire);
        self.head_started
            .filter(|(_, seen)| *seen == completed)
            .map(|(at, _)| at)
    }

    /// When the socket should give up waiting, if it should.
    fn deadline(&self) -> Option<Instant> {
        if self.clock.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_from = self.clock.idle_from();
        match self.protocol {
            Protocol::Http2 => {
                let from = idle_from.map_or(self.last_read, |t| t.max(self.last_read));
                Some(from + self.idle_timeout)
            }
            Protocol::Http1 | Protocol::Unknown => match (self.pending_head(), idle_from) {
                // Bytes of a request arrived: its headers must be complete in time.
                (Some(started), _) => Some(started + self.header_timeout),
                // A new connection must send a first request in time.
                (None, None) => Some(self.clock.opened + self.header_timeout),
                // Between requests: the idle timeout, from the end of the last one.
                (None, Some(done)) => Some(done + self.idle_timeout),
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    let now = Instant::now();
                    this.last_read = now;
                    if this.protocol == Protocol::Unknown {
                        let mut head = [0u8; H2_PREFACE.len()];
                        let filled = buf.filled().get(before..).unwrap_or_default();
                        let take = filled.len().min(head.len());
                        if let (Some(dst), Some(src)) = (head.get_mut(..take), filled.get(..take)) {
                            dst.copy_from_slice(src);
                        }
                        this.classify(head.get(..take).unwrap_or_default());
                    }
                    if this.clock.active.load(Ordering::Acquire) == 0
                        && this.pending_head().is_none()
                    {
                        let completed = this.clock.completed.load(Ordering::Acquire);
                        this.head_started = Some((now, completed));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.deadline() else {
                    return Poll::Pending;
                };
                if this.armed != Some(deadline) {
                    this.sleep.as_mut().reset(deadline);
                    this.armed = Some(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle, or request headers too slow",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

use std::future::Future as _;

/// Whether a plain-TCP client speaks HTTP/2 with prior knowledge: its first bytes are the
/// HTTP/2 preface. Looks without consuming (the bytes stay for hyper), so that hyper's own
/// buffer receives the request in one read. While the bytes seen are a strict prefix of the
/// preface (a client sending them in pieces), looks again shortly after; the caller bounds the
/// whole wait.
pub async fn speaks_h2(stream: &tokio::net::TcpStream) -> io::Result<bool> {
    let mut head = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut head).await?;
        let seen = head.get(..n).unwrap_or_default();
        if n == 0 || !H2_PREFACE.starts_with(seen) {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // `peek` is ready again at once while bytes wait: pause instead of spinning.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(
        header: u64,
        idle: u64,
    ) -> (
        TimedIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<ConnClock>,
    ) {
        let (a, b) = tokio::io::duplex(1024);
        let clock = ConnClock::new();
        let io = TimedIo::new(
            a,
            clock.clone(),
            Duration::from_millis(header),
            Duration::from_millis(idle),
        );
        (io, b, clock)
    }

    /// What `speaks_h2` says of a client that writes `parts` one after another; the bytes are
    /// still there to read afterwards.
    async fn sniffed(parts: &[&[u8]]) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for part in parts {
            client.write_all(part).await.unwrap();
        }
        let h2 = speaks_h2(&server).await.unwrap();
        let mut server = server;
        let mut first = vec![0u8; parts[0].len()];
        server.read_exact(&mut first).await.unwrap();
        assert_eq!(first, parts[0], "nothing was consumed");
        h2
    }

    #[tokio::test]
    async fn the_h2_preface_is_recognised_without_consuming_it() {
        assert!(sniffed(&[H2_PREFACE]).await);
        assert!(sniffed(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await);
        assert!(!sniffed(&[b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]).await);
        assert!(!sniffed(&[b"PRI * HTTP/1.1\r\n"]).await);
        assert!(!sniffed(&[b"POST /api/frontend HTTP/1.1\r\n"]).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_start_a_request_in_time() {
        let (mut io, _peer, _) = pair(100, 1000).await;
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_are_cut_but_idle_keep_alive_lasts_longer() {
        let (mut io, mut peer, clock) = pair(100, 1000).await;
        peer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let started = Instant::now();
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert!(
            started.elapsed() >= Duration::from_millis(99)
                && started.elapsed() < Duration::from_millis(200)
        );

        let (mut io, mut peer, clock2) = pair(100, 1000).await;
        drop(clock);
        peer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        drop(clock2.request_started());
        let started = Instant::now();
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert!(
            started.elapsed() >= Duration::from_millis(999),
            "{:?}",
            started.elapsed()
        );
    }

    /// Regression: the end of a request was kept in whole milliseconds, so a request that
    /// arrived and finished within one millisecond looked like a new request still sending its
    /// headers, and the idle connection was closed after the header timeout.
    #[tokio::test(start_paused = true)]
    async fn regression_idle_after_quick_requests_lasts_the_idle_timeout() {
        let (mut io, mut peer, clock) = pair(100, 1000).await;
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            // Arrives at x.3 ms, finishes at x.7 ms: the same whole millisecond.
            tokio::time::sleep(Duration::from_micros(10_300)).await;
            peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert!(io.read(&mut buf).await.unwrap() > 0);
            let guard = clock.request_started();
            tokio::time::sleep(Duration::from_micros(400)).await;
            drop(guard);
        }
        let started = Instant::now();
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_timeout_runs_from_the_first_byte_of_a_later_request() {
        let (mut io, mut peer, clock) = pair(100, 1000).await;
        let mut buf = [0u8; 64];
        peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        drop(clock.request_started());
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer.write_all(b"GET / HT").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let started = Instant::now();
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_while_a_request_is_in_progress() {
        let (mut io, mut peer, clock) = pair(100, 200).await;
        let guard = clock.request_started();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            io.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        peer.write_all(b"x").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 1);
        drop(guard);
    }
}
