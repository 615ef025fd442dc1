//! The HTTP server: accept loops (plain HTTP and HTTPS), hyper connections (HTTP/1.1 and
//! HTTP/2), connection limits and timeouts, and the drain on shutdown. The only module that
//! touches hyper types.

mod app;
pub mod body;
pub mod client_ip;
pub mod conn;
pub mod cors;
pub mod downstream;
pub mod error;
pub mod handler;
pub mod refusal;
pub mod route;
pub mod tls;

pub use app::App;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use conn::{ConnClock, TimedIo};
use tls::TlsReloader;

/// The sockets flagpost serves on.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
}

/// What a connection over the limit is told before it is closed.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 88\r\n\r\n\
{\"error\":\"overloaded\",\"message\":\"flagpost has too many connections open; retry shortly.\"}";

/// The HTTP/1.1 and HTTP/2 connection settings. The protocol is chosen per connection (ALPN over
/// TLS, the preface on plain TCP) rather than by hyper-util's auto builder, whose version
/// sniffing hands hyper its first 24 bytes apart and so doubles hyper's read buffer, to 16 KiB,
/// on every connection.
struct Builder {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// Serves until `shutdown` completes, then drains: `/ready` turns 503 at once, connections are
/// still accepted for the configured delay (so load balancers notice), then the listeners close,
/// in-flight requests finish (up to the grace period), and this returns the end of the grace
/// period: the deadline for everything left to do before exiting.
pub async fn serve(
    app: Arc<App>,
    listeners: Listeners,
    tls: Option<Arc<TlsReloader>>,
    shutdown: impl Future<Output = ()>,
) -> tokio::time::Instant {
    let Listeners { http, https } = listeners;
    // Unleash Edge's --redirect-http-to-https: the HTTPS port plain requests are sent to.
    let redirect_to = app
        .config
        .server
        .tls
        .as_ref()
        .filter(|t| t.redirect_http)
        .and(https.as_ref())
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port());
    let https = https.zip(tls);
    let connections = Connections {
        tasks: TaskTracker::new(),
        stop: CancellationToken::new(),
        open: Arc::new(AtomicUsize::new(0)),
        builder: Arc::new(Builder::new()),
        redirect_to,
    };
    tokio::pin!(shutdown);
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown, if drain_until.is_none() => {
                app.start_draining();
                let delay = app.drain_delay();
                tracing::info!(delay_seconds = delay.as_secs_f64(), "draining: /ready answers 503; still serving until the delay is over");
                drain_until = Some(tokio::time::Instant::now() + delay);
                continue;
            }
            _ = sleep_until(drain_until) => break,
            a = accept(http.as_ref()) => a.map(|(s, p)| (s, p, None)),
            a = accept(https.as_ref().map(|(l, _)| l)) => a.map(|(s, p)| (s, p, https.as_ref().map(|(_, t)| t.clone()))),
        };
        let (stream, peer, tls) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: say so (within the budget: clients
                // opening connections cause it), give the system a moment.
                if app.request_log.line(refusal::Line::Accept) {
                    tracing::warn!(error = %e, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.take(&app, stream, peer, tls);
    }
    drop(http);
    drop(https);
    tracing::info!("listeners closed; finishing the requests in flight");
    app.streams.stop();
    connections.stop.cancel();
    finish(&connections.tasks, app.config.server.shutdown_grace).await
}

/// The open connections: their tasks, how many there are (against `max_connections`), and
/// the signal that tells them to finish their requests and close.
struct Connections {
    tasks: TaskTracker,
    stop: CancellationToken,
    open: Arc<AtomicUsize>,
    builder: Arc<Builder>,
    /// The HTTPS port plain requests are redirected to, if any.
    redirect_to: Option<u16>,
}

impl Connections {
    /// Serves an accepted connection on its own task, or refuses it when `max_connections`
    /// are open (a plain one with a 503, a TLS one by closing it).
    fn take(
        &self,
        app: &Arc<App>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<TlsReloader>>,
    ) {
        let _ = stream.set_nodelay(true);
        if self.open.load(Ordering::Acquire) >= app.config.server.max_connections {
            app.metrics.shed.with_label_values(&["connections"]).inc();
            if tls.is_none() {
                self.tasks.spawn(refuse(stream));
            }
            return;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        app.metrics.connections_open.inc();
        let app = app.clone();
        let builder = self.builder.clone();
        let stop = self.stop.clone();
        let open = self.open.clone();
        let redirect_to = self.redirect_to;
        // Every log line about this connection or its requests carries the peer.
        let span = tracing::info_span!("conn", %peer, tls = tls.is_some());
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                match tls {
                    None => serve_plain(&app, &builder, stream, peer, redirect_to, stop).await,
                    // Boxed: a TLS connection's state (rustls and the handshake) is several KiB;
                    // inline, every plain-HTTP connection's task would be that large too.
                    Some(tls) => {
                        Box::pin(serve_tls(&app, &builder, &tls, stream, peer, stop)).await
                    }
                }
                open.fetch_sub(1, Ordering::AcqRel);
                app.metrics.connections_open.dec();
            },
            span,
        ));
    }
}

/// Waits up to `grace` for the connections still open; returns the end of the grace period.
async fn finish(connections: &TaskTracker, grace: Duration) -> tokio::time::Instant {
    connections.close();
    let deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(deadline, connections.wait()).await {
        Ok(()) => tracing::info!("all connections finished"),
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "grace period over; closing the connections still open"
        ),
    }
    deadline
}

impl Builder {
    fn new() -> Builder {
        let mut http1 = http1::Builder::new();
        http1.timer(TokioTimer::new()).keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        Builder { http1, http2 }
    }
}

/// Serves `connection` until it ends or `stop` fires; then lets it finish its requests.
async fn until_stopped<C: GracefulConnection>(
    connection: C,
    stop: CancellationToken,
) -> Result<(), C::Error> {
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => r,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// A plain-TCP connection: HTTP/2 by prior knowledge or HTTP/1.1, told apart by its first
/// bytes, which must come as a first request's headers do.
async fn serve_plain(
    app: &Arc<App>,
    builder: &Builder,
    stream: TcpStream,
    peer: SocketAddr,
    redirect_to: Option<u16>,
    stop: CancellationToken,
) {
    let sniff = conn::speaks_h2(&stream);
    match tokio::time::timeout(app.config.server.header_read_timeout, sniff).await {
        Ok(Ok(h2)) => serve_connection(app, builder, stream, (h2, redirect_to), peer, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed"),
        Err(_) => tracing::debug!(%peer, "no request within the header-read timeout"),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Answers 503 on a connection over the limit, then closes it.
async fn refuse(mut stream: TcpStream) {
    let write = async {
        stream.write_all(OVERLOADED).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// The TLS handshake (bounded by the header-read timeout), then the connection.
async fn serve_tls(
    app: &Arc<App>,
    builder: &Builder,
    tls: &TlsReloader,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let handshake = tls.acceptor().accept(stream);
    match tokio::time::timeout(app.config.server.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => {
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_connection(app, builder, stream, (h2, None), peer, stop).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_connection<S>(
    app: &Arc<App>,
    builder: &Builder,
    stream: S,
    (h2, redirect_to): (bool, Option<u16>),
    peer: SocketAddr,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = ConnClock::new();
    let io = TimedIo::new(
        stream,
        clock.clone(),
        app.config.server.header_read_timeout,
        app.config.server.idle_timeout,
    );
    let app_for_service = app.clone();
    let service = service_fn(move |req| {
        let app = app_for_service.clone();
        let guard = clock.request_started();
        // Boxed: hyper keeps room for the service's future for the connection's whole life,
        // so an idle keep-alive connection holds a pointer here, not the handler's state.
        Box::pin(async move {
            if let Some(port) = redirect_to {
                if let Some(redirect) = handler::redirect_to_https(&app, &req, port) {
                    return Ok::<_, Infallible>(redirect);
                }
            }
            let mut response = handler::handle(&app, req, peer).await;
            // A stream keeps the connection busy for as long as it lasts.
            response.body_mut().hold(guard);
            Ok::<_, Infallible>(response)
        })
    });
    let io = TokioIo::new(io);
    let result = if h2 {
        until_stopped(builder.http2.serve_connection(io, service), stop).await
    } else {
        until_stopped(builder.http1.serve_connection(io, service), stop).await
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}
