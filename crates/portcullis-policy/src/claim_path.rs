//! Claim values: following a parsed claim path (see
//! [`portcullis_config::parse_claim_path`], shared with `check` so both agree on
//! what a path means) and comparing a claim's JSON value with the strings a rule
//! accepts.

use serde_json::Value;

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
