//! Strict JOSE: the compact JWS format, JSON Web Keys and signature verification,
//! written here over `aws-lc-rs` so that every check is ours (see the crate doc).
//!
//! * [`compact`] splits and decodes a token (bounded length, strict base64url,
//!   strict JSON) and checks the header.
//! * [`jwk`] turns a JWK into a verifying key, refusing any key whose `kty`, `crv`,
//!   `alg`, `use` or `key_ops` disagree with what it would be used for.
//! * [`Alg`] is the closed set of algorithms we implement.

pub mod compact;
pub(crate) mod json;
pub mod jwk;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// A JWS algorithm this crate implements. Names are case-sensitive (RFC 7515 §4.1.1):
/// `rs256` is not `RS256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Every algorithm, for iteration.
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// Parses an exact `alg` name. `none` (in any casing) is not an algorithm here.
    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// True for the symmetric (shared-secret) algorithms.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    /// The JWK `kty` a key for this algorithm must have.
    pub fn kty(self) -> &'static str {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => "RSA",
            Alg::ES256 | Alg::ES384 => "EC",
            Alg::EdDSA => "OKP",
            Alg::HS256 | Alg::HS384 | Alg::HS512 => "oct",
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes strict base64url: the URL-safe alphabet, no padding, no whitespace,
/// and no stray bits in the last character (so every value has exactly one
/// encoding and a token cannot be altered without changing its signature input).
pub fn b64_decode(input: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(input).ok()
}

/// Encodes base64url without padding.
pub fn b64_encode(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names_are_case_sensitive_and_none_is_not_one() {
        assert_eq!(Alg::parse("RS256"), Some(Alg::RS256));
        assert_eq!(Alg::parse("rs256"), None);
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("EdDSA"), Some(Alg::EdDSA));
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64_decode("YQ").as_deref(), Some(&b"a"[..]));
        assert!(b64_decode("YQ==").is_none(), "padding refused");
        assert!(
            b64_decode("YR").is_none(),
            "non-canonical trailing bits refused"
        );
        assert!(b64_decode("Y Q").is_none(), "whitespace refused");
        assert!(b64_decode("+/").is_none(), "standard alphabet refused");
    }
}
