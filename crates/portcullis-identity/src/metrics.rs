//! Identity metrics (SPEC §8). One [`IdentityMetrics`] is created by the proxy,
//! registered once, and cloned into every [`crate::Authenticator`] it builds, so the
//! series survive config reloads. Label values are bounded: provider names come
//! from the config (an unknown issuer is counted as `unknown`, never by its `iss`),
//! reasons and results from fixed sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderReasonLabels {
    pub provider: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderResultLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialResultLabels {
    pub credential: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// The identity crate's metrics; cheap to clone (all clones share the series).
#[derive(Debug, Clone, Default)]
pub struct IdentityMetrics {
    /// `portcullis_auth_failures_total{provider,reason}`
    pub auth_failures: Family<ProviderReasonLabels, Counter>,
    /// `portcullis_jwks_refresh_total{provider,result}`: result is `success`,
    /// `error` (unreachable, HTTP error) or `invalid` (a response we refused).
    pub jwks_refresh: Family<ProviderResultLabels, Counter>,
    /// `portcullis_jwks_keys{provider}`: usable keys currently serving.
    pub jwks_keys: Family<ProviderLabels, Gauge>,
    /// `portcullis_token_cache_total{result}`: `hit` or `miss`.
    pub token_cache: Family<ResultLabels, Counter>,
    /// `portcullis_outbound_token_fetch_total{credential,result}`: result is
    /// `success`, `error` (unreachable, HTTP error) or `invalid` (a response we refused).
    pub outbound_token_fetch: Family<CredentialResultLabels, Counter>,
}

impl IdentityMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every series in `registry` (counters get the `_total` suffix from
    /// the encoder).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "portcullis_auth_failures",
            "Rejected credentials by provider and reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "portcullis_jwks_refresh",
            "JWKS fetch attempts by provider and result",
            self.jwks_refresh.clone(),
        );
        registry.register(
            "portcullis_jwks_keys",
            "Usable signing keys currently loaded per provider",
            self.jwks_keys.clone(),
        );
        registry.register(
            "portcullis_token_cache",
            "Verified-token cache lookups by result",
            self.token_cache.clone(),
        );
        registry.register(
            "portcullis_outbound_token_fetch",
            "Outbound client-credentials token requests by credential and result",
            self.outbound_token_fetch.clone(),
        );
    }

    pub(crate) fn auth_failure(&self, provider: Option<&str>, reason: portcullis_core::Reason) {
        self.auth_failures
            .get_or_create(&ProviderReasonLabels {
                provider: provider.unwrap_or("unknown").to_string(),
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    pub(crate) fn jwks_refresh(&self, provider: &str, result: &str) {
        self.jwks_refresh
            .get_or_create(&ProviderResultLabels {
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub(crate) fn set_jwks_keys(&self, provider: &str, n: usize) {
        self.jwks_keys
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn outbound_token_fetch(&self, credential: &str, result: &str) {
        self.outbound_token_fetch
            .get_or_create(&CredentialResultLabels {
                credential: credential.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Current value of `portcullis_outbound_token_fetch_total{credential,result}`.
    pub fn outbound_fetch_count(&self, credential: &str, result: &str) -> u64 {
        self.outbound_token_fetch
            .get_or_create(&CredentialResultLabels {
                credential: credential.to_string(),
                result: result.to_string(),
            })
            .get()
    }

    /// Drops the key gauge of a provider removed by a reload.
    pub(crate) fn forget_provider(&self, provider: &str) {
        self.jwks_keys.remove(&ProviderLabels {
            provider: provider.to_string(),
        });
    }

    /// Current value of `portcullis_token_cache_total{result}` (for tests and `explain`).
    pub fn cache_count(&self, result: &str) -> u64 {
        self.token_cache
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_match_the_spec() {
        let m = IdentityMetrics::new();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.auth_failure(None, portcullis_core::Reason::BadSignature);
        m.jwks_refresh("idp", "success");
        m.set_jwks_keys("idp", 2);
        crate::token_cache::CacheCounters::new(&m).count(true);
        m.outbound_token_fetch("partner-api", "success");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for needle in [
            r#"portcullis_auth_failures_total{provider="unknown",reason="bad_signature"} 1"#,
            r#"portcullis_jwks_refresh_total{provider="idp",result="success"} 1"#,
            r#"portcullis_jwks_keys{provider="idp"} 2"#,
            r#"portcullis_token_cache_total{result="hit"} 1"#,
            r#"portcullis_outbound_token_fetch_total{credential="partner-api",result="success"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}
