//! `providers`, `login` and `workload_identity`.

use super::{checks, nonzero, url, Report};
use crate::claim_path::parse_claim_path;
use crate::model::{ClientAuth, Config, ProviderConfig, WorkloadSource};
use crate::path::KeyPath;
use std::collections::HashMap;

/// `login.cookie.name`'s longest: the proxy's sign-in cookies fit browsers
/// with a name up to this long (`login::MAX_RD_JSON_BYTES` in the proxy).
const MAX_COOKIE_NAME_BYTES: usize = 64;

/// Every algorithm a provider may allow (SPEC §2). `none` is deliberately absent.
pub(crate) const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

/// Minimum HMAC key length: RFC 7518 §3.2 requires a key at least as long as the hash.
fn hmac_min_bytes(alg: &str) -> Option<usize> {
    match alg {
        "HS256" => Some(32),
        "HS384" => Some(48),
        "HS512" => Some(64),
        _ => None,
    }
}

pub(super) fn validate(config: &Config, root: &KeyPath, report: &mut Report<'_>) {
    let providers = root.key("providers");
    let mut names: HashMap<&str, usize> = HashMap::new();
    let indices = report.scope.provider_index.clone();
    for (p, &i) in config.providers.iter().zip(&indices) {
        let at = providers.index(i);
        let name = p.name.trim();
        if name.is_empty() {
            report.error(
                &at.key("name"),
                "must not be empty: it names the provider in rules and metrics",
            );
        } else if let Some(first) = names.get(name) {
            report.error(
                &at.key("name"),
                format!("duplicate provider name `{name}` (already used by providers[{first}])"),
            );
        } else {
            names.insert(name, i);
        }
        provider(p, &at, report);
    }
    introspection_routes(config, &providers, &indices, report);
    login(config, &root.key("login"), report);
    workload_identity(config, &root.key("workload_identity"), report);
}

/// Every opaque token goes to exactly one introspection endpoint: the one
/// whose `token_prefix` it starts with, else the only one without a prefix.
/// Tried in turn, each provider would receive the tokens of those after it,
/// and whoever runs it could replay them here as their users.
fn introspection_routes(
    config: &Config,
    providers: &KeyPath,
    indices: &[usize],
    report: &mut Report<'_>,
) {
    let mut unprefixed: Option<&str> = None;
    let mut prefixes: Vec<(&str, &str)> = Vec::new();
    for (p, &i) in config.providers.iter().zip(indices) {
        let Some(intro) = &p.introspection else {
            continue;
        };
        let at = providers.index(i).key("introspection");
        match intro.token_prefix.as_deref() {
            None => match unprefixed {
                Some(first) => report.error(
                    &at,
                    format!(
                        "provider `{first}` also introspects opaque tokens without a \
                         `token_prefix`: an opaque token would be sent to each in turn, and \
                         each provider would see the others' tokens; give all but one a \
                         `token_prefix`"
                    ),
                ),
                None => unprefixed = Some(&p.name),
            },
            Some("") => report.error(&at.key("token_prefix"), "must not be empty"),
            Some(prefix) => {
                let at = at.key("token_prefix");
                if let Some((other, _)) = prefixes
                    .iter()
                    .find(|(_, q)| q.starts_with(prefix) || prefix.starts_with(q))
                {
                    report.error(
                        &at,
                        format!(
                            "`{prefix}` overlaps provider `{other}`'s token_prefix: a token \
                             must belong to one provider"
                        ),
                    );
                } else if !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_~+/".contains(&b))
                {
                    // A bearer token is a b64token, and one with two dots is
                    // read as a JWT: a prefix outside the rest could never match.
                    report.error(
                        &at,
                        "may hold only letters, digits and - _ ~ + / (the characters of \
                         an opaque bearer token)",
                    );
                } else {
                    prefixes.push((&p.name, prefix));
                }
            }
        }
    }
}

fn provider(p: &ProviderConfig, at: &KeyPath, report: &mut Report<'_>) {
    if let Err(e) = url::http_url(&p.issuer, false) {
        report.error(&at.key("issuer"), e);
    }
    keys_source(p, at, report);
    if p.audiences.is_empty() && !p.allow_any_audience {
        report.error(
            &at.key("audiences"),
            "required: list the audiences this proxy accepts (a token's aud must contain one), \
             or set allow_any_audience: true",
        );
    }
    for (i, aud) in p.audiences.iter().enumerate() {
        if aud.trim().is_empty() {
            report.error(&at.key("audiences").index(i), "must not be empty");
        }
    }
    algorithms(p, at, report);
    for (i, typ) in p.token_types.iter().enumerate() {
        if typ.trim().is_empty() {
            report.error(&at.key("token_types").index(i), "must not be empty");
        }
    }
    nonzero(report, &at.key("jwks_refresh"), p.jwks_refresh);
    // Zero would let every token with an unknown `kid` trigger a JWKS fetch: an
    // attacker could make the proxy hammer the identity provider.
    nonzero(report, &at.key("jwks_min_refresh"), p.jwks_min_refresh);
    if let Some(age) = p.max_token_age {
        nonzero(report, &at.key("max_token_age"), age);
    }
    if p.clock_skew.get().as_secs() > 300 {
        report.warn(
            &at.key("clock_skew"),
            format!(
                "{} is a lot: expired tokens stay valid that much longer",
                p.clock_skew
            ),
        );
    }
    let claims = at.key("claims");
    let c = &p.claims;
    let mut paths = vec![
        ("subject", Some(&c.subject)),
        ("email", Some(&c.email)),
        ("name", Some(&c.name)),
        ("groups", Some(&c.groups)),
        ("roles", c.roles.as_ref()),
        ("scopes", Some(&c.scopes)),
        ("client_id", c.client_id.as_ref()),
    ];
    for (key, value) in paths.drain(..) {
        if let Some(Err(e)) = value.map(|v| parse_claim_path(v)) {
            report.error(&claims.key(key), e);
        }
    }
    if let Some(intro) = &p.introspection {
        let ia = at.key("introspection");
        if let Err(e) = url::http_url(&intro.endpoint, true) {
            report.error(&ia.key("endpoint"), e);
        }
        for (key, value) in [
            ("client_id", &intro.client_id),
            ("client_secret", &intro.client_secret),
        ] {
            if value.is_empty() {
                report.error(&ia.key(key), "must not be empty");
            }
        }
    }
    for (key, value) in [
        ("client_id", &p.client_id),
        ("client_secret", &p.client_secret),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            report.error(&at.key(key), "must not be empty");
        }
    }
}

/// `discovery`, `jwks_uri` and `jwks_file`: exactly one way to get keys.
fn keys_source(p: &ProviderConfig, at: &KeyPath, report: &mut Report<'_>) {
    if p.jwks_uri.is_some() && p.jwks_file.is_some() {
        report.error(
            &at.key("jwks_file"),
            "jwks_uri and jwks_file are mutually exclusive: keep one",
        );
    }
    match p.discovery {
        Some(true) if p.jwks_uri.is_some() || p.jwks_file.is_some() => report.error(
            &at.key("discovery"),
            "discovery: true fetches the keys from the issuer; remove it, or remove jwks_uri/jwks_file",
        ),
        Some(false)
            if p.jwks_uri.is_none()
                && p.jwks_file.is_none()
                && p.shared_secret.is_none()
                && p.introspection.is_none() =>
        {
            report.error(
                &at.key("discovery"),
                "with discovery: false this provider has no keys: set jwks_uri or jwks_file",
            )
        }
        _ => {}
    }
    if let Some(uri) = &p.jwks_uri {
        match url::http_url(uri, true) {
            Err(e) => report.error(&at.key("jwks_uri"), e),
            Ok(u) if u.scheme == "http" && !u.is_loopback() => report.warn(
                &at.key("jwks_uri"),
                "keys fetched over plain http:// can be replaced in transit: use https://",
            ),
            Ok(_) => {}
        }
    }
    if p.uses_discovery() {
        if let Ok(u) = url::http_url(&p.issuer, false) {
            if u.scheme == "http" && !u.is_loopback() {
                report.warn(
                    &at.key("issuer"),
                    "discovery over plain http:// can be tampered with: use https://",
                );
            }
        }
    }
    if let Some(file) = &p.jwks_file {
        if let Err(e) = checks::readable_file(file) {
            report.error(&at.key("jwks_file"), e);
        }
    }
}

fn algorithms(p: &ProviderConfig, at: &KeyPath, report: &mut Report<'_>) {
    let path = at.key("algorithms");
    if p.algorithms.is_empty() {
        report.error(
            &path,
            "must not be empty: list what the provider signs with, e.g. [RS256, ES256]",
        );
    }
    let mut hmac_min = None;
    for (i, alg) in p.algorithms.iter().enumerate() {
        let item = path.index(i);
        if alg.eq_ignore_ascii_case("none") {
            report.error(
                &item,
                "`none` is never allowed: it would accept unsigned tokens",
            );
        } else if !ALGORITHMS.contains(&alg.as_str()) {
            report.error(
                &item,
                format!(
                    "unknown algorithm `{alg}`: expected one of {}",
                    ALGORITHMS.join(", ")
                ),
            );
        } else if let Some(min) = hmac_min_bytes(alg) {
            if p.shared_secret.is_none() {
                report.error(
                    &item,
                    format!(
                        "`{alg}` needs shared_secret on this provider (HMAC keys are never \
                         published in a JWKS)"
                    ),
                );
            }
            hmac_min = hmac_min.max(Some(min));
        }
    }
    if let Some(secret) = &p.shared_secret {
        let secret_at = at.key("shared_secret");
        match hmac_min {
            None => report.warn(
                &secret_at,
                "is unused: no HS256/HS384/HS512 algorithm is allowed",
            ),
            Some(min) if secret.len() < min => report.error(
                &secret_at,
                format!(
                    "is {} bytes; the allowed HMAC algorithms need at least {min} random bytes",
                    secret.len()
                ),
            ),
            Some(_) => {}
        }
    }
}

fn login(config: &Config, at: &KeyPath, report: &mut Report<'_>) {
    let Some(login) = &config.login else {
        return;
    };
    match config
        .providers
        .iter()
        .position(|p| p.name == login.provider)
    {
        // A provider that failed to parse may be the one named: say nothing.
        None if !report.scope.parsed("providers") => {}
        None => {
            let known: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
            report.error(
                &at.key("provider"),
                format!(
                    "unknown provider `{}`: expected one of {}",
                    login.provider,
                    if known.is_empty() {
                        "(no providers configured)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        Some(pos) => {
            let p = &config.providers[pos];
            let i = report.scope.provider_index.get(pos).copied().unwrap_or(pos);
            let mut missing = Vec::new();
            if p.client_id.is_none() {
                missing.push("client_id");
            }
            if p.client_secret.is_none() && p.private_key_file.is_none() {
                missing.push("client_secret (or private_key_file)");
            }
            if !missing.is_empty() {
                report.error(
                    &at.key("provider"),
                    format!(
                        "provider `{}` has no {}: browser login needs an OAuth client, add it to providers[{i}]",
                        p.name,
                        missing.join(" or ")
                    ),
                );
            }
        }
    }
    if config.server.public_url.is_none() {
        report.warn(
            at,
            "server.public_url is not set: the redirect URI registered at the provider must then be http(s)://LISTEN/.portcullis/callback",
        );
    }
    if !login.scopes.iter().any(|s| s == "openid") {
        report.warn(
            &at.key("scopes"),
            "does not include `openid`: the provider will not return an ID token",
        );
    }
    let cookie = at.key("cookie");
    if login.cookie.secret.len() < 32 {
        report.error(
            &cookie.key("secret"),
            format!(
                "is {} bytes: use at least 32 random bytes (e.g. `openssl rand -base64 32`)",
                login.cookie.secret.len()
            ),
        );
    }
    if !checks::is_token(&login.cookie.name) {
        report.error(
            &cookie.key("name"),
            format!("`{}` is not a valid cookie name", login.cookie.name),
        );
    } else if login.cookie.name.len() > MAX_COOKIE_NAME_BYTES {
        // The sign-in cookies are named after it, and must stay within the
        // 4096 bytes a browser keeps of a cookie's name and value.
        report.error(
            &cookie.key("name"),
            format!(
                "is {} bytes: at most {MAX_COOKIE_NAME_BYTES}",
                login.cookie.name.len()
            ),
        );
    }
    if let Some(domain) = &login.cookie.domain {
        if !checks::is_hostname(domain.strip_prefix('.').unwrap_or(domain)) {
            report.error(
                &cookie.key("domain"),
                format!("`{domain}` is not a domain name"),
            );
        }
    }
    nonzero(report, &cookie.key("ttl"), login.cookie.ttl);
    for (i, host) in login.allowed_redirect_hosts.iter().enumerate() {
        if let Err(e) = checks::host_pattern(host, true) {
            report.error(&at.key("allowed_redirect_hosts").index(i), e);
        }
    }
    for (i, origin) in login.trusted_origins.iter().enumerate() {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let problem = match host {
            None => Some(format!(
                "`{origin}` is not an origin: write `https://host` or `https://*.suffix`"
            )),
            Some(host) => checks::host_pattern(host, false).err(),
        };
        if let Some(e) = problem {
            report.error(&at.key("trusted_origins").index(i), e);
        }
    }
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`.
fn is_trust_domain(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

fn workload_identity(config: &Config, at: &KeyPath, report: &mut Report<'_>) {
    let Some(w) = &config.workload_identity else {
        return;
    };
    if let Some(bare) = w.trust_domain.strip_prefix("spiffe://") {
        report.error(
            &at.key("trust_domain"),
            format!("write the trust domain without spiffe://, like `{bare}`"),
        );
    } else if !is_trust_domain(&w.trust_domain) {
        report.error(
            &at.key("trust_domain"),
            format!(
                "`{}` is not a SPIFFE trust domain: use lowercase letters, digits, `.`, `-` and `_`",
                w.trust_domain
            ),
        );
    }
    if w.accept.is_empty() {
        report.warn(
            &at.key("accept"),
            "is empty: no workload identity is ever accepted; list mtls, linkerd or xfcc",
        );
    }
    for (i, source) in w.accept.iter().enumerate() {
        let path = at.key("accept").index(i);
        match source {
            // Envoy's ext_authz check carries the verified peer as
            // `source.principal`, believed without trusted_proxies from an
            // Envoy that `ext_authz.tls.client_ca_file` authenticated.
            WorkloadSource::Xfcc
                if config.server.trusted_proxies.is_empty()
                    && config
                        .ext_authz
                        .as_ref()
                        .is_some_and(|e| e.requires_client_certificates()) => {}
            WorkloadSource::Linkerd | WorkloadSource::Xfcc
                if config.server.trusted_proxies.is_empty() =>
            {
                report.warn(
                    &path,
                    "is only believed from server.trusted_proxies, and there are none: \
                     it never yields an identity",
                )
            }
            WorkloadSource::Mtls
                if config
                    .server
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_auth == ClientAuth::None) =>
            {
                report.warn(
                    &path,
                    "needs server.tls with client_auth optional or required: \
                     no client certificate is ever requested",
                )
            }
            _ => {}
        }
    }
}
