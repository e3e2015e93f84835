//! Portcullis identity: turns credentials into a verified [`Identity`].
//!
//! * [`Authenticator`] verifies bearer tokens — JWTs against each configured
//!   provider's keys, opaque tokens by RFC 7662 introspection — and maps their
//!   claims to an [`Identity`].
//! * [`assertion`] signs the JWT the proxy hands to upstreams and publishes its keys.
//! * [`keys`] generates keys and mints development tokens for the CLI.
//! * [`workload`] extracts SPIFFE IDs from client certificates and sidecar headers.
//! * [`outbound`] obtains client-credentials tokens the proxy sends to upstreams.
//! * [`https`] builds the TLS client settings every outbound connection uses.
//!
//! # Why our own JOSE verifier
//!
//! Token verification is the one place where a library default can silently
//! become a vulnerability. The popular `jsonwebtoken` crate ignores a JWK's `alg`
//! and an EC key's `crv` when choosing how to verify, and its validation toggles
//! are easy to get wrong. The compact JWS format is small, so [`jose`] parses it
//! here — strict base64url, strict JSON (duplicate keys refused), a bounded
//! length — and every check (algorithm allow-list, key type and curve agreement,
//! `use`, `crit`, `typ`, claim types) is code in this crate with a test that shows
//! the attack it stops. Signatures themselves are verified by `aws-lc-rs`, the
//! same crypto library rustls uses in this binary.
//!
//! # Secrets
//!
//! Tokens, client secrets and shared secrets are never logged or put into an
//! error: logs carry at most a short SHA-256 prefix of a token.
#![forbid(unsafe_code)]

pub mod assertion;
mod assertion_keys;
mod authenticator;
mod claim_path;
mod claims;
mod discovery;
mod error;
pub mod fetch;
pub mod https;
mod introspection;
pub mod jose;
mod jwks;
pub mod keys;
pub mod metrics;
pub mod oidc;
pub mod outbound;
mod provider;
mod token_cache;
mod util;
mod validation;
pub mod workload;

pub use authenticator::{Authenticator, ProviderReadiness};
pub use error::{AuthError, AuthenticatorError};
pub use fetch::{Fetch, FetchError, FetchResponse, HttpFetch};
#[doc(hidden)]
pub use jwks::parse_jwks;
pub use metrics::IdentityMetrics;
pub use outbound::{Credential, CredentialStore, OutboundError};
pub use portcullis_core::{Identity, IdentityKind, Reason};
pub use token_cache::PrfKeyHasher;
pub use util::KeyedHash;

#[cfg(test)]
mod testutil;
