//! Idle HTTP/1 connections without hyper: an idle keep-alive connection should
//! cost as little as possible (10k of them is a normal day, 100k a busy one).
//!
//! hyper keeps an HTTP/1 connection's buffers for as long as it lives: 8 KiB of
//! read buffer and 8 KiB of header write buffer, more than the whole budget of
//! an idle connection, and there is no setting to shrink them. So once a
//! connection has had nothing in flight for [`HIBERNATE_AFTER`], hyper's
//! connection is ended and dropped while the socket stays open: the stream
//! ([`Lease`]) tells hyper "end of stream" on its next read, which hyper takes as
//! the client leaving an idle connection, and hands the socket back instead of
//! shutting it down. The connection then waits for its next bytes with only the
//! socket, the guard and a few counters; when they come, a new hyper connection is
//! built over the same socket and given those bytes first.
//!
//! Only between two HTTP/1 requests: with anything in flight, buffered or
//! half-received the connection is left alone, and HTTP/2 and upgraded
//! connections are never hibernated (their state lives in hyper for good).
//! Busy connections never get here, so the benchmark's keep-alive traffic pays
//! nothing for it; a client that pauses pays one rebuild (a few µs) per pause.

use super::connections::Activity;
use super::h1_guard::GuardedIo;
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a connection sits idle before hyper's state for it is dropped.
pub const HIBERNATE_AFTER: Duration = Duration::from_millis(500);

/// Where a hibernating connection's stream goes when hyper lets go of it.
pub type Parking<IO> = Arc<Mutex<Option<GuardedIo<IO>>>>;

/// The stream hyper is lent for one stretch of a connection.
pub struct Lease<IO> {
    io: Option<GuardedIo<IO>>,
    /// Bytes that woke the connection from hibernation: hyper reads them first.
    replay: BytesMut,
    activity: Arc<Activity>,
    /// hyper was told "end of stream" to make it let go.
    parked: bool,
    parking: Parking<IO>,
}

impl<IO> Lease<IO> {
    pub fn new(
        io: GuardedIo<IO>,
        replay: BytesMut,
        activity: Arc<Activity>,
        parking: Parking<IO>,
    ) -> Self {
        Lease {
            io: Some(io),
            replay,
            activity,
            parked: false,
            parking,
        }
    }
}

impl<IO> Drop for Lease<IO> {
    fn drop(&mut self) {
        if self.parked {
            if let (Some(io), Ok(mut slot)) = (self.io.take(), self.parking.lock()) {
                *slot = Some(io);
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Lease<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            if this.replay.is_empty() {
                this.replay = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        let Some(io) = this.io.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(&mut *io).poll_read(cx, buf) {
            Poll::Pending if io.between_requests() && this.activity.hibernation_due() => {
                this.parked = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lease<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let parked = self.parked;
        match self.io.as_mut() {
            // Parked: hyper is closing what it believes is a finished connection.
            // Everything it wrote goes out; the socket itself stays open.
            Some(io) if parked => Pin::new(io).poll_flush(cx),
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Waits, holding no hyper state, until the hibernating connection's client sends
/// its next bytes. Returns them (already past the guard), or `None` when the
/// client closed the connection or broke the rules.
pub async fn next_bytes<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut GuardedIo<IO>,
) -> Option<BytesMut> {
    std::future::poll_fn(|cx| {
        let mut stack = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut stack);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(BytesMut::from(buf.filled()))),
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "hibernating connection ended");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
