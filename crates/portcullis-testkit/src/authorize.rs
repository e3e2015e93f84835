//! The development issuer's browser sign-in: the authorization-code grant
//! (RFC 6749 §4.1) with PKCE (RFC 7636, `S256` only). `GET /authorize` signs
//! in whoever the test put at the keyboard ([`SignIns::sign_in_as`]) and sends
//! the browser back to `redirect_uri` with a code; the token endpoint redeems
//! that code once, for the client, redirect URI and verifier it was issued
//! to, with an ID token carrying the request's `nonce`.
//!
//! There is no login page: a test double decides who signs in, a real
//! provider (npm `oidc-provider` in the e2e suite) shows one.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::lock;
use crate::unix_now as now;

/// A code not redeemed within this long is dead (RFC 6749 §4.1.2: short).
const CODE_TTL_SECS: u64 = 60;

/// What one code was issued for.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    sub: String,
    claims: Value,
    issued_at: u64,
}

/// Who is signed in at the provider, and the codes not yet redeemed.
#[derive(Default)]
pub struct SignIns {
    user: Mutex<Option<(String, Value)>>,
    codes: Mutex<HashMap<String, Grant>>,
}

/// Where `GET /authorize` sends the browser, or why it does not.
pub enum Authorized {
    /// A 302 to this URL (the redirect URI with `code` and `state`).
    Redirect(String),
    /// A 400 (bad request) or 401 (nobody signed in) with an OAuth error code.
    Refused(u16, &'static str),
}

/// The ID token's claims and the access token's subject for a redeemed code.
pub struct Redeemed {
    pub client_id: String,
    pub sub: String,
    pub id_token_claims: Value,
}

impl SignIns {
    /// The user who signs in at the next `GET /authorize`, with `claims`
    /// (`email`, `groups`, …) added to the ID token; `None` signs out.
    pub fn sign_in_as(&self, user: Option<(&str, Value)>) {
        *lock(&self.user) = user.map(|(sub, claims)| (sub.to_string(), claims));
    }

    /// Answers `GET /authorize?…`; `client(client_id, redirect_uri)` says
    /// whether the client is registered with that redirect URI, or the OAuth
    /// error code why not.
    pub fn authorize(
        &self,
        query: &str,
        client: impl Fn(&str, &str) -> Result<(), &'static str>,
    ) -> Authorized {
        let q = parse_query(query);
        let get = |k: &str| q.get(k).map(|(decoded, _)| decoded.as_str());
        if get("response_type") != Some("code") {
            return Authorized::Refused(400, "unsupported_response_type");
        }
        let (Some(client_id), Some(redirect_uri)) = (get("client_id"), get("redirect_uri")) else {
            return Authorized::Refused(400, "invalid_request");
        };
        // A redirect URI the client did not register is never redirected to
        // (RFC 6749 §4.1.2.1): the code would go to whoever named it.
        if let Err(code) = client(client_id, redirect_uri) {
            return Authorized::Refused(400, code);
        }
        let (Some(challenge), Some("S256")) = (get("code_challenge"), get("code_challenge_method"))
        else {
            return Authorized::Refused(400, "invalid_request");
        };
        let Some((sub, claims)) = lock(&self.user).clone() else {
            return Authorized::Refused(401, "login_required");
        };
        let Some(code) = random_code() else {
            return Authorized::Refused(400, "server_error");
        };
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        let mut location = format!("{redirect_uri}{sep}code={code}");
        // `state` goes back exactly as it came (still encoded).
        if let Some((_, raw)) = q.get("state") {
            location.push_str("&state=");
            location.push_str(raw);
        }
        let grant = Grant {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            challenge: challenge.to_string(),
            nonce: get("nonce").map(str::to_string),
            sub,
            claims,
            issued_at: now(),
        };
        lock(&self.codes).insert(code, grant);
        Authorized::Redirect(location)
    }

    /// Redeems `code` for the authenticated `client_id` (RFC 6749 §4.1.3):
    /// once, within its lifetime, with the same redirect URI and a verifier
    /// that hashes to the challenge. `Err` is the OAuth error code.
    pub fn redeem(
        &self,
        form: &HashMap<String, String>,
        client_id: &str,
        issuer: &str,
    ) -> Result<Redeemed, &'static str> {
        let code = form.get("code").ok_or("invalid_request")?;
        // Taken out first: a code is spent by any attempt, right or wrong.
        let grant = lock(&self.codes).remove(code).ok_or("invalid_grant")?;
        let verifier = form.get("code_verifier").ok_or("invalid_grant")?;
        let hashed = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
        let fresh = now() <= grant.issued_at + CODE_TTL_SECS;
        if grant.client_id != client_id
            || form.get("redirect_uri") != Some(&grant.redirect_uri)
            || hashed != grant.challenge
            || !fresh
        {
            return Err("invalid_grant");
        }
        let now = now();
        let mut claims = json!({
            "iss": issuer,
            "sub": grant.sub,
            "aud": client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": grant.issued_at,
        });
        if let Some(nonce) = grant.nonce {
            claims["nonce"] = json!(nonce);
        }
        if let (Some(base), Value::Object(more)) = (claims.as_object_mut(), grant.claims) {
            base.extend(more);
        }
        Ok(Redeemed {
            client_id: client_id.to_string(),
            sub: grant.sub,
            id_token_claims: claims,
        })
    }
}

fn random_code() -> Option<String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// Query parameters: name → (decoded value, value as sent).
fn parse_query(query: &str) -> HashMap<String, (String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                crate::token_endpoint::form_decode(k),
                (crate::token_endpoint::form_decode(v), v.to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123";

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The one registered client, `portal`, which redirects to `http://app/cb`.
    fn portal(id: &str, redirect_uri: &str) -> Result<(), &'static str> {
        match (id, redirect_uri) {
            ("portal", "http://app/cb") => Ok(()),
            ("portal", _) => Err("invalid_request"),
            _ => Err("unauthorized_client"),
        }
    }

    /// Signs `alice` in and returns the code sent back.
    fn code(s: &SignIns) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, VERIFIER.as_bytes()));
        s.sign_in_as(Some(("alice", json!({"email": "a@x"}))));
        let query = format!(
            "response_type=code&client_id=portal&redirect_uri=http%3A%2F%2Fapp%2Fcb\
             &state=s%2B1&nonce=n1&code_challenge={challenge}&code_challenge_method=S256"
        );
        let Authorized::Redirect(to) = s.authorize(&query, portal) else {
            panic!("refused");
        };
        let rest = to.strip_prefix("http://app/cb?code=").unwrap();
        let (code, state) = rest.split_once("&state=").unwrap();
        assert_eq!(state, "s%2B1");
        code.to_string()
    }

    #[test]
    fn a_code_redeems_once_for_its_client_uri_and_verifier() {
        let s = SignIns::default();
        let good = |code: &str| {
            form(&[
                ("code", code),
                ("redirect_uri", "http://app/cb"),
                ("code_verifier", VERIFIER),
            ])
        };
        let c = code(&s);
        let r = s.redeem(&good(&c), "portal", "http://idp").unwrap();
        assert_eq!(r.id_token_claims["nonce"], "n1");
        assert_eq!(r.id_token_claims["aud"], "portal");
        assert_eq!(r.id_token_claims["email"], "a@x");
        assert_eq!(
            s.redeem(&good(&c), "portal", "http://idp").err(),
            Some("invalid_grant")
        );

        let mut wrong_uri = good(&code(&s));
        wrong_uri.insert("redirect_uri".into(), "http://evil/cb".into());
        let mut wrong_verifier = good(&code(&s));
        wrong_verifier.insert("code_verifier".into(), "guess".into());
        for f in [wrong_uri, wrong_verifier] {
            assert_eq!(
                s.redeem(&f, "portal", "http://idp").err(),
                Some("invalid_grant")
            );
        }
        assert!(s.redeem(&good(&code(&s)), "other", "http://idp").is_err());
    }

    #[test]
    fn authorize_refuses_what_a_provider_would() {
        let s = SignIns::default();
        let base = "response_type=code&client_id=portal&redirect_uri=http%3A%2F%2Fapp%2Fcb";
        let pkce = "&code_challenge=abc&code_challenge_method=S256";
        let refused = |q: &str| match s.authorize(q, portal) {
            Authorized::Refused(status, code) => (status, code),
            Authorized::Redirect(to) => panic!("sent to {to}"),
        };
        assert_eq!(refused(&format!("{base}{pkce}")), (401, "login_required"));
        s.sign_in_as(Some(("alice", json!({}))));
        assert_eq!(refused(base), (400, "invalid_request"));
        assert_eq!(
            refused(&format!(
                "{base}&code_challenge=abc&code_challenge_method=plain"
            )),
            (400, "invalid_request")
        );
        assert_eq!(
            refused(&format!("{}{pkce}", base.replace("portal", "stranger"))),
            (400, "unauthorized_client")
        );
        assert_eq!(
            refused(&format!("{}{pkce}", base.replace("app", "evil"))),
            (400, "invalid_request"),
            "an unregistered redirect URI"
        );
        assert_eq!(
            refused(&format!("{}{pkce}", base.replace("=code", "=token"))),
            (400, "unsupported_response_type")
        );
    }
}
