//! Claim paths: `realm_access.roles`, `["https://example.com/roles"]`,
//! `resource_access["my.client"].roles`. Parsing is the config crate's
//! [`portcullis_config::parse_claim_path`], so `portcullis check` and the runtime
//! can never disagree about a path; this module walks a parsed path.

use serde_json::Value;

/// Splits a claim path into its keys.
pub(crate) fn parse(path: &str) -> Result<Vec<String>, String> {
    portcullis_config::parse_claim_path(path)
}

/// The value at `path` in `root`, walking objects only (an array is never
/// indexed into: `groups.0` means a member named `0`, not the first group).
pub(crate) fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, key| v.as_object()?.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_used_by_the_documented_providers_parse() {
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
        assert_eq!(parse("cognito:groups").unwrap(), ["cognito:groups"]);
        assert_eq!(
            parse(r#"["kubernetes.io"].serviceaccount.name"#).unwrap(),
            ["kubernetes.io", "serviceaccount", "name"]
        );
        for bad in ["", "a..b", "a.", "[a]"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn walks_objects_only() {
        let v = json!({"a": {"b.c": [1], "d": {"e": "x"}, "l": ["x"]}});
        assert_eq!(lookup(&v, &parse("a.d.e").unwrap()), Some(&json!("x")));
        assert_eq!(
            lookup(&v, &parse(r#"a["b.c"]"#).unwrap()),
            Some(&json!([1]))
        );
        assert_eq!(lookup(&v, &parse("a.b").unwrap()), None);
        assert_eq!(lookup(&v, &parse("a.l.0").unwrap()), None);
    }
}
