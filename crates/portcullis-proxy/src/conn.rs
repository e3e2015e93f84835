//! What a front end knows about the connection a request came on.

use crate::listener::h1_guard::Verdict;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the listener knows about a connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as text, made once per connection rather than per
    /// request (for `X-Forwarded-For` and the audit line).
    pub peer_ip: HeaderValue,
    pub tls: bool,
    /// DER of the verified client certificate, when one was presented over mTLS.
    pub peer_cert: Option<Vec<u8>>,
    pub verdict: Arc<Verdict>,
}
