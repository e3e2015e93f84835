//! Finding the caller's bearer token (exactly one).

use crate::respond::Refusal;
use crate::scan::{is_tchar, position};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use portcullis_core::Reason;

/// The credential a request carries, borrowed from its headers (a token is ~1 KB;
/// no copy is needed to verify it).
pub enum Credential<'a> {
    None,
    Bearer(&'a str),
    /// Claims taken as verified: only `portcullis explain --claims` has these
    /// (see [`super::Offline`]); no request can carry them.
    Claims(&'a serde_json::Value),
}

/// Reads the bearer token. Two `Authorization` headers are refused (400): guessing
/// which one counts is how confused-deputy bugs start.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credential::None);
    };
    if values.next().is_some() {
        return Err(Refusal::with_message(
            Reason::BadRequest,
            "more than one Authorization header",
        ));
    }
    if let Some(token) = plain_bearer(value.as_bytes()) {
        return Ok(Credential::Bearer(token));
    }
    let text = value.to_str().map_err(|_| {
        Refusal::with_message(Reason::InvalidToken, "malformed Authorization header")
    })?;
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        // `Bearer` followed by anything but a space (a tab, `:`, `,`, nothing)
        // is a bearer token written wrong, not another scheme: judged as none,
        // it would leave a caller anonymous whose token no one checked.
        _ if looks_bearer(text) => "",
        // Basic and other schemes are not ours to judge; they are removed before
        // forwarding unless the route forwards the token.
        _ => return Ok(Credential::None),
    };
    if token.is_empty() || token.contains(' ') {
        return Err(Refusal::with_message(
            Reason::InvalidToken,
            "malformed bearer token",
        ));
    }
    Ok(Credential::Bearer(token))
}

/// Whether `text` begins with the word `bearer` (any case) and goes on with
/// something that cannot continue a scheme name (RFC 9110 §11.1: a token),
/// or ends there.
fn looks_bearer(text: &str) -> bool {
    let Some((word, rest)) = text.split_at_checked(6) else {
        return false;
    };
    word.eq_ignore_ascii_case("bearer") && rest.bytes().next().is_none_or(|b| !is_tchar(b))
}

/// The usual value, `Bearer <token>` with nothing unusual in the token, read in
/// one pass over it instead of three (`to_str`, `trim`, a search for a space):
/// the token is about 1 KB. Anything else (`None`) is read by the full parse
/// above, which gives every other value its answer; for this one both agree.
fn plain_bearer(value: &[u8]) -> Option<&str> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") || token.is_empty() {
        return None;
    }
    // Visible ASCII but space: no whitespace to trim, none inside, and nothing
    // `to_str` would refuse.
    if position(token, |b| !(0x21..0x7f).contains(&b)).is_some() {
        return None;
    }
    std::str::from_utf8(token).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn one_bearer_only() {
        let mut h = HeaderMap::new();
        assert!(matches!(credential(&h), Ok(Credential::None)));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert!(matches!(credential(&h), Ok(Credential::Bearer(t)) if t == "abc.def.ghi"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        let err = credential(&h).err().unwrap();
        assert_eq!(err.reason, Reason::BadRequest);
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  "));
        assert!(credential(&h).is_err());
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(matches!(credential(&h), Ok(Credential::None)));
    }

    #[test]
    fn a_bearer_token_written_wrong_is_refused_not_ignored() {
        let read = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(v));
            credential(&h).map(|c| matches!(c, Credential::None))
        };
        for wrong in [
            "Bearer\tabc",
            "bearer:abc",
            "BEARER,abc",
            "Bearer",
            "bearer/abc",
        ] {
            let err = read(wrong).err().unwrap();
            assert_eq!(err.reason, Reason::InvalidToken, "{wrong}");
        }
        // Other schemes, even ones that begin with the same letters, are not ours.
        for other in [
            "Basic abc",
            "Bearerish abc",
            "Bearer-X abc",
            "Token abc",
            "abc.def.ghi",
        ] {
            assert!(matches!(read(other), Ok(true)), "{other}");
        }
    }

    /// What `credential` answers, written plainly (the one-pass read of the
    /// usual value must agree with it).
    fn full_parse(value: &HeaderValue) -> Result<Option<String>, (Reason, String)> {
        let text = value.to_str().map_err(|_| {
            (
                Reason::InvalidToken,
                "malformed Authorization header".to_string(),
            )
        })?;
        let lower = text.to_ascii_lowercase();
        let bearer_word = lower.strip_prefix("bearer").is_some_and(|rest| {
            !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        });
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
            _ if bearer_word => "",
            _ => return Ok(None),
        };
        let token = token.trim();
        if token.is_empty() || token.contains(' ') {
            return Err((Reason::InvalidToken, "malformed bearer token".to_string()));
        }
        Ok(Some(token.to_string()))
    }

    /// `credential`'s answer for one `Authorization` value, in `full_parse`'s terms.
    fn answer(value: &HeaderValue) -> Result<Option<String>, (Reason, String)> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.clone());
        match credential(&h) {
            Ok(Credential::Bearer(t)) => Ok(Some(t.to_string())),
            Ok(_) => Ok(None),
            Err(r) => Err((r.reason, r.message)),
        }
    }

    #[test]
    fn the_one_pass_read_answers_as_the_full_parse() {
        // Every byte at every position of the scheme, the separator and a token
        // long enough for several 16-byte blocks and a tail.
        let base = format!("Bearer {}", "aB3-._~+/=".repeat(4));
        for at in 0..base.len() {
            for b in 0u8..=255 {
                let mut v = base.clone().into_bytes();
                v[at] = b;
                let Ok(value) = HeaderValue::from_bytes(&v) else {
                    continue;
                };
                assert_eq!(answer(&value), full_parse(&value), "{b:#x} at {at}");
            }
        }
        for v in [
            "bearer x",
            "BEARER  x",
            "Bearer x ",
            "Bearer\tx",
            "Bearer",
            "Bearer ",
        ] {
            let value = HeaderValue::from_str(v).unwrap();
            assert_eq!(answer(&value), full_parse(&value), "{v:?}");
        }
    }
}
