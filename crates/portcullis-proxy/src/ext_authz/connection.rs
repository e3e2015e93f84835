//! One HTTP/2 connection from Envoy, served on `h2` directly: each stream in
//! its own task ([`service::serve_stream`]), and every answer written whole in
//! the connection's next write.

use super::service;
use crate::state::Shared;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Advertised in SETTINGS; more streams at once are refused.
pub const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Advertised in SETTINGS; a larger request header block gets a 431.
pub const MAX_HEADER_LIST: u32 = 16 << 10;

/// Serves the connection until the peer closes it; on stop, sends GOAWAY,
/// finishes the streams already open and closes. `certified`: the peer
/// presented a certificate from `ext_authz.tls.client_ca_file`.
pub async fn serve<S>(
    io: S,
    peer: SocketAddr,
    certified: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stopping = async move {
        // The guard `wait_for` returns is not Send: drop it before awaiting more.
        let _ = stop.wait_for(|stopped| *stopped).await.map(|_| ());
    };
    tokio::pin!(stopping);
    let mut conn = tokio::select! {
        conn = handshake(io) => match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "ext_authz HTTP/2 handshake failed");
                return;
            }
        },
        () = &mut stopping => return,
    };
    let mut stopped = false;
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            () = &mut stopping, if !stopped => {
                // Streams already open are still answered; `accept` yields
                // None once they are and the final GOAWAY is out.
                conn.graceful_shutdown();
                stopped = true;
                continue;
            }
        };
        match next {
            Some(Ok((req, respond))) => {
                tokio::spawn(service::serve_stream(
                    req,
                    respond,
                    peer,
                    certified,
                    shared.clone(),
                ));
            }
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "ext_authz connection ended");
                return;
            }
            None => return,
        }
    }
}

type Connection<S> = h2::server::Connection<Unvectored<S>, Bytes>;

/// The server side of the HTTP/2 preface and SETTINGS exchange, with the
/// limits hyper's HTTP/2 server applied here before: 1 MiB windows, 16 KiB
/// frames and header lists, 200 concurrent streams, a 400 KiB send buffer per
/// stream, and the connection closed after 1024 streams reset for the peer's
/// errors.
async fn handshake<S>(io: S) -> Result<Connection<S>, h2::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 20)
        .max_frame_size(16 << 10)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(Some(1024))
        .max_send_buffer_size(400 << 10)
        .handshake(Unvectored(io))
        .await
}

/// The connection's socket, said to have no vectored writes. `h2` then copies
/// every DATA payload under 1 KiB (256 bytes with vectored writes) into its
/// write buffer, beside the HEADERS before and the trailers after; a larger
/// one it sends from its own buffer and flushes right after, so an answer in
/// one such frame leaves in two writes (HEADERS+DATA, then the trailers).
/// With the answers in frames under 1 KiB ([`super::grpc::send_message`]),
/// all the buffer holds is one contiguous run: one write for the whole
/// answer, and for those of the other streams ready by then (BENCHMARKS.md,
/// issue 12).
pub struct Unvectored<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Unvectored<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unvectored<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
    use super::*;
    use crate::ext_authz::grpc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the writes that reach the socket.
    struct Counting<S> {
        io: S,
        writes: Arc<AtomicUsize>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true // as a TCP or TLS stream
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The writes the server makes to answer one call with a `size`-byte
    /// message (a typical allowed CheckResponse is about 1 KiB).
    async fn writes_for_answer(size: usize) -> usize {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counting {
            io: server_io,
            writes: writes.clone(),
        };
        let server = tokio::spawn(async move {
            let mut conn = handshake(counted).await.unwrap();
            let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
            // Settled: only the answer's writes are counted from here.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let before = writes.load(Ordering::SeqCst);
            grpc::send_message(&mut respond, Bytes::from(vec![b'x'; size])).unwrap();
            let _ = conn.accept().await;
            writes.load(Ordering::SeqCst) - before
        });
        let (mut client, h2conn) = h2::client::handshake(client_io).await.unwrap();
        let driver = tokio::spawn(h2conn);
        let req = http::Request::post("http://x/svc/M").body(()).unwrap();
        let (resp, _body) = client.send_request(req, true).unwrap();
        let mut body = resp.await.unwrap().into_body();
        let mut got = 0;
        while let Some(chunk) = body.data().await {
            got += chunk.unwrap().len();
        }
        assert!(body.trailers().await.unwrap().is_some());
        assert_eq!(got, size);
        drop((client, body));
        driver.abort();
        server.await.unwrap()
    }

    #[tokio::test]
    async fn an_answer_leaves_in_one_write() {
        for size in [7, 300, 1_000, 1_100, 3_000] {
            assert_eq!(writes_for_answer(size).await, 1, "{size}-byte message");
        }
    }
}
