//! The development issuer's OAuth2 token endpoint (`POST /token`): the
//! client-credentials grant and the authorization-code grant of browser
//! sign-in ([`crate::authorize`]) for registered clients, authenticated with
//! `client_secret_basic`, `client_secret_post` or `private_key_jwt` (RFC 7523,
//! the assertion's signature, `iss`/`sub`, `aud`, `exp` and a never-seen `jti`
//! all checked). Issues JWT access tokens signed with the issuer's key.
//!
//! Test controls: the issued lifetime, an answer delay (to make requests overlap),
//! an outage switch, and counters of requests and of issued tokens.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use portcullis_identity::jose::compact;
use portcullis_identity::jose::jwk::{parse_jwk, VerifyingKey};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::authorize::SignIns;
use crate::lock;
use crate::unix_now as now;

/// How a registered client authenticates.
pub enum ClientKey {
    /// `client_secret_basic` or `client_secret_post` with this secret.
    Secret(String),
    /// `private_key_jwt`, verified with this public key.
    Jwk(VerifyingKey),
}

/// The token endpoint's state, shared by every connection.
#[derive(Default)]
pub struct TokenEndpoint {
    clients: Mutex<HashMap<String, ClientKey>>,
    /// client id → the redirect URIs it registered (browser sign-in).
    redirect_uris: Mutex<HashMap<String, Vec<String>>>,
    seen_jti: Mutex<HashSet<String>>,
    /// Lifetime of issued tokens, seconds (0 means the default, 300).
    ttl_secs: AtomicU64,
    delay_ms: AtomicU64,
    down: AtomicBool,
    requests: AtomicUsize,
    issued: AtomicUsize,
    /// The form of the last request (secrets included: this is a test double).
    last_form: Mutex<HashMap<String, String>>,
    sign_ins: SignIns,
}

/// What the token endpoint answers: status and JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl TokenEndpoint {
    /// Registers (or replaces) a client using a shared secret.
    pub fn add_secret_client(&self, client_id: &str, secret: &str) {
        lock(&self.clients).insert(client_id.into(), ClientKey::Secret(secret.into()));
    }

    /// Registers a `private_key_jwt` client by its public JWK.
    pub fn add_jwk_client(&self, client_id: &str, jwk: &Value) -> Result<(), String> {
        let map = jwk.as_object().ok_or("a JWK is an object")?;
        let key = parse_jwk(map)?;
        lock(&self.clients).insert(client_id.into(), ClientKey::Jwk(key));
        Ok(())
    }

    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_secs.store(ttl.as_secs(), Ordering::Relaxed);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// While down, every token request gets a 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Token requests received (answered or not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Tokens issued.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::Relaxed)
    }

    /// Browser sign-in: who signs in at `/authorize`, and the codes issued.
    pub fn sign_ins(&self) -> &SignIns {
        &self.sign_ins
    }

    /// Registers a redirect URI for `client_id`'s browser sign-ins; only
    /// registered ones are redirected to, compared as strings (RFC 6749
    /// §3.1.2.3: a code must not reach a page the client did not name).
    pub fn add_redirect_uri(&self, client_id: &str, uri: &str) {
        lock(&self.redirect_uris)
            .entry(client_id.to_string())
            .or_default()
            .push(uri.to_string());
    }

    /// Whether `client_id` is registered and may be sent back to
    /// `redirect_uri`, or the OAuth error code why not.
    pub fn may_redirect(&self, client_id: &str, redirect_uri: &str) -> Result<(), &'static str> {
        if !lock(&self.clients).contains_key(client_id) {
            return Err("unauthorized_client");
        }
        lock(&self.redirect_uris)
            .get(client_id)
            .is_some_and(|uris| uris.iter().any(|u| u == redirect_uri))
            .then_some(())
            .ok_or("invalid_request")
    }

    /// The form fields of the last request.
    pub fn last_form(&self) -> HashMap<String, String> {
        lock(&self.last_form).clone()
    }

    /// Handles one request. `sign` signs the access token's claims; `url` is this
    /// endpoint's own URL (the `aud` a client assertion must name).
    pub async fn answer(
        &self,
        authorization: Option<&str>,
        body: &[u8],
        url: &str,
        issuer: &str,
        sign: impl Fn(&Value) -> Option<String>,
    ) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return oauth_error(503, "temporarily_unavailable");
        }
        let form = parse_form(body);
        *lock(&self.last_form) = form.clone();
        let grant = form.get("grant_type").map(String::as_str);
        if !matches!(grant, Some("client_credentials" | "authorization_code")) {
            return oauth_error(400, "unsupported_grant_type");
        }
        let Some(client_id) = self.authenticate(authorization, &form, url) else {
            return oauth_error(401, "invalid_client");
        };
        let ttl = match self.ttl_secs.load(Ordering::Relaxed) {
            0 => 300,
            n => n,
        };
        let now = now();
        let mut claims = json!({
            "iss": issuer,
            "sub": client_id,
            "client_id": client_id,
            "iat": now,
            "exp": now + ttl,
            "jti": format!("{now}-{}", self.issued.load(Ordering::Relaxed)),
        });
        let mut id_token = None;
        if grant == Some("authorization_code") {
            let redeemed = match self.sign_ins.redeem(&form, &client_id, issuer) {
                Ok(r) => r,
                Err(code) => return oauth_error(400, code),
            };
            claims["sub"] = json!(redeemed.sub);
            claims["aud"] = json!(redeemed.client_id);
            let Some(signed) = sign(&redeemed.id_token_claims) else {
                return oauth_error(500, "server_error");
            };
            id_token = Some(signed);
        }
        if let Some(aud) = form.get("resource").or_else(|| form.get("audience")) {
            claims["aud"] = json!(aud);
        }
        if let Some(scope) = form.get("scope") {
            claims["scope"] = json!(scope);
        }
        let Some(token) = sign(&claims) else {
            return oauth_error(500, "server_error");
        };
        self.issued.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({ "access_token": token, "token_type": "Bearer", "expires_in": ttl });
        if let Some(id_token) = id_token {
            body["id_token"] = json!(id_token);
        }
        Answer { status: 200, body }
    }

    /// The authenticated client id, or `None`.
    fn authenticate(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
        url: &str,
    ) -> Option<String> {
        let clients = lock(&self.clients);
        if let Some(basic) = authorization.and_then(|a| a.strip_prefix("Basic ")) {
            let decoded = String::from_utf8(STANDARD.decode(basic).ok()?).ok()?;
            let (id, secret) = decoded.split_once(':')?;
            let (id, secret) = (form_decode(id), form_decode(secret));
            return match clients.get(&id) {
                Some(ClientKey::Secret(s)) if *s == secret => Some(id),
                _ => None,
            };
        }
        let id = form.get("client_id")?;
        match clients.get(id)? {
            ClientKey::Secret(s) => (form.get("client_secret") == Some(s)).then(|| id.clone()),
            ClientKey::Jwk(key) => {
                let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
                if form.get("client_assertion_type").map(String::as_str) != Some(jwt_bearer) {
                    return None;
                }
                let assertion = form.get("client_assertion")?;
                self.assertion_ok(key, assertion, id, url)
                    .then(|| id.clone())
            }
        }
    }

    fn assertion_ok(&self, key: &VerifyingKey, assertion: &str, id: &str, url: &str) -> bool {
        let Ok(jws) = compact::parse(assertion) else {
            return false;
        };
        let Ok(alg) = jws.header.algorithm() else {
            return false;
        };
        if !key.verify(alg, jws.signing_input, &jws.signature) {
            return false;
        }
        let c = &jws.claims;
        let text = |k: &str| c.get(k).and_then(Value::as_str);
        let exp_ok = c
            .get("exp")
            .and_then(Value::as_u64)
            .is_some_and(|exp| exp > now() && exp <= now() + 300);
        let Some(jti) = text("jti") else {
            return false;
        };
        text("iss") == Some(id)
            && text("sub") == Some(id)
            && text("aud") == Some(url)
            && exp_ok
            && lock(&self.seen_jti).insert(jti.to_string())
    }
}

fn oauth_error(status: u16, code: &str) -> Answer {
    Answer {
        status,
        body: json!({ "error": code }),
    }
}

pub(crate) fn parse_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
pub(crate) fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A handle to share the endpoint's state with the issuer's connections.
pub type SharedTokenEndpoint = Arc<TokenEndpoint>;
