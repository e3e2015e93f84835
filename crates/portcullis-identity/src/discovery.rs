//! OpenID Connect discovery: `{issuer}/.well-known/openid-configuration` → `jwks_uri`
//! (or `token_endpoint`, for outbound credentials).
//!
//! The document must name exactly the configured issuer (OIDC Discovery §4.3): a
//! mismatch means we are talking to the wrong server or a mix-up attack, and its
//! keys must not be trusted for this issuer. An `https` issuer may not point its
//! keys at plain `http`.

use crate::fetch::Fetch;
use crate::jose::json::parse_object;
use serde_json::{Map, Value};

/// Largest discovery document we read.
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// The discovery URL for `issuer` (a trailing `/` on the issuer is not doubled).
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Why discovery failed, and whether it was the network (`error`) or the content
/// (`invalid`), for the refresh metric.
#[derive(Debug)]
pub(crate) struct DiscoveryError {
    pub message: String,
    pub invalid: bool,
}

/// Fetches the discovery document and returns its `jwks_uri`.
pub(crate) async fn discover_jwks_uri(
    fetch: &dyn Fetch,
    issuer: &str,
) -> Result<String, DiscoveryError> {
    discover_endpoint(fetch, issuer, "jwks_uri").await
}

/// Fetches the discovery document and returns the endpoint URL it names under
/// `member` (`jwks_uri`, `token_endpoint`).
pub(crate) async fn discover_endpoint(
    fetch: &dyn Fetch,
    issuer: &str,
    member: &str,
) -> Result<String, DiscoveryError> {
    let doc = discover_document(fetch, issuer).await?;
    match endpoint(&doc, issuer, member)? {
        Some(url) => Ok(url),
        None => Err(DiscoveryError {
            message: format!("discovery document has no `{member}`"),
            invalid: true,
        }),
    }
}

/// Fetches the discovery document of `issuer` and checks that it names exactly
/// that issuer.
pub(crate) async fn discover_document(
    fetch: &dyn Fetch,
    issuer: &str,
) -> Result<Map<String, Value>, DiscoveryError> {
    let url = discovery_url(issuer);
    let fail = |message: String, invalid: bool| DiscoveryError { message, invalid };
    let response = fetch
        .get(&url, MAX_DISCOVERY_BYTES)
        .await
        .map_err(|e| fail(format!("GET {url}: {e}"), false))?;
    if response.status != 200 {
        return Err(fail(format!("GET {url}: HTTP {}", response.status), false));
    }
    let doc = parse_object(&response.body)
        .map_err(|e| fail(format!("discovery document at {url} is {e}"), true))?;
    match doc.get("issuer") {
        Some(Value::String(found)) if found == issuer => Ok(doc),
        Some(Value::String(found)) => Err(fail(
            format!(
                "discovery document names issuer `{}`, not the configured `{issuer}`",
                found.chars().take(200).collect::<String>()
            ),
            true,
        )),
        _ => Err(fail("discovery document has no `issuer`".to_string(), true)),
    }
}

/// The endpoint URL named by `member` of a checked discovery document, if any.
/// An `https` issuer may not point anywhere over plain `http` (or any other
/// scheme): that would let a network attacker substitute keys or endpoints.
pub(crate) fn endpoint(
    doc: &Map<String, Value>,
    issuer: &str,
    member: &str,
) -> Result<Option<String>, DiscoveryError> {
    let url = match doc.get(member) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(url)) => url,
        Some(_) => {
            return Err(DiscoveryError {
                message: format!("discovery document's `{member}` is not a string"),
                invalid: true,
            })
        }
    };
    let https_issuer = issuer.starts_with("https://");
    let ok_scheme = url.starts_with("https://") || (!https_issuer && url.starts_with("http://"));
    if !ok_scheme {
        return Err(DiscoveryError {
            message: format!("discovery document's `{member}` is not an https URL"),
            invalid: true,
        });
    }
    Ok(Some(url.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeFetch;

    #[test]
    fn url_does_not_double_slash() {
        assert_eq!(
            discovery_url("https://idp.example.com/realms/x/"),
            "https://idp.example.com/realms/x/.well-known/openid-configuration"
        );
    }

    #[tokio::test]
    async fn issuer_must_match_and_jwks_uri_must_not_downgrade() {
        let f = FakeFetch::new();
        let iss = "https://idp.example.com";
        let url = discovery_url(iss);
        f.set(
            &url,
            200,
            r#"{"issuer":"https://idp.example.com","jwks_uri":"https://idp.example.com/keys"}"#,
        );
        assert_eq!(
            discover_jwks_uri(&*f, iss).await.unwrap(),
            "https://idp.example.com/keys"
        );
        f.set(
            &url,
            200,
            r#"{"issuer":"https://evil.example.com","jwks_uri":"https://evil.example.com/keys"}"#,
        );
        assert!(discover_jwks_uri(&*f, iss).await.unwrap_err().invalid);
        f.set(
            &url,
            200,
            r#"{"issuer":"https://idp.example.com","jwks_uri":"http://idp.example.com/keys"}"#,
        );
        assert!(discover_jwks_uri(&*f, iss).await.is_err());
        f.set(
            &url,
            200,
            r#"{"issuer":"https://idp.example.com","jwks_uri":"file:///etc/passwd"}"#,
        );
        assert!(discover_jwks_uri(&*f, iss).await.is_err());
        f.set(&url, 500, "");
        assert!(!discover_jwks_uri(&*f, iss).await.unwrap_err().invalid);
    }
}
