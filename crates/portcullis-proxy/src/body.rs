//! The response body type the proxy hands to hyper, and the wrapper that counts
//! bytes out and fires the request's completion (audit line, metrics) exactly once,
//! when the body ends or is dropped: a client that disconnects mid-download still
//! leaves its audit line.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use std::pin::Pin;
use std::task::{Context, Poll};

/// An error while streaming a body (from the client or the upstream).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the proxy produces.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

/// A complete in-memory body.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`BodyError`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body that holds `guard` until hyper drops it: the response's request in
/// flight on its connection, or its stream's place on a shared upstream
/// connection. Dropped, not finished: a client that goes away mid-body drops it too.
pub struct Holding<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> Holding<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Holding {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Holding<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body with its trailers dropped (SPEC §5). Only the header map is
/// sanitized, so a trailer could otherwise carry `Authorization` or an identity
/// header to an upstream that merges trailers into headers (HTTP/2 servers and
/// gRPC frameworks commonly do).
pub fn without_trailers<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BodyError>,
{
    boxed(NoTrailers { inner: body })
}

struct NoTrailers<B> {
    inner: B,
}

impl<B> Body for NoTrailers<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            // Trailers are the last frame: the body ends where they would begin.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => Poll::Ready(None),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Called once with the number of body bytes sent, when the body finishes or is dropped.
pub type OnComplete = Box<dyn FnOnce(u64) + Send>;

/// A body that counts what passes through it and reports once at the end.
pub struct Counted {
    inner: ProxyBody,
    bytes: u64,
    on_complete: Option<OnComplete>,
}

impl Counted {
    pub fn new(inner: ProxyBody, on_complete: OnComplete) -> Self {
        Counted {
            inner,
            bytes: 0,
            on_complete: Some(on_complete),
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.on_complete.take() {
            done(self.bytes);
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}
