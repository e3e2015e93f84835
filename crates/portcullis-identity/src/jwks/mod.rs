//! JSON Web Key Sets: parsing a JWKS document into a [`KeySet`] ([`KeySet::parse`])
//! and the per-provider cache that keeps one fresh ([`cache`]).

pub(crate) mod cache;

use crate::jose::json::parse_object;
use crate::jose::jwk::{parse_jwk, VerifyingKey};
use crate::jose::Alg;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Most keys we take from one JWKS; real ones hold a handful.
pub(crate) const MAX_KEYS: usize = 100;
/// Largest JWKS body we read.
pub(crate) const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Parses a JWKS document as a provider's key refresh does and says how many keys
/// are usable. Public only for the fuzz targets (`fuzz/`), which reach nothing
/// private.
#[doc(hidden)]
pub fn parse_jwks(body: &[u8]) -> Result<usize, String> {
    KeySet::parse(body).map(|keys| keys.len())
}

/// The usable keys of one JWKS, by `kid`, plus why any others were skipped.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Vec<Arc<VerifyingKey>>>,
    /// Keys without a `kid`: usable only by tokens without one.
    anonymous: Vec<Arc<VerifyingKey>>,
    /// (kid, reason) for skipped keys, so "unknown key" can say what was wrong.
    skipped: Vec<(Option<String>, String)>,
    len: usize,
    /// Every usable key as (kid, its JWK as parsed): a refresh that drops one,
    /// or gives its kid other key material, ends what was verified with it.
    material: std::collections::BTreeSet<(Option<String>, String)>,
}

/// What a key lookup found.
pub(crate) enum Lookup {
    Found(Arc<VerifyingKey>),
    /// A key with this `kid` exists but cannot verify the token's algorithm.
    WrongAlgorithm,
    NotFound,
    /// No `kid` in the token and more than one key could match.
    Ambiguous,
}

impl KeySet {
    /// Parses a JWKS document. Individual unusable keys are skipped (and remembered);
    /// a document that is not a JWKS, or has no usable key, is an error, so that a
    /// broken or hostile response never replaces keys that work.
    pub(crate) fn parse(body: &[u8]) -> Result<KeySet, String> {
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let doc = parse_object(body).map_err(|e| format!("JWKS is {e}"))?;
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err("JWKS has no `keys` array".to_string());
        };
        let mut set = KeySet::default();
        for (i, key) in keys.iter().enumerate() {
            let kid = key.get("kid").and_then(Value::as_str).map(str::to_string);
            if i >= MAX_KEYS {
                set.skipped
                    .push((kid, format!("more than {MAX_KEYS} keys in the JWKS")));
                continue;
            }
            let parsed = match key {
                Value::Object(map) => parse_jwk(map),
                _ => Err("not a JSON object".to_string()),
            };
            match parsed {
                Ok(vk) => {
                    set.material.insert((vk.kid.clone(), key.to_string()));
                    let vk = Arc::new(vk);
                    match vk.kid.clone() {
                        Some(kid) => set.by_kid.entry(kid).or_default().push(vk),
                        None => set.anonymous.push(vk),
                    }
                    set.len += 1;
                }
                Err(why) => set.skipped.push((kid, why)),
            }
        }
        if set.len == 0 {
            let first = set
                .skipped
                .first()
                .map(|(_, why)| format!(" (first problem: {why})"))
                .unwrap_or_default();
            return Err(format!("JWKS has no usable signing keys{first}"));
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Finds the key for a token's `kid` and algorithm. A token without `kid` is
    /// accepted only when exactly one key fits its algorithm: trying several keys
    /// would multiply the cost of every forged token.
    pub(crate) fn lookup(&self, kid: Option<&str>, alg: Alg) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Lookup::NotFound,
                Some(keys) => keys
                    .iter()
                    .find(|k| k.allows(alg))
                    .map_or(Lookup::WrongAlgorithm, |k| Lookup::Found(k.clone())),
            },
            None => {
                let mut fits = self
                    .by_kid
                    .values()
                    .flatten()
                    .chain(self.anonymous.iter())
                    .filter(|k| k.allows(alg));
                match (fits.next(), fits.next()) {
                    (Some(k), None) => Lookup::Found(k.clone()),
                    (None, _) => Lookup::NotFound,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    /// True when every usable key of `previous` (its kid and its material) is
    /// still here. A key replaced under the same kid — an emergency rotation
    /// that reuses the name — is not: tokens it verified must be verified again.
    pub(crate) fn keeps_every_key_of(&self, previous: &KeySet) -> bool {
        previous.material.is_subset(&self.material)
    }

    /// Why the key with this `kid` was skipped, if it was.
    pub(crate) fn skip_reason(&self, kid: &str) -> Option<&str> {
        self.skipped
            .iter()
            .find(|(k, _)| k.as_deref() == Some(kid))
            .map(|(_, why)| why.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{jwks, TestKey};
    use serde_json::json;

    #[test]
    fn bad_keys_are_skipped_good_ones_kept() {
        let good = TestKey::es256().public_jwk("good");
        let mut enc = TestKey::es256().public_jwk("enc");
        enc["use"] = json!("enc");
        let set = KeySet::parse(jwks(&[good, enc, json!("junk"), json!({"kty":"RSA"})]).as_bytes())
            .unwrap();
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.lookup(Some("good"), Alg::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("enc"), Alg::ES256),
            Lookup::NotFound
        ));
        assert!(set.skip_reason("enc").unwrap().contains("use"));
    }

    #[test]
    fn hostile_documents_are_refused_whole() {
        let mut enc = TestKey::es256().public_jwk("enc");
        enc["use"] = json!("enc");
        for body in [
            "not json".to_string(),
            "{}".to_string(),
            r#"{"keys":{}}"#.to_string(),
            r#"{"keys":[]}"#.to_string(),
            jwks(&[enc]),
            format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES)),
        ] {
            assert!(
                KeySet::parse(body.as_bytes()).is_err(),
                "{}",
                &body[..body.len().min(60)]
            );
        }
    }

    #[test]
    fn key_without_kid_requires_a_single_candidate() {
        let a = TestKey::es256();
        let b = TestKey::es256();
        let mut ja = a.public_jwk("x");
        ja.as_object_mut().unwrap().remove("kid");
        let set = KeySet::parse(jwks(&[ja.clone()]).as_bytes()).unwrap();
        assert!(matches!(set.lookup(None, Alg::ES256), Lookup::Found(_)));
        assert!(matches!(set.lookup(None, Alg::RS256), Lookup::NotFound));
        let set = KeySet::parse(jwks(&[ja, b.public_jwk("b")]).as_bytes()).unwrap();
        assert!(matches!(set.lookup(None, Alg::ES256), Lookup::Ambiguous));
        assert!(matches!(
            set.lookup(Some("b"), Alg::ES384),
            Lookup::WrongAlgorithm
        ));
    }
}
