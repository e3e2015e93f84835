//! The caller's workload (SPIFFE) identity, from the sources
//! `workload_identity.accept` allows (SPEC §2, §5).

use crate::forward::headers::names;
use crate::respond::Refusal;
use http::HeaderMap;
use portcullis_config::{WorkloadIdentityConfig, WorkloadSource};
use portcullis_core::{Identity, IdentityKind, Reason};
use portcullis_identity::workload;

/// A peer identity a front end verified itself: the URI SAN of an mTLS client
/// certificate (`Mtls`), or the `source.principal` Envoy verified over mTLS and
/// reported to ext_authz (`Xfcc`, as Envoy is what writes XFCC too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub source: WorkloadSource,
    pub spiffe_id: String,
}

/// The caller's SPIFFE ID. Sidecar headers count only from trusted peers (the
/// front end has already removed them from anyone else). Every line of a header
/// counts: several `x-forwarded-client-cert` lines read as one list whose last
/// element decides, and more than one `l5d-client-id` is refused (400), since
/// Linkerd sends exactly one. Only identities of the configured trust domain
/// count.
pub fn resolve(
    cfg: Option<&WorkloadIdentityConfig>,
    headers: &HeaderMap,
    peer: Option<&PeerIdentity>,
    peer_trusted: bool,
) -> Result<Option<String>, Refusal> {
    let Some(cfg) = cfg else {
        return Ok(None);
    };
    for &source in &cfg.accept {
        let verified = peer
            .filter(|p| p.source == source)
            .map(|p| p.spiffe_id.clone());
        let found = match source {
            WorkloadSource::Mtls => verified,
            WorkloadSource::Linkerd if peer_trusted => {
                let mut lines = headers.get_all(names::L5D_CLIENT_ID).iter();
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
            WorkloadSource::Xfcc => verified.or_else(|| {
                if !peer_trusted {
                    return None;
                }
                let lines = headers.get_all(names::X_FORWARDED_CLIENT_CERT);
                lines.iter().next()?;
                // A line that is not text makes the whole list unreadable.
                let text: Option<Vec<&str>> = lines.iter().map(|v| v.to_str().ok()).collect();
                workload::spiffe_id_from_xfcc_lines(text?).ok().flatten()
            }),
            WorkloadSource::Linkerd => None,
        };
        // A certificate or a sidecar header naming another trust domain proves
        // nothing about this mesh's workloads.
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
pub fn attach(identity: &mut Identity, spiffe: String) {
    if identity.kind == IdentityKind::Anonymous {
        identity.kind = IdentityKind::Workload;
        identity.subject = spiffe.clone();
    }
    identity.workload = Some(spiffe);
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_verified_peer_counts_only_for_its_own_source() {
        let cfg = WorkloadIdentityConfig {
            trust_domain: "cluster.local".to_string(),
            accept: vec![WorkloadSource::Xfcc],
        };
        let envoy = PeerIdentity {
            source: WorkloadSource::Xfcc,
            spiffe_id: "spiffe://cluster.local/ns/a/sa/b".to_string(),
        };
        let h = HeaderMap::new();
        assert_eq!(
            resolve(Some(&cfg), &h, Some(&envoy), false)
                .unwrap()
                .as_deref(),
            Some("spiffe://cluster.local/ns/a/sa/b")
        );
        let cert = PeerIdentity {
            source: WorkloadSource::Mtls,
            ..envoy
        };
        assert_eq!(resolve(Some(&cfg), &h, Some(&cert), false).unwrap(), None);
    }
}
