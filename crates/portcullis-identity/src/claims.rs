//! Claims → [`Identity`], per a provider's `claims` mapping.
//!
//! A mapped claim of the wrong JSON type makes the token invalid — never silently
//! empty — because a policy reading "no groups" from a token whose `groups` was
//! a number would decide on something the IdP did not say. JSON `null` counts as
//! absent for the optional attributes (some IdPs emit `"email": null`).
//!
//! Kind: a token is a `Service` when it looks like a machine's — Auth0's
//! `gty: client-credentials`, Entra ID's `idtyp: app`, a Kubernetes
//! `system:serviceaccount:` subject, Keycloak's `service-account-` username
//! without an email, or no email and `sub` equal to the client id (Okta and most
//! client-credentials grants) — and a `User` otherwise.

use crate::claim_path::{lookup, parse};
use crate::error::AuthError;
use portcullis_config::ClaimsMapping;
use portcullis_core::{Identity, IdentityKind};
use serde_json::Value;
use std::sync::Arc;

type Path = Vec<String>;

/// A provider's claims mapping with its paths parsed once.
#[derive(Debug, Clone)]
pub(crate) struct ClaimMapping {
    subject: Path,
    email: Path,
    name: Path,
    groups: Path,
    roles: Option<Path>,
    scopes: Path,
    client_id: Vec<Path>,
}

/// Facts about the token that are not claims.
pub(crate) struct Source<'a> {
    pub provider: &'a str,
    pub issuer: &'a str,
    pub expires_at: Option<u64>,
    /// Introspection responses may lack `sub` for client tokens (RFC 7662 makes it
    /// optional); then the client id stands in. JWT access tokens must have one.
    pub subject_may_be_client: bool,
}

impl ClaimMapping {
    pub(crate) fn compile(m: &ClaimsMapping) -> Result<Self, String> {
        let client_id = match &m.client_id {
            Some(p) => vec![parse(p)?],
            None => vec![vec!["client_id".to_string()], vec!["azp".to_string()]],
        };
        Ok(Self {
            subject: parse(&m.subject)?,
            email: parse(&m.email)?,
            name: parse(&m.name)?,
            groups: parse(&m.groups)?,
            roles: m.roles.as_deref().map(parse).transpose()?,
            scopes: parse(&m.scopes)?,
            client_id,
        })
    }

    /// Builds the identity from verified `claims`.
    pub(crate) fn identity(
        &self,
        claims: Arc<Value>,
        src: Source<'_>,
    ) -> Result<Identity, AuthError> {
        let c = &*claims;
        let client_id = self
            .client_id
            .iter()
            .map(|p| optional_string(c, p))
            .find_map(|r| r.transpose())
            .transpose()?;
        let mut email = optional_string(c, &self.email)?;
        if email.is_some() && email_unverified(c)? {
            // An address the IdP has not verified must not satisfy `emails` or
            // `email_domains` rules.
            email = None;
        }
        let subject = match optional_string(c, &self.subject)? {
            Some(s) if !s.is_empty() => s,
            _ => match (&client_id, src.subject_may_be_client) {
                (Some(id), true) => id.clone(),
                _ => {
                    return Err(AuthError::invalid(format!(
                        "token has no subject claim `{}`",
                        self.subject.join(".")
                    )))
                }
            },
        };
        let name = optional_string(c, &self.name)?;
        let groups = string_list(c, &self.groups)?;
        let roles = match &self.roles {
            Some(p) => string_list(c, p)?,
            None => Vec::new(),
        };
        let scopes = scope_list(c, &self.scopes)?;
        let kind = if is_service(c, &subject, email.as_deref(), client_id.as_deref()) {
            IdentityKind::Service
        } else {
            IdentityKind::User
        };
        Ok(Identity {
            kind,
            subject,
            provider: Some(src.provider.to_string()),
            issuer: Some(src.issuer.to_string()),
            email,
            name,
            groups,
            roles,
            scopes,
            client_id,
            workload: None,
            claims,
            expires_at: src.expires_at,
        })
    }
}

/// Maps already-verified `claims` to an [`Identity`] exactly as a provider with
/// `mapping` does for a verified token (same paths, same type rules, same
/// unverified-email rule, same user/service heuristics); see
/// [`crate::Authenticator::identity_from_claims`].
pub(crate) fn identity_from_claims(
    mapping: &ClaimMapping,
    claims: Value,
    provider: &str,
    issuer: &str,
) -> Result<Identity, AuthError> {
    let expires_at = claims.get("exp").and_then(Value::as_u64);
    mapping.identity(
        Arc::new(claims),
        Source {
            provider,
            issuer,
            expires_at,
            subject_may_be_client: false,
        },
    )
}

fn type_error(path: &[String], want: &str) -> AuthError {
    AuthError::invalid(format!("claim `{}` is not {want}", path.join(".")))
}

fn optional_string(c: &Value, path: &[String]) -> Result<Option<String>, AuthError> {
    match lookup(c, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(type_error(path, "a string")),
    }
}

/// A list claim: an array of strings, or one string meaning a list of one (ADFS
/// and some SAML bridges emit a bare string when there is a single group).
fn string_list(c: &Value, path: &[String]) -> Result<Vec<String>, AuthError> {
    match lookup(c, path) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error(path, "a list of strings"))
            })
            .collect(),
        Some(_) => Err(type_error(path, "a string or a list of strings")),
    }
}

/// Scopes: a space-separated string (RFC 8693 `scope`) or an array (Okta's `scp`).
///
/// Only ASCII spaces separate scopes (RFC 6749 §3.3), and a value that is not
/// a scope token (a control character, `"`, `\\`, a non-ASCII space or any
/// space at all in an array item) is left out: the assertion writes the list
/// space-separated, so `read\u{a0}orders:write`, split by a reader that takes
/// any white space, would become a scope the provider never granted.
fn scope_list(c: &Value, path: &[String]) -> Result<Vec<String>, AuthError> {
    let scopes: Vec<String> = match lookup(c, path) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(' ').map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error(path, "a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(type_error(path, "a string or a list of strings")),
    };
    Ok(scopes.into_iter().filter(|s| is_scope_token(s)).collect())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// True when `email_verified` says false (a boolean, or Cognito's `"false"`).
fn email_unverified(c: &Value) -> Result<bool, AuthError> {
    match c.get("email_verified") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(!b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "false"),
        Some(_) => Err(AuthError::invalid(
            "claim `email_verified` is not a boolean",
        )),
    }
}

fn is_service(c: &Value, subject: &str, email: Option<&str>, client_id: Option<&str>) -> bool {
    let claim = |name: &str| c.get(name).and_then(Value::as_str);
    claim("gty") == Some("client-credentials")
        || claim("idtyp") == Some("app")
        || subject.starts_with("system:serviceaccount:")
        || (email.is_none()
            && (client_id == Some(subject)
                || claim("preferred_username").is_some_and(|u| u.starts_with("service-account-"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(m: ClaimsMapping, claims: Value) -> Result<Identity, AuthError> {
        ClaimMapping::compile(&m).unwrap().identity(
            Arc::new(claims),
            Source {
                provider: "p",
                issuer: "https://i",
                expires_at: Some(1),
                subject_may_be_client: false,
            },
        )
    }

    fn mapping(f: impl FnOnce(&mut ClaimsMapping)) -> ClaimsMapping {
        let mut m = ClaimsMapping::default();
        f(&mut m);
        m
    }

    #[test]
    fn defaults_map_a_plain_user_token() {
        let id = map(
            ClaimsMapping::default(),
            json!({"sub":"u1","email":"a@b.c","preferred_username":"alice","groups":["g1","g2"],"scope":"read  write","azp":"web"}),
        )
        .unwrap();
        assert_eq!(id.kind, IdentityKind::User);
        assert_eq!(id.subject, "u1");
        assert_eq!(id.email.as_deref(), Some("a@b.c"));
        assert_eq!(id.name.as_deref(), Some("alice"));
        assert_eq!(id.groups, ["g1", "g2"]);
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.client_id.as_deref(), Some("web"));
        assert_eq!(id.provider.as_deref(), Some("p"));
        assert_eq!(id.expires_at, Some(1));
    }

    #[test]
    fn only_ascii_spaces_separate_scopes_and_a_non_scope_is_left_out() {
        for scope in [
            "read\u{a0}orders:write",
            "read\u{3000}orders:write",
            "read\u{2028}orders:write",
            "read\u{85}orders:write",
        ] {
            let id = map(
                ClaimsMapping::default(),
                json!({"sub": "a", "scope": scope}),
            )
            .unwrap();
            assert!(id.scopes.is_empty(), "{scope:?}: {:?}", id.scopes);
        }
        let id = map(
            ClaimsMapping::default(),
            json!({"sub": "a", "scope": " read  orders:write\t"}),
        )
        .unwrap();
        assert_eq!(id.scopes, ["read"]);
        let okta = map(
            mapping(|m| m.scopes = "scp".into()),
            json!({"sub": "a", "scp": ["orders:read", "read orders:write", "a\"b", ""]}),
        )
        .unwrap();
        assert_eq!(okta.scopes, ["orders:read"]);
    }

    #[test]
    fn keycloak() {
        let m = mapping(|m| {
            m.roles = Some("resource_access.orders-api.roles".into());
            m.groups = "realm_access.roles".into();
        });
        let id = map(m, json!({"sub":"u","realm_access":{"roles":["admin"]},"resource_access":{"orders-api":{"roles":["reader"]}},"azp":"web","scope":"openid"})).unwrap();
        assert_eq!(id.groups, ["admin"]);
        assert_eq!(id.roles, ["reader"]);
        let sa = map(
            ClaimsMapping::default(),
            json!({"sub":"f00","preferred_username":"service-account-batch","azp":"batch"}),
        )
        .unwrap();
        assert_eq!(sa.kind, IdentityKind::Service);
    }

    #[test]
    fn okta_auth0_cognito_kubernetes() {
        let okta = map(
            mapping(|m| m.scopes = "scp".into()),
            json!({"sub":"0oa1","cid":"0oa1","scp":["orders:read"],"client_id":"0oa1"}),
        )
        .unwrap();
        assert_eq!(okta.scopes, ["orders:read"]);
        assert_eq!(okta.kind, IdentityKind::Service);

        let auth0 = map(
            mapping(|m| m.roles = Some(r#"["https://example.com/roles"]"#.into())),
            json!({"sub":"abc@clients","gty":"client-credentials","azp":"abc","https://example.com/roles":["r1"]}),
        )
        .unwrap();
        assert_eq!(auth0.roles, ["r1"]);
        assert_eq!(auth0.kind, IdentityKind::Service);

        let cognito = map(
            mapping(|m| {
                m.groups = "cognito:groups".into();
                m.name = "username".into();
            }),
            json!({"sub":"u","cognito:groups":["admins"],"username":"bob","client_id":"app","email":"b@x.io","email_verified":"true"}),
        )
        .unwrap();
        assert_eq!(cognito.groups, ["admins"]);
        assert_eq!(cognito.name.as_deref(), Some("bob"));
        assert_eq!(cognito.email.as_deref(), Some("b@x.io"));
        assert_eq!(cognito.kind, IdentityKind::User);

        let k8s = map(
            mapping(|m| m.groups = r#"["kubernetes.io"].namespace"#.into()),
            json!({"sub":"system:serviceaccount:shop:orders","kubernetes.io":{"namespace":"shop","serviceaccount":{"name":"orders"}}}),
        )
        .unwrap();
        assert_eq!(k8s.kind, IdentityKind::Service);
        assert_eq!(k8s.groups, ["shop"]);
    }

    #[test]
    fn wrong_types_are_invalid_not_ignored() {
        for claims in [
            json!({"sub": 5}),
            json!({"sub":"u","email":["a@b"]}),
            json!({"sub":"u","groups":"g","scope":5}),
            json!({"sub":"u","groups":[1]}),
            json!({"sub":"u","groups":{"a":1}}),
            json!({"sub":"u","client_id":7}),
            json!({"sub":"u","email":"a@b","email_verified":"yes"}),
            json!({"email":"a@b"}),
        ] {
            assert!(
                map(ClaimsMapping::default(), claims.clone()).is_err(),
                "{claims}"
            );
        }
    }

    #[test]
    fn unverified_email_is_dropped() {
        let id = map(
            ClaimsMapping::default(),
            json!({"sub":"u","email":"a@b.c","email_verified":false}),
        )
        .unwrap();
        assert_eq!(id.email, None);
        let id = map(ClaimsMapping::default(), json!({"sub":"u","email":null})).unwrap();
        assert_eq!(id.email, None);
    }
}
