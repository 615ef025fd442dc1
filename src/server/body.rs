//! The response body: a whole body, or a stream of frames (Server-Sent Events) fed by the
//! stream's task through a small bounded channel.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::conn::RequestGuard;

/// A response body.
#[derive(Debug)]
pub enum Reply {
    /// All of it at once (`None` once sent).
    Full(Option<Bytes>),
    /// Frames until the sender is dropped. The connection counts as busy meanwhile.
    Stream {
        rx: mpsc::Receiver<Bytes>,
        guard: Option<RequestGuard>,
    },
}

impl Reply {
    pub fn full(bytes: impl Into<Bytes>) -> Reply {
        let bytes = bytes.into();
        Reply::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> Reply {
        Reply::Full(None)
    }

    pub fn stream(rx: mpsc::Receiver<Bytes>) -> Reply {
        Reply::Stream { rx, guard: None }
    }

    /// Keeps the connection's request mark for as long as a stream lasts (no idle or header
    /// deadline applies meanwhile); a whole body lets it go at once.
    pub fn hold(&mut self, mark: RequestGuard) {
        if let Reply::Stream { guard, .. } = self {
            *guard = Some(mark);
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Reply::Stream { rx, .. } => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Reply::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Reply::Stream { .. } => SizeHint::default(),
        }
    }
}
