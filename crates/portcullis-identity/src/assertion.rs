//! The identity assertion the proxy hands to upstreams (SPEC §3): a JWT signed by
//! the proxy, and the JWKS that verifies it (`/.well-known/portcullis/jwks.json`).
//!
//! Keys are either generated in memory and rotated every `rotate_every`, loaded
//! from `signing_key_file` (one fixed key), or kept in `signing_keys_dir`, where
//! they are generated and rotated on disk so that replicas share them (see
//! [`crate::assertion_keys`]). With rotation, the *next* key is published one
//! period before it starts signing, so verifiers that cache our JWKS already know
//! it, and a retired key stays published until every assertion it signed has
//! expired (`ttl`, plus a minute of skew).
//!
//! Signing is one serialization, one base64 pass and one signature into a
//! pre-sized string; the header is encoded once per key.

use crate::assertion_keys::{DirKey, KeyDir};
use crate::jose::{b64_encode, Alg};
use crate::keys::{KeyError, SigningKey};
use crate::util::now_unix;
use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use portcullis_config::{AssertionAlgorithm, AssertionConfig};
use portcullis_core::Identity;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Extra time a retired key stays published beyond the assertion TTL, for clock
/// skew between us and verifiers.
const RETIRE_GRACE_SECS: u64 = 60;

/// Why the signer could not be built or could not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: {source}")]
    Key { path: String, source: KeyError },
    #[error("{path}: key is {found}, but assertion.algorithm is {wanted}")]
    WrongAlgorithm {
        path: String,
        found: String,
        wanted: String,
    },
    #[error("{0}: no signing key of the configured algorithm in the directory")]
    NoKeys(String),
    #[error("could not generate an assertion key: {0}")]
    Generate(KeyError),
    #[error("signing failed")]
    Sign,
}

struct ActiveKey {
    key: SigningKey,
    /// `base64url({"alg","kid","typ":"JWT"})`, computed once.
    header_b64: String,
}

impl ActiveKey {
    fn new(key: SigningKey) -> Self {
        let header = serde_json::json!({"alg": key.alg().as_str(), "kid": key.kid(), "typ": "JWT"});
        Self {
            header_b64: b64_encode(header.to_string().as_bytes()),
            key,
        }
    }
}

struct State {
    current: Arc<ActiveKey>,
    /// Generated mode: the key that signs after the next rotation.
    next: Option<Arc<ActiveKey>>,
    /// Retired keys and the Unix time until which they stay published.
    retired: Vec<(Arc<ActiveKey>, u64)>,
    /// Keys that do not sign but are published (other `*.pem` in signing_keys_dir).
    others: Vec<Arc<ActiveKey>>,
    /// With rotation: when `next` takes over.
    rotate_at: Option<u64>,
    jwks: Bytes,
}

impl State {
    fn build(
        current: Arc<ActiveKey>,
        next: Option<Arc<ActiveKey>>,
        retired: Vec<(Arc<ActiveKey>, u64)>,
        others: Vec<Arc<ActiveKey>>,
        rotate_at: Option<u64>,
    ) -> Self {
        let keys: Vec<serde_json::Value> = std::iter::once(&current)
            .chain(next.iter())
            .chain(retired.iter().map(|(k, _)| k))
            .chain(others.iter())
            .map(|k| k.key.public_jwk(None))
            .collect();
        let jwks = Bytes::from(serde_json::json!({ "keys": keys }).to_string());
        Self {
            current,
            next,
            retired,
            others,
            rotate_at,
            jwks,
        }
    }
}

/// A signed assertion and its `exp`, so a cache need not parse the token back.
#[derive(Debug, Clone)]
pub struct SignedAssertion {
    /// The compact JWS.
    pub token: String,
    /// Its `exp` claim (Unix seconds).
    pub expires_at: u64,
}

/// Where the keys come from.
enum Mode {
    /// `signing_key_file`: one key, never rotated.
    Fixed,
    /// Neither file nor directory: generated in memory, rotated in memory.
    Generated(Alg),
    /// `signing_keys_dir`: generated and rotated on disk; [`AssertionSigner::maintain`]
    /// keeps the directory and the published set in step.
    Dir(KeyDir),
}

/// Signs assertions and publishes their keys. Cheap to share behind an `Arc`.
pub struct AssertionSigner {
    state: ArcSwap<State>,
    rotation: Mutex<()>,
    mode: Mode,
    rotate_every: u64,
    ttl: u64,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.state.load().current.key.kid())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn wanted_alg(cfg: &AssertionConfig) -> Alg {
    match cfg.algorithm {
        AssertionAlgorithm::ES256 => Alg::ES256,
        AssertionAlgorithm::EdDSA => Alg::EdDSA,
    }
}

impl AssertionSigner {
    /// Builds the signer: keys from `signing_key_file` or `signing_keys_dir`
    /// (read now, synchronously — this runs at config load), else generated.
    pub fn new(cfg: &AssertionConfig) -> Result<Self, AssertionError> {
        Self::new_at(cfg, None, now_unix())
    }

    /// The signer `serve` would build, without writing anything: for `check`. A
    /// `signing_keys_dir` is read if it exists (every key in it must load); the keys
    /// `serve` would create there are generated in memory instead.
    pub fn new_read_only(cfg: &AssertionConfig) -> Result<Self, AssertionError> {
        let now = now_unix();
        let Some(dir) = &cfg.signing_keys_dir else {
            return Self::new_at(cfg, None, now);
        };
        let key_dir = Self::key_dir(dir, cfg);
        key_dir.could_create()?;
        let mut keys = key_dir.load()?;
        if !keys
            .iter()
            .any(|k| k.start.is_some_and(|s| s <= now) && k.key.alg() == key_dir.alg())
        {
            keys.push(DirKey {
                key: SigningKey::generate(key_dir.alg()).map_err(AssertionError::Generate)?,
                start: Some(key_dir.period_start(now)),
            });
        }
        let state = dir_state(keys, &key_dir, ttl_secs(cfg), now)?;
        Ok(Self::with_state(state, Mode::Dir(key_dir), cfg))
    }

    /// Like [`new`](Self::new), but keeps `previous`'s generated keys when both
    /// generate keys of the same algorithm, so a config reload does not make
    /// upstreams refetch keys or reject in-flight assertions.
    pub fn new_from_previous(
        previous: &AssertionSigner,
        cfg: &AssertionConfig,
    ) -> Result<Self, AssertionError> {
        Self::new_at(cfg, Some(previous), now_unix())
    }

    fn new_at(
        cfg: &AssertionConfig,
        previous: Option<&AssertionSigner>,
        now: u64,
    ) -> Result<Self, AssertionError> {
        let alg = wanted_alg(cfg);
        let rotate_every = rotate_every_secs(cfg);
        let (state, mode) = if let Some(file) = &cfg.signing_key_file {
            let key = load_key(Path::new(file), alg)?;
            (
                State::build(Arc::new(ActiveKey::new(key)), None, vec![], vec![], None),
                Mode::Fixed,
            )
        } else if let Some(dir) = &cfg.signing_keys_dir {
            let key_dir = Self::key_dir(dir, cfg);
            let keys = key_dir.sync(now)?;
            (
                dir_state(keys, &key_dir, ttl_secs(cfg), now)?,
                Mode::Dir(key_dir),
            )
        } else if let Some(prev) =
            previous.filter(|p| matches!(p.mode, Mode::Generated(a) if a == alg))
        {
            let old = prev.state.load_full();
            let rotate_at = Some(
                old.rotate_at
                    .map_or(now + rotate_every, |t| t.min(now + rotate_every)),
            );
            let state = State::build(
                old.current.clone(),
                old.next.clone(),
                old.retired.clone(),
                vec![],
                rotate_at,
            );
            (state, Mode::Generated(alg))
        } else {
            let current = Arc::new(ActiveKey::new(
                SigningKey::generate(alg).map_err(AssertionError::Generate)?,
            ));
            let next = Arc::new(ActiveKey::new(
                SigningKey::generate(alg).map_err(AssertionError::Generate)?,
            ));
            (
                State::build(
                    current,
                    Some(next),
                    vec![],
                    vec![],
                    Some(now + rotate_every),
                ),
                Mode::Generated(alg),
            )
        };
        Ok(Self::with_state(state, mode, cfg))
    }

    fn with_state(state: State, mode: Mode, cfg: &AssertionConfig) -> Self {
        Self {
            state: ArcSwap::from_pointee(state),
            rotation: Mutex::new(()),
            mode,
            rotate_every: rotate_every_secs(cfg),
            ttl: ttl_secs(cfg),
        }
    }

    fn key_dir(dir: &str, cfg: &AssertionConfig) -> KeyDir {
        KeyDir::new(
            dir,
            wanted_alg(cfg),
            rotate_every_secs(cfg),
            ttl_secs(cfg) + RETIRE_GRACE_SECS,
        )
    }

    /// How often [`maintain`](Self::maintain) should run: `Some` only for
    /// `signing_keys_dir`, often enough that the next key always exists (and is
    /// published) well before it has to sign.
    pub fn maintenance_interval(&self) -> Option<std::time::Duration> {
        match self.mode {
            Mode::Dir(_) => Some(std::time::Duration::from_millis(
                (self.rotate_every * 1000 / 4).clamp(250, 60_000),
            )),
            _ => None,
        }
    }

    /// `signing_keys_dir`: creates the keys of this and the next period when no
    /// replica has yet, loads the keys other replicas made, drops files nobody needs,
    /// and republishes. Blocking file I/O: run it off the request path. A failure
    /// is logged and the current keys keep serving.
    pub fn maintain(&self) {
        self.maintain_at(now_unix());
    }

    fn maintain_at(&self, now: u64) {
        let Mode::Dir(key_dir) = &self.mode else {
            return;
        };
        let fresh = key_dir
            .sync(now)
            .and_then(|keys| dir_state(keys, key_dir, self.ttl, now));
        match fresh {
            Ok(state) => {
                let _guard = self.rotation.lock().unwrap_or_else(|e| e.into_inner());
                let merged = self.keep_what_signed(state, now);
                self.state.store(Arc::new(merged));
            }
            Err(e) => {
                tracing::warn!(error = %e, "assertion keys not refreshed; keeping the current ones")
            }
        }
    }

    /// Assertion lifetime in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl
    }

    /// The `kid` currently signing.
    pub fn current_kid(&self) -> String {
        self.state_at(now_unix()).current.key.kid().to_string()
    }

    /// Signs an assertion for `identity`, issued by `iss` for audience `aud`.
    /// Claims: `iss, aud, sub, email, groups, roles, scope` (space-joined),
    /// `client_id, workload, idp` (the original issuer), `iat, exp = iat + ttl,
    /// jti`; absent or empty optional values are omitted. `sub` falls back to the
    /// workload's SPIFFE ID for a pure workload identity.
    pub fn sign(
        &self,
        identity: &Identity,
        iss: &str,
        aud: &str,
    ) -> Result<SignedAssertion, AssertionError> {
        self.sign_at(identity, iss, aud, now_unix())
    }

    fn sign_at(
        &self,
        identity: &Identity,
        iss: &str,
        aud: &str,
        now: u64,
    ) -> Result<SignedAssertion, AssertionError> {
        let state = self.state_at(now);
        let key = &state.current;
        let mut jti_bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti_bytes).map_err(|_| AssertionError::Sign)?;
        let mut jti = [0u8; 22];
        URL_SAFE_NO_PAD
            .encode_slice(jti_bytes, &mut jti)
            .map_err(|_| AssertionError::Sign)?;
        let sub = match (identity.subject.as_str(), identity.workload.as_deref()) {
            ("", Some(w)) => Some(w),
            ("", None) => None,
            (s, _) => Some(s),
        };
        // Never outlive the credential it vouches for.
        let exp = identity
            .expires_at
            .map_or(now + self.ttl, |token_exp| token_exp.min(now + self.ttl));
        let claims = Claims {
            iss,
            aud,
            sub,
            email: identity.email.as_deref(),
            groups: &identity.groups,
            roles: &identity.roles,
            scope: SpaceJoined(&identity.scopes),
            client_id: identity.client_id.as_deref(),
            workload: identity.workload.as_deref(),
            idp: identity.issuer.as_deref(),
            iat: now,
            exp,
            jti: std::str::from_utf8(&jti).map_err(|_| AssertionError::Sign)?,
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| AssertionError::Sign)?;
        let sig_len = 86; // base64url of a 64-byte ES256/Ed25519 signature
        let mut out = String::with_capacity(
            key.header_b64.len() + 2 + payload.len().div_ceil(3) * 4 + sig_len,
        );
        out.push_str(&key.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let signature = key
            .key
            .sign(out.as_bytes())
            .map_err(|_| AssertionError::Sign)?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut out);
        Ok(SignedAssertion {
            token: out,
            expires_at: exp,
        })
    }

    /// The JWKS document to serve at `/.well-known/portcullis/jwks.json`.
    pub fn jwks_json(&self) -> Bytes {
        self.state_at(now_unix()).jwks.clone()
    }

    /// `fresh` (computed from the directory), still publishing every key this
    /// replica signed with until its assertions have expired, even when the files
    /// say it stopped signing earlier (maintenance did not run for a while, or a
    /// file was removed).
    fn keep_what_signed(&self, fresh: State, now: u64) -> State {
        let old = self.state.load_full();
        let mut retired = fresh.retired;
        let signing_until = now + self.ttl + RETIRE_GRACE_SECS;
        let signed = old
            .retired
            .iter()
            .cloned()
            .chain(std::iter::once((old.current.clone(), signing_until)));
        for (key, until) in signed {
            let kid = key.key.kid();
            if kid == fresh.current.key.kid() || now >= until {
                continue;
            }
            match retired.iter_mut().find(|(k, _)| k.key.kid() == kid) {
                Some((_, known)) => *known = (*known).max(until),
                None => retired.push((key, until)),
            }
        }
        let others = fresh
            .others
            .into_iter()
            .filter(|k| !retired.iter().any(|(r, _)| r.key.kid() == k.key.kid()))
            .collect();
        State::build(fresh.current, fresh.next, retired, others, fresh.rotate_at)
    }

    /// The state, rotated first when a rotation or a retirement is due. The fast
    /// path is one atomic load and two comparisons.
    fn state_at(&self, now: u64) -> Arc<State> {
        let state = self.state.load_full();
        let due = state.rotate_at.is_some_and(|t| now >= t)
            || state.retired.iter().any(|(_, until)| now >= *until);
        if !due {
            return state;
        }
        let _guard = self.rotation.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.state.load_full();
        let mut current = state.current.clone();
        let mut next = state.next.clone();
        let mut retired: Vec<(Arc<ActiveKey>, u64)> = state
            .retired
            .iter()
            .filter(|(_, until)| now < *until)
            .cloned()
            .collect();
        let mut rotate_at = state.rotate_at;
        if let (Some(at), Mode::Dir(_)) = (rotate_at, &self.mode) {
            // The next key is already loaded and published: switch without I/O;
            // `maintain` creates the one after.
            if now >= at {
                if let Some(promoted) = next.take() {
                    retired.push((current, now + self.ttl + RETIRE_GRACE_SECS));
                    current = promoted;
                    tracing::info!(kid = current.key.kid(), "assertion signing key rotated");
                }
                rotate_at = None;
            }
        }
        if let (Some(at), Mode::Generated(alg)) = (rotate_at, &self.mode) {
            let alg = *alg;
            if now >= at {
                if let Ok(fresh) = SigningKey::generate(alg) {
                    retired.push((current, now + self.ttl + RETIRE_GRACE_SECS));
                    current = next
                        .take()
                        .unwrap_or_else(|| Arc::new(ActiveKey::new(fresh)));
                    if next.is_none() {
                        next = SigningKey::generate(alg)
                            .ok()
                            .map(|k| Arc::new(ActiveKey::new(k)));
                    }
                    rotate_at = Some(now + self.rotate_every);
                    tracing::info!(kid = current.key.kid(), "assertion signing key rotated");
                } else {
                    // Keep signing with the current key; try again shortly.
                    tracing::warn!(
                        "could not generate a new assertion key; keeping the current one"
                    );
                    rotate_at = Some(now + 60);
                }
            }
        }
        let fresh = Arc::new(State::build(
            current,
            next,
            retired,
            state.others.clone(),
            rotate_at,
        ));
        self.state.store(fresh.clone());
        fresh
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "SpaceJoined::is_empty")]
    scope: SpaceJoined<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a str>,
    iat: u64,
    exp: u64,
    jti: &'a str,
}

/// Serializes a list as one space-separated string without building it first.
struct SpaceJoined<'a>(&'a [String]);

impl SpaceJoined<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for SpaceJoined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl Serialize for SpaceJoined<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn load_key(path: &Path, wanted: Alg) -> Result<SigningKey, AssertionError> {
    let shown = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|e| AssertionError::File {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let key = SigningKey::from_pem(&pem).map_err(|source| AssertionError::Key {
        path: shown.clone(),
        source,
    })?;
    if key.alg() != wanted {
        return Err(AssertionError::WrongAlgorithm {
            path: shown,
            found: key.alg().to_string(),
            wanted: wanted.to_string(),
        });
    }
    Ok(key)
}

fn rotate_every_secs(cfg: &AssertionConfig) -> u64 {
    cfg.rotate_every.get().as_secs().max(1)
}

fn ttl_secs(cfg: &AssertionConfig) -> u64 {
    cfg.ttl.get().as_secs().max(1)
}

/// What is published and what signs at `now`, from the keys of a `signing_keys_dir`:
/// of the managed keys of the configured algorithm, the one whose period started
/// last signs, the first still to start is `next`, and each earlier one stays
/// published until its successor started `ttl` plus grace ago. A managed key of
/// another algorithm (the algorithm was changed) stays published for its period
/// and the lifetime of its last assertions; any other `*.pem` is published.
fn dir_state(
    keys: Vec<DirKey>,
    key_dir: &KeyDir,
    ttl: u64,
    now: u64,
) -> Result<State, AssertionError> {
    let mut chain: Vec<(u64, Arc<ActiveKey>)> = Vec::new();
    let mut others = Vec::new();
    for k in keys {
        match k.start {
            Some(start) if k.key.alg() == key_dir.alg() => {
                chain.push((start, Arc::new(ActiveKey::new(k.key))));
            }
            Some(start) => {
                if now < start + key_dir.rotate_every() + ttl + RETIRE_GRACE_SECS {
                    others.push(Arc::new(ActiveKey::new(k.key)));
                }
            }
            None => others.push(Arc::new(ActiveKey::new(k.key))),
        }
    }
    chain.sort_by_key(|(start, _)| *start);
    if chain.is_empty() {
        return Err(AssertionError::NoKeys(key_dir.shown()));
    }
    // With a clock behind every key's start, the earliest key signs.
    let live = chain.iter().rposition(|(s, _)| *s <= now).unwrap_or(0);
    let retired = (0..live)
        .filter_map(|i| {
            let until = chain[i + 1].0 + ttl + RETIRE_GRACE_SECS;
            (now < until).then(|| (chain[i].1.clone(), until))
        })
        .collect();
    let current = chain[live].1.clone();
    let mut future = chain.iter().skip(live + 1);
    let next = future.next().cloned();
    others.extend(future.map(|(_, k)| k.clone()));
    let rotate_at = next.as_ref().map(|(start, _)| *start);
    Ok(State::build(
        current,
        next.map(|(_, k)| k),
        retired,
        others,
        rotate_at,
    ))
}

#[cfg(test)]
#[path = "assertion_tests.rs"]
mod tests;
