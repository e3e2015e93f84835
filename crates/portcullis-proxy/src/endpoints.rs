//! The proxy's own endpoints on the main listener: the assertion JWKS
//! (`/.well-known/portcullis/jwks.json`) and the reserved `/.portcullis/` prefix.
//!
//! They are recognised on the normalized path in its matching form (SPEC §5), so
//! `/.well-known/portcullis//jwks.json`, `/%2Eportcullis/authz` or
//! `/.Portcullis/authz` is ours too and never reaches an upstream, which could
//! otherwise answer with keys of its own that a URL-normalizing verifier trusts.

use crate::body::{full, ProxyBody};
use crate::conn::ConnInfo;
use crate::record::Exchange;
use crate::respond::Refusal;
use crate::runtime::Runtime;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response};
use portcullis_core::Reason;
use portcullis_policy::NormalizedPath;

/// Where the assertion verification keys are published.
pub const JWKS_PATH: &str = "/.well-known/portcullis/jwks.json";
/// Paths under this prefix belong to the proxy and are never forwarded.
pub const RESERVED_PREFIX: &str = "/.portcullis/";
/// The subtree of `JWKS_PATH`, reserved whole.
const WELL_KNOWN_PREFIX: &str = "/.well-known/portcullis/";

/// Whether a path (in its matching form) belongs to the proxy.
pub fn is_reserved(matching: &str) -> bool {
    let within =
        |prefix: &str| matching.starts_with(prefix) || matching == prefix.trim_end_matches('/');
    within(RESERVED_PREFIX) || within(WELL_KNOWN_PREFIX)
}

/// Forward-auth for nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`.
pub const AUTHZ_PATH: &str = "/.portcullis/authz";
/// The caller's identity as JSON.
pub const WHOAMI_PATH: &str = "/.portcullis/whoami";

/// Answers a request for one of the proxy's own endpoints (`path` is reserved;
/// `host` is the one the request named).
pub async fn serve<B>(
    req: Request<B>,
    path: &NormalizedPath,
    host: &crate::authority::JudgedHost,
    rt: &Runtime,
    ex: &mut Exchange,
    conn: &ConnInfo,
    peer_trusted: bool,
) -> Option<Result<Response<ProxyBody>, Refusal>>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use crate::login::flow;
    let matching = path.matching();
    if let Some(index) = crate::mcp::metadata::lookup(rt, matching) {
        ex.path = path.as_str().to_string();
        return Some(crate::mcp::metadata::serve(req.method(), rt, index));
    }
    if !is_reserved(matching) {
        return None;
    }
    ex.path = path.as_str().to_string();
    let query = req.uri().query();
    let answer = match matching {
        JWKS_PATH => jwks(req.method(), rt),
        AUTHZ_PATH => crate::forward_auth::authz(req.headers(), query, rt, ex, peer_trusted).await,
        WHOAMI_PATH => {
            crate::forward_auth::whoami(req.method(), req.headers(), rt, ex, conn, peer_trusted)
                .await
        }
        flow::LOGIN_PATH => flow::login(req.method(), req.headers(), query, rt, ex).await,
        flow::CALLBACK_PATH => {
            let query = query.map(str::to_string);
            flow::callback(req.method(), req.headers(), query.as_deref(), rt, ex).await
        }
        flow::LOGOUT_PATH | flow::BACKCHANNEL_PATH => {
            let backchannel = matching == flow::BACKCHANNEL_PATH;
            if req.method() != Method::POST {
                Err(Refusal::with_message(
                    Reason::BadRequest,
                    "only POST is supported here",
                ))
            } else {
                let (parts, body) = req.into_parts();
                match read_form(body).await {
                    Err(r) => Err(r),
                    Ok(form) if backchannel => flow::backchannel(&form, rt).await,
                    Ok(form) => flow::logout(&parts.headers, &form, (conn.tls, host), rt, ex).await,
                }
            }
        }
        _ => Err(Refusal::with_message(
            Reason::NoRoute,
            "unknown Portcullis endpoint",
        )),
    };
    Some(answer)
}

/// A form body of at most [`crate::login::flow::MAX_FORM_BYTES`].
pub(crate) async fn read_form<B>(body: B) -> Result<bytes::Bytes, Refusal>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, crate::login::flow::MAX_FORM_BYTES);
    limited.collect().await.map(|c| c.to_bytes()).map_err(|_| {
        Refusal::with_message(
            Reason::BadRequest,
            "the form body is too large or incomplete",
        )
    })
}

/// The assertion verification keys.
fn jwks(method: &Method, rt: &Runtime) -> Result<Response<ProxyBody>, Refusal> {
    if method != Method::GET && method != Method::HEAD {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "only GET is supported here",
        ));
    }
    let mut resp = Response::new(full(rt.signer.jwks_json()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Short enough that verifiers see a rotated key well before it signs anything.
    resp.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::normalize;

    #[test]
    fn reserved_after_normalization() {
        for p in [
            "/.well-known/portcullis/jwks.json",
            "/.well-known/portcullis//jwks.json",
            "/.well-known/portcullis/./jwks.json",
            "/.well-known/portcullis/%6Awks.json",
            "/%2Ewell-known/portcullis/jwks.json",
            "//.portcullis/authz",
            "/%2Eportcullis/authz",
            "/x/../.portcullis/authz",
            "/.Portcullis/authz",
            "/.portcullis",
            "/.well-known/portcullis/other",
            "/.portcullis;x/authz",
        ] {
            let n = normalize(p, false).unwrap();
            assert!(is_reserved(n.matching()), "{p}");
        }
        for p in [
            "/.well-known/openid-configuration",
            "/portcullis/x",
            "/.portcullisx",
        ] {
            let n = normalize(p, false).unwrap();
            assert!(!is_reserved(n.matching()), "{p}");
        }
        let jwks = normalize("/.well-known/portcullis//jwks.json", false).unwrap();
        assert_eq!(jwks.matching(), JWKS_PATH);
    }
}
