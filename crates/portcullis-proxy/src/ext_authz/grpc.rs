//! gRPC unary calls over an `h2` stream, as the gRPC HTTP/2 protocol
//! (`PROTOCOL-HTTP2.md`) has them: one length-prefixed message in, one out,
//! the status in the trailers. Only what the two unary methods need: no
//! compression (none is advertised), no streaming, no deadlines.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

/// The compressed flag and the 4-byte big-endian length before each message.
const PREFIX: usize = 5;

/// A check request carries headers, not bodies (unless Envoy is told to send
/// them): far below the 4 MiB gRPC servers commonly accept.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The largest DATA frame an answer goes out in: under the size from which
/// `h2` stops copying payloads into its write buffer on a socket without
/// vectored writes ([`super::connection::Unvectored`]), so the whole answer
/// leaves in one write.
const DATA_FRAME: usize = 1023;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
static GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
static APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// The gRPC status codes this server answers with (`grpc/status.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument = 3,
    NotFound = 5,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
}

/// A call that ends without a message: the HTTP status (200 but for requests
/// that are not gRPC at all), the gRPC status and its message (plain ASCII
/// without `%`, so it needs no percent-encoding).
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub http: StatusCode,
    pub code: Code,
    pub message: &'static str,
}

impl Failure {
    pub const fn grpc(code: Code, message: &'static str) -> Failure {
        Failure {
            http: StatusCode::OK,
            code,
            message,
        }
    }
}

/// Why a request yielded no message.
#[derive(Debug)]
pub enum Unread {
    /// Answer with this status.
    Refused(Failure),
    /// The stream is gone (reset, connection lost): nobody to answer.
    Gone,
}

impl From<Failure> for Unread {
    fn from(f: Failure) -> Unread {
        Unread::Refused(f)
    }
}

/// What gRPC servers answer to a request that is not a gRPC call (grpc-go's
/// choices): 405 for another method than POST, 415 for another content type
/// than `application/grpc` (alone, `+proto`, or with parameters), and
/// UNIMPLEMENTED for a compression the client says it used.
pub fn refuse_request(parts: &http::request::Parts) -> Option<Failure> {
    if parts.method != http::Method::POST {
        return Some(Failure {
            http: StatusCode::METHOD_NOT_ALLOWED,
            code: Code::Internal,
            message: "gRPC calls are POST requests",
        });
    }
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("+proto") || rest.starts_with(';'));
    if !grpc {
        return Some(Failure {
            http: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: Code::InvalidArgument,
            message: "content-type is not application/grpc",
        });
    }
    let encoding = parts.headers.get(&GRPC_ENCODING);
    if encoding.is_some_and(|e| e.as_bytes() != b"identity") {
        return Some(COMPRESSED);
    }
    None
}

const COMPRESSED: Failure = Failure::grpc(
    Code::Unimplemented,
    "compressed messages are not supported (grpc-accept-encoding: identity)",
);

/// Reads the one request message of a unary call, at most [`MAX_MESSAGE`]
/// bytes, and returns it without its prefix. Refuses as gRPC servers do: a
/// compressed message UNIMPLEMENTED, an oversized one RESOURCE_EXHAUSTED (as
/// soon as its prefix says so), anything else malformed (no message, a
/// truncated one, two) INTERNAL.
pub async fn read_message(body: &mut RecvStream) -> Result<Bytes, Unread> {
    // The usual request is one DATA frame: kept as it came, copied only when
    // a second one follows.
    let mut single: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| Unread::Gone)?;
        // The window is the peer's again; the size is checked below.
        let _ = body.flow_control().release_capacity(chunk.len());
        if chunk.is_empty() {
            continue;
        }
        match single.take() {
            None if joined.is_empty() => single = Some(chunk),
            Some(first) => {
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
            }
            None => joined.extend_from_slice(&chunk),
        }
        let so_far = single.as_deref().unwrap_or(&joined);
        if let Some(declared) = declared_len(so_far)? {
            if so_far.len() > PREFIX + declared {
                return Err(TOO_MANY.into());
            }
        }
    }
    let mut whole = single.unwrap_or_else(|| joined.freeze());
    match declared_len(&whole)? {
        None if whole.is_empty() => Err(MISSING.into()),
        None => Err(TRUNCATED.into()),
        Some(declared) if whole.len() < PREFIX + declared => Err(TRUNCATED.into()),
        Some(_) => {
            whole.advance(PREFIX);
            Ok(whole)
        }
    }
}

const MISSING: Failure = Failure::grpc(Code::Internal, "missing request message");
const TRUNCATED: Failure = Failure::grpc(Code::Internal, "truncated request message");
const TOO_MANY: Failure = Failure::grpc(Code::Internal, "more than one request message");

/// The length a complete prefix declares (None before 5 bytes are in), after
/// checking its flag and the size limit.
fn declared_len(buf: &[u8]) -> Result<Option<usize>, Failure> {
    let Some(prefix) = buf.get(..PREFIX) else {
        return Ok(None);
    };
    match prefix[0] {
        0 => {}
        1 => return Err(COMPRESSED),
        _ => {
            return Err(Failure::grpc(
                Code::Internal,
                "invalid compressed flag in the message prefix",
            ))
        }
    }
    let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if declared > MAX_MESSAGE {
        return Err(Failure::grpc(
            Code::ResourceExhausted,
            "request message larger than 1 MiB",
        ));
    }
    Ok(Some(declared))
}

/// A message with its (uncompressed) prefix.
pub fn encode<M: prost::Message>(message: &M) -> Result<Bytes, Failure> {
    let len = message.encoded_len();
    let declared = u32::try_from(len)
        .map_err(|_| Failure::grpc(Code::Internal, "response message too large"))?;
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(declared);
    // `encode` would compute the length again to check the room, which a
    // `BytesMut` always has.
    message.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// Sends a whole answer at once: HEADERS, the message in DATA frames of at
/// most [`DATA_FRAME`] bytes, and the `grpc-status: 0` trailers, all queued in
/// `h2` before the connection's task next writes.
pub fn send_message(
    respond: &mut SendResponse<Bytes>,
    mut message: Bytes,
) -> Result<(), h2::Error> {
    let mut head = Response::new(());
    head.headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
    let mut stream = respond.send_response(head, false)?;
    while !message.is_empty() {
        let frame = message.split_to(message.len().min(DATA_FRAME));
        stream.send_data(frame, false)?;
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS.clone(), HeaderValue::from_static("0"));
    stream.send_trailers(trailers)
}

/// Sends a trailers-only answer: one HEADERS frame with the status.
pub fn send_failure(respond: &mut SendResponse<Bytes>, failure: &Failure) -> Result<(), h2::Error> {
    let mut head = Response::new(());
    *head.status_mut() = failure.http;
    let headers = head.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_GRPC.clone());
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from(failure.code as u16));
    headers.insert(
        GRPC_MESSAGE.clone(),
        HeaderValue::from_static(failure.message),
    );
    if failure.code == Code::Unimplemented {
        // What a client may send instead (gRPC compression spec).
        headers.insert(
            GRPC_ACCEPT_ENCODING.clone(),
            HeaderValue::from_static("identity"),
        );
    }
    respond.send_response(head, true).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(flag: u8, len: u32) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn prefix_is_checked_before_the_message_arrives() {
        assert_eq!(declared_len(&[0, 0, 0]), Ok(None));
        assert_eq!(declared_len(&prefix(0, 7)), Ok(Some(7)));
        assert_eq!(
            declared_len(&prefix(0, MAX_MESSAGE as u32)),
            Ok(Some(MAX_MESSAGE))
        );
        let over = declared_len(&prefix(0, MAX_MESSAGE as u32 + 1)).unwrap_err();
        assert_eq!(over.code, Code::ResourceExhausted);
        assert_eq!(
            declared_len(&prefix(1, 3)).unwrap_err().code,
            Code::Unimplemented
        );
        assert_eq!(
            declared_len(&prefix(2, 3)).unwrap_err().code,
            Code::Internal
        );
    }

    #[test]
    fn encoded_messages_carry_an_uncompressed_prefix() {
        let health = super::super::proto::HealthCheckResponse { status: 1 };
        let bytes = encode(&health).unwrap();
        assert_eq!(&bytes[..], &[0, 0, 0, 0, 2, 8, 1]);
    }

    #[test]
    fn only_grpc_content_types_are_calls() {
        let parts = |method: &str, ct: Option<&str>, enc: Option<&str>| {
            let mut b = http::Request::builder().method(method).uri("/x");
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            if let Some(enc) = enc {
                b = b.header("grpc-encoding", enc);
            }
            b.body(()).unwrap().into_parts().0
        };
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert_eq!(refuse_request(&parts("POST", Some(ok), None)), None, "{ok}");
        }
        assert_eq!(
            refuse_request(&parts("POST", Some("application/grpc"), Some("identity"))),
            None
        );
        for bad in [
            None,
            Some("application/json"),
            Some("application/grpc+json"),
            Some("application/grpcx"),
        ] {
            let f = refuse_request(&parts("POST", bad, None)).unwrap();
            assert_eq!(
                (f.http, f.code),
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, Code::InvalidArgument),
                "{bad:?}"
            );
        }
        let f = refuse_request(&parts("GET", Some("application/grpc"), None)).unwrap();
        assert_eq!(
            (f.http, f.code),
            (StatusCode::METHOD_NOT_ALLOWED, Code::Internal)
        );
        let f = refuse_request(&parts("POST", Some("application/grpc"), Some("gzip"))).unwrap();
        assert_eq!((f.http, f.code), (StatusCode::OK, Code::Unimplemented));
    }
}
