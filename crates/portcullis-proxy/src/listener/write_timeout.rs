//! `server.write_timeout`: a client that takes no bytes of its response for this
//! long is disconnected.
//!
//! A client that stops reading fills its TCP window and then the socket's send
//! buffer; from there every write stays pending. Without a bound the connection,
//! its response and the upstream connection feeding it would be held for as long
//! as the client likes. Writes that make progress reset the clock, so a slow but
//! moving download is never cut; the clock runs only while a write is pending.
//! The error ends hyper's connection, which drops the response body (the audit
//! line is written then) and with it the upstream connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail once they have been stuck for `timeout`.
pub struct WriteTimeout<IO> {
    inner: IO,
    timeout: Duration,
    /// Armed by the first pending write, dropped by the next one that makes progress:
    /// a connection whose writes go through holds no timer.
    stuck_since: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteTimeout<IO> {
    pub fn new(inner: IO, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stuck_since: None,
        }
    }

    /// Passes a write's outcome on, arming the timer when it is pending and
    /// failing it when the timer has run out.
    fn judge<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(result) => {
                self.stuck_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .stuck_since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client accepted no response bytes within write_timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let outcome = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.judge(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.judge(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let outcome = Pin::new(&mut this.inner).poll_flush(cx);
        this.judge(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let outcome = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.judge(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_stuck_write_fails_after_the_timeout() {
        // The peer never reads: the pipe fills and the write stays pending.
        let (ours, _peer) = tokio::io::duplex(1024);
        let mut io = WriteTimeout::new(ours, Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        use tokio::io::AsyncReadExt;
        let (ours, mut peer) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            // 512 bytes every 2 s: each pause is shorter than the timeout, the
            // whole transfer much longer.
            while total < 16 * 1024 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                total += peer.read(&mut buf).await.unwrap();
            }
        });
        let mut io = WriteTimeout::new(ours, Duration::from_secs(3));
        io.write_all(&[0u8; 16 * 1024]).await.unwrap();
        reader.await.unwrap();
    }
}
