//! The vocabulary shared by every Portcullis crate: who is calling ([`Identity`]) and
//! why a request ended the way it did ([`Reason`]).
//!
//! It lives in its own tiny crate so that the pure crates (config, policy) and the
//! I/O crates (identity, proxy) agree on these types without depending on each other.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What kind of caller an [`Identity`] describes, as written in the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// A person, signed in through an OpenID provider.
    User,
    /// A machine client: an OAuth2 client-credentials token, a service-account token.
    Service,
    /// A workload known only by its SPIFFE ID (mTLS or a trusted sidecar header).
    Workload,
    /// Nobody proved anything.
    #[default]
    Anonymous,
}

impl IdentityKind {
    /// The lowercase word used in audit lines and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::User => "user",
            IdentityKind::Service => "service",
            IdentityKind::Workload => "workload",
            IdentityKind::Anonymous => "anonymous",
        }
    }
}

/// A verified caller. Built only by the identity crate from checked credentials;
/// policy and propagation read it, never the raw token. (`Deserialize` is for
/// the proxy's own session store, which reads back only what it sealed.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    /// Subject (`sub`, or the configured claim). Empty for a pure workload or anonymous caller.
    pub subject: String,
    /// The name of the configured provider that vouched for the token.
    pub provider: Option<String>,
    /// The original issuer (`iss`).
    pub issuer: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    /// The workload's SPIFFE ID, from mTLS or a trusted sidecar header.
    pub workload: Option<String>,
    /// The verified claims, for `claims` policy conditions. `Null` when there is no token.
    #[serde(skip)]
    pub claims: Arc<serde_json::Value>,
    /// Token expiry (Unix seconds), when the identity came from a token.
    #[serde(skip)]
    pub expires_at: Option<u64>,
}

impl Default for Identity {
    /// The caller nobody vouched for. Its `Null` claims are one shared value:
    /// every request starts out anonymous, and this costs no allocation.
    fn default() -> Self {
        static NULL: std::sync::LazyLock<Arc<serde_json::Value>> =
            std::sync::LazyLock::new(|| Arc::new(serde_json::Value::Null));
        Self {
            kind: IdentityKind::default(),
            subject: String::new(),
            provider: None,
            issuer: None,
            email: None,
            name: None,
            groups: Vec::new(),
            roles: Vec::new(),
            scopes: Vec::new(),
            client_id: None,
            workload: None,
            claims: Arc::clone(&NULL),
            expires_at: None,
        }
    }
}

impl Identity {
    /// The caller nobody vouched for.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The caller nobody vouched for, as the one value every request shares
    /// until someone proves otherwise (no allocation).
    pub fn anonymous_shared() -> Arc<Identity> {
        static ANONYMOUS: std::sync::LazyLock<Arc<Identity>> =
            std::sync::LazyLock::new(|| Arc::new(Identity::default()));
        Arc::clone(&ANONYMOUS)
    }

    /// True when a token, session or workload identity was verified.
    pub fn is_authenticated(&self) -> bool {
        self.kind != IdentityKind::Anonymous
    }
}

/// Every way a request can end, as the stable snake_case codes of SPEC §6.
/// One enum drives the status code, the response body, the audit `reason`
/// and the metric labels, so they can never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Allowed,
    MissingToken,
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
    BadSignature,
    UnknownKey,
    AlgorithmNotAllowed,
    WrongIssuer,
    WrongAudience,
    Forbidden,
    InsufficientScope,
    RateLimited,
    NoRoute,
    BadRequest,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// An outbound token for `upstream_auth` could not be obtained (SPEC §9).
    CredentialUnavailable,
    /// A browser session ended (logout, expiry, failed refresh).
    SessionExpired,
}

impl Reason {
    /// The SPEC §6 code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Forbidden => "forbidden",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::RateLimited => "rate_limited",
            Reason::NoRoute => "no_route",
            Reason::BadRequest => "bad_request",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::CredentialUnavailable => "credential_unavailable",
            Reason::SessionExpired => "session_expired",
        }
    }

    /// The HTTP status SPEC §6 assigns to this reason.
    pub fn status(self) -> u16 {
        match self {
            Reason::Allowed => 200,
            Reason::MissingToken
            | Reason::InvalidToken
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::BadSignature
            | Reason::UnknownKey
            | Reason::AlgorithmNotAllowed
            | Reason::WrongIssuer
            | Reason::WrongAudience
            | Reason::SessionExpired => 401,
            Reason::Forbidden | Reason::InsufficientScope => 403,
            Reason::RateLimited => 429,
            Reason::NoRoute => 404,
            Reason::BadRequest => 400,
            Reason::UpstreamUnavailable | Reason::CredentialUnavailable => 502,
            Reason::UpstreamTimeout => 504,
        }
    }

    /// True for the reasons that mean "the credential presented is bad" (401 with
    /// `error="invalid_token"`), as opposed to "no credential" or a policy denial.
    pub fn is_token_failure(self) -> bool {
        self.status() == 401 && !matches!(self, Reason::MissingToken | Reason::SessionExpired)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error and its sources on one line (`outer: cause: root cause`), for logs and
/// messages: the outermost error of an HTTP client alone rarely says what failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_spec() {
        assert_eq!(Reason::TokenExpired.as_str(), "token_expired");
        assert_eq!(Reason::TokenExpired.status(), 401);
        assert!(Reason::TokenExpired.is_token_failure());
        assert!(!Reason::MissingToken.is_token_failure());
        assert_eq!(Reason::InsufficientScope.status(), 403);
        assert_eq!(Reason::UpstreamTimeout.status(), 504);
        assert_eq!(
            Reason::CredentialUnavailable.as_str(),
            "credential_unavailable"
        );
        assert_eq!(Reason::CredentialUnavailable.status(), 502);
        assert_eq!(
            serde_json::to_string(&Reason::NoRoute).ok().as_deref(),
            Some("\"no_route\"")
        );
    }
}
