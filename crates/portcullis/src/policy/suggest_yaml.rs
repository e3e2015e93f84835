//! The YAML `policy suggest` prints: a `routes:` list naming each route with the
//! `policy.allow` rules to put in place of its current ones, and a comment above
//! each rule saying how many requests and which callers it covers.
//!
//! Every value is double-quoted with escapes, and every name that reaches a
//! comment has its control characters escaped, so nothing an audit line holds
//! (a caller id is whatever an IdP signed) can end a comment or a string early
//! and inject config.

use super::grouping::{Caller, Principal};
use super::suggest::SuggestedRule;
use portcullis_config::PolicyMode;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Callers a comment names before it says "and N more".
const NAMED_CALLERS: usize = 5;

/// One route's part of the output.
pub struct RouteSection<'a> {
    pub name: &'a str,
    pub mode: PolicyMode,
    pub permitted: u64,
    pub shadow_denied: u64,
    pub rules: Vec<SuggestedRule>,
    pub callers: &'a [Caller],
    /// The token issuers [`Caller::issuer`] indexes.
    pub issuers: &'a [String],
}

/// Issuer → the name of the one configured provider with that issuer.
pub type ProviderNames = BTreeMap<String, String>;

/// The whole output. `skipped` are routes of the config with nothing to suggest,
/// with why.
pub fn render(
    source: &str,
    lines: u64,
    sections: &[RouteSection<'_>],
    skipped: &[(String, &str)],
    providers: &ProviderNames,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `portcullis policy suggest` from {} ({} audit lines).",
        comment_text(source),
        thousands(lines)
    );
    out.push_str(
        "# Review, then put each route's `allow` list below in place of its current one\n\
         # (its `deny` rules stay), run `portcullis check`, and set `mode: enforce`.\n\
         # Each rule allows only the methods and paths its callers were seen using.\n",
    );
    if sections.is_empty() {
        out.push_str("routes: []\n");
    } else {
        out.push_str("routes:\n");
    }
    for section in sections {
        route(&mut out, section, providers);
    }
    for (name, why) in skipped {
        let _ = writeln!(
            out,
            "# route {}: {why}; nothing suggested.",
            comment_text(name)
        );
    }
    out
}

fn route(out: &mut String, s: &RouteSection<'_>, providers: &ProviderNames) {
    let _ = writeln!(out, "  - name: {}", quoted(s.name));
    let mode = match s.mode {
        PolicyMode::Audit => "audit",
        PolicyMode::Enforce => "enforce",
    };
    let _ = writeln!(
        out,
        "    # mode: {mode}; {} permitted requests seen, {} of them denied in shadow",
        thousands(s.permitted),
        thousands(s.shadow_denied)
    );
    out.push_str("    policy:\n      allow:\n");
    for (i, rule) in s.rules.iter().enumerate() {
        let _ = writeln!(
            out,
            "        # {} request{}; {}",
            thousands(rule.requests),
            if rule.requests == 1 { "" } else { "s" },
            who(rule, s.callers)
        );
        let _ = writeln!(
            out,
            "        - name: {}",
            quoted(&format!("suggested-{}", i + 1))
        );
        let _ = writeln!(
            out,
            "          {}: {}",
            rule.principal.condition(),
            list(rule.principal.values())
        );
        if let Some(provider) = provider_of(rule, s, providers) {
            let _ = writeln!(out, "          providers: {}", list([provider]));
        }
        let _ = writeln!(
            out,
            "          methods: {}",
            list(rule.methods.iter().map(String::as_str))
        );
        let _ = writeln!(
            out,
            "          paths: {}",
            list(rule.paths.iter().map(String::as_str))
        );
    }
}

/// The provider every caller of `rule` came through, when there is exactly one:
/// a subject, client id or group means something only at its issuer, and
/// another provider's `alice` is somebody else.
fn provider_of<'a>(
    rule: &SuggestedRule,
    s: &RouteSection<'_>,
    providers: &'a ProviderNames,
) -> Option<&'a str> {
    let mut issuers = rule
        .callers
        .iter()
        .map(|&i| s.callers.get(i as usize).and_then(|c| c.issuer));
    let first = issuers.next()??;
    if !issuers.all(|i| i == Some(first)) {
        return None;
    }
    let issuer = s.issuers.get(usize::from(first))?;
    providers.get(issuer).map(String::as_str)
}

/// The comment's account of the callers a rule covers.
fn who(rule: &SuggestedRule, callers: &[Caller]) -> String {
    let mut names: Vec<&str> = rule
        .callers
        .iter()
        .filter_map(|&i| callers.get(i as usize))
        .map(|c| c.id.as_str())
        .collect();
    names.sort_unstable();
    match &rule.principal {
        Principal::Group(g) => format!(
            "group {} ({} {} seen: {})",
            comment_text(g),
            names.len(),
            if names.len() == 1 { "person" } else { "people" },
            named(&names)
        ),
        p => format!("{} {}", p.condition(), named(&names)),
    }
}

fn named(names: &[&str]) -> String {
    let mut shown: Vec<String> = names
        .iter()
        .take(NAMED_CALLERS)
        .map(|n| comment_text(n))
        .collect();
    if names.len() > NAMED_CALLERS {
        shown.push(format!("and {} more", names.len() - NAMED_CALLERS));
    }
    shown.join(", ")
}

fn list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = values.into_iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

/// A YAML double-quoted scalar: `"` and `\` escaped, every character YAML
/// would not keep as is (controls, line and paragraph separators, BOM) as `\u`,
/// and `${` as `$${`, so the config loader keeps it as written: a caller's
/// claim `${COOKIE_SECRET}` would otherwise become the secret itself in the
/// policy (and in a `full` explanation), or an error for an unset variable.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek() == Some(&'{') => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text safe inside a `#` comment: control characters escaped (no line ends).
fn comment_text(s: &str) -> String {
    portcullis_policy::clean(s).replace(['\u{2028}', '\u{2029}'], " ")
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::grouping::CallerKind;

    #[test]
    fn values_are_quoted_so_no_audit_text_can_break_out() {
        assert_eq!(quoted("a\"b\\c\nd\u{2028}"), r#""a\"b\\c\u000ad\u2028""#);
        assert_eq!(quoted("${HOME}$x$"), r#""$${HOME}$x$""#);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }

    #[test]
    fn callers_of_two_providers_get_no_providers_condition() {
        let caller = |issuer| Caller {
            kind: CallerKind::User,
            id: "alice".into(),
            issuer: Some(issuer),
            groups: vec![],
        };
        let callers = vec![caller(0), caller(1)];
        let issuers = vec!["https://a".to_string(), "https://b".to_string()];
        let providers = ProviderNames::from([
            ("https://a".into(), "a".into()),
            ("https://b".into(), "b".into()),
        ]);
        let rule = |callers: Vec<u32>| SuggestedRule {
            principal: Principal::Subjects(vec!["alice".into()]),
            methods: vec!["GET".into()],
            paths: vec!["/x".into()],
            requests: 1,
            callers,
        };
        let section = |rules| RouteSection {
            name: "api",
            mode: PolicyMode::Enforce,
            permitted: 2,
            shadow_denied: 0,
            rules,
            callers: &callers,
            issuers: &issuers,
        };
        let mixed = render(
            "a.log",
            2,
            &[section(vec![rule(vec![0, 1])])],
            &[],
            &providers,
        );
        assert!(!mixed.contains("providers:"), "{mixed}");
        let one = render("a.log", 2, &[section(vec![rule(vec![1])])], &[], &providers);
        assert!(one.contains("          providers: [\"b\"]\n"), "{one}");
    }

    #[test]
    fn output_is_a_routes_list_that_the_config_loader_accepts() {
        let callers = vec![Caller {
            kind: CallerKind::Client,
            id: "evil\n  - name: x ${COOKIE_SECRET}".into(),
            issuer: Some(0),
            groups: vec![],
        }];
        let issuers = vec!["https://idp.example".to_string()];
        let rule = SuggestedRule {
            principal: Principal::Clients(vec!["evil\n  - name: x ${COOKIE_SECRET}".into()]),
            methods: vec!["GET".into()],
            paths: vec!["/api/*".into(), "/api/**".into()],
            requests: 3,
            callers: vec![0],
        };
        let sections = [RouteSection {
            name: "api",
            mode: PolicyMode::Audit,
            permitted: 3,
            shadow_denied: 1,
            rules: vec![rule],
            callers: &callers,
            issuers: &issuers,
        }];
        let providers = ProviderNames::from([("https://idp.example".into(), "idp".into())]);
        let yaml = render(
            "audit\n.log",
            10,
            &sections,
            &[("other".into(), "no traffic")],
            &providers,
        );
        // Every line is a comment, the list, or part of a rule: nothing injected.
        assert!(
            yaml.lines()
                .all(|l| !l.trim_start().starts_with("- name: x")),
            "{yaml}"
        );
        // Splice it into a config as a person would and load that.
        let rules = yaml.split_once("    policy:\n").unwrap().1;
        let rules = rules
            .lines()
            .take_while(|l| !l.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let config = format!(
            "providers:\n  - name: idp\n    issuer: https://idp.example\n    audiences: [api]\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: http://127.0.0.1:9\n    mode: audit\n    policy:\n{rules}\n"
        );
        let loaded = portcullis_config::load_str(&config, "t.yaml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{config}"));
        let allow = &loaded.config.routes[0].policy.as_ref().unwrap().allow;
        // Kept as written: the loader (no variable is set here) expanded nothing.
        assert_eq!(
            allow[0].clients.as_ref().unwrap()[0],
            "evil\n  - name: x ${COOKIE_SECRET}"
        );
        assert_eq!(allow[0].name.as_deref(), Some("suggested-1"));
        assert_eq!(
            allow[0].providers.as_deref(),
            Some(&["idp".to_string()][..])
        );
    }
}
