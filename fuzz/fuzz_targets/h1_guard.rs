//! The HTTP/1 head guard in front of hyper (request-smuggling defence), fed the
//! client's bytes in pieces whose size the input picks, so heads and chunk lines
//! split at every place are judged like whole ones. It must never panic, never
//! hand hyper more than it was given (plus the one synthetic request that stands
//! in for a refused head), and never let bytes through after a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy::listener::h1_guard::{GuardLimits, GuardedIo, Verdict};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out `data` `piece` bytes at a time, then end-of-stream.
struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.piece.min(self.data.len()).min(buf.remaining());
        let (now, later) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

const SYNTHETIC_LEN: usize =
    b"GET /.portcullis/_rejected HTTP/1.1\r\nhost: portcullis.invalid\r\nconnection: close\r\n\r\n"
        .len();

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(shape & 0x3f) + 1;
    let max_head_bytes = if shape & 0x40 != 0 { 256 } else { 8192 };
    let verdict = Arc::new(Verdict::default());
    let limits = GuardLimits {
        max_head_bytes,
        header_read_timeout: Duration::from_secs(3600),
    };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut guard = GuardedIo::new(
                Pieces { data: input, piece },
                limits,
                verdict.clone(),
            );
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let mut read = ReadBuf::new(&mut buf);
                // Pending only ever means "refused, waiting for the 400 to go out".
                let polled =
                    std::future::poll_fn(|cx| match Pin::new(&mut guard).poll_read(cx, &mut read) {
                        Poll::Pending => Poll::Ready(None),
                        Poll::Ready(r) => Poll::Ready(Some(r)),
                    })
                    .await;
                match polled {
                    Some(Ok(())) if read.filled().is_empty() => break,
                    Some(Ok(())) => out.extend_from_slice(read.filled()),
                    Some(Err(_)) | None => break,
                }
            }
            assert!(
                out.len() <= input.len() + SYNTHETIC_LEN,
                "passed {} bytes from {}",
                out.len(),
                input.len()
            );
            if verdict.take().is_some() {
                assert!(
                    out.ends_with(b"connection: close\r\n\r\n"),
                    "bytes passed after a refusal"
                );
            }
        })
    });
});
