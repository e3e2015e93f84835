//! Human renderings of a [`Decision`]: the text `portcullis explain` prints, the
//! message a 403 body carries at each `explain_to_caller` level, and the HTML page
//! browsers get.
//!
//! Every value that came from a request or a token is sanitized: control characters
//! are escaped in text (no terminal escape injection), and everything is
//! HTML-escaped in the page.

use crate::decision::{Basis, Combine, ConditionTrace, Decision, Outcome, RuleList, RuleTrace};
use portcullis_config::ExplainToCaller;
use portcullis_core::{Identity, Reason};
use std::fmt::Write as _;

/// Control characters shown as `\u{…}` escapes, everything else as is: request and
/// token values reach terminals and logs through these renderings.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn list(values: &[String]) -> String {
    let parts: Vec<String> = values.iter().map(|v| clean(v)).collect();
    format!("[{}]", parts.join(", "))
}

fn join_words(values: &[String], word: &str) -> String {
    let parts: Vec<String> = values.iter().map(|v| clean(v)).collect();
    match parts.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {word} {last}", rest.join(", ")),
    }
}

fn have(values: &[String]) -> String {
    if values.is_empty() {
        "none".to_string()
    } else {
        values
            .iter()
            .map(|v| clean(v))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn combine_words(c: Combine) -> &'static str {
    match c {
        Combine::AnyOf => "any of",
        Combine::AllOf => "all of",
        Combine::Equals => "",
    }
}

/// `needs group admins or ops; you have: users, dev`.
fn needs_clause(c: &ConditionTrace) -> String {
    if &*c.condition == "authenticated" {
        let wants_auth = c.required.first().map(String::as_str) == Some("true");
        return if wants_auth {
            "needs a signed-in caller; you have: none".to_string()
        } else {
            "needs an anonymous caller; you are signed in".to_string()
        };
    }
    let values: &[String] = if &*c.condition == "scopes" && !c.missing.is_empty() {
        // Only what is lacking: the caller already has the rest.
        &c.missing
    } else {
        &c.required
    };
    let (noun, word) = match &*c.condition {
        "scopes" if values.len() == 1 => ("scope".to_string(), "and"),
        "scopes" => ("scopes".to_string(), "and"),
        "methods" => ("method".to_string(), "or"),
        "paths" => ("path matching".to_string(), "or"),
        "subjects" => ("subject".to_string(), "or"),
        "emails" => ("email".to_string(), "or"),
        "email_domains" => ("email domain".to_string(), "or"),
        "groups" => ("group".to_string(), "or"),
        "roles" => ("role".to_string(), "or"),
        "clients" => ("client".to_string(), "or"),
        "workloads" => ("workload matching".to_string(), "or"),
        "providers" => ("provider".to_string(), "or"),
        other => {
            let claim = other.strip_prefix("claims.").unwrap_or(other);
            (format!("claim {} =", clean(claim)), "or")
        }
    };
    let required = if values.is_empty() {
        "(nothing can match)".to_string()
    } else {
        join_words(values, word)
    };
    format!("needs {noun} {required}; you have: {}", have(&c.actual))
}

fn rule_heading(t: &RuleTrace) -> String {
    match &t.rule.name {
        Some(n) => format!("{} {}", t.position, clean(n)),
        None => t.position.clone(),
    }
}

impl Decision {
    /// The text `portcullis explain` prints: the route, each evaluated rule with each
    /// condition (✓/✗, required vs actual), and last the decision, `allow` or
    /// `deny: REASON`.
    pub fn explain_text(&self) -> String {
        let mut out = String::new();
        match (&self.route, self.route_index) {
            (Some(name), Some(i)) => {
                let _ = writeln!(out, "route: {} (routes[{i}])", clean(name));
            }
            _ => {
                let _ = writeln!(out, "route: none matched");
            }
        }
        if !self.enforced {
            let _ = writeln!(out, "mode: audit (the decision is logged, not enforced)");
        }
        for t in self.rules.iter().flatten() {
            let verdict = if t.matched { "match" } else { "no match" };
            let _ = writeln!(out, "{}: {verdict}", rule_heading(t));
            for c in &t.conditions {
                let mark = if c.passed { '✓' } else { '✗' };
                let required = match c.combine {
                    Combine::Equals => have(&c.required),
                    other => format!("{} {}", combine_words(other), list(&c.required)),
                };
                let _ = write!(
                    out,
                    "  {mark} {}: requires {required}; actual {}",
                    clean(&c.condition),
                    list(&c.actual)
                );
                if !c.missing.is_empty() {
                    let _ = write!(out, "; missing {}", list(&c.missing));
                }
                out.push('\n');
            }
        }
        let basis = match self.basis {
            Basis::DenyRule | Basis::AllowRule => self
                .rule
                .as_ref()
                .map(|r| format!("decided by rule {}", clean(&r.label())))
                .unwrap_or_default(),
            Basis::NoAllowMatched => "no allow rule matched".to_string(),
            Basis::NoPolicyDefaultDeny => "no policy: denied by default".to_string(),
            Basis::NoPolicyOpen => "no policy: every caller passes".to_string(),
            Basis::NoRoute => "no route matches this request".to_string(),
        };
        let _ = writeln!(out, "{basis}");
        if !self.missing_scopes.is_empty() {
            let _ = writeln!(out, "missing scopes: {}", list(&self.missing_scopes));
        }
        match self.outcome {
            Outcome::Allow => out.push_str("allow\n"),
            Outcome::Deny => {
                let _ = writeln!(out, "deny: {}", self.reason.as_str());
            }
        }
        out
    }

    /// The message of a denial's response body, at the given level: `none` says only
    /// `forbidden`; `reason` says why in one sentence; `full` says, condition by
    /// condition, what the caller lacked (`needs group admins; you have: users, dev`).
    pub fn caller_message(&self, level: ExplainToCaller) -> String {
        if self.outcome == Outcome::Allow {
            return "allowed".to_string();
        }
        if level == ExplainToCaller::None {
            return match self.reason {
                Reason::Forbidden | Reason::InsufficientScope => "forbidden".to_string(),
                other => other.as_str().to_string(),
            };
        }
        let full = level == ExplainToCaller::Full;
        match self.basis {
            Basis::NoRoute => "no route matches this request".to_string(),
            Basis::NoPolicyDefaultDeny => "no policy: denied by default".to_string(),
            Basis::DenyRule => {
                let label = self
                    .rule
                    .as_ref()
                    .map(|r| clean(&r.label()))
                    .unwrap_or_default();
                let deciding = self
                    .rules
                    .iter()
                    .flatten()
                    .rfind(|t| t.matched && t.rule.list == RuleList::Deny);
                match deciding {
                    Some(t) if full && !t.conditions.is_empty() => {
                        let matched: Vec<String> = t
                            .conditions
                            .iter()
                            .map(|c| format!("{} {}", clean(&c.condition), have(&c.required)))
                            .collect();
                        format!("denied by rule {label}: matched {}", matched.join("; "))
                    }
                    _ => format!("denied by rule {label}"),
                }
            }
            Basis::NoAllowMatched if self.reason == Reason::InsufficientScope => {
                let noun = if self.missing_scopes.len() == 1 {
                    "scope"
                } else {
                    "scopes"
                };
                let scopes = join_words(&self.missing_scopes, "and");
                if full {
                    // Every trace shows the same caller scopes; take the first.
                    let have_scopes = self
                        .rules
                        .iter()
                        .flatten()
                        .flat_map(|t| t.conditions.iter())
                        .find(|c| &*c.condition == "scopes")
                        .map(|c| have(&c.actual))
                        .unwrap_or_else(|| "none".to_string());
                    format!("needs {noun} {scopes}; you have: {have_scopes}")
                } else {
                    format!("missing {noun}: {scopes}")
                }
            }
            Basis::NoAllowMatched => {
                // Without the explanation (never the case for a denial built by
                // `evaluate`) there is no detail to give.
                if !full || self.rules.is_none() {
                    return "no policy rule allows this request".to_string();
                }
                let failed: Vec<&RuleTrace> = self
                    .rules
                    .iter()
                    .flatten()
                    .filter(|t| t.rule.list == RuleList::Allow && !t.matched)
                    .collect();
                let explain_rule = |t: &RuleTrace| {
                    t.conditions
                        .iter()
                        .filter(|c| !c.passed)
                        .map(needs_clause)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                match failed.as_slice() {
                    [] => "no policy rule allows this request: the route has no allow rule"
                        .to_string(),
                    [one] => explain_rule(one),
                    many => many
                        .iter()
                        .map(|t| format!("{}: {}", clean(&t.rule.label()), explain_rule(t)))
                        .collect::<Vec<_>>()
                        .join("; or "),
                }
            }
            // An allowing basis with a deny outcome cannot be built; say something true.
            Basis::AllowRule | Basis::NoPolicyOpen => self.reason.as_str().to_string(),
        }
    }

    /// A plain HTML page for a browser that was denied: who the caller is, the route,
    /// what was missing (at `level`, see [`caller_message`](Self::caller_message)) and
    /// the request id. Every value is HTML-escaped. With level `none` the route is not
    /// named either.
    pub fn html_page(
        &self,
        identity: &Identity,
        request_id: &str,
        level: ExplainToCaller,
    ) -> String {
        let status = self.reason.status();
        let title = match self.reason {
            Reason::Forbidden | Reason::InsufficientScope => "Access denied",
            Reason::NoRoute => "Not found",
            Reason::Allowed => "Allowed",
            _ => "Request refused",
        };
        let who = if identity.is_authenticated() {
            let name = identity
                .email
                .as_deref()
                .or(identity.name.as_deref())
                .filter(|s| !s.is_empty())
                .or(Some(identity.subject.as_str()).filter(|s| !s.is_empty()))
                .or(identity.workload.as_deref())
                .or(identity.client_id.as_deref())
                .unwrap_or("an unnamed caller");
            format!(
                "You are signed in as <strong>{}</strong>.",
                html_escape(name)
            )
        } else {
            "You are not signed in.".to_string()
        };
        let mut body = String::new();
        let _ = writeln!(body, "<p>{who}</p>");
        if level != ExplainToCaller::None {
            if let Some(route) = &self.route {
                let _ = writeln!(
                    body,
                    "<p>You may not use <strong>{}</strong>.</p>",
                    html_escape(route)
                );
            }
        }
        let _ = writeln!(
            body,
            "<p>What was missing: {}</p>",
            html_escape(&self.caller_message(level))
        );
        let _ = writeln!(
            body,
            "<p>Request ID: <code>{}</code></p>",
            html_escape(request_id)
        );
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{status} {title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n"
        )
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
