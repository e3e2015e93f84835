//! Claim paths: `realm_access.roles`, `resource_access.my-client.roles`,
//! `["https://example.com/roles"]`, `resource_access["my.client"].roles`.
//!
//! TODO(unify): `portcullis_config::parse_claim_path` is being written with the
//! same grammar; once it lands, call it and delete [`parse`] so `check` and the
//! runtime can never disagree. Grammar: segments separated by `.`; a segment is
//! either bare (no `.`, `[`, `]`, `"`) or `["…"]` / `['…']` holding any characters
//! except its own quote; a bracketed segment may follow another without a dot.

use serde_json::Value;

/// Splits a claim path into its keys.
pub(crate) fn parse(path: &str) -> Result<Vec<String>, String> {
    let err = |what: &str| format!("invalid claim path `{path}`: {what}");
    let mut out = Vec::new();
    let mut rest = path;
    if rest.is_empty() {
        return Err(err("empty"));
    }
    loop {
        if let Some(after) = rest.strip_prefix('[') {
            let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
            let Some(q) = quote else {
                return Err(err("a bracketed key must be quoted: [\"key\"]"));
            };
            let inner = &after[1..];
            let Some(end) = inner.find(q) else {
                return Err(err("unterminated quote"));
            };
            let key = &inner[..end];
            if key.is_empty() {
                return Err(err("empty key"));
            }
            out.push(key.to_string());
            rest = inner[end + 1..]
                .strip_prefix(']')
                .ok_or_else(|| err("expected `]` after the quoted key"))?;
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..end];
            if key.is_empty() || key.contains([']', '"']) {
                return Err(err("empty or malformed key"));
            }
            out.push(key.to_string());
            rest = &rest[end..];
        }
        if rest.is_empty() {
            return Ok(out);
        }
        if let Some(after) = rest.strip_prefix('.') {
            if after.is_empty() {
                return Err(err("trailing `.`"));
            }
            rest = after;
        } else if !rest.starts_with('[') {
            return Err(err("expected `.` or `[`"));
        }
    }
}

/// The value at `path` in `root`, walking objects only.
pub(crate) fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, key| v.as_object()?.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grammar() {
        assert_eq!(parse("sub").unwrap(), ["sub"]);
        assert_eq!(
            parse("realm_access.roles").unwrap(),
            ["realm_access", "roles"]
        );
        assert_eq!(
            parse(r#"["https://example.com/roles"]"#).unwrap(),
            ["https://example.com/roles"]
        );
        assert_eq!(
            parse(r#"resource_access["my.client"].roles"#).unwrap(),
            ["resource_access", "my.client", "roles"]
        );
        assert_eq!(parse("['a.b']['c']").unwrap(), ["a.b", "c"]);
        assert_eq!(parse("cognito:groups").unwrap(), ["cognito:groups"]);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "[a]",
            "[\"a\"",
            "[\"\"]",
            "a[\"b\"]c",
            "a]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn walks_objects_only() {
        let v = json!({"a": {"b.c": [1], "d": {"e": "x"}}});
        assert_eq!(lookup(&v, &parse("a.d.e").unwrap()), Some(&json!("x")));
        assert_eq!(
            lookup(&v, &parse(r#"a["b.c"]"#).unwrap()),
            Some(&json!([1]))
        );
        assert_eq!(lookup(&v, &parse("a.b").unwrap()), None);
        assert_eq!(lookup(&v, &parse(r#"a["b.c"].x"#).unwrap()), None);
    }
}
