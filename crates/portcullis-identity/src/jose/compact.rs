//! The compact JWS serialization: `BASE64URL(header).BASE64URL(payload).BASE64URL(sig)`.
//!
//! [`parse`] does every check that needs no key: length first (before any decode,
//! so an oversized token costs a comparison), shape, strict base64url, strict
//! JSON, and the header rules. It does not interpret claims beyond making sure
//! the payload is a JSON object; that happens only after the signature verified.

use super::json::parse_object;
use super::{b64_decode, Alg};
use crate::error::AuthError;
use crate::util::quote;
use portcullis_core::Reason;
use serde_json::{Map, Value};

/// Longest token we look at. Real access tokens are a few KiB; anything much
/// bigger is an attack on the decoder or the logs.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The header members we act on. Every other member is ignored — in particular
/// `jwk`, `jku`, `x5u`, `x5c` and `x5t` are never used to find or fetch a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The `alg` as written (checked against the allow-list by the caller).
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

impl Header {
    /// The algorithm, refusing `none` (any casing) and anything we do not implement.
    pub fn algorithm(&self) -> Result<Alg, AuthError> {
        if self.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::new(
                Reason::AlgorithmNotAllowed,
                "unsigned tokens (alg none) are never accepted",
            ));
        }
        Alg::parse(&self.alg).ok_or_else(|| {
            AuthError::new(
                Reason::AlgorithmNotAllowed,
                format!("algorithm {} is not supported", quote(&self.alg)),
            )
        })
    }
}

/// A decoded, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Compact<'a> {
    pub header: Header,
    /// The claims, parsed strictly. Untrusted until the signature verified.
    pub claims: Map<String, Value>,
    /// `header.payload` exactly as received: the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
}

/// True when `token` has the shape of a compact JWS/JWT (three non-empty-header
/// parts), so that anything else can be treated as an opaque token.
pub fn looks_like_jwt(token: &str) -> bool {
    // Runs on every request. Counting into a `u8` per 255-byte chunk lets the
    // compiler compare 16 bytes per SIMD instruction; a `usize` count per byte
    // came out at ~5 instructions per byte.
    let dots: usize = token
        .as_bytes()
        .chunks(255)
        .map(|chunk| usize::from(chunk.iter().fold(0u8, |n, &b| n + u8::from(b == b'.'))))
        .sum();
    dots == 2
}

/// Splits and decodes a compact JWS. See the module doc for what is checked.
pub fn parse(token: &str) -> Result<Compact<'_>, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::invalid(format!(
            "token is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::invalid(
            "token is not a compact JWS (three dot-separated parts)",
        ));
    };
    let header_bytes =
        b64_decode(h64).ok_or_else(|| AuthError::invalid("token header is not base64url"))?;
    let header = parse_header(&header_bytes)?;
    let payload =
        b64_decode(p64).ok_or_else(|| AuthError::invalid("token payload is not base64url"))?;
    let claims =
        parse_object(&payload).map_err(|e| AuthError::invalid(format!("token payload is {e}")))?;
    let signature =
        b64_decode(s64).ok_or_else(|| AuthError::invalid("token signature is not base64url"))?;
    // An empty signature is not refused here: it can never verify, and refusing it
    // before the algorithm allow-list would let `alg: none` tokens get a different
    // answer depending on what the attacker left in the signature part.
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    Ok(Compact {
        header,
        claims,
        signing_input,
        signature,
    })
}

/// Decodes header and claims without verifying or judging anything, for
/// `portcullis token inspect`. Still bounded (4× [`MAX_TOKEN_LEN`]) and still
/// strict about base64url and JSON, so what it shows is what a verifier would see.
pub fn decode_unverified(token: &str) -> Result<(Value, Value), String> {
    if token.len() > 4 * MAX_TOKEN_LEN {
        return Err(format!("token is longer than {} bytes", 4 * MAX_TOKEN_LEN));
    }
    let mut parts = token.trim().split('.');
    let (Some(h64), Some(p64), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS/JWT (three dot-separated parts)".to_string());
    };
    let decode = |what: &str, part: &str| -> Result<Value, String> {
        let bytes = b64_decode(part).ok_or_else(|| format!("{what} is not base64url"))?;
        parse_object(&bytes)
            .map(Value::Object)
            .map_err(|e| format!("{what} is {e}"))
    };
    Ok((decode("header", h64)?, decode("payload", p64)?))
}

fn parse_header(bytes: &[u8]) -> Result<Header, AuthError> {
    let map =
        parse_object(bytes).map_err(|e| AuthError::invalid(format!("token header is {e}")))?;
    let string = |name: &str| -> Result<Option<String>, AuthError> {
        match map.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AuthError::invalid(format!(
                "token header `{name}` is not a string"
            ))),
        }
    };
    // RFC 7515 §4.1.11: a recipient must refuse a `crit` it does not understand,
    // and we understand no extension; an empty `crit` is itself invalid.
    if map.contains_key("crit") {
        return Err(AuthError::invalid(
            "token header has `crit` extensions, which are not supported",
        ));
    }
    // `enc`/`zip` mean JWE; `b64` (RFC 7797) changes what the signature covers.
    for member in ["enc", "zip", "b64"] {
        if map.contains_key(member) {
            return Err(AuthError::invalid(format!(
                "token header member `{member}` is not supported"
            )));
        }
    }
    if let Some(cty) = string("cty")? {
        if cty.eq_ignore_ascii_case("JWT") {
            return Err(AuthError::invalid(
                "nested tokens (cty JWT) are not accepted",
            ));
        }
    }
    let alg = string("alg")?.ok_or_else(|| AuthError::invalid("token header has no `alg`"))?;
    Ok(Header {
        alg,
        kid: string("kid")?,
        typ: string("typ")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::b64_encode;

    #[test]
    fn looks_like_jwt_counts_exactly_two_dots_at_any_length() {
        let naive = |t: &str| t.bytes().filter(|&b| b == b'.').count() == 2;
        let mut cases = vec![
            String::new(),
            "a.b.c".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            "..".into(),
        ];
        for n in [254, 255, 256, 257, 510, 511, 512] {
            cases.push(".".repeat(n));
            cases.push(format!("{}.{}.", "a".repeat(n), "b".repeat(n)));
            cases.push(format!("{}.{}", "a".repeat(n), "b".repeat(n)));
            cases.push(format!("{}.", ".".repeat(n)));
        }
        // 258 dots: the count wraps a `u8` only if chunks were longer than 255.
        cases.push(".".repeat(258));
        for t in &cases {
            assert_eq!(looks_like_jwt(t), naive(t), "{} bytes", t.len());
        }
        assert!(looks_like_jwt(&format!(
            "{}.{}.c",
            "a".repeat(255),
            "b".repeat(300)
        )));
    }

    fn tok(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64_encode(header.as_bytes()),
            b64_encode(payload.as_bytes()),
            b64_encode(b"sig")
        )
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = tok(
            r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"iss":"x"}"#,
        );
        let c = parse(&t).unwrap();
        assert_eq!(c.header.alg, "RS256");
        assert_eq!(c.header.kid.as_deref(), Some("k1"));
        assert_eq!(c.claims["iss"], "x");
        assert_eq!(c.signature, b"sig");
        assert!(t.starts_with(std::str::from_utf8(c.signing_input).unwrap()));
    }

    #[test]
    fn none_in_every_casing_is_not_an_algorithm() {
        for alg in ["none", "None", "NONE", "nOnE", "noNe"] {
            let t = tok(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            let c = parse(&t).unwrap();
            assert_eq!(
                c.header.algorithm().unwrap_err().reason,
                Reason::AlgorithmNotAllowed
            );
        }
    }

    #[test]
    fn crit_header_is_refused() {
        let t = tok(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "{}");
        assert_eq!(parse(&t).unwrap_err().reason, Reason::InvalidToken);
        let t = tok(r#"{"alg":"RS256","crit":[]}"#, "{}");
        assert_eq!(parse(&t).unwrap_err().reason, Reason::InvalidToken);
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "a.b.c.d.e",
            "!!!.e30.c2ln",
            &tok(r#"{"alg":5}"#, "{}"),
            &tok(r#"{"kid":"x"}"#, "{}"),
            &tok(r#"{"alg":"RS256","kid":7}"#, "{}"),
            &tok(r#"{"alg":"RS256"}"#, "[]"),
            &tok(r#"{"alg":"RS256"}"#, r#"{"a":1,"a":2}"#),
            &tok(r#"{"alg":"RS256","enc":"A128GCM"}"#, "{}"),
            &tok(r#"{"alg":"RS256","cty":"JWT"}"#, "{}"),
        ] {
            assert_eq!(parse(t).unwrap_err().reason, Reason::InvalidToken, "{t}");
        }
        let padded = format!("{}=.e30.c2ln", b64_encode(br#"{"alg":"RS256"}"#));
        assert!(parse(&padded).is_err());
        // An empty signature parses (the verifier refuses it, after the alg check).
        let no_sig = format!("{}.e30.", b64_encode(br#"{"alg":"RS256"}"#));
        assert!(parse(&no_sig).is_ok_and(|c| c.signature.is_empty()));
    }

    #[test]
    fn inspection_decodes_without_judging() {
        let t = tok(r#"{"alg":"none","crit":["x"]}"#, r#"{"exp":"soon"}"#);
        let (h, p) = decode_unverified(&t).unwrap();
        assert_eq!(h["alg"], "none");
        assert_eq!(p["exp"], "soon");
        assert!(decode_unverified("a.b").is_err());
    }

    #[test]
    fn oversized_token_is_refused_before_decoding() {
        // Not even valid base64: if it were decoded, the error would differ.
        let t = format!("{}.{}.{}", "!".repeat(50_000), "!".repeat(50_000), "x");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidToken);
        assert!(e.description.contains("longer than"));
    }
}
