//! The proxy as an OpenID Connect relying party, for browser login (SPEC §2
//! `login`): the provider's endpoints from discovery, the authorization-code
//! exchange (with the PKCE verifier) and the refresh grant, and the checks an
//! ID token and a back-channel logout token must pass ([`tokens`]).
//!
//! Client authentication is the one of outbound credentials
//! (`client_secret_basic`, or `private_key_jwt` when the provider entry has a
//! `private_key_file`), and every request goes through the provider's own
//! [`Fetch`] (its `ca_file` included). Tokens are held by the caller (the
//! proxy's server-side session store); nothing here logs one.

pub mod tokens;

use crate::discovery::{self, discover_document};
use crate::fetch::Fetch;
use crate::outbound::grant::{authenticated_form, issued, post_token_request, ClientAuth};
use portcullis_config::ProviderConfig;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use tokens::LogoutToken;

/// How long discovered endpoints are reused before discovery runs again.
const ENDPOINTS_TTL: Duration = Duration::from_secs(3600);
/// Largest refresh token kept (it lives in the session store).
const MAX_REFRESH_TOKEN_BYTES: usize = 8 * 1024;
/// Largest ID token accepted from the token endpoint.
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// The provider endpoints browser login uses.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), when offered.
    pub end_session: Option<String>,
}

/// What the token endpoint issued for a session. `Debug` shows no token.
pub struct TokenSet {
    pub access_token: String,
    pub expires_in: Duration,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("id_token", &self.id_token.is_some())
            .finish_non_exhaustive()
    }
}

/// One provider, seen as the authorization server of the proxy's login client.
pub struct RelyingParty {
    issuer: String,
    client_id: String,
    auth: ClientAuth,
    fetch: Arc<dyn Fetch>,
    endpoints: tokio::sync::Mutex<Option<(Arc<Endpoints>, Instant)>>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl RelyingParty {
    /// The login client of provider `cfg`: its `client_id`, and `client_secret`
    /// (`client_secret_basic`) or `private_key_file` (`private_key_jwt`).
    pub fn for_provider(cfg: &ProviderConfig, fetch: &Arc<dyn Fetch>) -> Result<Self, String> {
        let client_id = cfg
            .client_id
            .clone()
            .ok_or_else(|| format!("provider `{}` has no `client_id`", cfg.name))?;
        let auth = match (&cfg.private_key_file, &cfg.client_secret) {
            (Some(file), _) => {
                let pem = std::fs::read_to_string(file)
                    .map_err(|e| format!("private_key_file {file}: {e}"))?;
                ClientAuth::private_key(&pem)
                    .map_err(|e| format!("private_key_file {file}: {e}"))?
            }
            (None, Some(secret)) => ClientAuth::basic(&client_id, secret),
            (None, None) => {
                return Err(format!(
                    "provider `{}` needs `client_secret` or `private_key_file` for login",
                    cfg.name
                ))
            }
        };
        let fetch = match &cfg.ca_file {
            Some(ca) => crate::authenticator::provider_client(fetch, &cfg.name, ca)
                .map_err(|e| e.to_string())?,
            None => fetch.clone(),
        };
        Ok(Self {
            issuer: cfg.issuer.clone(),
            client_id,
            auth,
            fetch,
            endpoints: tokio::sync::Mutex::new(None),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's endpoints, from discovery (cached for an hour; a failed
    /// discovery is retried by the next sign-in).
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, String> {
        let mut cached = self.endpoints.lock().await;
        if let Some((e, at)) = cached.as_ref() {
            if at.elapsed() < ENDPOINTS_TTL {
                return Ok(e.clone());
            }
        }
        let doc = discover_document(&*self.fetch, &self.issuer)
            .await
            .map_err(|e| e.message)?;
        let member = |name: &str| discovery::endpoint(&doc, &self.issuer, name);
        let required = |name: &str| -> Result<String, String> {
            member(name)
                .map_err(|e| e.message)?
                .ok_or_else(|| format!("the provider's discovery document has no `{name}`"))
        };
        let endpoints = Arc::new(Endpoints {
            authorization: required("authorization_endpoint")?,
            token: required("token_endpoint")?,
            end_session: member("end_session_endpoint").map_err(|e| e.message)?,
        });
        *cached = Some((endpoints.clone(), Instant::now()));
        Ok(endpoints)
    }

    /// Redeems an authorization code (RFC 6749 §4.1.3) with its PKCE verifier
    /// (RFC 7636 §4.5). The answer must carry an ID token.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, String> {
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", verifier.to_string()),
        ];
        let set = self.token_request(form).await?;
        if set.id_token.is_none() {
            return Err("the token response has no id_token".to_string());
        }
        Ok(set)
    }

    /// Uses a refresh token (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, String> {
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.to_string()),
        ];
        self.token_request(form).await
    }

    async fn token_request(&self, form: Vec<(&'static str, String)>) -> Result<TokenSet, String> {
        let endpoint = self.endpoints().await?.token.clone();
        let (body, authorization) =
            authenticated_form(form, &self.client_id, &self.auth, &endpoint)
                .map_err(|e| e.message)?;
        let doc = post_token_request(&*self.fetch, &endpoint, body, authorization.as_deref())
            .await
            .map_err(|e| e.message)?;
        let access = issued(&doc, &endpoint).map_err(|e| e.message)?;
        let text = |name: &str, max: usize| -> Result<Option<String>, String> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(t)) if !t.is_empty() && t.len() <= max => Ok(Some(t.clone())),
                Some(_) => Err(format!("the token response's `{name}` is not usable")),
            }
        };
        Ok(TokenSet {
            access_token: access.access_token,
            expires_in: access.expires_in,
            refresh_token: text("refresh_token", MAX_REFRESH_TOKEN_BYTES)?,
            id_token: text("id_token", MAX_ID_TOKEN_BYTES)?,
        })
    }
}
