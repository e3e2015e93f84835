//! Errors: [`AuthError`] for a rejected credential, [`AuthenticatorError`] for a
//! provider configuration this crate cannot use.

use portcullis_core::Reason;

/// Why a credential was rejected.
///
/// `reason` drives the status code, the `error` code of the response body and the
/// metric label; `description` is a short human sentence safe to put in
/// `error_description` — it never contains the token, and any attacker-chosen
/// value quoted in it (a `kid`, an `iss`) is cut short and stripped of characters
/// that could break a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {description}")]
pub struct AuthError {
    pub reason: Reason,
    pub description: String,
    /// The configured provider the token was routed to, when known.
    pub provider: Option<String>,
}

impl AuthError {
    pub(crate) fn new(reason: Reason, description: impl Into<String>) -> Self {
        Self {
            reason,
            description: description.into(),
            provider: None,
        }
    }

    pub(crate) fn invalid(description: impl Into<String>) -> Self {
        Self::new(Reason::InvalidToken, description)
    }

    pub(crate) fn with_provider(mut self, provider: &str) -> Self {
        if self.provider.is_none() {
            self.provider = Some(provider.to_string());
        }
        self
    }
}

/// A provider configuration that cannot be used (the config validator should have
/// caught it; this is the last line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticatorError {
    #[error("provider `{provider}`: {message}")]
    Provider { provider: String, message: String },
}

impl AuthenticatorError {
    pub(crate) fn provider(provider: &str, message: impl Into<String>) -> Self {
        Self::Provider {
            provider: provider.to_string(),
            message: message.into(),
        }
    }
}
