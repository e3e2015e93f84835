//! The two tokens a login provider sends the proxy itself, verified like bearer
//! tokens (the provider's allow-listed algorithms, its keys, strict parsing)
//! but with the claim rules of their own specification:
//!
//! * ID tokens (OpenID Connect Core §3.1.3.7): `iss` exact, `aud` contains the
//!   client id (and `azp`, when present, is it), `exp`, `iat`, `sub`, and the
//!   `nonce` the sign-in started with. An access token (`typ: at+jwt`) or a
//!   logout token is not an ID token.
//! * Logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4, §2.6): `iss`,
//!   `aud`, `iat`, `jti`, the back-channel logout event, `sid` or `sub`, and no
//!   `nonce` (so an ID token can never be replayed as one).

use crate::authenticator::Authenticator;
use crate::claims::Source;
use crate::error::AuthError;
use crate::jose::compact;
use crate::provider::Provider;
use crate::util::{now_unix, quote};
use crate::validation::{normalize_typ, numeric_date as date, optional_str as string};
use portcullis_core::{Identity, IdentityKind, Reason};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The event a logout token must carry.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// `typ` values an ID token may carry (normalized: lowercase, no
/// `application/`); an access token's `at+jwt` is not among them.
const ID_TOKEN_TYPES: &[&str] = &["jwt", "id_token", "id+jwt"];
/// `typ` values a logout token may carry (Back-Channel Logout §2.4).
const LOGOUT_TOKEN_TYPES: &[&str] = &["logout+jwt", "jwt"];
/// A logout token issued longer ago than this is refused (the spec lets the
/// receiver choose; it is delivered at once).
const MAX_LOGOUT_TOKEN_AGE: u64 = 300;

/// Whom a verified logout token signs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub sid: Option<String>,
    pub sub: Option<String>,
}

impl Authenticator {
    /// Verifies an ID token from the provider named `provider` for the login
    /// client `client_id`. `nonce` is the one the sign-in sent (`None` for an ID
    /// token from a refresh, which OpenID Connect lets omit it). The identity
    /// is a person's: whatever its claims look like, a browser signed in.
    pub async fn verify_id_token(
        &self,
        provider: &str,
        token: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let (p, claims) = self
            .login_token(provider, token, client_id, ID_TOKEN_TYPES, "an ID token")
            .await?;
        let now = now_unix();
        let skew = p.rules.skew;
        let exp = date(&claims, "exp")?.ok_or_else(|| AuthError::invalid("no `exp`"))?;
        if now > exp.saturating_add(skew) {
            return Err(AuthError::new(Reason::TokenExpired, "ID token has expired"));
        }
        let iat = date(&claims, "iat")?.ok_or_else(|| AuthError::invalid("no `iat`"))?;
        if iat > now.saturating_add(skew) {
            return Err(AuthError::new(
                Reason::TokenNotYetValid,
                "ID token was issued in the future",
            ));
        }
        match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(AuthError::invalid("ID token has no `sub`")),
        }
        let azp = string(&claims, "azp")?;
        if azp.is_some_and(|a| a != client_id) {
            return Err(AuthError::invalid("ID token's `azp` is another client"));
        }
        match (nonce, string(&claims, "nonce")?) {
            (Some(want), Some(got))
                if aws_lc_rs::constant_time::verify_slices_are_equal(
                    want.as_bytes(),
                    got.as_bytes(),
                )
                .is_ok() => {}
            (Some(_), _) => return Err(AuthError::invalid("ID token's `nonce` does not match")),
            (None, _) => {}
        }
        let mut identity = p.mapping.identity(
            Arc::new(Value::Object(claims)),
            Source {
                provider: &p.name,
                issuer: &p.issuer,
                expires_at: Some(exp),
                subject_may_be_client: false,
            },
        )?;
        identity.kind = IdentityKind::User;
        Ok(identity)
    }

    /// Verifies a back-channel `logout_token` from `provider` for `client_id`.
    pub async fn verify_logout_token(
        &self,
        provider: &str,
        token: &str,
        client_id: &str,
    ) -> Result<LogoutToken, AuthError> {
        let (p, claims) = self
            .login_token(
                provider,
                token,
                client_id,
                LOGOUT_TOKEN_TYPES,
                "a logout token",
            )
            .await?;
        let now = now_unix();
        let skew = p.rules.skew;
        let iat = date(&claims, "iat")?.ok_or_else(|| AuthError::invalid("no `iat`"))?;
        if iat > now.saturating_add(skew) || now > iat.saturating_add(MAX_LOGOUT_TOKEN_AGE + skew) {
            return Err(AuthError::invalid("logout token's `iat` is not recent"));
        }
        if let Some(exp) = date(&claims, "exp")? {
            if now > exp.saturating_add(skew) {
                return Err(AuthError::new(Reason::TokenExpired, "logout token expired"));
            }
        }
        if string(&claims, "jti")?.is_none() {
            return Err(AuthError::invalid("logout token has no `jti`"));
        }
        match claims.get("events") {
            Some(Value::Object(events))
                if matches!(events.get(BACKCHANNEL_EVENT), Some(Value::Object(_))) => {}
            _ => {
                return Err(AuthError::invalid(
                    "logout token has no back-channel logout event",
                ))
            }
        }
        if claims.contains_key("nonce") {
            return Err(AuthError::invalid("a logout token carries no `nonce`"));
        }
        let sid = string(&claims, "sid")?.map(str::to_string);
        let sub = string(&claims, "sub")?.map(str::to_string);
        if sid.is_none() && sub.is_none() {
            return Err(AuthError::invalid(
                "logout token names neither `sid` nor `sub`",
            ));
        }
        Ok(LogoutToken { sid, sub })
    }

    /// The steps both tokens share: the provider named `provider` (the
    /// token's `iss` does not choose it here: the login flow knows whom it
    /// asked), strict parsing, a `typ` among `types` (absent is fine), an
    /// allowed algorithm, the signature, `iss` and `aud`. Returns the provider
    /// and the verified claims.
    async fn login_token(
        &self,
        provider: &str,
        token: &str,
        client_id: &str,
        types: &[&str],
        what: &str,
    ) -> Result<(&Provider, Map<String, Value>), AuthError> {
        let p = self
            .provider_named(provider)
            .ok_or_else(|| AuthError::invalid(format!("unknown provider {}", quote(provider))))?;
        let parsed = compact::parse(token).map_err(|e| e.with_provider(&p.name))?;
        if let Some(typ) = parsed.header.typ.as_deref().map(normalize_typ) {
            if !types.contains(&typ.as_str()) {
                return Err(AuthError::invalid(format!(
                    "token type {} is not {what}",
                    quote(&typ)
                )));
            }
        }
        let alg = p.allowed_alg(&parsed)?;
        p.verify_signature(alg, &parsed).await?;
        let claims = parsed.claims;
        common_claims(&claims, &p.issuer, client_id)?;
        Ok((p, claims))
    }
}

/// `iss` exactly the provider's, `aud` naming the client.
fn common_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
) -> Result<(), AuthError> {
    match string(claims, "iss")? {
        Some(iss) if iss == issuer => {}
        Some(iss) => {
            return Err(AuthError::new(
                Reason::WrongIssuer,
                format!("issuer {} is not the login provider", quote(iss)),
            ))
        }
        None => return Err(AuthError::invalid("token has no `iss`")),
    }
    let names_client = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(items)) => {
            if !items.iter().all(Value::is_string) {
                return Err(AuthError::invalid("claim `aud` is not a list of strings"));
            }
            items.iter().any(|a| a.as_str() == Some(client_id))
        }
        _ => return Err(AuthError::invalid("token has no usable `aud`")),
    };
    if names_client {
        Ok(())
    } else {
        Err(AuthError::new(
            Reason::WrongAudience,
            "token is not meant for the login client",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::{jwks, FakeFetch, TestKey};
    use crate::IdentityMetrics;
    use portcullis_config::ProviderConfig;
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";
    const JWKS: &str = "https://idp.example.com/jwks";

    async fn setup(key: &TestKey) -> Authenticator {
        let fetch = FakeFetch::new();
        fetch.set(JWKS, 200, &jwks(&[key.public_jwk("k1")]));
        let cfg: ProviderConfig = serde_json::from_value(json!({
            "name": "idp", "issuer": ISS, "jwks_uri": JWKS, "audiences": ["api"],
        }))
        .unwrap();
        let a = Authenticator::new(&[cfg], fetch, IdentityMetrics::new()).unwrap();
        a.start().await;
        a
    }

    fn id_claims() -> Value {
        let now = now_unix();
        json!({"iss": ISS, "aud": "portal", "sub": "alice", "iat": now, "exp": now + 300,
               "nonce": "n-1", "email": "alice@example.com", "sid": "s-1"})
    }

    fn with(mut base: Value, k: &str, v: Value) -> Value {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v;
        }
        base
    }

    #[tokio::test]
    async fn id_tokens_need_the_nonce_audience_and_issuer() {
        let key = TestKey::es256();
        let a = setup(&key).await;
        let good = key.jwt("k1", id_claims());
        let id = a
            .verify_id_token("idp", &good, "portal", Some("n-1"))
            .await
            .unwrap();
        assert_eq!(id.subject, "alice");
        assert_eq!(id.kind, IdentityKind::User);
        let refused = [
            (key.jwt("k1", id_claims()), Some("n-2")),
            (
                key.jwt("k1", with(id_claims(), "nonce", Value::Null)),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "aud", json!("other"))),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "aud", json!(["portal", 7]))),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "azp", json!("other"))),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "iss", json!("https://evil"))),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "exp", json!(1))),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "iat", Value::Null)),
                Some("n-1"),
            ),
            (
                key.jwt("k1", with(id_claims(), "sub", Value::Null)),
                Some("n-1"),
            ),
            (
                key.token(
                    json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
                    id_claims(),
                ),
                Some("n-1"),
            ),
            (TestKey::es256().jwt("k1", id_claims()), Some("n-1")),
        ];
        for (token, nonce) in refused {
            let got = a.verify_id_token("idp", &token, "portal", nonce).await;
            assert!(got.is_err(), "{nonce:?} {token}");
        }
        assert!(a
            .verify_id_token("nobody", &good, "portal", Some("n-1"))
            .await
            .is_err());
    }

    fn logout_claims() -> Value {
        json!({"iss": ISS, "aud": "portal", "sub": "alice", "sid": "s-1", "iat": now_unix(),
               "jti": "j-1", "events": {BACKCHANNEL_EVENT: {}}})
    }

    #[tokio::test]
    async fn logout_tokens_follow_back_channel_logout() {
        let key = TestKey::es256();
        let a = setup(&key).await;
        let good = key.token(
            json!({"alg": "ES256", "kid": "k1", "typ": "logout+jwt"}),
            logout_claims(),
        );
        let who = a.verify_logout_token("idp", &good, "portal").await.unwrap();
        assert_eq!(who.sid.as_deref(), Some("s-1"));
        let refused = [
            // An ID token is not a logout token: it has a nonce and no event.
            key.jwt("k1", id_claims()),
            key.jwt("k1", with(logout_claims(), "nonce", json!("n"))),
            key.jwt("k1", with(logout_claims(), "events", json!({}))),
            key.jwt(
                "k1",
                with(logout_claims(), "events", json!({BACKCHANNEL_EVENT: "x"})),
            ),
            key.jwt("k1", with(logout_claims(), "jti", Value::Null)),
            key.jwt("k1", with(logout_claims(), "iat", json!(now_unix() - 3600))),
            key.jwt(
                "k1",
                with(
                    with(logout_claims(), "sid", Value::Null),
                    "sub",
                    Value::Null,
                ),
            ),
            key.jwt("k1", with(logout_claims(), "aud", json!("other"))),
            key.token(
                json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
                logout_claims(),
            ),
            TestKey::es256().jwt("k1", logout_claims()),
        ];
        for token in refused {
            assert!(
                a.verify_logout_token("idp", &token, "portal")
                    .await
                    .is_err(),
                "{token}"
            );
        }
    }
}
