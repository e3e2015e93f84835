//! What a front end knows about the connection a request came on.

use crate::judge::PeerIdentity;
use crate::listener::h1_guard::Verdict;
use http::HeaderValue;
use portcullis_config::WorkloadSource;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the listener knows about a connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as text, made once per connection rather than per
    /// request (for `X-Forwarded-For` and the audit line).
    pub peer_ip: HeaderValue,
    pub tls: bool,
    /// The SPIFFE ID of the verified mTLS client certificate, read once when the
    /// connection opened (not per request).
    pub peer_identity: Option<PeerIdentity>,
    pub verdict: Arc<Verdict>,
}

impl ConnInfo {
    /// The workload identity a verified client certificate (DER) proves: its
    /// SPIFFE URI SAN, when it has exactly one valid one.
    pub fn mtls_identity(cert_der: &[u8]) -> Option<PeerIdentity> {
        let spiffe_id = portcullis_identity::workload::spiffe_id_from_cert_der(cert_der).ok()?;
        Some(PeerIdentity {
            source: WorkloadSource::Mtls,
            spiffe_id,
        })
    }
}
