//! One configured provider, compiled: its algorithm allow-list, claim rules,
//! claims mapping, key cache and (optionally) introspection client.

use crate::claims::{ClaimMapping, Source};
use crate::error::{AuthError, AuthenticatorError};
use crate::fetch::Fetch;
use crate::introspection::Introspector;
use crate::jose::compact::Compact;
use crate::jose::Alg;
use crate::jwks::cache::{JwksCache, KeySource, Timing};
use crate::metrics::IdentityMetrics;
use crate::validation::{check_claims, check_typ, normalize_typ, Checked, Rules};
use aws_lc_rs::hmac;
use portcullis_config::ProviderConfig;
use portcullis_core::{Identity, Reason};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) struct Provider {
    pub name: String,
    pub issuer: String,
    allowed: Vec<Alg>,
    /// HMAC keys from `shared_secret`, one per allowed HS algorithm.
    hmac_keys: Vec<(Alg, hmac::Key)>,
    pub rules: Rules,
    pub mapping: ClaimMapping,
    pub jwks: Option<Arc<JwksCache>>,
    pub introspection: Option<Introspector>,
}

impl Provider {
    /// Compiles `cfg`, reusing a warm key cache from `previous` when its source and
    /// timing are unchanged.
    pub(crate) fn compile(
        cfg: &ProviderConfig,
        fetch: &Arc<dyn Fetch>,
        metrics: &IdentityMetrics,
        previous: &[Arc<JwksCache>],
    ) -> Result<Self, AuthenticatorError> {
        let err = |m: String| AuthenticatorError::provider(&cfg.name, m);
        let mut allowed = Vec::new();
        for name in &cfg.algorithms {
            if name.eq_ignore_ascii_case("none") {
                return Err(err("algorithm `none` is never allowed".into()));
            }
            let alg = Alg::parse(name).ok_or_else(|| err(format!("unknown algorithm `{name}`")))?;
            if alg.is_hmac() && cfg.shared_secret.is_none() {
                return Err(err(format!("algorithm {alg} needs a `shared_secret`")));
            }
            allowed.push(alg);
        }
        if allowed.is_empty() {
            return Err(err("no algorithms allowed".into()));
        }
        let mut hmac_keys = Vec::new();
        if let Some(secret) = &cfg.shared_secret {
            for &alg in allowed.iter().filter(|a| a.is_hmac()) {
                let (algorithm, min) = match alg {
                    Alg::HS384 => (hmac::HMAC_SHA384, 48),
                    Alg::HS512 => (hmac::HMAC_SHA512, 64),
                    _ => (hmac::HMAC_SHA256, 32),
                };
                // RFC 7518 §3.2: the key must be at least as long as the hash.
                if secret.len() < min {
                    return Err(err(format!(
                        "`shared_secret` must be at least {min} bytes for {alg}"
                    )));
                }
                hmac_keys.push((alg, hmac::Key::new(algorithm, secret.as_bytes())));
            }
        }
        if cfg.audiences.is_empty() && !cfg.allow_any_audience {
            return Err(err(
                "`audiences` is empty; list them or set `allow_any_audience: true`".into(),
            ));
        }
        let rules = Rules {
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            allow_any_audience: cfg.allow_any_audience,
            skew: cfg.clock_skew.get().as_secs(),
            max_age: cfg.max_token_age.map(|d| d.get().as_secs()),
            token_types: cfg.token_types.iter().map(|t| normalize_typ(t)).collect(),
        };
        let mapping = ClaimMapping::compile(&cfg.claims).map_err(err)?;
        let source = match (&cfg.jwks_file, &cfg.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(err("set only one of `jwks_uri` and `jwks_file`".into()))
            }
            (Some(file), None) => Some(KeySource::File(PathBuf::from(file))),
            (None, Some(uri)) => Some(KeySource::Uri(uri.clone())),
            (None, None) if cfg.uses_discovery() => Some(KeySource::Discovery {
                issuer: cfg.issuer.clone(),
            }),
            (None, None) => None,
        };
        let timing = Timing {
            refresh: cfg.jwks_refresh.get(),
            min_refresh: cfg.jwks_min_refresh.get(),
            stale_max: cfg.jwks_stale_max.get(),
        };
        let jwks = source.map(|source| {
            previous
                .iter()
                .find(|c| c.same_config(&cfg.name, &source, &timing))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(JwksCache::new(
                        &cfg.name,
                        source,
                        timing,
                        fetch.clone(),
                        metrics.clone(),
                    ))
                })
        });
        let introspection = cfg
            .introspection
            .as_ref()
            .map(Introspector::new)
            .transpose()
            .map_err(err)?;
        Ok(Self {
            name: cfg.name.clone(),
            issuer: cfg.issuer.clone(),
            allowed,
            hmac_keys,
            rules,
            mapping,
            jwks,
            introspection,
        })
    }

    /// Verifies a parsed token routed to this provider: algorithm, `typ`, key,
    /// signature, then claims, then the mapping.
    pub(crate) async fn verify(
        &self,
        token: Compact<'_>,
        now: u64,
    ) -> Result<(Identity, Checked), AuthError> {
        let alg = self.allowed_alg(&token)?;
        check_typ(token.header.typ.as_deref(), &self.rules)?;
        self.verify_signature(alg, &token).await?;
        let checked = check_claims(&token.claims, &self.rules, now)?;
        let identity = self.mapping.identity(
            Arc::new(Value::Object(token.claims)),
            Source {
                provider: &self.name,
                issuer: &self.issuer,
                expires_at: Some(checked.exp),
                subject_may_be_client: false,
            },
        )?;
        Ok((identity, checked))
    }

    /// The token's algorithm, when this provider allows it.
    pub(crate) fn allowed_alg(&self, token: &Compact<'_>) -> Result<Alg, AuthError> {
        let alg = token.header.algorithm()?;
        if !self.allowed.contains(&alg) {
            return Err(AuthError::new(
                Reason::AlgorithmNotAllowed,
                format!("algorithm {alg} is not allowed for this provider"),
            ));
        }
        Ok(alg)
    }

    /// The signature, with the configured secret (HMAC) or a key of this
    /// provider's JWKS: every token this provider vouches for (access, ID and
    /// logout tokens) is verified here.
    pub(crate) async fn verify_signature(
        &self,
        alg: Alg,
        token: &Compact<'_>,
    ) -> Result<(), AuthError> {
        if alg.is_hmac() {
            // Only the configured secret: never a key from the JWKS, so a public
            // key can never be used as an HMAC secret.
            let key = self
                .hmac_keys
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, k)| k)
                .ok_or_else(|| {
                    AuthError::new(
                        Reason::AlgorithmNotAllowed,
                        format!("algorithm {alg} is not allowed"),
                    )
                })?;
            // Constant-time comparison inside aws-lc-rs.
            hmac::verify(key, token.signing_input, &token.signature)
                .map_err(|_| AuthError::new(Reason::BadSignature, "signature does not verify"))
        } else {
            let jwks = self.jwks.as_ref().ok_or_else(|| {
                AuthError::new(
                    Reason::UnknownKey,
                    "this provider has no public keys configured",
                )
            })?;
            let key = jwks.key_for(token.header.kid.as_deref(), alg).await?;
            if key.verify(alg, token.signing_input, &token.signature) {
                Ok(())
            } else {
                Err(AuthError::new(
                    Reason::BadSignature,
                    "signature does not verify",
                ))
            }
        }
    }
}
