//! Signing keys: generation, PEM import/export, public JWKs and RFC 7638
//! thumbprints, and [`mint`] for development tokens. Used by [`crate::assertion`]
//! and by the CLI (`portcullis keys generate`, `portcullis token mint`).
//!
//! A key's `kid` is its RFC 7638 thumbprint, so replicas that load the same key
//! file publish and use the same `kid` without coordinating.

use crate::jose::{b64_encode, Alg};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Map, Value};

/// Why a key could not be generated, read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no private key found in PEM input (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    NoPem,
    #[error("unsupported or invalid private key: {0}")]
    Unsupported(String),
    #[error("cannot generate keys for {0}")]
    CannotGenerate(String),
    #[error("signing failed")]
    SignFailed,
    #[error("claims must be a JSON object")]
    ClaimsNotObject,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key able to sign with one algorithm (RSA keys may also sign the other
/// RSA algorithms through [`SigningKey::sign_with`]).
pub struct SigningKey {
    alg: Alg,
    pair: Pair,
    kid: String,
    /// The public JWK members (no `kid`/`alg`/`use`), in thumbprint order.
    public: Map<String, Value>,
}

impl std::fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key for `alg`: RS256 (2048-bit), ES256, ES384 or EdDSA (Ed25519).
    pub fn generate(alg: Alg) -> Result<Self, KeyError> {
        let fail = |_| KeyError::CannotGenerate(alg.to_string());
        let pair = match alg {
            Alg::RS256 => Pair::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(fail)?),
            Alg::ES256 => {
                Pair::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(fail)?)
            }
            Alg::ES384 => {
                Pair::Ec(EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(fail)?)
            }
            Alg::EdDSA => Pair::Ed(Ed25519KeyPair::generate().map_err(fail)?),
            other => return Err(KeyError::CannotGenerate(other.to_string())),
        };
        Ok(Self::from_pair(alg, pair))
    }

    /// Reads the first private key of a PEM document (PKCS#8, SEC1 or PKCS#1). The
    /// algorithm follows the key: RS256 for RSA, ES256 for P-256, ES384 for P-384,
    /// EdDSA for Ed25519.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| KeyError::NoPem)?;
        let unsupported =
            || KeyError::Unsupported("not an RSA, P-256, P-384 or Ed25519 key".into());
        match der {
            PrivateKeyDer::Pkcs8(p8) => {
                let b = p8.secret_pkcs8_der();
                if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, b) {
                    return Ok(Self::from_pair(Alg::ES256, Pair::Ec(k)));
                }
                if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, b) {
                    return Ok(Self::from_pair(Alg::ES384, Pair::Ec(k)));
                }
                if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(b) {
                    return Ok(Self::from_pair(Alg::EdDSA, Pair::Ed(k)));
                }
                let k = RsaKeyPair::from_pkcs8(b).map_err(|_| unsupported())?;
                Self::rsa(k)
            }
            PrivateKeyDer::Sec1(sec1) => {
                let b = sec1.secret_sec1_der();
                if let Ok(k) =
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, b)
                {
                    return Ok(Self::from_pair(Alg::ES256, Pair::Ec(k)));
                }
                let k = EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, b)
                    .map_err(|_| unsupported())?;
                Ok(Self::from_pair(Alg::ES384, Pair::Ec(k)))
            }
            PrivateKeyDer::Pkcs1(p1) => {
                let k = RsaKeyPair::from_der(p1.secret_pkcs1_der()).map_err(|_| unsupported())?;
                Self::rsa(k)
            }
            _ => Err(unsupported()),
        }
    }

    fn rsa(k: RsaKeyPair) -> Result<Self, KeyError> {
        if k.public_modulus_len() < 256 {
            return Err(KeyError::Unsupported(
                "RSA keys must be at least 2048 bits".into(),
            ));
        }
        Ok(Self::from_pair(Alg::RS256, Pair::Rsa(k)))
    }

    fn from_pair(alg: Alg, pair: Pair) -> Self {
        let mut public = Map::new();
        // Members in lexicographic order: RFC 7638 hashes exactly this JSON.
        match &pair {
            Pair::Rsa(k) => {
                let pk = k.public_key();
                public.insert(
                    "e".into(),
                    b64_encode(pk.exponent().big_endian_without_leading_zero()).into(),
                );
                public.insert("kty".into(), "RSA".into());
                public.insert(
                    "n".into(),
                    b64_encode(pk.modulus().big_endian_without_leading_zero()).into(),
                );
            }
            Pair::Ec(k) => {
                let point = k.public_key().as_ref();
                let len = (point.len().saturating_sub(1)) / 2;
                let crv = if len == 48 { "P-384" } else { "P-256" };
                public.insert("crv".into(), crv.into());
                public.insert("kty".into(), "EC".into());
                public.insert(
                    "x".into(),
                    b64_encode(point.get(1..1 + len).unwrap_or_default()).into(),
                );
                public.insert(
                    "y".into(),
                    b64_encode(point.get(1 + len..).unwrap_or_default()).into(),
                );
            }
            Pair::Ed(k) => {
                public.insert("crv".into(), "Ed25519".into());
                public.insert("kty".into(), "OKP".into());
                public.insert("x".into(), b64_encode(k.public_key().as_ref()).into());
            }
        }
        // serde_json's Map is ordered by key (no preserve_order feature), which is
        // exactly the canonical form RFC 7638 asks for.
        let canonical = serde_json::to_vec(&public).unwrap_or_default();
        let kid =
            b64_encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical).as_ref());
        Self {
            alg,
            pair,
            kid,
            public,
        }
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The RFC 7638 SHA-256 thumbprint, used as the default `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK with `kid` (this key's thumbprint unless given), `alg` and `use: sig`.
    pub fn public_jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = self.public.clone();
        jwk.insert("kid".into(), kid.unwrap_or(&self.kid).into());
        jwk.insert("alg".into(), self.alg.as_str().into());
        jwk.insert("use".into(), "sig".into());
        Value::Object(jwk)
    }

    /// The public key as DER SubjectPublicKeyInfo (wrap with [`pem_encode`] and
    /// label `PUBLIC KEY` for PEM).
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        use aws_lc_rs::encoding::PublicKeyX509Der;
        let der: PublicKeyX509Der<'static> = match &self.pair {
            Pair::Rsa(k) => k.public_key().as_der(),
            Pair::Ec(k) => k.public_key().as_der(),
            Pair::Ed(k) => k.public_key().as_der(),
        }
        .map_err(|_| KeyError::SignFailed)?;
        Ok(der.as_ref().to_vec())
    }

    /// The private key as an unencrypted PKCS#8 PEM document.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der: Vec<u8> = match &self.pair {
            Pair::Rsa(k) => {
                let d: Pkcs8V1Der<'static> = k.as_der().map_err(|_| KeyError::SignFailed)?;
                d.as_ref().to_vec()
            }
            Pair::Ec(k) => k
                .to_pkcs8v1()
                .map_err(|_| KeyError::SignFailed)?
                .as_ref()
                .to_vec(),
            Pair::Ed(k) => k
                .to_pkcs8v1()
                .map_err(|_| KeyError::SignFailed)?
                .as_ref()
                .to_vec(),
        };
        Ok(pem_encode("PRIVATE KEY", &der))
    }

    /// Signs `message` with this key's algorithm, in JWS form (ECDSA as r‖s).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.sign_with(self.alg, message)
    }

    /// Signs with `alg`, which must suit the key (an RSA key may sign any RS*/PS*).
    pub fn sign_with(&self, alg: Alg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match (&self.pair, alg) {
            (Pair::Ec(k), Alg::ES256 | Alg::ES384) if alg == self.alg => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::SignFailed),
            (Pair::Ed(k), Alg::EdDSA) => Ok(k.sign(message).as_ref().to_vec()),
            (Pair::Rsa(k), _) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_SHA512,
                    _ => return Err(KeyError::SignFailed),
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(enc, &SystemRandom::new(), message, &mut sig)
                    .map_err(|_| KeyError::SignFailed)?;
                Ok(sig)
            }
            _ => Err(KeyError::SignFailed),
        }
    }
}

/// A freshly generated key as the CLI writes it.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// Unencrypted PKCS#8 PEM: keep it secret.
    pub pkcs8_pem: String,
    /// The public JWK (`kid` = thumbprint, `alg`, `use: sig`).
    pub public_jwk: Value,
    pub kid: String,
}

impl GeneratedKey {
    /// `{"keys":[public_jwk]}`, ready to serve or to use as a `jwks_file`.
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [self.public_jwk] }).to_string()
    }
}

/// Generates a key for `alg` (`RS256`, `ES256`, `ES384` or `EdDSA`).
pub fn generate(alg: Alg) -> Result<GeneratedKey, KeyError> {
    let key = SigningKey::generate(alg)?;
    Ok(GeneratedKey {
        pkcs8_pem: key.to_pkcs8_pem()?,
        public_jwk: key.public_jwk(None),
        kid: key.kid().to_string(),
    })
}

/// Signs arbitrary `claims` (a JSON object) with the PEM private key: RS256 for an
/// RSA key, ES256 for P-256, ES384 for P-384, EdDSA for Ed25519. The header is
/// `{"alg","typ":"JWT","kid"}` with `kid` defaulting to the key's thumbprint.
/// For development and tests (`portcullis token mint`); it adds no claims.
pub fn mint(pem: &str, kid: Option<&str>, claims: &Value) -> Result<String, KeyError> {
    mint_with(&SigningKey::from_pem(pem)?, kid, claims)
}

/// [`mint`] with an already loaded key.
pub fn mint_with(key: &SigningKey, kid: Option<&str>, claims: &Value) -> Result<String, KeyError> {
    if !claims.is_object() {
        return Err(KeyError::ClaimsNotObject);
    }
    let header = json!({ "alg": key.alg.as_str(), "typ": "JWT", "kid": kid.unwrap_or(&key.kid) });
    let mut out = b64_encode(header.to_string().as_bytes());
    out.push('.');
    out.push_str(&b64_encode(claims.to_string().as_bytes()));
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64_encode(&sig));
    Ok(out)
}

/// PEM armour with 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::jwk::parse_jwk;

    #[test]
    fn generated_keys_round_trip_through_pem_and_verify() {
        for alg in [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256] {
            let g = generate(alg).unwrap();
            assert!(g.pkcs8_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let key = SigningKey::from_pem(&g.pkcs8_pem).unwrap();
            assert_eq!(key.alg(), alg);
            assert_eq!(
                key.kid(),
                g.kid,
                "thumbprint is stable across PEM round trip"
            );
            let token = mint(&g.pkcs8_pem, None, &json!({"sub": "a"})).unwrap();
            let c = crate::jose::compact::parse(&token).unwrap();
            assert_eq!(c.header.alg, alg.as_str());
            assert_eq!(c.header.kid.as_deref(), Some(g.kid.as_str()));
            let vk = parse_jwk(g.public_jwk.as_object().unwrap()).unwrap();
            assert!(vk.verify(alg, c.signing_input, &c.signature));
        }
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1 example key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#);
        let mut m = Map::new();
        m.insert("n".into(), n.into());
        m.insert("kty".into(), "RSA".into());
        m.insert("e".into(), "AQAB".into());
        assert_eq!(serde_json::to_string(&m).unwrap(), canonical);
        let t = b64_encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref(),
        );
        assert_eq!(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn openssl_style_sec1_pem_with_parameters_block_loads() {
        use aws_lc_rs::encoding::EcPrivateKeyRfc5915Der;
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der: EcPrivateKeyRfc5915Der<'static> = pair.private_key().as_der().unwrap();
        // `openssl ecparam -genkey` writes the curve OID block first.
        let pem = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            pem_encode("EC PRIVATE KEY", der.as_ref())
        );
        let key = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.alg(), Alg::ES256);
        let token = mint(&pem, Some("k"), &json!({"sub": "x"})).unwrap();
        let c = crate::jose::compact::parse(&token).unwrap();
        let vk = parse_jwk(key.public_jwk(None).as_object().unwrap()).unwrap();
        assert!(vk.verify(Alg::ES256, c.signing_input, &c.signature));
    }

    #[test]
    fn garbage_pem_is_an_error_not_a_panic() {
        assert_eq!(SigningKey::from_pem("hello").unwrap_err(), KeyError::NoPem);
        let bogus = pem_encode("PRIVATE KEY", b"not a key");
        assert!(matches!(
            SigningKey::from_pem(&bogus),
            Err(KeyError::Unsupported(_))
        ));
        assert_eq!(
            mint(&generate(Alg::ES256).unwrap().pkcs8_pem, None, &json!([1])).unwrap_err(),
            KeyError::ClaimsNotObject
        );
    }
}
