//! Dotted claim paths (`realm_access.roles`, `["https://example.com/roles"]`) and
//! how a claim's JSON value is compared with the strings a rule accepts.
//!
//! The config loader is to grow `portcullis_config::parse_claim_path` with the same
//! grammar; until it exists this private copy is used so that `check` and policy
//! agree on what a path means.

use serde_json::Value;

/// Splits a claim path into its keys. Grammar: keys separated by `.`; a key that
/// contains `.` (or anything else) is written `["…"]` (no `"` inside), and may be
/// followed by `.key` or another `[…]`.
pub(crate) fn parse_claim_path(path: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut rest = path;
    if rest.is_empty() {
        return Err("empty claim path".to_string());
    }
    loop {
        if let Some(after) = rest.strip_prefix("[\"") {
            let Some(end) = after.find("\"]") else {
                return Err(format!("claim path `{path}`: unterminated `[\"`"));
            };
            let key = after.get(..end).unwrap_or("");
            if key.is_empty() || key.contains('"') {
                return Err(format!(
                    "claim path `{path}`: empty or quoted bracketed key"
                ));
            }
            keys.push(key.to_string());
            rest = after.get(end + 2..).unwrap_or("");
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = rest.get(..end).unwrap_or("");
            if key.is_empty() {
                return Err(format!("claim path `{path}`: empty key"));
            }
            if key.contains([']', '"']) {
                return Err(format!("claim path `{path}`: stray `]` or `\"`"));
            }
            keys.push(key.to_string());
            rest = rest.get(end..).unwrap_or("");
        }
        if rest.is_empty() {
            return Ok(keys);
        }
        if let Some(after) = rest.strip_prefix('.') {
            if after.is_empty() {
                return Err(format!("claim path `{path}`: trailing `.`"));
            }
            rest = after;
        } else if !rest.starts_with("[\"") {
            return Err(format!("claim path `{path}`: expected `.` or `[\"`"));
        }
    }
}

/// Follows `keys` through nested objects. `None` when any step is missing or not an
/// object.
pub(crate) fn lookup<'v>(claims: &'v Value, keys: &[String]) -> Option<&'v Value> {
    let mut v = claims;
    for key in keys {
        v = v.as_object()?.get(key.as_str())?;
    }
    Some(v)
}

/// True when a scalar claim value equals `want` by its JSON text: strings as they
/// are, numbers and booleans as written in JSON (`42`, `true`).
fn scalar_equals(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        // Numbers are rare in policies; their text form costs one small allocation.
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

/// True when the claim value is, or (for an array) contains, one of `accepted`.
/// Objects and `null` never match.
pub(crate) fn value_matches(v: &Value, accepted: &[String]) -> bool {
    match v {
        Value::Array(items) => items
            .iter()
            .any(|item| accepted.iter().any(|a| scalar_equals(item, a))),
        _ => accepted.iter().any(|a| scalar_equals(v, a)),
    }
}

/// The claim value as display strings, for explanations.
pub(crate) fn display_values(v: Option<&Value>) -> Vec<String> {
    fn one(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    match v {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(other) => vec![one(other)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_paths() {
        let ok = |p: &str| parse_claim_path(p).unwrap();
        assert_eq!(ok("sub"), vec!["sub"]);
        assert_eq!(ok("realm_access.roles"), vec!["realm_access", "roles"]);
        assert_eq!(
            ok(r#"["https://example.com/roles"]"#),
            vec!["https://example.com/roles"]
        );
        assert_eq!(
            ok(r#"resource_access["my.client"].roles"#),
            vec!["resource_access", "my.client", "roles"]
        );
        assert_eq!(ok(r#"["a"]["b"]"#), vec!["a", "b"]);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            r#"["a"#,
            r#"[""]"#,
            "a]",
            r#"["a"]x"#,
        ] {
            assert!(parse_claim_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compares_values() {
        let claims =
            json!({"n": 42, "b": true, "s": "x", "a": ["p", 1, false], "o": {"k": "v"}, "z": null});
        let acc = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let get = |k: &str| lookup(&claims, &[k.to_string()]).unwrap();
        assert!(value_matches(get("n"), &acc(&["42"])));
        assert!(!value_matches(get("n"), &acc(&["42.0"])));
        assert!(value_matches(get("b"), &acc(&["true"])));
        assert!(value_matches(get("s"), &acc(&["y", "x"])));
        assert!(value_matches(get("a"), &acc(&["p"])));
        assert!(value_matches(get("a"), &acc(&["1"])));
        assert!(value_matches(get("a"), &acc(&["false"])));
        assert!(!value_matches(get("a"), &acc(&["q"])));
        assert!(!value_matches(get("o"), &acc(&["v"])));
        assert!(!value_matches(get("z"), &acc(&["null"])));
        assert!(lookup(&claims, &["o".into(), "k".into()]).is_some());
        assert!(lookup(&claims, &["s".into(), "k".into()]).is_none());
    }
}
