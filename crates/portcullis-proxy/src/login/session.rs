//! Server-side sessions (SPEC §2 `login`): what a signed-in browser is, kept
//! by the proxy and found by the store key of the cookie's session id.
//!
//! [`SessionStore`] is the one interface: [`MemoryStore`] keeps sessions in
//! this process (the default); [`super::redis_store::RedisStore`] (with
//! `shared_state`) makes every replica know every session. Tokens live only
//! here, never in a cookie.

use portcullis_core::Identity;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The tokens of a session. `Debug` shows none of them.
pub struct Tokens {
    pub id_token: String,
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds): refreshed before then.
    pub access_expires_at: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("access_expires_at", &self.access_expires_at)
            .finish_non_exhaustive()
    }
}

/// One signed-in browser.
#[derive(Debug)]
pub struct Session {
    pub identity: Identity,
    /// The provider's session id (`sid` of the ID token), for back-channel logout.
    pub sid: Option<String>,
    /// Proves a logout form came from a page the proxy served to this session.
    pub csrf: String,
    pub created_at: u64,
    /// `created_at` + `session_ttl`: the session ends then, however active.
    pub expires_at: u64,
    pub tokens: Tokens,
    /// Bumped by every refresh, so a request that waited for one sees it happened.
    pub generation: u64,
    /// Last request (Unix seconds), for `idle_timeout`.
    pub last_seen: AtomicU64,
    /// Held while the session is refreshed by this process: one refresh however
    /// many requests of the session arrive at once (see [`SessionStore::refresh_turn`]).
    pub refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// The right to refresh one session, until dropped.
pub struct Turn {
    /// What proves the turn to the store when the refresh is written (the
    /// Redis lock's random token); `None` for a process-local store.
    pub proof: Option<String>,
    _held: Box<dyn Send + Sync>,
}

impl Turn {
    pub fn new(proof: Option<String>, held: impl Send + Sync + 'static) -> Self {
        Turn {
            proof,
            _held: Box::new(held),
        }
    }
}

/// Why the store could not answer (a shared store that is down).
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

/// Where sessions live. Keys are [`super::cookie::SessionId::key`] values.
pub trait SessionStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Arc<Session>>, StoreError>>;
    /// Stores a new session until its `expires_at`.
    fn put<'a>(
        &'a self,
        key: &'a str,
        session: Arc<Session>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Replaces a session that still exists (a refresh) while `turn` is still
    /// the refresh's, never bringing back one that a logout or revocation
    /// ended meanwhile. False: it was gone, or the turn had passed on.
    fn update<'a>(
        &'a self,
        key: &'a str,
        session: Arc<Session>,
        turn: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Waits until the caller may refresh the session under `key`: one
    /// refresh at a time per session, for everyone sharing the store (a
    /// refresh token may be single-use). The turn lasts until it is dropped.
    fn refresh_turn<'a>(
        &'a self,
        key: &'a str,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Turn, StoreError>>;
    /// Records a request at `now` (for `idle_timeout`).
    fn touch<'a>(
        &'a self,
        key: &'a str,
        session: &'a Session,
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Ends every session of `provider` with this `sid`, or of this `sub` when
    /// no `sid` is given (back-channel logout, revocation). Returns how many.
    fn remove_matching<'a>(
        &'a self,
        provider: &'a str,
        sid: Option<&'a str>,
        sub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;
    /// Sessions held (the `portcullis_sessions` gauge): by this process, or by
    /// the shared store for the whole cluster.
    fn held(&self) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Whether every replica sees these sessions (a reload keeps a
    /// process-local store; a shared one is reopened from the config).
    fn shared(&self) -> bool {
        false
    }
}

/// Sessions in this process. Expired ones are dropped when met and swept
/// whenever a session is added, so the map never outgrows the live sessions
/// by much.
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        crate::sync::lock(&self.sessions)
    }
}

impl SessionStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Arc<Session>>, StoreError>> {
        Box::pin(async move { Ok(self.map().get(key).cloned()) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        session: Arc<Session>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let now = super::now();
            let mut map = self.map();
            map.retain(|_, s| s.expires_at > now);
            map.insert(key.to_string(), session);
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        session: Arc<Session>,
        _turn: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        // The turn is this process's mutex, held by the caller: it cannot pass on.
        Box::pin(async move {
            let mut map = self.map();
            match map.get_mut(key) {
                Some(slot) => {
                    *slot = session;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn refresh_turn<'a>(
        &'a self,
        _key: &'a str,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<Turn, StoreError>> {
        // Every request of a session held here shares its `Arc<Session>`, so
        // its mutex is the whole process's.
        let lock = session.refreshing.clone();
        Box::pin(async move { Ok(Turn::new(None, lock.lock_owned().await)) })
    }

    fn touch<'a>(
        &'a self,
        _key: &'a str,
        session: &'a Session,
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        session.last_seen.store(now, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.map().remove(key);
            Ok(())
        })
    }

    fn remove_matching<'a>(
        &'a self,
        provider: &'a str,
        sid: Option<&'a str>,
        sub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut map = self.map();
            let before = map.len();
            map.retain(|_, s| !matches(s, provider, sid, sub));
            Ok(before - map.len())
        })
    }

    fn held(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move { Ok(self.map().len()) })
    }
}

/// Whether a logout naming `sid` (else `sub`) of `provider` ends session `s`.
/// (OIDC Back-Channel Logout §2.4: a `sid` names one session at the provider,
/// a `sub` every session of that person.)
pub fn matches(s: &Session, provider: &str, sid: Option<&str>, sub: Option<&str>) -> bool {
    if s.identity.provider.as_deref() != Some(provider) {
        return false;
    }
    match (sid, sub) {
        // With both, both must agree; a session the provider gave no `sid`
        // is found by its subject.
        (Some(sid), sub) if s.sid.is_some() => {
            s.sid.as_deref() == Some(sid) && sub.is_none_or(|u| s.identity.subject == u)
        }
        (_, Some(sub)) => s.identity.subject == sub,
        _ => false,
    }
}
