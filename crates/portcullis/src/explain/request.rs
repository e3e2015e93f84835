//! The arguments of `portcullis explain` as the request facts the decision core
//! judges: method, host, path, headers, and the facts only explain has (claims
//! taken as verified, a verified workload).

use super::ExplainArgs;
use anyhow::{anyhow, bail, Context as _};
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST};
use portcullis_config::{Config, WorkloadSource};
use portcullis_identity::workload;
use portcullis_policy::split_query;
use portcullis_proxy::authority::{self, JudgedHost};
use portcullis_proxy::forward::headers::names;
use portcullis_proxy::judge::PeerIdentity;
use serde_json::{Map, Value};

/// The request being explained.
pub struct Request {
    pub method: String,
    pub scheme: &'static str,
    pub host: JudgedHost,
    /// The path as given (before normalization).
    pub raw_path: String,
    /// Every `--header`, and the token as `Authorization: Bearer`.
    pub headers: HeaderMap,
    /// The bearer token, from `--token` or an `Authorization` header.
    pub token: Option<String>,
    pub claims: Option<Value>,
    /// `--workload`, as a verified peer would establish it.
    pub workload: Option<PeerIdentity>,
    /// Sidecar identity headers were given.
    pub sidecar_headers: bool,
    /// `--mcp-tool`: the request is an MCP `tools/call` of this tool.
    pub mcp_tool: Option<String>,
}

pub fn parse(
    args: &ExplainArgs,
    config: &Config,
    notes: &mut Vec<String>,
) -> anyhow::Result<Request> {
    let method = args.method.trim();
    if method.is_empty() || !method.bytes().all(is_tchar) {
        bail!("--method {:?} is not an HTTP method", args.method);
    }
    let (scheme, url_host, raw_path) = split_url(&args.url)?;
    let mut host = url_host;
    let mut headers = HeaderMap::new();
    let mut bearer = None;
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow!("--header {header:?} has an invalid header name"))?;
        if name == HOST {
            host = Some(value.to_string());
            continue;
        }
        if name == AUTHORIZATION {
            let Some((scheme, token)) = value.split_once(' ') else {
                bail!("--header Authorization must be `Authorization: Bearer TOKEN`");
            };
            if !scheme.eq_ignore_ascii_case("bearer") {
                bail!("--header Authorization: only the Bearer scheme is understood");
            }
            // A second one is the core's to refuse (400), as the proxy does.
            bearer.get_or_insert_with(|| token.trim().to_string());
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| anyhow!("--header {header:?}: not a header value"))?;
        headers.append(name, value);
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        bail!(
            "--url {:?} has no host: give a full URL or a `Host:` header",
            args.url
        );
    };
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        bail!("host {host:?} is not a valid host");
    }
    let host_value =
        HeaderValue::from_str(&host).map_err(|_| anyhow!("host {host:?} is not a valid host"))?;
    let mut only_host = HeaderMap::new();
    only_host.insert(HOST, host_value);
    let host = authority::judge_host(&http::Uri::from_static("/"), &only_host)
        .map_err(|e| anyhow!("host {host:?}: {e}"))?;

    let token = match (&args.token, bearer, &args.claims) {
        (Some(_), Some(_), _) => {
            bail!("give the token once: --token or an Authorization header, not both")
        }
        (_, Some(_), Some(_)) => bail!("--claims cannot be combined with an Authorization header"),
        (Some(t), None, _) => {
            let t = t.trim().to_string();
            let value = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| anyhow!("--token has characters no HTTP header can carry"))?;
            headers.insert(AUTHORIZATION, value);
            Some(t)
        }
        (None, bearer, _) => bearer,
    };
    let claims = args.claims.as_deref().map(parse_claims).transpose()?;
    if let Some(claims) = &claims {
        let iss = claims.get("iss").and_then(Value::as_str);
        if !config
            .providers
            .iter()
            .any(|p| Some(p.issuer.as_str()) == iss)
        {
            notes.push(match iss {
                Some(iss) => format!(
                    "no configured provider has issuer {iss:?}: the default claims mapping is used"
                ),
                None => "the claims have no `iss`: the default claims mapping is used".into(),
            });
        }
    }
    if args.jwks.is_some() && token.is_none() {
        bail!("--jwks only applies to a token (--token or an Authorization header)");
    }
    let workload = match &args.workload {
        Some(id) => {
            workload::validate_spiffe_id(id).map_err(|e| anyhow!("--workload: {e}"))?;
            Some(verified_peer(config, id, notes))
        }
        None => None,
    };
    let sidecar_headers = headers.contains_key(names::L5D_CLIENT_ID)
        || headers.contains_key(names::X_FORWARDED_CLIENT_CERT);
    if sidecar_headers {
        notes.push(match &config.workload_identity {
            Some(_) => "sidecar identity headers are taken as coming from a trusted proxy".into(),
            None => {
                "the config has no workload_identity section: sidecar identity headers are ignored"
                    .into()
            }
        });
    }
    Ok(Request {
        method: method.to_string(),
        scheme,
        host,
        raw_path,
        headers,
        token,
        claims: claims.map(Value::Object),
        workload,
        sidecar_headers,
        mcp_tool: args.mcp_tool.clone(),
    })
}

/// `--workload` as the verified peer identity a front end would hand the core:
/// an mTLS client certificate's, or (when only `xfcc` is accepted) the principal
/// Envoy verified. The core still applies `accept` and the trust domain.
fn verified_peer(config: &Config, id: &str, notes: &mut Vec<String>) -> PeerIdentity {
    let accept = config
        .workload_identity
        .as_ref()
        .map(|w| w.accept.as_slice())
        .unwrap_or_default();
    let source =
        if !accept.contains(&WorkloadSource::Mtls) && accept.contains(&WorkloadSource::Xfcc) {
            WorkloadSource::Xfcc
        } else {
            WorkloadSource::Mtls
        };
    if config.workload_identity.is_none() {
        notes.push(
            "the config has no workload_identity section: the proxy accepts no workload identity"
                .into(),
        );
    }
    PeerIdentity {
        source,
        spiffe_id: id.to_string(),
    }
}

/// RFC 9110 `tchar`: what a method (and a header name) may be made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `http(s)://[user@]host[:port]/path?query` into scheme, host and path
/// (without query or fragment). An absolute path alone gives no host.
pub(super) fn split_url(url: &str) -> anyhow::Result<(&'static str, Option<String>, String)> {
    let url = url.trim();
    if url.starts_with('/') {
        return Ok(("http", None, split_query(url).0.to_string()));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--url {url:?} is not a URL: write it like https://api.example.com/path");
    };
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        bail!("--url {url:?}: only http:// and https:// URLs are proxied");
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    // User info never reaches the proxy as part of Host.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = split_query(target).0;
    let path = if path.is_empty() { "/" } else { path };
    Ok((scheme, Some(host.to_string()), path.to_string()))
}

/// `Name: value` → (name, trimmed value).
pub(super) fn parse_header(text: &str) -> anyhow::Result<(&str, &str)> {
    let Some((name, value)) = text.split_once(':') else {
        bail!("--header {text:?} is not `Name: value`");
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_tchar) {
        bail!("--header {text:?} has an invalid header name");
    }
    Ok((name, value.trim()))
}

/// `--claims`: a JSON object, inline or `@FILE`.
fn parse_claims(text: &str) -> anyhow::Result<Map<String, Value>> {
    let json = match text.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("--claims: cannot read {file}"))?,
        None => text.to_string(),
    };
    match serde_json::from_str(&json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bail!("--claims must be a JSON object, like '{{\"sub\":\"alice\"}}'"),
        Err(e) => bail!("--claims is not valid JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        let (s, h, p) = split_url("HTTPS://u:p@API.example.com:8443/a/b?x=1#f").unwrap();
        assert_eq!((s, h.as_deref()), ("https", Some("API.example.com:8443")));
        assert_eq!(p, "/a/b");
        assert_eq!(split_url("http://h").unwrap().2, "/");
        assert_eq!(split_url("http://h?q").unwrap().2, "/");
        assert_eq!(
            split_url("/only/path?q").unwrap(),
            ("http", None, "/only/path".into())
        );
        assert!(split_url("ftp://h/x").is_err());
        assert!(split_url("example.com/x").is_err());
    }

    #[test]
    fn headers_parse_strictly() {
        assert_eq!(parse_header("Host:  a.b ").unwrap(), ("Host", "a.b"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }
}
