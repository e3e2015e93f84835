//! Claim paths: where an identity attribute lives inside a token's claims.
//!
//! A path is keys separated by dots: `realm_access.roles`,
//! `resource_access.my-client.roles`. A key that itself contains dots (Auth0's
//! namespaced claims) or other punctuation is written in brackets and quotes:
//! `["https://example.com/roles"]`, `app["x.y"].roles`. Quotes may be `"` or `'`;
//! inside them `\"`, `\'` and `\\` escape.

/// Splits a claim path into its keys.
///
/// ```
/// use portcullis_config::parse_claim_path;
/// assert_eq!(parse_claim_path("realm_access.roles").unwrap(), ["realm_access", "roles"]);
/// assert_eq!(
///     parse_claim_path(r#"["https://example.com/roles"]"#).unwrap(),
///     ["https://example.com/roles"]
/// );
/// assert!(parse_claim_path("a..b").is_err());
/// ```
///
/// The error says what is wrong and how to write it instead.
pub fn parse_claim_path(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Err("empty claim path: write a claim name such as `groups`".to_string());
    }
    let mut keys = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        // One key: bracketed or bare.
        match chars.peek() {
            Some(&(_, '[')) => {
                chars.next();
                let quote = match chars.next() {
                    Some((_, q @ ('"' | '\''))) => q,
                    _ => {
                        return Err(format!(
                            "invalid claim path `{s}`: a bracketed key must be quoted, \
                             like [\"https://example.com/roles\"]"
                        ))
                    }
                };
                let mut key = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e @ ('"' | '\'' | '\\'))) => key.push(e),
                            _ => {
                                return Err(format!(
                                    "invalid claim path `{s}`: only \\\", \\' and \\\\ \
                                     escapes are allowed inside brackets"
                                ))
                            }
                        },
                        c if c == quote => {
                            closed = true;
                            break;
                        }
                        c => key.push(c),
                    }
                }
                if !closed || chars.next().map(|(_, c)| c) != Some(']') {
                    return Err(format!(
                        "invalid claim path `{s}`: unterminated bracketed key, \
                         write it like [\"https://example.com/roles\"]"
                    ));
                }
                if key.is_empty() {
                    return Err(format!("invalid claim path `{s}`: empty key in brackets"));
                }
                keys.push(key);
            }
            Some(_) => {
                let mut key = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    if c == ']' || c == '"' || c == '\'' || c.is_whitespace() || c.is_control() {
                        return Err(format!(
                            "invalid claim path `{s}`: `{}` is not allowed in a bare key; \
                             write that key in brackets, like [\"my key\"]",
                            c.escape_default()
                        ));
                    }
                    key.push(c);
                    chars.next();
                }
                if key.is_empty() {
                    return Err(format!("invalid claim path `{s}`: empty key"));
                }
                keys.push(key);
            }
            None => return Err(format!("invalid claim path `{s}`: ends with `.`")),
        }
        // Between keys: `.` before a bare or bracketed key, or directly `[`.
        match chars.peek() {
            None => return Ok(keys),
            Some(&(_, '.')) => {
                chars.next();
                if chars.peek().is_some_and(|&(_, c)| c == '.') {
                    return Err(format!("invalid claim path `{s}`: empty key between dots"));
                }
            }
            Some(&(_, '[')) => {}
            Some(&(_, c)) => {
                return Err(format!(
                    "invalid claim path `{s}`: unexpected `{c}` after a bracketed key"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_claim_path as p;

    #[test]
    fn bare_and_bracketed_keys() {
        assert_eq!(p("sub").unwrap(), ["sub"]);
        assert_eq!(p("realm_access.roles").unwrap(), ["realm_access", "roles"]);
        assert_eq!(
            p("resource_access.my-client.roles").unwrap(),
            ["resource_access", "my-client", "roles"]
        );
        assert_eq!(
            p(r#"["https://example.com/roles"]"#).unwrap(),
            ["https://example.com/roles"]
        );
        assert_eq!(p(r#"app["x.y"].roles"#).unwrap(), ["app", "x.y", "roles"]);
        assert_eq!(p(r#"app.['x.y']"#).unwrap(), ["app", "x.y"]);
        assert_eq!(p(r#"["a\"b"]["c"]"#).unwrap(), ["a\"b", "c"]);
    }

    #[test]
    fn malformed_paths_say_why() {
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a[b]",
            r#"a["b"#,
            r#"a["b"x"#,
            r#"a[""]"#,
            r#"["a"]b"#,
            "my key",
            "a]b",
        ] {
            let err = p(bad).expect_err(bad);
            assert!(err.contains("claim path"), "{bad}: {err}");
        }
    }
}
