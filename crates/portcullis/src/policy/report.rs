//! `policy report`: what the policy did, per route — which rules decided and which
//! never did anything, who was denied most often and why, and, for routes in
//! audit mode, how many requests enforcement would have refused.

use super::audit_read::{AuditLine, Decision, Kind};
use super::suggest_yaml::thousands;
use portcullis_config::{Config, PolicyMode, RuleConfig};
use portcullis_policy::clean;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Denied callers a route's section lists.
const TOP_DENIED: usize = 10;

#[derive(Debug, Default)]
struct RouteStats {
    requests: u64,
    allowed: u64,
    denied: u64,
    /// Denied in audit mode (`"enforced": false`): let through, but the policy
    /// would refuse them.
    shadow_denied: u64,
    /// Deciding rule label → requests.
    rules: HashMap<String, u64>,
    /// Caller label → denials.
    denied_callers: HashMap<String, Denials>,
}

#[derive(Debug, Default)]
struct Denials {
    requests: u64,
    reasons: BTreeMap<String, u64>,
}

/// Reads audit lines into per-route statistics.
#[derive(Debug, Default)]
pub struct Reporter {
    routes: Vec<(String, RouteStats)>,
    index: HashMap<String, usize>,
    /// Requests no route matched.
    unrouted: u64,
    /// Scratch buffer for the current line's caller label.
    caller: String,
}

impl Reporter {
    /// Takes in one audit line.
    pub fn observe(&mut self, line: &AuditLine<'_>) {
        let Some(route) = line.route.as_deref() else {
            self.unrouted += 1;
            return;
        };
        let i = match self.index.get(route) {
            Some(&i) => i,
            None => {
                self.routes.push((route.to_string(), RouteStats::default()));
                self.index.insert(route.to_string(), self.routes.len() - 1);
                self.routes.len() - 1
            }
        };
        let Some((_, stats)) = self.routes.get_mut(i) else {
            return;
        };
        stats.requests += 1;
        if let Some(rule) = line.rule.as_deref() {
            match stats.rules.get_mut(rule) {
                Some(n) => *n += 1,
                None => {
                    stats.rules.insert(rule.to_string(), 1);
                }
            }
        }
        if line.decision == Decision::Allow {
            stats.allowed += 1;
            return;
        }
        stats.denied += 1;
        if !line.enforced {
            stats.shadow_denied += 1;
        }
        caller_label(line, &mut self.caller);
        let denials = match stats.denied_callers.get_mut(self.caller.as_str()) {
            Some(d) => d,
            None => stats.denied_callers.entry(self.caller.clone()).or_default(),
        };
        denials.requests += 1;
        *denials.reasons.entry(line.reason.to_string()).or_insert(0) += 1;
    }

    /// The report, routes in config order, then routes the config does not have.
    pub fn render(&self, config: &Config, source: &str, lines: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "policy report from {} ({} audit lines)",
            clean(source),
            thousands(lines)
        );
        let empty = RouteStats::default();
        for (i, route) in config.routes.iter().enumerate() {
            let name = route.display_name(i);
            let stats = self
                .index
                .get(&name)
                .and_then(|&i| self.routes.get(i))
                .map_or(&empty, |(_, s)| s);
            let labels = rule_labels(
                route.policy.as_ref().map_or(&[][..], |p| &p.deny),
                route.policy.as_ref().map_or(&[][..], |p| &p.allow),
            );
            section(&mut out, &name, Some(route.mode), &labels, stats);
        }
        for (name, stats) in &self.routes {
            let known = config
                .routes
                .iter()
                .enumerate()
                .any(|(i, r)| r.display_name(i) == *name);
            if !known {
                section(&mut out, name, None, &[], stats);
            }
        }
        if self.unrouted > 0 {
            let _ = writeln!(
                out,
                "\nno route matched {} requests",
                thousands(self.unrouted)
            );
        }
        out
    }
}

/// How audit lines name each configured rule: its `name`, else `deny[i]`/`allow[i]`.
fn rule_labels(deny: &[RuleConfig], allow: &[RuleConfig]) -> Vec<String> {
    let label = |list: &str, i: usize, r: &RuleConfig| {
        r.name.clone().unwrap_or_else(|| format!("{list}[{i}]"))
    };
    let deny = deny.iter().enumerate().map(|(i, r)| label("deny", i, r));
    let allow = allow.iter().enumerate().map(|(i, r)| label("allow", i, r));
    deny.chain(allow).collect()
}

fn section(
    out: &mut String,
    name: &str,
    mode: Option<PolicyMode>,
    labels: &[String],
    s: &RouteStats,
) {
    let mode_word = match mode {
        Some(PolicyMode::Audit) => "mode audit",
        Some(PolicyMode::Enforce) => "mode enforce",
        None => "not in the config",
    };
    let _ = writeln!(
        out,
        "\nroute {} ({mode_word}): {} requests, {} allowed, {} denied",
        clean(name),
        thousands(s.requests),
        thousands(s.allowed),
        thousands(s.denied)
    );
    if mode == Some(PolicyMode::Audit) || s.shadow_denied > 0 {
        let _ = writeln!(
            out,
            "  enforcement would refuse {} of {} requests{}",
            thousands(s.shadow_denied),
            thousands(s.requests),
            percent(s.shadow_denied, s.requests)
        );
    }
    let mut decided: Vec<(&String, &u64)> = s.rules.iter().collect();
    decided.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if !decided.is_empty() {
        let parts: Vec<String> = decided
            .iter()
            .map(|(r, n)| format!("{} {}", clean(r), thousands(**n)))
            .collect();
        let _ = writeln!(out, "  rules that decided: {}", parts.join(", "));
    }
    let unused: Vec<String> = labels
        .iter()
        .filter(|l| !s.rules.contains_key(l.as_str()))
        .map(|l| clean(l))
        .collect();
    if !unused.is_empty() {
        let _ = writeln!(
            out,
            "  rules that never decided anything: {}",
            unused.join(", ")
        );
    }
    let stale: Vec<String> = decided
        .iter()
        .filter(|(r, _)| mode.is_some() && !labels.contains(r))
        .map(|(r, _)| clean(r))
        .collect();
    if !stale.is_empty() {
        let _ = writeln!(
            out,
            "  rules named in the audit lines but not in the config: {}",
            stale.join(", ")
        );
    }
    let mut denied: Vec<(&String, &Denials)> = s.denied_callers.iter().collect();
    denied.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
    if !denied.is_empty() {
        out.push_str("  callers denied most often:\n");
        for (caller, d) in denied.iter().take(TOP_DENIED) {
            let mut reasons: Vec<(&String, &u64)> = d.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let why: Vec<String> = reasons
                .iter()
                .map(|(r, n)| format!("{} {}", clean(r), thousands(**n)))
                .collect();
            let _ = writeln!(
                out,
                "    {:>8}  {}: {}",
                thousands(d.requests),
                clean(caller),
                why.join(", ")
            );
        }
        if denied.len() > TOP_DENIED {
            let _ = writeln!(out, "    and {} more callers", denied.len() - TOP_DENIED);
        }
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return String::new();
    }
    // Display only: the precision loss of huge counts does not matter here.
    let p = part as f64 * 100.0 / whole as f64;
    format!(" ({p:.1}%)")
}

/// `client billing`, `workload spiffe://…`, `user alice`, `service cron`, or
/// `anonymous`: the attribute a rule would name the caller by.
fn caller_label(line: &AuditLine<'_>, out: &mut String) {
    out.clear();
    let Some(id) = line.identity.as_ref() else {
        out.push_str("anonymous");
        return;
    };
    let pick = |v: &Option<std::borrow::Cow<'_, str>>| {
        v.as_deref().filter(|s| !s.is_empty()).map(str::to_string)
    };
    let (word, name) = match id.kind {
        Kind::Anonymous => ("anonymous", None),
        Kind::Service => match pick(&id.client_id) {
            Some(c) => ("client", Some(c)),
            None => ("service", pick(&id.sub)),
        },
        Kind::Workload => ("workload", pick(&id.workload)),
        Kind::User => ("user", pick(&id.sub)),
    };
    out.push_str(word);
    if let Some(name) = name {
        out.push(' ');
        out.push_str(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        route: &str,
        decision: &str,
        reason: &str,
        rule: Option<&str>,
        enforced: bool,
        id: &str,
    ) -> String {
        let rule = rule.map_or("null".to_string(), |r| format!("\"{r}\""));
        format!(
            r#"{{"method":"GET","path":"/x","route":"{route}","decision":"{decision}","reason":"{reason}","rule":{rule},"enforced":{enforced},"identity":{id}}}"#
        )
    }

    const ALICE: &str = r#"{"type":"user","sub":"alice","groups":["eng"]}"#;
    const BILLING: &str = r#"{"type":"service","sub":"billing","client_id":"billing"}"#;
    const NOBODY: &str = r#"{"type":"anonymous"}"#;

    fn report(config: &str, lines: &[String]) -> String {
        let config = portcullis_config::load_str(config, "t.yaml", &|_| None)
            .unwrap()
            .config;
        let mut r = Reporter::default();
        for l in lines {
            r.observe(&serde_json::from_str(l).unwrap());
        }
        r.render(&config, "audit.log", lines.len() as u64)
    }

    const CONFIG: &str = "routes:
  - name: api
    match: { path_prefix: /api }
    upstream: http://127.0.0.1:9
    mode: audit
    policy:
      deny:
        - groups: [interns]
      allow:
        - name: eng
          groups: [eng]
        - clients: [billing]
  - name: quiet
    match: { path_prefix: /quiet }
    upstream: http://127.0.0.1:9
    policy:
      allow:
        - groups: [eng]
";

    #[test]
    fn unused_and_stale_rules_denials_and_shadow_refusals() {
        let lines = vec![
            line("api", "allow", "allowed", Some("eng"), false, ALICE),
            line("api", "allow", "allowed", Some("old-rule"), false, BILLING),
            line("api", "deny", "forbidden", None, false, BILLING),
            line("api", "deny", "insufficient_scope", None, false, BILLING),
            line("api", "deny", "missing_token", None, true, NOBODY),
            line("gone", "allow", "allowed", None, true, ALICE),
        ];
        let text = report(CONFIG, &lines);
        for needle in [
            "route api (mode audit): 5 requests, 2 allowed, 3 denied\n",
            "enforcement would refuse 2 of 5 requests (40.0%)\n",
            "rules that decided: eng 1, old-rule 1\n",
            "rules that never decided anything: deny[0], allow[1]\n",
            "rules named in the audit lines but not in the config: old-rule\n",
            "       2  client billing: forbidden 1, insufficient_scope 1\n",
            "       1  anonymous: missing_token 1\n",
            "route quiet (mode enforce): 0 requests, 0 allowed, 0 denied\n  rules that never decided anything: allow[0]\n",
            "route gone (not in the config): 1 requests",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // An enforced route with no shadow denies says nothing about enforcement.
        let quiet = text.split("route quiet").nth(1).unwrap();
        assert!(!quiet
            .split("route gone")
            .next()
            .unwrap()
            .contains("enforcement"));
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        let evil = r#"{"type":"service","client_id":"x\u001b[31m\nroute fake"}"#;
        let text = report(
            CONFIG,
            &[line("api", "deny", "forbidden", None, false, evil)],
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains("\nroute fake"),
            "{text}"
        );
    }
}
