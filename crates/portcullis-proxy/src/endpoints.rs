//! The proxy's own endpoints on the main listener: the assertion JWKS
//! (`/.well-known/portcullis/jwks.json`) and the reserved `/.portcullis/` prefix.

use crate::body::{full, ProxyBody};
use crate::pipeline::Exchange;
use crate::respond::Refusal;
use crate::runtime::Runtime;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response};
use portcullis_core::Reason;

/// Where the assertion verification keys are published.
pub const JWKS_PATH: &str = "/.well-known/portcullis/jwks.json";
/// Paths under this prefix belong to the proxy and are never forwarded.
pub const RESERVED_PREFIX: &str = "/.portcullis/";

/// Answers the request when it is for one of the proxy's own endpoints.
pub async fn serve<B>(
    req: &Request<B>,
    rt: &Runtime,
    ex: &mut Exchange,
) -> Option<Result<Response<ProxyBody>, Refusal>> {
    let path = req.uri().path();
    if path == JWKS_PATH {
        ex.path = path.to_string();
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Some(Err(Refusal::with_message(
                Reason::BadRequest,
                "only GET is supported here",
            )));
        }
        let mut resp = Response::new(full(rt.signer.jwks_json()));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Short enough that verifiers see a rotated key well before it signs anything.
        resp.headers_mut().insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        return Some(Ok(resp));
    }
    if path.starts_with(RESERVED_PREFIX) {
        ex.path = path.to_string();
        return Some(Err(Refusal::with_message(
            Reason::NoRoute,
            "unknown Portcullis endpoint",
        )));
    }
    None
}
