//! Browser sign-in (SPEC §2 `login`, §4 `/.portcullis/login`, `callback`,
//! `logout`, `backchannel-logout`): the OpenID Connect authorization-code flow
//! with PKCE S256, a `state` bound to the browser by a signed cookie, a `nonce`
//! checked in the ID token, and server-side sessions whose cookie holds only a
//! signed random id.
//!
//! The decision core asks [`Login::session`] who a cookie belongs to (and
//! whether that session still lives, refreshing its tokens when they are about
//! to expire); [`flow`] answers the endpoints. Everything a browser could use
//! to redirect itself elsewhere goes through [`redirect::safe_target`].

pub mod cookie;
pub mod flow;
pub mod origin;
pub mod redirect;
pub mod redis_store;
mod refresh;
pub mod session;

use crate::respond::Refusal;
use cookie::{Cookies, SessionId};
use http::header::{HeaderMap, HeaderValue};
use portcullis_config::Config;
use portcullis_core::{Identity, Reason};
use portcullis_identity::oidc::RelyingParty;
use portcullis_identity::{Authenticator, Fetch};
use session::{MemoryStore, Session, SessionStore, Tokens};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Tokens are refreshed this long before they expire.
const REFRESH_MARGIN_SECS: u64 = 30;
/// A sign-in must come back from the provider within this time.
const PENDING_TTL_SECS: u64 = 600;
/// The longest `rd` a sign-in remembers, as JSON text. It travels in the
/// sign-in cookie, which browsers drop silently when its name and value pass
/// 4096 bytes (the sign-in then fails at the callback): with the nonce,
/// verifier, MAC and base64 around it, this fits with a cookie name of up to
/// 100 bytes.
const MAX_RD_JSON_BYTES: usize = 2800;

/// What a sign-in cookie remembers: nonce, PKCE verifier, `rd`, start time.
fn pending_payload(nonce: &str, verifier: &str, rd: &str, started: u64) -> String {
    serde_json::json!({ "n": nonce, "v": verifier, "r": rd, "t": started }).to_string()
}

/// Whether a sign-in cookie can carry `rd` (see [`MAX_RD_JSON_BYTES`]).
fn fits_sign_in_cookie(rd: &str) -> bool {
    serde_json::to_string(rd).is_ok_and(|json| json.len() <= MAX_RD_JSON_BYTES)
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `login`, compiled. Rebuilt on reload; the session store carries over.
pub struct Login {
    pub provider: String,
    pub rp: Arc<RelyingParty>,
    pub cookies: Cookies,
    allowed_hosts: Vec<String>,
    scopes: String,
    session_ttl: u64,
    idle_timeout: u64,
    /// `{public_url}/.portcullis/callback`, the redirect URI registered at the provider.
    pub callback_url: String,
    /// Where a session-only request with side effects may come from
    /// (`public_url`'s origin, `trusted_origins`), and same-origin logout.
    pub origins: origin::TrustedOrigins,
    /// `public_url`'s host, always an allowed redirect target.
    public_host: String,
    pub store: Arc<dyn SessionStore>,
}

/// The session a request carries, once it was found alive.
pub struct ActiveSession {
    pub key: String,
    pub session: Arc<Session>,
}

/// What the session cookies of a request come to.
pub enum SessionLookup {
    /// No session cookie of ours.
    None,
    /// A live session (refreshed if it was due).
    Live(ActiveSession),
    /// Cookies of ours, but no live session behind any: ended (logout,
    /// expiry, idle, a failed refresh), unknown to the store, or failing its
    /// MAC. What that means depends on the request: with a bearer token, or on
    /// a route that does not require a caller, it counts as no session at all;
    /// else it is `session_expired` (see [`crate::judge::identify_caller`]).
    /// Either way the answer clears the cookie ([`cookie::Cookies::clear_session`]).
    Dead,
}

impl Login {
    /// Compiles `config.login` (if any). Sessions live in Redis when
    /// `shared_state` gave a handle (`redis`); else in this process, in
    /// `previous` (the store of the runtime before a reload) when there is one,
    /// so that sessions survive the reload.
    pub fn compile(
        config: &Config,
        public_url: &str,
        fetch: &Arc<dyn Fetch>,
        previous: Option<Arc<dyn SessionStore>>,
        redis: Option<&crate::shared_state::Redis>,
    ) -> Result<Option<Login>, String> {
        let Some(cfg) = &config.login else {
            return Ok(None);
        };
        let provider = config
            .providers
            .iter()
            .find(|p| p.name == cfg.provider)
            .ok_or_else(|| format!("login.provider: unknown provider `{}`", cfg.provider))?;
        let rp = RelyingParty::for_provider(provider, fetch)
            .map(Arc::new)
            .map_err(|e| format!("login: {e}"))?;
        let base = public_url.trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|_| format!("server.public_url `{base}` is not a URL"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(format!("server.public_url `{base}` is not an absolute URL"));
        };
        let secure = scheme == "https";
        let store: Arc<dyn SessionStore> = match (redis, previous) {
            (Some(redis), _) => Arc::new(redis_store::RedisStore::new(
                redis.clone(),
                &cfg.cookie.secret,
                cfg.idle_timeout.get().as_secs(),
            )?),
            (None, Some(previous)) if !previous.shared() => previous,
            (None, _) => Arc::new(MemoryStore::default()),
        };
        Ok(Some(Login {
            provider: cfg.provider.clone(),
            rp,
            cookies: Cookies::new(
                &cfg.cookie.name,
                &cfg.cookie.secret,
                cfg.cookie.domain.as_deref(),
                secure,
                cfg.cookie.ttl.get().as_secs(),
            ),
            allowed_hosts: cfg.allowed_redirect_hosts.clone(),
            scopes: cfg.scopes.join(" "),
            session_ttl: cfg.session_ttl.get().as_secs(),
            idle_timeout: cfg.idle_timeout.get().as_secs(),
            callback_url: format!("{base}{}", cookie::CALLBACK_PATH),
            origins: origin::TrustedOrigins::new(secure, authority.as_str(), &cfg.trusted_origins),
            public_host: authority.host().to_string(),
            store,
        }))
    }

    /// Where a sign-in comes back to: the first of `candidates` (best first)
    /// that is a safe target and short enough to remember in the sign-in
    /// cookie ([`MAX_RD_JSON_BYTES`]), else `/`.
    pub fn return_to<'a>(&self, candidates: impl IntoIterator<Item = &'a str>) -> String {
        candidates
            .into_iter()
            .filter(|candidate| fits_sign_in_cookie(candidate))
            .find_map(|candidate| self.safe_target(candidate))
            .unwrap_or_else(|| "/".to_string())
    }

    /// `rd` if it is a safe place to send the browser (see [`redirect`]).
    pub fn safe_target(&self, rd: &str) -> Option<String> {
        redirect::safe_target(rd, &self.allowed_hosts, &self.public_host)
    }

    /// The live session the request's cookie names, if any (see
    /// [`SessionLookup`]); two different live sessions in one request are a
    /// 400, a session store that cannot answer a 503.
    pub async fn session(
        &self,
        headers: &HeaderMap,
        auth: &Arc<Authenticator>,
    ) -> Result<SessionLookup, Refusal> {
        if !self.cookies.has_session_cookie(headers) {
            return Ok(SessionLookup::None);
        }
        let mut found: Option<ActiveSession> = None;
        for id in self.cookies.sessions(headers) {
            let key = id.key();
            if found.as_ref().is_some_and(|f| f.key == key) {
                continue;
            }
            if let Some(active) = self.live(key, auth).await? {
                if found.is_some() {
                    return Err(Refusal::with_message(
                        Reason::BadRequest,
                        "the request carries two different sessions",
                    ));
                }
                found = Some(active);
            }
        }
        Ok(found.map_or(SessionLookup::Dead, SessionLookup::Live))
    }

    /// The session under `key` if it still lives, refreshed when due.
    async fn live(
        &self,
        key: String,
        auth: &Arc<Authenticator>,
    ) -> Result<Option<ActiveSession>, Refusal> {
        let Some(mut session) = self.store.get(&key).await.map_err(store_unavailable)? else {
            return Ok(None);
        };
        let now = now();
        let idle_since = session.last_seen.load(std::sync::atomic::Ordering::Relaxed);
        // A session another provider began (`login.provider` changed on a
        // reload) is over: that provider is no longer trusted for sign-ins,
        // and its refresh token must never go to this one's token endpoint.
        let foreign = session.identity.provider.as_deref() != Some(self.provider.as_str());
        if foreign
            || now >= session.expires_at
            || now >= idle_since.saturating_add(self.idle_timeout)
        {
            self.store.remove(&key).await.map_err(store_unavailable)?;
            return Ok(None);
        }
        if session.tokens.access_expires_at <= now + REFRESH_MARGIN_SECS
            && session.tokens.refresh_token.is_some()
        {
            match self.refresh(&key, session, auth).await? {
                Some(fresh) => session = fresh,
                None => return Ok(None),
            }
        }
        self.store
            .touch(&key, &session, now)
            .await
            .map_err(store_unavailable)?;
        Ok(Some(ActiveSession { key, session }))
    }

    /// One refresh per session however many requests wait, on however many
    /// replicas: the first to get the store's turn refreshes (see
    /// [`refresh`]); the others find a newer generation in the store when
    /// their turn comes. `None`: the session ended.
    async fn refresh(
        &self,
        key: &str,
        session: Arc<Session>,
        auth: &Arc<Authenticator>,
    ) -> Result<Option<Arc<Session>>, Refusal> {
        let turn = self
            .store
            .refresh_turn(key, &session)
            .await
            .map_err(store_unavailable)?;
        let latest = self.store.get(key).await.map_err(store_unavailable)?;
        match latest {
            None => return Ok(None),
            Some(l) if l.generation != session.generation => return Ok(Some(l)),
            Some(_) => {}
        }
        let job = refresh::Job {
            rp: self.rp.clone(),
            store: self.store.clone(),
            auth: auth.clone(),
            provider: self.provider.clone(),
            key: key.to_string(),
            session,
            turn,
        };
        match tokio::spawn(job.run()).await {
            Ok(outcome) => outcome.map_err(store_unavailable),
            Err(e) => Err(store_unavailable(session::StoreError(format!(
                "the refresh task failed: {e}"
            )))),
        }
    }

    /// Starts a new session for a verified ID token; returns the `Set-Cookie`.
    pub async fn open_session(
        &self,
        identity: Identity,
        id_token: String,
        refresh_token: Option<String>,
        access_ttl: u64,
    ) -> Result<HeaderValue, Refusal> {
        let unavailable =
            || Refusal::with_message(Reason::UpstreamUnavailable, "cannot create a session");
        let (id, value): (SessionId, String) =
            self.cookies.new_session().ok_or_else(unavailable)?;
        let csrf = cookie::random_token().ok_or_else(unavailable)?;
        let now = now();
        let sid = identity
            .claims
            .get("sid")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        let session = Arc::new(Session {
            identity,
            sid,
            csrf,
            created_at: now,
            expires_at: now + self.session_ttl,
            tokens: Tokens {
                id_token,
                refresh_token,
                access_expires_at: now + access_ttl,
            },
            generation: 0,
            last_seen: AtomicU64::new(now),
            refreshing: Arc::default(),
        });
        self.store
            .put(&id.key(), session)
            .await
            .map_err(store_unavailable)?;
        Ok(self.cookies.session_cookie(&value))
    }

    /// The redirect that starts sign-in at the provider, remembering `rd`
    /// (already checked, and short enough: [`Login::return_to`]) in this
    /// browser's sign-in cookie; with the
    /// `Set-Cookie`s of that cookie and its marker. (The request's surplus
    /// sign-ins are its caller's to clear: [`cookie::Cookies::surplus_sign_ins`].)
    pub async fn start(&self, rd: &str) -> Result<(String, [HeaderValue; 2]), Refusal> {
        let endpoints = self.rp.endpoints().await.map_err(|e| {
            tracing::warn!(error = %e, provider = %self.provider, "login provider discovery failed");
            Refusal::with_message(
                Reason::UpstreamUnavailable,
                "the sign-in provider cannot be reached",
            )
        })?;
        let random = || {
            cookie::random_token().ok_or_else(|| {
                Refusal::with_message(Reason::UpstreamUnavailable, "no randomness for sign-in")
            })
        };
        let (state, nonce, verifier) = (random()?, random()?, random()?);
        let pending = pending_payload(&nonce, &verifier, rd, now());
        let set_cookies = self
            .cookies
            .pending_cookie(&state, pending.as_bytes(), PENDING_TTL_SECS);
        let sep = if endpoints.authorization.contains('?') {
            '&'
        } else {
            '?'
        };
        let enc = portcullis_identity::fetch::form_encode;
        let location = format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={}&code_challenge_method=S256",
            endpoints.authorization,
            enc(self.rp.client_id()),
            enc(&self.callback_url),
            enc(&self.scopes),
            cookie::pkce_challenge(&verifier),
        );
        Ok((location, set_cookies))
    }

    /// Turns a sign-in refusal into the redirect to the provider, coming back
    /// to `original` (the URL the browser asked for) when that is an allowed
    /// target, else to its path (`path`, with its query) on the proxy's own
    /// host — without the query, or `/`, when it is too long to remember
    /// ([`Login::return_to`]). The refusal's own
    /// `Set-Cookie`s (a dead session's clearing, surplus sign-ins) stay with
    /// whatever is answered.
    pub async fn send_to_provider(
        &self,
        mut refusal: Refusal,
        original: &str,
        path: &str,
    ) -> Refusal {
        // A URL too long to remember comes back to its path without the
        // query, or to `/`.
        let bare = path.split_once('?').map_or(path, |(p, _)| p);
        let rd = self.return_to([original, path, bare]);
        match self.start(&rd).await {
            Ok((location, cookies)) => {
                refusal.redirect = Some(Box::new(crate::respond::Redirect {
                    location,
                    set_cookies: cookies.to_vec(),
                }));
                refusal
            }
            Err(mut e) => {
                e.set_cookies = refusal.set_cookies;
                e
            }
        }
    }

    /// The sign-in remembered for `state` in this browser: nonce, verifier, rd.
    pub fn pending(&self, headers: &HeaderMap, state: &str) -> Option<Pending> {
        let bytes = self.cookies.pending(headers, state)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let started = v.get("t")?.as_u64()?;
        if now() > started + PENDING_TTL_SECS {
            return None;
        }
        Some(Pending {
            nonce: v.get("n")?.as_str()?.to_string(),
            verifier: v.get("v")?.as_str()?.to_string(),
            rd: v.get("r")?.as_str()?.to_string(),
        })
    }
}

/// The refusal for a request whose session cannot be looked up: a shared
/// store that is down fails closed (nobody's session can be checked).
pub(crate) fn store_unavailable(e: session::StoreError) -> Refusal {
    tracing::warn!(error = %e.0, "session store unavailable");
    Refusal::dependency_unavailable("the session store is unavailable; try again shortly")
}

/// A sign-in in progress, as its cookie remembers it.
pub struct Pending {
    pub nonce: String,
    pub verifier: String,
    pub rd: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest `rd` that fits, however it escapes, makes a sign-in
    /// cookie a browser keeps (name and value within 4096 bytes).
    #[test]
    fn the_longest_remembered_rd_fits_in_a_cookie() {
        let name = "n".repeat(100);
        let cookies = Cookies::new(&name, &"k".repeat(32), None, true, 3600);
        let random = cookie::random_token().unwrap_or_default();
        for rd in ["/".to_string() + &"a".repeat(2797), "\"".repeat(1399)] {
            assert!(fits_sign_in_cookie(&rd), "{}", rd.len());
            assert!(!fits_sign_in_cookie(&format!("{rd}a")));
            let payload = pending_payload(&random, &random, &rd, u64::MAX);
            let [set, _] = cookies.pending_cookie(&random, payload.as_bytes(), 600);
            let text = set.to_str().unwrap_or("");
            let pair = text.split(';').next().unwrap_or("");
            assert!(pair.len() <= 4096, "{}", pair.len());
        }
    }
}
