//! Finding and checking the caller's credentials: the bearer token (exactly one),
//! and workload identity from mTLS or a trusted sidecar's header.

use crate::forward::headers::names;
use crate::pipeline::ConnInfo;
use crate::respond::Refusal;
use crate::runtime::Runtime;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request};
use portcullis_config::WorkloadSource;
use portcullis_core::{Identity, IdentityKind, Reason};
use portcullis_identity::workload;

/// The credential a request carries, borrowed from its headers (a token is ~1 KB;
/// no copy is needed to verify it).
pub enum Credential<'a> {
    None,
    Bearer(&'a str),
}

/// Reads the bearer token. Two `Authorization` headers are refused (400): guessing
/// which one counts is how confused-deputy bugs start.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credential::None);
    };
    if values.next().is_some() {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "more than one Authorization header",
        ));
    }
    let text = value.to_str().map_err(|_| {
        Refusal::with_message(Reason::InvalidToken, "malformed Authorization header")
    })?;
    let Some((scheme, token)) = text.split_once(' ') else {
        return Ok(Credential::None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Basic and other schemes are not ours to judge; they are removed before
        // forwarding unless the route forwards the token.
        return Ok(Credential::None);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(Refusal::with_message(
            Reason::InvalidToken,
            "malformed bearer token",
        ));
    }
    Ok(Credential::Bearer(token))
}

/// The caller's SPIFFE ID from the sources `workload_identity.accept` allows. Sidecar
/// headers count only from trusted peers (they were already stripped from others).
/// Every line of a header counts (SPEC §5): several `x-forwarded-client-cert`
/// lines read as one list whose last element decides, and more than one
/// `l5d-client-id` is refused (400), since Linkerd sends exactly one.
pub fn workload_identity<B>(
    req: &Request<B>,
    conn: &ConnInfo,
    rt: &Runtime,
    peer_trusted: bool,
) -> Result<Option<String>, Refusal> {
    let Some(cfg) = rt.config.workload_identity.as_ref() else {
        return Ok(None);
    };
    for source in &cfg.accept {
        let found = match source {
            WorkloadSource::Mtls => conn
                .peer_cert
                .as_deref()
                .and_then(|der| workload::spiffe_id_from_cert_der(der).ok()),
            WorkloadSource::Linkerd if peer_trusted => {
                let mut lines = req.headers().get_all(names::L5D_CLIENT_ID).iter();
                let first = lines.next();
                if lines.next().is_some() {
                    return Err(Refusal::with_message(
                        Reason::BadRequest,
                        "more than one l5d-client-id header",
                    ));
                }
                first
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| workload::spiffe_id_from_linkerd(v, &cfg.trust_domain).ok())
            }
            WorkloadSource::Xfcc if peer_trusted => {
                let lines = req.headers().get_all(names::X_FORWARDED_CLIENT_CERT);
                if lines.iter().next().is_none() {
                    None
                } else {
                    // A line that is not text makes the whole list unreadable.
                    let text: Option<Vec<&str>> = lines.iter().map(|v| v.to_str().ok()).collect();
                    text.and_then(|t| workload::spiffe_id_from_xfcc_lines(t).ok().flatten())
                }
            }
            _ => None,
        };
        // Only identities of our own trust domain count: a certificate or a sidecar
        // header naming another domain proves nothing about this mesh's workloads.
        if let Some(id) = found.filter(|id| in_trust_domain(id, &cfg.trust_domain)) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// True when `spiffe_id` is `spiffe://TRUST_DOMAIN/...`.
fn in_trust_domain(spiffe_id: &str, trust_domain: &str) -> bool {
    spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.strip_prefix(trust_domain))
        .is_some_and(|path| path.starts_with('/'))
}

/// Adds a verified workload identity to the caller (who may also carry a token).
pub fn attach_workload(identity: &mut Identity, spiffe: String) {
    if identity.kind == IdentityKind::Anonymous {
        identity.kind = IdentityKind::Workload;
        identity.subject = spiffe.clone();
    }
    identity.workload = Some(spiffe);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn trust_domain_must_match_exactly() {
        assert!(in_trust_domain(
            "spiffe://cluster.local/ns/a/sa/b",
            "cluster.local"
        ));
        assert!(!in_trust_domain(
            "spiffe://cluster.local.evil/ns/a/sa/b",
            "cluster.local"
        ));
        assert!(!in_trust_domain(
            "spiffe://other/ns/a/sa/b",
            "cluster.local"
        ));
        assert!(!in_trust_domain("spiffe://cluster.local", "cluster.local"));
    }

    #[test]
    fn one_bearer_only() {
        let mut h = HeaderMap::new();
        assert!(matches!(credential(&h), Ok(Credential::None)));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert!(matches!(credential(&h), Ok(Credential::Bearer(t)) if t == "abc.def.ghi"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        let err = credential(&h).err().unwrap();
        assert_eq!(err.reason, Reason::BadRequest);
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  "));
        assert!(credential(&h).is_err());
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(matches!(credential(&h), Ok(Credential::None)));
    }
}
