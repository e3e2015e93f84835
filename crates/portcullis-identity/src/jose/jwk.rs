//! JSON Web Keys (RFC 7517) as verifying keys.
//!
//! A JWK becomes a [`VerifyingKey`] only when everything it says agrees with how it
//! would be used: `kty` and `crv` decide the algorithm family, an `alg` (when
//! present) narrows it to exactly one algorithm, `use` (when present) must be
//! `sig`, `key_ops` (when present) must include `verify`, and a key carrying
//! private members is refused outright (a JWKS that publishes private keys lets
//! anyone who reads it forge tokens). The public key is parsed by aws-lc-rs once,
//! here — an invalid point or modulus is refused at load time, not per request.

use super::{b64_decode, Alg};
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use serde_json::{Map, Value};

/// A public key from a JWKS, usable with the algorithms in `algs` only.
#[derive(Debug)]
pub struct VerifyingKey {
    pub kid: Option<String>,
    /// (algorithm, key pre-parsed for it). RSA keys without an `alg` get one
    /// entry per RSA algorithm; every other key has exactly one.
    algs: Vec<(Alg, ParsedPublicKey)>,
}

impl VerifyingKey {
    /// True when this key may verify `alg`.
    pub fn allows(&self, alg: Alg) -> bool {
        self.algs.iter().any(|(a, _)| *a == alg)
    }

    /// Verifies `signature` over `message` with `alg`. `false` when the key does
    /// not allow `alg` or the signature does not verify.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        self.algs
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// Members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Turns one JWK object into a verifying key, or says why it cannot be used.
pub fn parse_jwk(jwk: &Map<String, Value>) -> Result<VerifyingKey, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let kid = text("kid")?.map(str::to_string);
    let kty = text("kty")?.ok_or("no `kty`")?;
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return Err(format!("`use` is `{}`, not `sig`", clip(usage)));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ok = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !ok {
            return Err("`key_ops` does not include `verify`".to_string());
        }
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(format!(
            "contains private key member `{member}`; refusing a published private key"
        ));
    }
    let declared = match text("alg")? {
        None => None,
        Some(name) => match Alg::parse(name) {
            Some(alg) if !alg.is_hmac() => Some(alg),
            _ => return Err(format!("`alg` `{}` is not supported", clip(name))),
        },
    };
    let candidates: Vec<Alg> = match kty {
        "RSA" => vec![
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
        ],
        "EC" => match text("crv")? {
            Some("P-256") => vec![Alg::ES256],
            Some("P-384") => vec![Alg::ES384],
            Some(other) => return Err(format!("EC curve `{}` is not supported", clip(other))),
            None => return Err("EC key has no `crv`".to_string()),
        },
        "OKP" => match text("crv")? {
            Some("Ed25519") => vec![Alg::EdDSA],
            Some(other) => return Err(format!("OKP curve `{}` is not supported", clip(other))),
            None => return Err("OKP key has no `crv`".to_string()),
        },
        other => return Err(format!("`kty` `{}` is not supported", clip(other))),
    };
    let algs: Vec<Alg> = match declared {
        Some(alg) if candidates.contains(&alg) => vec![alg],
        Some(alg) => {
            return Err(format!(
                "`alg` {alg} does not match a {kty} key{}",
                text("crv")?
                    .map(|c| format!(" on {}", clip(c)))
                    .unwrap_or_default()
            ))
        }
        None => candidates,
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let s = text(name)?.ok_or_else(|| format!("no `{name}`"))?;
        b64_decode(s).ok_or_else(|| format!("`{name}` is not base64url"))
    };
    let mut parsed = Vec::with_capacity(algs.len());
    match kty {
        "RSA" => {
            let n = bytes("n")?;
            let e = bytes("e")?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            // `n` has no leading zero bytes, so its first byte has at most 7
            // leading zero bits; an empty modulus is 0 bits (found by fuzzing:
            // `len * 8 - 8` underflowed).
            let bits = n
                .first()
                .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(format!("RSA modulus is {bits} bits; 2048 to 8192 required"));
            }
            let components = RsaPublicKeyComponents { n, e };
            for alg in algs {
                let key = components
                    .to_parsed_public_key(rsa_params(alg))
                    .map_err(|_| "RSA key is invalid".to_string())?;
                parsed.push((alg, key));
            }
        }
        "EC" => {
            let (alg, len, verification): (_, _, &'static signature::EcdsaVerificationAlgorithm) =
                match algs.first() {
                    Some(Alg::ES384) => (Alg::ES384, 48, &signature::ECDSA_P384_SHA384_FIXED),
                    _ => (Alg::ES256, 32, &signature::ECDSA_P256_SHA256_FIXED),
                };
            let x = bytes("x")?;
            let y = bytes("y")?;
            if x.len() != len || y.len() != len {
                return Err(format!("EC coordinates must be {len} bytes each"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = ParsedPublicKey::new(verification, &point)
                .map_err(|_| "EC point is not on the curve".to_string())?;
            parsed.push((alg, key));
        }
        _ => {
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".to_string());
            }
            let key = ParsedPublicKey::new(&signature::ED25519, &x)
                .map_err(|_| "Ed25519 key is invalid".to_string())?;
            parsed.push((Alg::EdDSA, key));
        }
    }
    Ok(VerifyingKey { kid, algs: parsed })
}

fn rsa_params(alg: Alg) -> &'static signature::RsaParameters {
    match alg {
        Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// Quotes a value from a JWKS in a skip reason (JWKS content is remote input).
fn clip(s: &str) -> String {
    s.chars().take(32).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestKey;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn each_key_type_parses_and_verifies_only_its_algorithm() {
        for key in [
            TestKey::rsa(),
            TestKey::es256(),
            TestKey::es384(),
            TestKey::ed25519(),
        ] {
            let vk = parse_jwk(&obj(key.public_jwk("k"))).unwrap();
            let sig = key.sign(b"msg");
            assert!(vk.verify(key.alg, b"msg", &sig), "{}", key.alg);
            assert!(!vk.verify(key.alg, b"other", &sig));
            for other in Alg::ALL {
                if other.kty() != key.alg.kty() {
                    assert!(!vk.allows(other), "{} key allows {other}", key.alg);
                }
            }
        }
    }

    /// Found by `scripts/fuzz` (target `jwks`): an RSA key with an empty `n`
    /// made the modulus-size check underflow (a panic with overflow checks,
    /// a wrapped size without). The whole input is kept as the fuzz seed
    /// `fuzz/corpus/jwks/seed-empty-rsa-modulus`.
    #[test]
    fn an_empty_rsa_modulus_is_refused_not_a_panic() {
        let jwk = json!({"kty": "RSA", "n": "", "e": "AIAB"});
        assert_eq!(
            parse_jwk(&obj(jwk)).err().as_deref(),
            Some("RSA modulus is 0 bits; 2048 to 8192 required")
        );
        let body = include_bytes!("../../../../fuzz/corpus/jwks/seed-empty-rsa-modulus");
        let refused = crate::jwks::parse_jwks(body).unwrap_err();
        assert!(refused.contains("no usable signing keys"), "{refused}");
    }

    #[test]
    fn declared_alg_narrows_rsa_key() {
        let mut jwk = TestKey::rsa().public_jwk("k");
        jwk["alg"] = json!("PS256");
        let vk = parse_jwk(&obj(jwk)).unwrap();
        assert!(vk.allows(Alg::PS256));
        assert!(!vk.allows(Alg::RS256));
    }

    #[test]
    fn disagreeing_or_unusable_keys_are_refused() {
        let es256 = TestKey::es256().public_jwk("k");
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut j = es256.clone();
                    j["use"] = json!("enc");
                    j
                },
                "use",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["key_ops"] = json!(["encrypt"]);
                    j
                },
                "key_ops",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["alg"] = json!("ES384");
                    j
                },
                "does not match",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["alg"] = json!("RS256");
                    j
                },
                "does not match",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["alg"] = json!("HS256");
                    j
                },
                "not supported",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["crv"] = json!("P-384");
                    j
                },
                "does not match",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["crv"] = json!("P-384");
                    j.as_object_mut().unwrap().remove("alg");
                    j
                },
                "coordinates",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["crv"] = json!("secp256k1");
                    j
                },
                "curve",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["d"] = json!("AAAA");
                    j
                },
                "private",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["x"] = json!(crate::jose::b64_encode(&[1u8; 32]));
                    j
                },
                "curve",
            ),
            (
                {
                    let mut j = es256.clone();
                    j["kid"] = json!(5);
                    j
                },
                "kid",
            ),
            (json!({"kty":"oct","k":"c2VjcmV0"}), "private"),
            (json!({"kty":"oct"}), "kty"),
            (json!({"kty":"RSA","n":"AQAB","e":"AQAB"}), "bits"),
        ];
        for (jwk, why) in cases {
            let err = parse_jwk(&obj(jwk.clone())).unwrap_err();
            assert!(err.contains(why), "{jwk}: {err} (wanted {why})");
        }
    }
}
