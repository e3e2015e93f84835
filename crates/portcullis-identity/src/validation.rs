//! The registered-claim and `typ` checks applied after a signature verified.
//!
//! * `iss` (string, exact), `exp` (NumericDate) and `aud` (string or array of
//!   strings) are required; `nbf`, `iat`, `sub`, `azp`, `jti` are optional but must
//!   have the right type when present. A wrong type is `invalid_token`, never
//!   skipped: `"exp": "123"` must not mean "no expiry".
//! * Times allow `clock_skew` either way; `iat` in the future beyond the skew is
//!   refused; with `max_token_age`, `iat` is required and bounds the token's life.
//! * ID tokens are not access tokens. With `token_types` configured, `typ` must be
//!   one of them. Without, a `typ` naming an ID or logout token is refused, and so
//!   is a token that looks like an OIDC ID token (a `nonce` claim but no `scope`,
//!   `scp` or `client_id`), a Cognito ID token (`token_use: id`), or a
//!   back-channel logout token (an `events` claim).

use crate::error::AuthError;
use crate::util::quote;
use portcullis_core::Reason;
use serde_json::{Map, Value};

/// What a provider requires of a token's claims.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub allow_any_audience: bool,
    pub skew: u64,
    pub max_age: Option<u64>,
    /// Normalized (lowercase, no `application/`).
    pub token_types: Vec<String>,
}

/// The outcome of a successful check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    pub exp: u64,
    /// Last Unix second at which this token still passes (for caches).
    pub valid_until: u64,
}

/// `typ` normalized for comparison: case-insensitive, `application/` optional
/// (RFC 7515 §4.1.9).
pub(crate) fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// `typ` values that mark an ID token or another token that is not an access token.
const NOT_ACCESS_TOKEN_TYPES: [&str; 5] = [
    "id_token",
    "id+jwt",
    "id-token",
    "logout+jwt",
    "secevent+jwt",
];

pub(crate) fn check_typ(typ: Option<&str>, rules: &Rules) -> Result<(), AuthError> {
    let normalized = typ.map(normalize_typ);
    if rules.token_types.is_empty() {
        if let Some(t) = &normalized {
            if NOT_ACCESS_TOKEN_TYPES.contains(&t.as_str()) {
                return Err(AuthError::invalid(format!(
                    "token type {} is not an access token",
                    quote(typ.unwrap_or_default())
                )));
            }
        }
        return Ok(());
    }
    match normalized {
        Some(t) if rules.token_types.contains(&t) => Ok(()),
        Some(_) => Err(AuthError::invalid(format!(
            "token type {} is not accepted",
            quote(typ.unwrap_or_default())
        ))),
        None => Err(AuthError::invalid(
            "token has no `typ`; a token type is required",
        )),
    }
}

/// A NumericDate: a non-negative JSON number (fractions allowed, floored).
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0) {
                // Saturating cast: absurd dates become u64::MAX (effectively never).
                Ok(Some(f.floor() as u64))
            } else {
                Err(AuthError::invalid(format!(
                    "claim `{name}` is not a valid date"
                )))
            }
        }
        Some(_) => Err(AuthError::invalid(format!(
            "claim `{name}` is not a number"
        ))),
    }
}

pub(crate) fn optional_str<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::invalid(format!(
            "claim `{name}` is not a string"
        ))),
    }
}

/// Checks issuer, times, audience and token kind of verified claims at `now`.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &Rules,
    now: u64,
) -> Result<Checked, AuthError> {
    match optional_str(claims, "iss")? {
        Some(iss) if iss == rules.issuer => {}
        Some(iss) => {
            return Err(AuthError::new(
                Reason::WrongIssuer,
                format!("issuer {} is not accepted", quote(iss)),
            ))
        }
        None => return Err(AuthError::invalid("token has no `iss` claim")),
    }
    for name in ["sub", "azp", "jti", "client_id"] {
        optional_str(claims, name)?;
    }
    let exp = numeric_date(claims, "exp")?
        .ok_or_else(|| AuthError::invalid("token has no `exp` claim"))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let skew = rules.skew;
    if now > exp.saturating_add(skew) {
        return Err(AuthError::new(Reason::TokenExpired, "token has expired"));
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(skew) {
            return Err(AuthError::new(
                Reason::TokenNotYetValid,
                "token is not valid yet (nbf)",
            ));
        }
    }
    if let Some(iat) = iat {
        if iat > now.saturating_add(skew) {
            return Err(AuthError::new(
                Reason::TokenNotYetValid,
                "token was issued in the future (iat)",
            ));
        }
    }
    let mut valid_until = exp.saturating_add(skew);
    if let Some(max_age) = rules.max_age {
        let iat =
            iat.ok_or_else(|| AuthError::invalid("token has no `iat`, required by max_token_age"))?;
        let limit = iat.saturating_add(max_age).saturating_add(skew);
        if now > limit {
            return Err(AuthError::new(
                Reason::TokenExpired,
                "token is older than max_token_age",
            ));
        }
        valid_until = valid_until.min(limit);
    }
    check_audience(claims.get("aud"), rules)?;
    if rules.token_types.is_empty() {
        let has = |name: &str| claims.get(name).is_some_and(|v| !v.is_null());
        if has("nonce") && !has("scope") && !has("scp") && !has("client_id") {
            return Err(AuthError::invalid("an ID token is not an access token"));
        }
        // AWS Cognito marks its tokens: `token_use` is `id` or `access`.
        if claims.get("token_use").and_then(Value::as_str) == Some("id") {
            return Err(AuthError::invalid("an ID token is not an access token"));
        }
        if has("events") {
            return Err(AuthError::invalid(
                "a security event (logout) token is not an access token",
            ));
        }
    }
    Ok(Checked { exp, valid_until })
}

/// `aud` must be a string or a non-empty array of strings, and (unless
/// `allow_any_audience`) contain one of the configured audiences. With
/// `allow_any_audience`, `aud` may be absent; when present its type still counts.
pub(crate) fn check_audience(aud: Option<&Value>, rules: &Rules) -> Result<(), AuthError> {
    let auds: Vec<&str> = match aud {
        // Opting out of audience checks also accepts tokens without `aud` (AWS
        // Cognito access tokens have none; pin the client with a policy instead).
        None if rules.allow_any_audience => return Ok(()),
        None => return Err(AuthError::invalid("token has no `aud` claim")),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| AuthError::invalid("claim `aud` is not a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(AuthError::invalid(
                "claim `aud` is not a string or a list of strings",
            ))
        }
    };
    if rules.allow_any_audience || auds.iter().any(|a| rules.audiences.iter().any(|w| w == a)) {
        Ok(())
    } else {
        Err(AuthError::new(
            Reason::WrongAudience,
            "token is not meant for this audience",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules {
            issuer: "https://i".into(),
            audiences: vec!["api".into()],
            allow_any_audience: false,
            skew: 30,
            max_age: None,
            token_types: vec![],
        }
    }

    fn check(c: Value) -> Result<Checked, AuthError> {
        check_claims(c.as_object().unwrap(), &rules(), 1_000_000)
    }

    fn reason(c: Value) -> Reason {
        check(c).unwrap_err().reason
    }

    #[test]
    fn times() {
        let base = json!({"iss":"https://i","aud":"api"});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c["exp"] = json!(1_000_100);
            c[k] = v;
            c
        };
        assert!(check(with("iat", json!(1_000_000))).is_ok());
        assert_eq!(reason(with("exp", json!(999_000))), Reason::TokenExpired);
        assert!(check(with("exp", json!(999_990))).is_ok(), "within skew");
        assert!(check(with("exp", json!(999_990.5))).is_ok(), "fractional");
        assert_eq!(
            reason(with("nbf", json!(1_000_100))),
            Reason::TokenNotYetValid
        );
        assert!(check(with("nbf", json!(1_000_020))).is_ok(), "within skew");
        assert_eq!(
            reason(with("iat", json!(1_000_100))),
            Reason::TokenNotYetValid
        );
        assert_eq!(reason(with("exp", json!("1000100"))), Reason::InvalidToken);
        assert_eq!(reason(with("exp", json!(-5))), Reason::InvalidToken);
        assert_eq!(reason(with("nbf", json!(null))), Reason::InvalidToken);
        assert_eq!(reason(with("iat", json!(true))), Reason::InvalidToken);
        assert_eq!(
            reason(json!({"iss":"https://i","aud":"api"})),
            Reason::InvalidToken,
            "exp required"
        );
        assert_eq!(check(with("iat", json!(1))).unwrap().valid_until, 1_000_130);
    }

    #[test]
    fn max_token_age() {
        let mut r = rules();
        r.max_age = Some(60);
        let c = json!({"iss":"https://i","aud":"api","exp":2_000_000,"iat":999_000});
        assert_eq!(
            check_claims(c.as_object().unwrap(), &r, 1_000_000)
                .unwrap_err()
                .reason,
            Reason::TokenExpired
        );
        let c = json!({"iss":"https://i","aud":"api","exp":2_000_000,"iat":999_990});
        assert_eq!(
            check_claims(c.as_object().unwrap(), &r, 1_000_000)
                .unwrap()
                .valid_until,
            1_000_080
        );
        let c = json!({"iss":"https://i","aud":"api","exp":2_000_000});
        assert_eq!(
            check_claims(c.as_object().unwrap(), &r, 1_000_000)
                .unwrap_err()
                .reason,
            Reason::InvalidToken
        );
    }

    #[test]
    fn audience_and_issuer() {
        let c = |aud: Value| json!({"iss":"https://i","aud":aud,"exp":2_000_000});
        assert!(check(c(json!(["x", "api"]))).is_ok());
        assert_eq!(reason(c(json!("other"))), Reason::WrongAudience);
        assert_eq!(reason(c(json!(5))), Reason::InvalidToken);
        assert_eq!(reason(c(json!([5]))), Reason::InvalidToken);
        assert_eq!(reason(c(json!([]))), Reason::InvalidToken);
        assert_eq!(
            reason(json!({"iss":"https://i","exp":2_000_000})),
            Reason::InvalidToken
        );
        assert_eq!(
            reason(json!({"iss":"https://j","aud":"api","exp":2_000_000})),
            Reason::WrongIssuer
        );
        assert_eq!(
            reason(json!({"iss":"https://i","aud":"api","exp":2_000_000,"sub":1})),
            Reason::InvalidToken
        );
    }

    #[test]
    fn id_tokens_are_not_access_tokens() {
        let r = rules();
        for typ in ["id_token", "ID_TOKEN", "application/id+jwt", "logout+jwt"] {
            assert!(check_typ(Some(typ), &r).is_err(), "{typ}");
        }
        for typ in ["JWT", "at+jwt", "application/at+JWT"] {
            assert!(check_typ(Some(typ), &r).is_ok(), "{typ}");
        }
        assert!(check_typ(None, &r).is_ok());
        let id = json!({"iss":"https://i","aud":"api","exp":2_000_000,"nonce":"n"});
        assert_eq!(reason(id), Reason::InvalidToken);
        let at = json!({"iss":"https://i","aud":"api","exp":2_000_000,"nonce":"n","scope":"a"});
        assert!(check(at).is_ok());
        let logout = json!({"iss":"https://i","aud":"api","exp":2_000_000,"events":{"http://schemas.openid.net/event/backchannel-logout":{}}});
        assert_eq!(reason(logout), Reason::InvalidToken);
        let cognito_id =
            json!({"iss":"https://i","aud":"api","exp":2_000_000,"token_use":"id","scope":"x"});
        assert_eq!(reason(cognito_id), Reason::InvalidToken);
    }

    #[test]
    fn allow_any_audience_accepts_a_missing_aud_but_not_a_mistyped_one() {
        let mut r = rules();
        r.allow_any_audience = true;
        let c = json!({"iss":"https://i","exp":2_000_000,"token_use":"access"});
        assert!(check_claims(c.as_object().unwrap(), &r, 1_000_000).is_ok());
        let c = json!({"iss":"https://i","exp":2_000_000,"aud":5});
        assert_eq!(
            check_claims(c.as_object().unwrap(), &r, 1_000_000)
                .unwrap_err()
                .reason,
            Reason::InvalidToken
        );
    }

    #[test]
    fn configured_token_types() {
        let mut r = rules();
        r.token_types = vec![normalize_typ("application/at+jwt")];
        assert!(check_typ(Some("at+JWT"), &r).is_ok());
        assert!(check_typ(Some("application/at+jwt"), &r).is_ok());
        assert!(check_typ(Some("JWT"), &r).is_err());
        assert!(check_typ(None, &r).is_err());
    }
}
