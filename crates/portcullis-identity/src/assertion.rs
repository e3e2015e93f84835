//! The identity assertion the proxy hands to upstreams (SPEC §3): a JWT signed by
//! the proxy, and the JWKS that verifies it (`/.well-known/portcullis/jwks.json`).
//!
//! Keys are either generated in memory and rotated every `rotate_every`, or loaded
//! from `signing_key_file` / `signing_keys_dir` (so replicas share keys; the
//! newest file signs, every file is published). With generated keys, the *next*
//! key is published one period before it starts signing, so verifiers that cache
//! our JWKS already know it, and a retired key stays published until every
//! assertion it signed has expired (`ttl`, plus a minute of skew).
//!
//! Signing is one serialization, one base64 pass and one signature into a
//! pre-sized string; the header is encoded once per key.

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
use std::path::{Path, PathBuf};
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
    #[error("{0}: no *.pem keys in the directory")]
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
    /// Loaded keys that do not sign but are published (signing_keys_dir).
    others: Vec<Arc<ActiveKey>>,
    /// Generated mode: when `next` takes over.
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

/// Signs assertions and publishes their keys. Cheap to share behind an `Arc`.
pub struct AssertionSigner {
    state: ArcSwap<State>,
    rotation: Mutex<()>,
    generated: Option<Alg>,
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
        let rotate_every = cfg.rotate_every.get().as_secs().max(1);
        let ttl = cfg.ttl.get().as_secs().max(1);
        let (state, generated) = if let Some(file) = &cfg.signing_key_file {
            let key = load_key(Path::new(file), alg)?;
            (
                State::build(Arc::new(ActiveKey::new(key)), None, vec![], vec![], None),
                None,
            )
        } else if let Some(dir) = &cfg.signing_keys_dir {
            (load_dir(Path::new(dir), alg)?, None)
        } else if let Some(prev) = previous.filter(|p| p.generated == Some(alg)) {
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
            (state, Some(alg))
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
                Some(alg),
            )
        };
        Ok(Self {
            state: ArcSwap::from_pointee(state),
            rotation: Mutex::new(()),
            generated,
            rotate_every,
            ttl,
        })
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
        if let (Some(at), Some(alg)) = (rotate_at, self.generated) {
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

/// Every `*.pem` in `dir`; the most recently modified signs (ties: the greater
/// file name, so every replica picks the same one).
fn load_dir(dir: &Path, wanted: Alg) -> Result<State, AssertionError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| AssertionError::File {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AssertionError::File {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") || !path.is_file() {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        found.push((modified, path));
    }
    found.sort();
    let mut keys = found
        .iter()
        .map(|(_, p)| load_key(p, wanted).map(|k| Arc::new(ActiveKey::new(k))))
        .collect::<Result<Vec<_>, _>>()?;
    let current = keys.pop().ok_or(AssertionError::NoKeys(shown))?;
    Ok(State::build(current, None, vec![], keys, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::compact::parse;
    use crate::jwks::{KeySet, Lookup};
    use portcullis_config::Duration;
    use serde_json::json;

    fn cfg(f: impl FnOnce(&mut AssertionConfig)) -> AssertionConfig {
        let mut c = AssertionConfig::default();
        f(&mut c);
        c
    }

    fn identity() -> Identity {
        Identity {
            kind: portcullis_core::IdentityKind::User,
            subject: "u-1".into(),
            issuer: Some("https://idp".into()),
            email: Some("a@b.c".into()),
            groups: vec!["g1".into(), "g2".into()],
            scopes: vec!["read".into(), "write".into()],
            client_id: Some("web".into()),
            ..Identity::default()
        }
    }

    /// Verifies `token` against `jwks` and returns its claims.
    fn verify(token: &str, jwks: &[u8]) -> serde_json::Value {
        let set = KeySet::parse(jwks).unwrap();
        let c = parse(token).unwrap();
        let alg = c.header.algorithm().unwrap();
        let Lookup::Found(key) = set.lookup(c.header.kid.as_deref(), alg) else {
            panic!("kid not published")
        };
        assert!(key.verify(alg, c.signing_input, &c.signature));
        assert_eq!(c.header.typ.as_deref(), Some("JWT"));
        serde_json::Value::Object(c.claims)
    }

    #[test]
    fn signs_the_spec_claims_and_omits_absent_ones() {
        for alg in [AssertionAlgorithm::ES256, AssertionAlgorithm::EdDSA] {
            let s = AssertionSigner::new(&cfg(|c| c.algorithm = alg)).unwrap();
            let t = s
                .sign_at(&identity(), "https://proxy", "http://orders:8000", 1_000)
                .unwrap();
            let claims = verify(&t.token, &s.state.load().jwks);
            assert_eq!(claims["exp"], t.expires_at);
            assert_eq!(claims["iss"], "https://proxy");
            assert_eq!(claims["aud"], "http://orders:8000");
            assert_eq!(claims["sub"], "u-1");
            assert_eq!(claims["groups"], json!(["g1", "g2"]));
            assert_eq!(claims["scope"], "read write");
            assert_eq!(claims["idp"], "https://idp");
            assert_eq!(claims["iat"], 1_000);
            assert_eq!(claims["exp"], 1_060);
            assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
            for absent in ["roles", "workload", "name"] {
                assert!(claims.get(absent).is_none(), "{absent}");
            }
        }
        let s = AssertionSigner::new(&AssertionConfig::default()).unwrap();
        let a = s.sign(&identity(), "i", "a").unwrap().token;
        let b = s.sign(&identity(), "i", "a").unwrap().token;
        assert_ne!(a, b, "jti makes every assertion unique");
        let workload = Identity {
            kind: portcullis_core::IdentityKind::Workload,
            workload: Some("spiffe://td/ns/a/sa/b".into()),
            ..Identity::default()
        };
        let claims = verify(&s.sign(&workload, "i", "a").unwrap().token, &s.jwks_json());
        assert_eq!(claims["sub"], "spiffe://td/ns/a/sa/b");
        assert_eq!(claims["workload"], "spiffe://td/ns/a/sa/b");

        // An assertion never outlives the token it vouches for.
        let short = Identity {
            expires_at: Some(1_010),
            ..identity()
        };
        let t = s.sign_at(&short, "i", "a", 1_000).unwrap().token;
        assert_eq!(verify(&t, &s.state.load().jwks)["exp"], 1_010);
    }

    #[test]
    fn rotation_keeps_old_keys_until_their_assertions_expire() {
        let c = cfg(|c| {
            c.rotate_every = Duration::from_secs(3600);
            c.ttl = Duration::from_secs(60);
        });
        let s = AssertionSigner::new_at(&c, None, 0).unwrap();
        let t0 = s.sign_at(&identity(), "i", "a", 10).unwrap().token;
        let kid0 = s.state_at(10).current.key.kid().to_string();
        let next_kid = s.state_at(10).next.as_ref().unwrap().key.kid().to_string();
        assert!(
            String::from_utf8_lossy(&s.state_at(10).jwks).contains(&next_kid),
            "next key pre-published"
        );
        // Rotation at 3600: the pre-published key signs, the old one stays published.
        let t1 = s.sign_at(&identity(), "i", "a", 3600).unwrap().token;
        let state = s.state_at(3600);
        assert_eq!(state.current.key.kid(), next_kid);
        verify(&t0, &state.jwks);
        verify(&t1, &state.jwks);
        // Until ttl + grace after retirement.
        assert!(String::from_utf8_lossy(&s.state_at(3600 + 119).jwks).contains(&kid0));
        assert!(!String::from_utf8_lossy(&s.state_at(3600 + 120).jwks).contains(&kid0));
    }

    #[test]
    fn keys_from_file_and_dir_are_shared_and_newest_signs() {
        let dir = tempfile::tempdir().unwrap();
        let old = crate::keys::generate(Alg::ES256).unwrap();
        let new = crate::keys::generate(Alg::ES256).unwrap();
        std::fs::write(dir.path().join("a-old.pem"), &old.pkcs8_pem).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("b-new.pem"), &new.pkcs8_pem).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let c = cfg(|c| c.signing_keys_dir = Some(dir.path().display().to_string()));
        let one = AssertionSigner::new(&c).unwrap();
        let two = AssertionSigner::new(&c).unwrap();
        assert_eq!(one.current_kid(), new.kid);
        let t = one.sign(&identity(), "i", "a").unwrap().token;
        verify(&t, &two.jwks_json());
        let jwks = String::from_utf8(two.jwks_json().to_vec()).unwrap();
        assert!(jwks.contains(&old.kid) && jwks.contains(&new.kid));

        let file =
            cfg(|c| c.signing_key_file = Some(dir.path().join("a-old.pem").display().to_string()));
        assert_eq!(AssertionSigner::new(&file).unwrap().current_kid(), old.kid);
        let eddsa = cfg(|c| {
            c.signing_key_file = Some(dir.path().join("a-old.pem").display().to_string());
            c.algorithm = AssertionAlgorithm::EdDSA;
        });
        assert!(matches!(
            AssertionSigner::new(&eddsa),
            Err(AssertionError::WrongAlgorithm { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        let none = cfg(|c| c.signing_keys_dir = Some(empty.path().display().to_string()));
        assert!(matches!(
            AssertionSigner::new(&none),
            Err(AssertionError::NoKeys(_))
        ));
    }

    #[test]
    fn reload_keeps_generated_keys() {
        let s = AssertionSigner::new(&AssertionConfig::default()).unwrap();
        let t = s.sign(&identity(), "i", "a").unwrap().token;
        let reloaded = AssertionSigner::new_from_previous(&s, &AssertionConfig::default()).unwrap();
        assert_eq!(reloaded.current_kid(), s.current_kid());
        verify(&t, &reloaded.jwks_json());
        let eddsa = AssertionSigner::new_from_previous(
            &s,
            &cfg(|c| c.algorithm = AssertionAlgorithm::EdDSA),
        )
        .unwrap();
        assert_ne!(eddsa.current_kid(), s.current_kid());
    }
}
