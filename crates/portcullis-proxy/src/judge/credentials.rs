//! Finding the caller's bearer token (exactly one).

use crate::respond::Refusal;
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
    let text = value.to_str().map_err(|_| {
        Refusal::with_message(Reason::InvalidToken, "malformed Authorization header")
    })?;
    let Some((scheme, token)) = text.split_once(' ') else {
        return Ok(Credential::None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Basic and other schemes are not ours to judge; they are removed before
        // forwarding unless the route forwards the token.
        return Ok(Credential::None);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(Refusal::with_message(
            Reason::InvalidToken,
            "malformed bearer token",
        ));
    }
    Ok(Credential::Bearer(token))
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
}
