//! Login sessions in Redis (SPEC §2 `shared_state`, `login`): every replica
//! pointed at the same Redis knows every session, so a browser may land on
//! any of them; a logout, back-channel logout or revocation on one ends the
//! session on all of them at once, because every request reads its session
//! from Redis (one `HMGET`).
//!
//! Layout, in the database of `shared_state.redis`:
//! - `portcullis:session:KEY`: a hash of `d`, the sealed session; `s`, when
//!   it was last used (Unix seconds, written at most every [`TOUCH_EVERY`]);
//!   `i`, the index sets that name it (below), so that removing it removes it
//!   from them. It expires when the session does: at `session_ttl` after
//!   sign-in, or `idle_timeout` after its last use, whichever comes first
//!   (renewed by each write of `s`).
//! - `portcullis:session-sub:PROVIDER:SUB`, `portcullis:session-sid:PROVIDER:SID`:
//!   the KEYs of a person's sessions and of a provider session's, for
//!   back-channel logout and revocation. Each expires with its last session;
//!   a session removed is removed from them, one that expired is dropped when
//!   met.
//! - `portcullis:sessions`: every KEY scored by when it expires, for the
//!   cluster-wide `portcullis_sessions` gauge.
//! - `portcullis:session-lock:KEY`: held, with a TTL, while one replica
//!   refreshes the session's tokens.
//!
//! Sealed: a session (identity, ID and refresh tokens) is encrypted and
//! authenticated with AES-256-GCM under a key derived from
//! `login.cookie.secret`, which every replica shares, with the store key as
//! associated data. Whoever can read Redis learns no token; whoever can write
//! it cannot forge a session, nor move one under another cookie's key (a
//! record that does not open is no session). KEY is a hash of the cookie's
//! session id, so nothing in Redis works as a cookie either. (Whoever can
//! write Redis can still put back a record it copied earlier, undoing a
//! logout until that session's end: keep Redis writable by Portcullis only.)
//!
//! Redis down: a lookup fails and the request is refused with 503 (nobody's
//! session can be checked), whatever `on_redis_down` says for rate limits.

use super::cookie::{derive_key, random_token};
use super::session::{matches, BoxFuture, Session, SessionStore, StoreError, Tokens, Turn};
use crate::shared_state::{key as redis_key, Redis, Unavailable};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use portcullis_core::Identity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// `last_seen` is written back at most this often: `idle_timeout` is kept to
/// within it, without a write per request.
pub const TOUCH_EVERY: u64 = 10;
/// How long one replica may hold a session's refresh before another may take
/// it (a refresh is one token request; a replica that died holding it must
/// not block the session for longer).
pub const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often a request waiting for another's refresh asks again.
const LOCK_POLL: Duration = Duration::from_millis(25);
/// The first byte of a sealed record: its format.
const SEALED_V1: u8 = 1;

const ALL: &str = "portcullis:sessions";

fn session_key(key: &str) -> String {
    format!("portcullis:session:{key}")
}

fn lock_key(key: &str) -> String {
    format!("portcullis:session-lock:{key}")
}

fn sub_index(provider: &str, sub: &str) -> String {
    redis_key(&format!("portcullis:session-sub:{provider}:"), sub)
}

fn sid_index(provider: &str, sid: &str) -> String {
    redis_key(&format!("portcullis:session-sid:{provider}:"), sid)
}

/// KEYS: the session's hash, [`ALL`], the refresh lock, then the index sets.
/// ARGV: the sealed record, last seen, when the key expires (Unix seconds),
/// the store key, `1` to only replace a session that still exists, the lock
/// token that must still hold the lock (empty: none), the index sets as a
/// JSON array, and when the session itself ends (the index sets' expiry).
/// Returns 1 when stored.
static PUT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.replicate_commands()
local now = tonumber(redis.call('TIME')[1])
if tonumber(ARGV[3]) <= now then return 0 end
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[6] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 's', ARGV[2], 'i', ARGV[7])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local ttl = tonumber(ARGV[8]) - now
for i = 4, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[4])
  if redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
",
    )
});

/// KEYS: the session's hash, [`ALL`]. ARGV: the store key. Removes the session
/// and its entries in the index sets its `i` field names.
static REMOVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local ok, indexes = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'i') or '[]')
if ok and type(indexes) == 'table' then
  for _, index in ipairs(indexes) do
    if type(index) == 'string' and string.sub(index, 1, 19) == 'portcullis:session-' then
      redis.call('SREM', index, ARGV[1])
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
",
    )
});

/// Records a use of a session that still exists (never recreates one that
/// was just ended) and moves its expiry. KEYS: the session's hash, [`ALL`].
/// ARGV: now, the new expiry, the store key.
static TOUCH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 's', ARGV[1])
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[3])
end
return 0
",
    )
});

/// Releases a refresh lock only if it is still ours (it may have expired and
/// been taken by another replica).
static UNLOCK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// A session as sealed in Redis.
#[derive(Serialize, Deserialize)]
struct Record {
    identity: Identity,
    /// `Identity` does not serialize its claims (the audit line must not carry them).
    claims: serde_json::Value,
    identity_expires_at: Option<u64>,
    sid: Option<String>,
    csrf: String,
    created_at: u64,
    expires_at: u64,
    id_token: String,
    refresh_token: Option<String>,
    access_expires_at: u64,
    generation: u64,
}

impl Record {
    fn of(s: &Session) -> Record {
        Record {
            identity: s.identity.clone(),
            claims: (*s.identity.claims).clone(),
            identity_expires_at: s.identity.expires_at,
            sid: s.sid.clone(),
            csrf: s.csrf.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            id_token: s.tokens.id_token.clone(),
            refresh_token: s.tokens.refresh_token.clone(),
            access_expires_at: s.tokens.access_expires_at,
            generation: s.generation,
        }
    }

    fn into_session(self, last_seen: u64) -> Session {
        let mut identity = self.identity;
        identity.claims = Arc::new(self.claims);
        identity.expires_at = self.identity_expires_at;
        Session {
            identity,
            sid: self.sid,
            csrf: self.csrf,
            created_at: self.created_at,
            expires_at: self.expires_at,
            tokens: Tokens {
                id_token: self.id_token,
                refresh_token: self.refresh_token,
                access_expires_at: self.access_expires_at,
            },
            generation: self.generation,
            last_seen: AtomicU64::new(last_seen),
            refreshing: Arc::default(),
        }
    }
}

/// Sessions in Redis, sealed (see the module comment).
pub struct RedisStore {
    redis: Redis,
    key: LessSafeKey,
    /// `login.idle_timeout` in seconds: an unused session's key expires then.
    idle_timeout: u64,
}

impl RedisStore {
    pub fn new(redis: Redis, cookie_secret: &str, idle_timeout: u64) -> Result<RedisStore, String> {
        let bytes = derive_key(cookie_secret, b"portcullis session store key v1");
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| "login: cannot make the session store's key".to_string())?;
        Ok(RedisStore {
            redis,
            key: LessSafeKey::new(key),
            idle_timeout,
        })
    }

    /// When the key of a session last used at `seen` expires: at its end, or
    /// when it has been idle too long (with room for the touch interval;
    /// [`super::Login`] judges idleness to the second).
    fn expiry(&self, session: &Session, seen: u64) -> u64 {
        let idle_end = seen.saturating_add(self.idle_timeout.saturating_add(TOUCH_EVERY));
        session.expires_at.min(idle_end)
    }

    fn seal(&self, key: &str, session: &Session) -> Result<Vec<u8>, StoreError> {
        let failed = |what: &str| StoreError(format!("cannot seal a session: {what}"));
        let mut data =
            serde_json::to_vec(&Record::of(session)).map_err(|e| failed(&e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| failed("no randomness"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut data,
            )
            .map_err(|_| failed("encryption failed"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + data.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    /// The session sealed under `key`, if it opens (else it is no session:
    /// another cookie secret, or tampered with).
    fn open(&self, key: &str, sealed: &[u8], last_seen: u64) -> Option<Session> {
        let (&version, rest) = sealed.split_first()?;
        if version != SEALED_V1 || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let Ok(plain) = self
            .key
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut data)
        else {
            tracing::warn!("a session in Redis does not open with this cookie secret; ignored");
            return None;
        };
        let record: Record = serde_json::from_slice(plain).ok()?;
        Some(record.into_session(last_seen))
    }

    async fn store(
        &self,
        key: &str,
        session: &Session,
        must_exist: bool,
        proof: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(key, session)?;
        let provider = session.identity.provider.as_deref().unwrap_or("");
        let mut indexes = vec![sub_index(provider, &session.identity.subject)];
        if let Some(sid) = &session.sid {
            indexes.push(sid_index(provider, sid));
        }
        let listed = serde_json::to_string(&indexes)
            .map_err(|e| StoreError(format!("cannot list a session's indexes: {e}")))?;
        let mut keys = vec![session_key(key), ALL.to_string(), lock_key(key)];
        keys.extend(indexes);
        let seen = session.last_seen.load(Ordering::Relaxed);
        let expiry = self.expiry(session, seen);
        let stored: i64 = self
            .redis
            .run(|mut conn| {
                let mut call = PUT.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                call.arg(&sealed[..])
                    .arg(seen)
                    .arg(expiry)
                    .arg(key)
                    .arg(u8::from(must_exist))
                    .arg(proof.unwrap_or(""))
                    .arg(&listed)
                    .arg(session.expires_at);
                async move { call.invoke_async(&mut conn).await }
            })
            .await
            .map_err(down)?;
        Ok(stored == 1)
    }

    /// The sessions under `keys` (each `None` when gone or not opening).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Session>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Option<Vec<u8>>, Option<u64>)> = self
            .redis
            .run(|mut conn| {
                let mut pipe = redis::pipe();
                for k in keys {
                    pipe.cmd("HMGET").arg(session_key(k)).arg("d").arg("s");
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await
            .map_err(down)?;
        Ok(keys
            .iter()
            .zip(rows)
            .map(|(k, (sealed, seen))| self.open(k, &sealed?, seen.unwrap_or(0)))
            .collect())
    }
}

fn down(e: Unavailable) -> StoreError {
    StoreError(format!("Redis: {}", e.0))
}

impl SessionStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Arc<Session>>, StoreError>> {
        Box::pin(async move {
            let mut found = self.get_many(&[key.to_string()]).await?;
            Ok(found.pop().flatten().map(Arc::new))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        session: Arc<Session>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.store(key, &session, false, None).await.map(drop) })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        session: Arc<Session>,
        turn: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { self.store(key, &session, true, turn.proof.as_deref()).await })
    }

    fn refresh_turn<'a>(
        &'a self,
        key: &'a str,
        _session: &'a Session,
    ) -> BoxFuture<'a, Result<Turn, StoreError>> {
        Box::pin(async move {
            let lock = lock_key(key);
            let token = random_token().ok_or_else(|| StoreError("no randomness".into()))?;
            let ttl_ms = u64::try_from(LOCK_TTL.as_millis()).unwrap_or(u64::MAX);
            // Whoever holds it finishes within LOCK_TTL or loses it then.
            let deadline = tokio::time::Instant::now() + LOCK_TTL + LOCK_POLL;
            loop {
                let taken: Option<String> = self
                    .redis
                    .run(|mut conn| {
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(&lock).arg(&token).arg("NX").arg("PX").arg(ttl_ms);
                        async move { cmd.query_async(&mut conn).await }
                    })
                    .await
                    .map_err(down)?;
                if taken.is_some() {
                    return Ok(Turn::new(
                        Some(token.clone()),
                        Held {
                            redis: self.redis.clone(),
                            lock,
                            token,
                        },
                    ));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(StoreError(
                        "another replica's refresh of this session did not finish".into(),
                    ));
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
        })
    }

    fn touch<'a>(
        &'a self,
        key: &'a str,
        session: &'a Session,
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let seen = session.last_seen.load(Ordering::Relaxed);
            if now < seen.saturating_add(TOUCH_EVERY) {
                return Ok(());
            }
            let (hash, expiry) = (session_key(key), self.expiry(session, now));
            self.redis
                .run(|mut conn| {
                    let mut call = TOUCH.prepare_invoke();
                    call.key(&hash).key(ALL).arg(now).arg(expiry).arg(key);
                    async move { call.invoke_async::<i64>(&mut conn).await }
                })
                .await
                .map(drop)
                .map_err(down)
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let hash = session_key(key);
            self.redis
                .run(|mut conn| {
                    let mut call = REMOVE.prepare_invoke();
                    call.key(&hash).key(ALL).arg(key);
                    async move { call.invoke_async::<i64>(&mut conn).await }
                })
                .await
                .map(drop)
                .map_err(down)
        })
    }

    fn remove_matching<'a>(
        &'a self,
        provider: &'a str,
        sid: Option<&'a str>,
        sub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut indexes = Vec::new();
            if let Some(sid) = sid {
                indexes.push(sid_index(provider, sid));
            }
            if let Some(sub) = sub {
                indexes.push(sub_index(provider, sub));
            }
            if indexes.is_empty() {
                return Ok(0);
            }
            let members: Vec<Vec<String>> = self
                .redis
                .run(|mut conn| {
                    let mut pipe = redis::pipe();
                    for index in &indexes {
                        pipe.cmd("SMEMBERS").arg(index);
                    }
                    async move { pipe.query_async(&mut conn).await }
                })
                .await
                .map_err(down)?;
            let candidates: Vec<String> = members
                .into_iter()
                .flatten()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let sessions = self.get_many(&candidates).await?;
            let mut ended = Vec::new();
            let mut gone = Vec::new();
            for (key, session) in candidates.iter().zip(&sessions) {
                match session {
                    Some(s) if matches(s, provider, sid, sub) => ended.push(key),
                    Some(_) => {}
                    None => gone.push(key),
                }
            }
            for key in &ended {
                self.remove(key).await?;
            }
            if !gone.is_empty() {
                self.redis
                    .run(|mut conn| {
                        let mut pipe = redis::pipe();
                        for index in &indexes {
                            for key in &gone {
                                pipe.cmd("SREM").arg(index).arg(*key).ignore();
                            }
                        }
                        async move { pipe.query_async::<()>(&mut conn).await }
                    })
                    .await
                    .map_err(down)?;
            }
            Ok(ended.len())
        })
    }

    fn held(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let (count,): (usize,) = self
                .redis
                .run(|mut conn| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(ALL)
                        .arg("-inf")
                        .arg(super::now())
                        .ignore();
                    pipe.cmd("ZCARD").arg(ALL);
                    async move { pipe.query_async(&mut conn).await }
                })
                .await
                .map_err(down)?;
            Ok(count)
        })
    }

    fn shared(&self) -> bool {
        true
    }
}

/// A refresh lock held in Redis, released when dropped.
struct Held {
    redis: Redis,
    lock: String,
    token: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the lock's TTL releases it
        };
        let (redis, lock, token) = (
            self.redis.clone(),
            std::mem::take(&mut self.lock),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let released = redis
                .run(|mut conn| {
                    let mut call = UNLOCK.prepare_invoke();
                    call.key(&lock).arg(&token);
                    async move { call.invoke_async::<i64>(&mut conn).await }
                })
                .await;
            if let Err(e) = released {
                tracing::debug!(error = %e.0, "cannot release a session refresh lock; it expires");
            }
        });
    }
}

#[cfg(test)]
mod tests;
