//! One client-credentials token request (RFC 6749 §4.4): the form, the client
//! authentication (`client_secret_basic`, `client_secret_post`, or
//! `private_key_jwt` per RFC 7523), and reading the answer.
//!
//! Error messages name the endpoint, the HTTP status and the OAuth `error` code;
//! never the request body, the secret, the assertion or the token.

use crate::fetch::{basic_authorization, form_encode, Fetch};
use crate::jose::json::parse_object;
use crate::jose::{b64_encode, Alg};
use crate::keys::{mint_with, SigningKey};
use crate::util::{now_unix, quote};
use serde_json::{json, Value};
use std::time::Duration;

/// Largest token response we read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest access token we accept (it goes into every upstream request).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Lifetime of a `private_key_jwt` client assertion: it is used at once.
const ASSERTION_TTL_SECS: u64 = 60;
/// Assumed lifetime when a token response has no `expires_in` (RFC 6749 makes it
/// optional); short, so a token of unknown lifetime is not kept long.
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);
/// The longest lifetime a token is taken to have, whatever `expires_in` says.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(24 * 3600);

/// How the client proves who it is to the token endpoint.
pub(crate) enum ClientAuth {
    /// HTTP Basic with the secret (the prepared header value).
    Basic { authorization: String },
    /// `client_id` and `client_secret` in the form.
    Post { secret: String },
    /// An RFC 7523 JWT signed with this key (ES256 or RS256).
    PrivateKeyJwt { key: SigningKey },
}

impl std::fmt::Debug for ClientAuth {
    // The method only: never the secret or the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method())
    }
}

impl ClientAuth {
    pub(crate) fn method(&self) -> &'static str {
        match self {
            ClientAuth::Basic { .. } => "client_secret_basic",
            ClientAuth::Post { .. } => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
        }
    }

    pub(crate) fn basic(client_id: &str, secret: &str) -> Self {
        ClientAuth::Basic {
            authorization: basic_authorization(client_id, secret),
        }
    }

    /// Loads a `private_key_jwt` key; only ES256 and RS256 keys are used.
    pub(crate) fn private_key(pem: &str) -> Result<Self, String> {
        let key = SigningKey::from_pem(pem).map_err(|e| e.to_string())?;
        match key.alg() {
            Alg::ES256 | Alg::RS256 => Ok(ClientAuth::PrivateKeyJwt { key }),
            other => Err(format!(
                "private_key_jwt needs an ES256 (P-256) or RS256 (RSA) key, not {other}"
            )),
        }
    }
}

/// What is asked for, besides the client.
pub(crate) struct Grant<'a> {
    pub client_id: &'a str,
    pub auth: &'a ClientAuth,
    pub scopes: &'a [String],
    pub audience: Option<&'a str>,
}

/// A token as the endpoint issued it.
pub(crate) struct Issued {
    pub access_token: String,
    pub expires_in: Duration,
}

/// Why a token request failed: `invalid` when the endpoint answered something we
/// refuse (for the metric's `result`), else the network or an HTTP error.
#[derive(Debug, Clone)]
pub(crate) struct GrantError {
    pub message: String,
    pub invalid: bool,
}

fn error(message: String) -> GrantError {
    GrantError {
        message,
        invalid: false,
    }
}

fn invalid(message: String) -> GrantError {
    GrantError {
        message,
        invalid: true,
    }
}

/// The form body and `Authorization` value for `grant` at `endpoint`.
pub(crate) fn request(
    grant: &Grant<'_>,
    endpoint: &str,
) -> Result<(String, Option<String>), GrantError> {
    let mut form = vec![("grant_type", "client_credentials".to_string())];
    if !grant.scopes.is_empty() {
        form.push(("scope", grant.scopes.join(" ")));
    }
    if let Some(aud) = grant.audience {
        // Okta/Auth0 read `audience`; RFC 8707 servers read `resource`.
        form.push(("audience", aud.to_string()));
        form.push(("resource", aud.to_string()));
    }
    authenticated_form(form, grant.client_id, grant.auth, endpoint)
}

/// Adds the client's authentication to a token-endpoint `form` (RFC 6749 §2.3,
/// RFC 7523): returns the encoded body and the `Authorization` value, if any.
/// Every grant the proxy makes (client credentials, and the authorization code
/// and refresh grants of browser login) authenticates through here.
pub(crate) fn authenticated_form(
    mut form: Vec<(&'static str, String)>,
    client_id: &str,
    auth: &ClientAuth,
    endpoint: &str,
) -> Result<(String, Option<String>), GrantError> {
    let authorization = match auth {
        ClientAuth::Basic { authorization } => Some(authorization.clone()),
        ClientAuth::Post { secret } => {
            form.push(("client_id", client_id.to_string()));
            form.push(("client_secret", secret.clone()));
            None
        }
        ClientAuth::PrivateKeyJwt { key } => {
            form.push(("client_id", client_id.to_string()));
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ));
            form.push((
                "client_assertion",
                client_assertion(key, client_id, endpoint)?,
            ));
            None
        }
    };
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    Ok((body, authorization))
}

/// RFC 7523 §3: `iss` = `sub` = the client id, `aud` = the token endpoint, a
/// unique `jti` (servers refuse a replayed one), a short `exp`.
pub(crate) fn client_assertion(
    key: &SigningKey,
    client_id: &str,
    endpoint: &str,
) -> Result<String, GrantError> {
    let now = now_unix();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| error("no randomness for jti".into()))?;
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": endpoint,
        "jti": b64_encode(&jti),
        "iat": now,
        "exp": now + ASSERTION_TTL_SECS,
    });
    mint_with(key, None, &claims).map_err(|e| error(format!("client assertion: {e}")))
}

/// Requests a token from `endpoint`.
pub(crate) async fn fetch_token(
    fetch: &dyn Fetch,
    endpoint: &str,
    grant: &Grant<'_>,
) -> Result<Issued, GrantError> {
    let (body, authorization) = request(grant, endpoint)?;
    let doc = post_token_request(fetch, endpoint, body, authorization.as_deref()).await?;
    issued(&doc, endpoint)
}

/// POSTs a prepared token request and returns the answer's JSON object, or an
/// error naming the endpoint, the status and the OAuth `error` code.
pub(crate) async fn post_token_request(
    fetch: &dyn Fetch,
    endpoint: &str,
    body: String,
    authorization: Option<&str>,
) -> Result<serde_json::Map<String, Value>, GrantError> {
    let response = fetch
        .post_form(endpoint, authorization, body, MAX_TOKEN_RESPONSE_BYTES)
        .await
        .map_err(|e| error(format!("POST {endpoint}: {e}")))?;
    let doc = parse_object(&response.body);
    if response.status != 200 {
        // The OAuth error code says what is wrong (invalid_client, invalid_scope);
        // the description is the server's prose and stays out.
        let code = doc
            .ok()
            .and_then(|d| d.get("error").and_then(Value::as_str).map(quote))
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        return Err(error(format!(
            "POST {endpoint}: HTTP {}{code}",
            response.status
        )));
    }
    doc.map_err(|e| invalid(format!("token response from {endpoint} is {e}")))
}

/// The access token of a token response: a usable Bearer token and its lifetime.
pub(crate) fn issued(
    doc: &serde_json::Map<String, Value>,
    endpoint: &str,
) -> Result<Issued, GrantError> {
    let token = match doc.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => {
            return Err(invalid(format!(
                "token response from {endpoint} has no access_token"
            )))
        }
    };
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "access_token from {endpoint} is not a usable bearer token"
        )));
    }
    match doc.get("token_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        other => {
            return Err(invalid(format!(
                "token from {endpoint} has token_type {}, not Bearer",
                other.map(quote).unwrap_or_else(|| "(none)".into())
            )))
        }
    }
    let expires_in = match doc.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_EXPIRES_IN,
        Some(v) => match v.as_u64() {
            // Capped: a token endpoint's `expires_in` near `u64::MAX` would
            // overflow the clock it is added to; refreshing a longer-lived
            // token once a day costs nothing.
            Some(secs) if secs > 0 => Duration::from_secs(secs).min(MAX_EXPIRES_IN),
            _ => {
                return Err(invalid(format!(
                    "token response from {endpoint} has an invalid expires_in"
                )))
            }
        },
    };
    Ok(Issued {
        access_token: token.clone(),
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::compact::decode_unverified;

    fn grant<'a>(auth: &'a ClientAuth, scopes: &'a [String]) -> Grant<'a> {
        Grant {
            client_id: "billing service",
            auth,
            scopes,
            audience: Some("https://partner.example.com"),
        }
    }

    /// An `expires_in` near `u64::MAX` once overflowed the clock it was added
    /// to and panicked every request on the route; it is capped at a day.
    #[test]
    fn a_huge_lifetime_is_taken_as_a_day() {
        let doc = |expires_in: serde_json::Value| {
            serde_json::json!({"access_token": "t", "token_type": "Bearer", "expires_in": expires_in})
                .as_object()
                .cloned()
                .unwrap()
        };
        let lifetime = |v| issued(&doc(v), "https://idp/token").unwrap().expires_in;
        assert_eq!(lifetime(serde_json::json!(u64::MAX)), MAX_EXPIRES_IN);
        assert_eq!(lifetime(serde_json::json!(3600)), Duration::from_secs(3600));
        // And the clock takes it.
        let _ = std::time::Instant::now() + lifetime(serde_json::json!(u64::MAX));
    }

    #[test]
    fn basic_keeps_the_secret_out_of_the_form() {
        let auth = ClientAuth::basic("billing service", "s3cr:t");
        let scopes = vec!["orders:read".to_string(), "orders:write".to_string()];
        let (body, authz) = request(&grant(&auth, &scopes), "https://idp/token").unwrap();
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite\
             &audience=https%3A%2F%2Fpartner.example.com&resource=https%3A%2F%2Fpartner.example.com"
        );
        // RFC 6749 §2.3.1: both parts form-encoded before Basic.
        assert_eq!(
            authz.as_deref(),
            Some("Basic YmlsbGluZytzZXJ2aWNlOnMzY3IlM0F0")
        );
    }

    #[test]
    fn post_puts_the_client_in_the_form() {
        let auth = ClientAuth::Post {
            secret: "s&cret".into(),
        };
        let (body, authz) = request(&grant(&auth, &[]), "https://idp/token").unwrap();
        assert!(authz.is_none());
        assert!(
            body.ends_with("&client_id=billing+service&client_secret=s%26cret"),
            "{body}"
        );
        assert!(!body.contains("scope="));
    }

    #[test]
    fn private_key_jwt_assertion_follows_rfc_7523() {
        for alg in [Alg::ES256, Alg::RS256] {
            let pem = SigningKey::generate(alg).unwrap().to_pkcs8_pem().unwrap();
            let auth = ClientAuth::private_key(&pem).unwrap();
            let (body, authz) = request(&grant(&auth, &[]), "https://idp/token").unwrap();
            assert!(authz.is_none());
            let form: std::collections::HashMap<&str, &str> = body
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            assert_eq!(
                form["client_assertion_type"],
                "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
            );
            let (header, claims) = decode_unverified(form["client_assertion"]).unwrap();
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(claims["iss"], "billing service");
            assert_eq!(claims["sub"], "billing service");
            assert_eq!(claims["aud"], "https://idp/token");
            let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
            assert!(ttl <= 60, "{ttl}");
            let (_, again) = decode_unverified(
                &client_assertion(
                    match &auth {
                        ClientAuth::PrivateKeyJwt { key } => key,
                        _ => unreachable!(),
                    },
                    "c",
                    "https://idp/token",
                )
                .unwrap(),
            )
            .unwrap();
            assert_ne!(again["jti"], claims["jti"], "a jti is never reused");
        }
        let ed = SigningKey::generate(Alg::EdDSA)
            .unwrap()
            .to_pkcs8_pem()
            .unwrap();
        assert!(ClientAuth::private_key(&ed).unwrap_err().contains("ES256"));
        assert!(ClientAuth::private_key("junk").is_err());
    }
}
