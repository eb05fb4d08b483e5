//! One ingest connection's life: how long it may sit idle, how long a request head may take, and
//! the cap on connections open at once. A body's own deadline is kept by ingest, which answers it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the first byte of a request, since then.
    Idle(Instant),
    /// A request head is arriving, since its first byte.
    Head(Instant),
    /// A request is being handled (its body is read under the body deadline).
    Busy,
}

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// `listen.headerReadTimeout`.
    pub header: Duration,
    /// `listen.idleTimeout`.
    pub idle: Duration,
}

/// A stream that notes when a request head starts arriving on an idle connection.
pub(crate) struct Watched<S> {
    inner: S,
    phase: Arc<watch::Sender<Phase>>,
}

impl<S> Watched<S> {
    /// `inner`, reporting to `phase`.
    pub(crate) fn new(inner: S, phase: Arc<watch::Sender<Phase>>) -> Self {
        Self { inner, phase }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.send_if_modified(|phase| match phase {
                Phase::Idle(_) => {
                    *phase = Phase::Head(Instant::now());
                    true
                }
                _ => false,
            });
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a connection was closed by its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Idle past `listen.idleTimeout`.
    Idle,
    /// A request head took longer than `listen.headerReadTimeout`.
    Head,
}

/// Resolves when the connection overstays a deadline of its current phase.
pub(crate) async fn watchdog(mut phase: watch::Receiver<Phase>, deadlines: Deadlines) -> Expired {
    loop {
        let current = *phase.borrow_and_update();
        let (deadline, expired) = match current {
            Phase::Idle(since) => (since + deadlines.idle, Expired::Idle),
            Phase::Head(since) => (since + deadlines.header, Expired::Head),
            Phase::Busy => {
                if phase.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                if *phase.borrow() == current {
                    return expired;
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Answers a connection over `listen.maxConnections` with a one-line 503 and closes it.
pub(crate) async fn refuse(mut stream: tokio::net::TcpStream, limit: u32) {
    let body = format!(
        "too many open connections (listen.maxConnections is {limit}): not accepted, retry; raise listen.maxConnections if event-handler needs more\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes, so that closing does not reset the
        // connection before the client has read the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
