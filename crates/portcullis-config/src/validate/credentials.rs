//! `credentials` (outbound OAuth2 clients, SPEC §9), `routes[].upstream_auth`
//! references to them, and `providers[].ca_file`.

use super::{checks, url, Report};
use crate::model::{Config, CredentialConfig};
use crate::path::KeyPath;
use std::collections::HashMap;

/// The client authentication methods a credential may use.
pub(crate) const AUTH_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];

pub(super) fn validate(config: &Config, root: &KeyPath, report: &mut Report<'_>) {
    let providers = root.key("providers");
    let indices = report.scope.provider_index.clone();
    for (p, &i) in config.providers.iter().zip(&indices) {
        if let Some(file) = &p.ca_file {
            if let Err(e) = ca_bundle(file) {
                report.error(&providers.index(i).key("ca_file"), e);
            }
        }
    }
    let at = root.key("credentials");
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, c) in config.credentials.iter().enumerate() {
        let entry = at.index(i);
        let name = c.name.trim();
        if name.is_empty() {
            report.error(
                &entry.key("name"),
                "must not be empty: routes name it in upstream_auth.credential",
            );
        } else if let Some(first) = names.get(name) {
            report.error(
                &entry.key("name"),
                format!(
                    "duplicate credential name `{name}` (already used by credentials[{first}])"
                ),
            );
        } else {
            names.insert(name, i);
        }
        credential(config, c, &entry, report);
    }
    // A failed `credentials` section is empty here: every reference would look unknown.
    if !report.scope.parsed("credentials") {
        return;
    }
    let routes = root.key("routes");
    let route_indices = report.scope.route_index.clone();
    for (r, &i) in config.routes.iter().zip(&route_indices) {
        let Some(auth) = &r.upstream_auth else {
            continue;
        };
        if !names.contains_key(auth.credential.trim()) {
            let known: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
            let hint = if known.is_empty() {
                "no `credentials` are configured".to_string()
            } else {
                format!("known: {}", known.join(", "))
            };
            report.error(
                &routes.index(i).key("upstream_auth").key("credential"),
                format!("unknown credential `{}` ({hint})", auth.credential),
            );
        }
    }
}

fn credential(config: &Config, c: &CredentialConfig, at: &KeyPath, report: &mut Report<'_>) {
    match (&c.token_endpoint, &c.provider) {
        (Some(_), Some(_)) => report.error(
            &at.key("provider"),
            "set either token_endpoint or provider (whose discovery names the token endpoint), not both",
        ),
        (None, None) => report.error(
            at,
            "needs token_endpoint (a URL) or provider (a provider using discovery)",
        ),
        (Some(endpoint), None) => {
            if let Err(e) = url::http_url(endpoint, true) {
                report.error(&at.key("token_endpoint"), e);
            }
        }
        (None, Some(name)) => match config.providers.iter().find(|p| &p.name == name) {
            Some(p) if p.uses_discovery() => {}
            Some(_) => report.error(
                &at.key("provider"),
                format!(
                    "provider `{name}` does not use discovery, so it names no token endpoint: \
                     set token_endpoint instead"
                ),
            ),
            // A provider that failed to parse is reported where it is.
            None if !report.scope.parsed("providers") => {}
            None => report.error(&at.key("provider"), format!("unknown provider `{name}`")),
        },
    }
    if c.client_id.trim().is_empty() {
        report.error(&at.key("client_id"), "must not be empty");
    }
    let method = match c.auth_method.as_deref() {
        Some(m) if AUTH_METHODS.contains(&m) => Some(m),
        Some(m) => {
            report.error(
                &at.key("auth_method"),
                format!(
                    "unknown auth_method `{m}` (one of: {})",
                    AUTH_METHODS.join(", ")
                ),
            );
            None
        }
        None if c.private_key_file.is_some() => Some("private_key_jwt"),
        None => Some("client_secret_basic"),
    };
    match method {
        Some("private_key_jwt") => {
            if c.client_secret.is_some() {
                report.error(
                    &at.key("client_secret"),
                    "private_key_jwt signs with private_key_file; remove client_secret",
                );
            }
            match &c.private_key_file {
                None => report.error(
                    at,
                    "private_key_jwt needs private_key_file (an ES256 or RS256 PEM key)",
                ),
                Some(file) => {
                    if let Err(e) = private_key(file) {
                        report.error(&at.key("private_key_file"), e);
                    }
                }
            }
        }
        Some(m) => {
            if c.private_key_file.is_some() {
                report.error(
                    &at.key("private_key_file"),
                    format!("{m} authenticates with client_secret; remove private_key_file"),
                );
            }
            match c.client_secret.as_deref() {
                None => report.error(
                    at,
                    format!("{m} needs client_secret (write it as ${{ENV}})"),
                ),
                Some("") => report.error(&at.key("client_secret"), "must not be empty"),
                Some(_) => {}
            }
        }
        None => {}
    }
    for (i, scope) in c.scopes.iter().enumerate() {
        if scope.is_empty()
            || scope
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            report.error(
                &at.key("scopes").index(i),
                format!("`{scope}` is not a scope: one word per entry"),
            );
        }
    }
    if let Some(aud) = &c.audience {
        if aud.trim().is_empty() {
            report.error(&at.key("audience"), "must not be empty");
        }
    }
    if let Some(file) = &c.ca_file {
        if let Err(e) = ca_bundle(file) {
            report.error(&at.key("ca_file"), e);
        }
    }
}

/// A readable PEM file holding an unencrypted private key. Whether it is a P-256
/// or RSA key is checked when the key is loaded (the config crate has no crypto).
fn private_key(path: &str) -> Result<(), String> {
    let text = pem_text(path)?;
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(format!(
            "`{path}` holds an encrypted key: store it unencrypted, readable only by the proxy"
        ));
    }
    let labels = [
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----",
    ];
    if labels.iter().any(|l| text.contains(l)) {
        Ok(())
    } else {
        Err(format!(
            "`{path}` holds no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)"
        ))
    }
}

/// A readable PEM file holding at least one certificate.
fn ca_bundle(path: &str) -> Result<(), String> {
    if pem_text(path)?.contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(format!("`{path}` holds no PEM certificate"))
    }
}

fn pem_text(path: &str) -> Result<String, String> {
    checks::readable_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
