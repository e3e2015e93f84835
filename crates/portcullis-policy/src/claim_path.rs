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

/// True when a scalar claim value equals `want`: strings as they are, booleans
/// as written in JSON (`true`), numbers by value (`0`, `0.0`, `-0` and `0e0`
/// are one number: compared as text, a deny rule for `0` would miss the
/// others).
fn scalar_equals(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Number(n) => number_equals(n, want),
        _ => false,
    }
}

/// `n` and the number `want` spells (as JSON would) are the same value.
/// Integers are compared exactly, so large ones never meet through rounding.
fn number_equals(n: &serde_json::Number, want: &str) -> bool {
    let Ok(w) = serde_json::from_str::<serde_json::Number>(want.trim()) else {
        return false;
    };
    if let (Some(a), Some(b)) = (n.as_i64(), w.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (n.as_u64(), w.as_u64()) {
        return a == b;
    }
    match (n.as_f64(), w.as_f64()) {
        (Some(a), Some(b)) => a == b,
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
        // By value, not by spelling.
        assert!(value_matches(get("n"), &acc(&["42.0"])));
        assert!(!value_matches(get("n"), &acc(&["42.5", "x", ""])));
        for zero in [
            json!(0),
            json!(0.0),
            json!(-0.0),
            serde_json::from_str("-0").unwrap(),
        ] {
            assert!(value_matches(&zero, &acc(&["0"])), "{zero}");
            assert!(value_matches(&zero, &acc(&["0.0"])), "{zero}");
        }
        let big = json!(u64::MAX);
        assert!(value_matches(&big, &acc(&["18446744073709551615"])));
        assert!(!value_matches(&big, &acc(&["18446744073709551614"])));
        assert!(!value_matches(&json!(-1), &acc(&["18446744073709551615"])));
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
