//! The HTTP server: the accept loop, hyper connections (HTTP/1.1 and HTTP/2 cleartext, header
//! read timeout), and graceful shutdown. The only module that touches hyper types.

pub mod cors;
pub mod error;
pub mod handler;
pub mod route;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::App;

/// Serves connections from `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for up to the configured grace period, and returns.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.server.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: say so, give the system a moment.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app_for_conn = app.clone();
        let service = service_fn(move |req| {
            let app = app_for_conn.clone();
            async move { Ok::<_, Infallible>(handler::handle(&app, req, peer).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let app = app.clone();
        app.metrics.connections_open.inc();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            app.metrics.connections_open.dec();
        });
    }
    drop(listener);
    app.start_draining();
    let grace = app.config.server.shutdown_grace;
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections finished"),
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; closing the connections still open"
        ),
    }
}
