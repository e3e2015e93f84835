//! Policy rules: condition values and their references to providers.

use super::{checks, Report};
use crate::claim_path::parse_claim_path;
use crate::model::{Config, OneOrMany, PolicyConfig, RuleConfig};
use crate::path::KeyPath;

pub(super) fn validate(
    config: &Config,
    policy: &PolicyConfig,
    at: &KeyPath,
    report: &mut Report<'_>,
) {
    for (list, rules) in [("deny", &policy.deny), ("allow", &policy.allow)] {
        for (i, rule) in rules.iter().enumerate() {
            self::rule(config, rule, list, &at.key(list).index(i), report);
        }
    }
}

/// Each list-valued condition with its key, for the checks common to all of them.
fn lists(rule: &RuleConfig) -> [(&'static str, Option<&Vec<String>>); 12] {
    [
        ("methods", rule.methods.as_ref()),
        ("paths", rule.paths.as_ref()),
        ("subjects", rule.subjects.as_ref()),
        ("emails", rule.emails.as_ref()),
        ("email_domains", rule.email_domains.as_ref()),
        ("groups", rule.groups.as_ref()),
        ("roles", rule.roles.as_ref()),
        ("scopes", rule.scopes.as_ref()),
        ("clients", rule.clients.as_ref()),
        ("workloads", rule.workloads.as_ref()),
        ("providers", rule.providers.as_ref()),
        ("tools", rule.tools.as_ref()),
    ]
}

fn rule(config: &Config, rule: &RuleConfig, list: &str, at: &KeyPath, report: &mut Report<'_>) {
    let conditions = lists(rule);
    let has_condition = conditions.iter().any(|(_, v)| v.is_some())
        || rule.claims.is_some()
        || rule.authenticated.is_some();
    if !has_condition {
        let effect = if list == "allow" { "allows" } else { "denies" };
        report.warn(
            at,
            format!("has no conditions, so it {effect} every request"),
        );
    }
    for (key, values) in conditions {
        let Some(values) = values else { continue };
        let path = at.key(key);
        if values.is_empty() {
            report.error(
                &path,
                "an empty list never matches: add values or remove the condition",
            );
        }
        for (i, value) in values.iter().enumerate() {
            if key == "providers" && !report.scope.parsed("providers") {
                // The named provider may be one that failed to parse.
                continue;
            }
            if let Err(e) = condition_value(config, key, value) {
                report.error(&path.index(i), e);
            }
        }
    }
    for (i, pattern) in rule.workloads.iter().flatten().enumerate() {
        if let Some(hint) = never_kubernetes(pattern) {
            report.warn(&at.key("workloads").index(i), hint);
        }
    }
    if rule.workloads.is_some() && config.workload_identity.is_none() {
        report.warn(
            &at.key("workloads"),
            "there is no workload_identity section, so no caller has a workload identity \
             and this condition never holds",
        );
    }
    if let Some(claims) = &rule.claims {
        let claims_at = at.key("claims");
        if claims.is_empty() {
            report.error(
                &claims_at,
                "an empty mapping has no effect: add claims or remove it",
            );
        }
        for (claim, expected) in claims {
            let path = claims_at.key(claim);
            if let Err(e) = parse_claim_path(claim) {
                report.error_at_key(&path, e);
            }
            if let OneOrMany::Many(values) = expected {
                if values.is_empty() {
                    report.error(&path, "an empty list never matches: add values");
                }
            }
        }
    }
}

/// Checks one value of a list condition.
fn condition_value(config: &Config, key: &str, value: &str) -> Result<(), String> {
    match key {
        "methods" => checks::method(value),
        "paths" => checks::config_path(value, true).and_then(|()| checks::glob(value)),
        "scopes" if value.contains(char::is_whitespace) => Err(format!(
            "`{value}` is not one scope: list each scope separately"
        )),
        "emails" if value.matches('@').count() != 1 => {
            Err(format!("`{value}` is not an email address"))
        }
        "email_domains" => {
            // `@example.com` means `example.com`, as the policy engine reads it.
            let domain = value.strip_prefix('@').unwrap_or(value);
            if checks::is_hostname(domain) {
                Ok(())
            } else {
                Err(format!("`{value}` is not a domain name"))
            }
        }
        "workloads" => workload_glob(value),
        "tools"
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(format!("`{value}` is not an MCP tool name pattern"))
        }
        "tools" => checks::glob(value),
        "providers" if !config.providers.iter().any(|p| p.name == value) => {
            let known: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
            Err(format!(
                "unknown provider `{value}`: expected one of {}",
                if known.is_empty() {
                    "(no providers configured)".to_string()
                } else {
                    known.join(", ")
                }
            ))
        }
        _ if value.trim().is_empty() => Err("must not be empty".to_string()),
        _ => Ok(()),
    }
}

/// `spiffe://TRUST_DOMAIN/PATH` with optional `*` globs.
fn workload_glob(value: &str) -> Result<(), String> {
    let Some(rest) = value.strip_prefix("spiffe://") else {
        return Err(format!(
            "`{value}` is not a SPIFFE ID pattern: write it like spiffe://example.org/ns/*/sa/api"
        ));
    };
    let domain = rest.split('/').next().unwrap_or("");
    if domain.is_empty() {
        return Err(format!("`{value}` has no trust domain after spiffe://"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{value}` contains whitespace"));
    }
    checks::glob(value)
}

/// A warning for a `workloads` pattern written for Kubernetes (its path starts with
/// `ns/`) that can never match a Kubernetes SPIFFE ID, `spiffe://TD/ns/NS/sa/SA`:
/// four segments, `ns` and `sa` in the first and third. `*` stays within one
/// segment, so `ns/prod/*` matches nothing; `**` spans segments.
fn never_kubernetes(pattern: &str) -> Option<String> {
    let rest = pattern.strip_prefix("spiffe://")?;
    let (_, path) = rest.split_once('/')?;
    let segments: Vec<&str> = path.split('/').collect();
    if segments.first() != Some(&"ns") || segments.iter().any(|s| s.contains("**")) {
        return None;
    }
    let literal_mismatch = |i: usize, want: &str| {
        segments
            .get(i)
            .is_some_and(|s| !s.contains('*') && *s != want)
    };
    if segments.len() == 4 && !literal_mismatch(2, "sa") {
        return None;
    }
    let base = segments
        .iter()
        .take(2)
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    Some(format!(
        "`{pattern}` can never match a Kubernetes SPIFFE ID (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT): \
         `*` matches within one segment only; write `.../{base}/**` or `.../{base}/sa/*`"
    ))
}

#[cfg(test)]
mod tests {
    use super::never_kubernetes;

    #[test]
    fn warns_only_for_kubernetes_patterns_that_cannot_match() {
        for never in [
            "spiffe://cluster.local/ns/prod/*",
            "spiffe://cluster.local/ns/prod",
            "spiffe://cluster.local/ns/prod/sa",
            "spiffe://cluster.local/ns/prod/service/api",
            "spiffe://cluster.local/ns/prod/sa/api/extra",
        ] {
            assert!(never_kubernetes(never).is_some(), "{never}");
        }
        for fine in [
            "spiffe://cluster.local/ns/prod/**",
            "spiffe://cluster.local/ns/prod/sa/*",
            "spiffe://cluster.local/ns/*/sa/api",
            "spiffe://cluster.local/ns/prod/*/api",
            "spiffe://cluster.local/**",
            "spiffe://example.org/host/db-1",
        ] {
            assert!(never_kubernetes(fine).is_none(), "{fine}");
        }
    }
}
