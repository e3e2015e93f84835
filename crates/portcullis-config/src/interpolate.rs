//! `${NAME}` → environment variable, in every string value (SPEC §2).
//!
//! Why not serde-saphyr's `properties` feature: with `PropertySyntax::Braced` it
//! only interpolates *plain* scalars, so `secret: "${COOKIE_SECRET}"` or
//! `hosts: ["*.${DOMAIN}"]` (which must be quoted) would silently keep the literal
//! text; its Docker-Compose modes interpolate quoted values but turn an unset variable
//! into an empty string and also expand bare `$NAME` (which appears in regexes). It
//! also stops at the first unset variable, while `check` must list every one.
//!
//! So interpolation is done here, on scalars found by the [`crate::layout`] walk:
//! each value scalar whose *parsed* text holds a reference is expanded, and its
//! source span is replaced by a double-quoted YAML scalar with every special
//! character escaped. An environment value therefore can never change the YAML
//! structure (no `: `, `#`, newline or quote can escape the string), and it is never
//! expanded again. Keys are never interpolated. A double-quoted scalar still
//! deserializes into numbers, booleans and durations, so `retries: ${RETRIES}` works.
//!
//! A value whose reference fails is left as written and reported; parsing and
//! validation go on so that `check` lists the file's other errors as well.
//!
//! `$${` is a literal `${`. References inside `|`/`>` block scalars are refused: a
//! block scalar cannot be rewritten in place without changing its indentation rules.

use crate::layout::{Layout, ValueScalar};
use crate::path::KeyPath;
use crate::position::{Edit, SourceMap};
use serde_saphyr::granit_parser::ScalarStyle;

/// The text that is actually parsed, the map back to the user's file, and the
/// references that could not be expanded.
#[derive(Debug)]
pub(crate) struct Interpolated {
    pub(crate) text: String,
    pub(crate) map: SourceMap,
    /// Values left as written because a reference in them failed. Parsing goes on
    /// regardless, so that the other errors of the file are reported too.
    pub(crate) errors: Vec<InterpolationError>,
}

/// A reference that could not be expanded, at the start of its value.
#[derive(Debug)]
pub(crate) struct InterpolationError {
    pub(crate) offset: usize,
    pub(crate) path: KeyPath,
    pub(crate) message: String,
}

/// Expands every `${NAME}` in the value scalars of `layout`. Environment values
/// never appear in messages (they are often secrets).
pub(crate) fn interpolate(
    text: &str,
    layout: &Layout,
    env: &dyn Fn(&str) -> Option<String>,
) -> Interpolated {
    let mut errors = Vec::new();
    let mut replacements: Vec<(&ValueScalar, String)> = Vec::new();
    for scalar in &layout.dollar_scalars {
        let prefix = if scalar.path.is_root() {
            String::new()
        } else {
            format!("{}: ", scalar.path)
        };
        match expand(&scalar.value, env) {
            Ok(None) => {}
            Ok(Some(_)) if matches!(scalar.style, ScalarStyle::Literal | ScalarStyle::Folded) => {
                errors.push(InterpolationError {
                    offset: scalar.span.start,
                    path: scalar.path.clone(),
                    message: format!(
                        "{prefix}${{NAME}} is not replaced inside a `|` or `>` block scalar: \
                         write the value as a quoted string"
                    ),
                });
            }
            Ok(Some(expanded)) => replacements.push((scalar, expanded)),
            Err(problems) => errors.extend(problems.into_iter().map(|p| InterpolationError {
                offset: scalar.span.start,
                path: scalar.path.clone(),
                message: format!("{prefix}{p}"),
            })),
        }
    }

    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::with_capacity(replacements.len());
    let mut copied = 0;
    for (scalar, expanded) in replacements {
        let span = scalar.span.clone();
        out.push_str(text.get(copied..span.start).unwrap_or(""));
        let start = out.len();
        push_double_quoted(&mut out, &expanded);
        edits.push(Edit {
            original: span.clone(),
            rewritten: start..out.len(),
        });
        copied = span.end;
    }
    out.push_str(text.get(copied..).unwrap_or(""));
    Interpolated {
        text: out,
        map: SourceMap::new(edits),
        errors,
    }
}

/// Expands the references in one value: `Ok(None)` when it has none.
fn expand(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Vec<String>> {
    let mut out = String::with_capacity(value.len());
    let mut problems = Vec::new();
    let mut changed = false;
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            changed = true;
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            changed = true;
            match reference_name(after) {
                Some(name) => {
                    match env(name) {
                        Some(v) => out.push_str(&v),
                        None => problems.push(format!(
                            "environment variable `{name}` is not set: export it or remove ${{{name}}}"
                        )),
                    }
                    rest = &after[name.len() + 1..];
                }
                None => {
                    // The text is not shown: it may be a secret that happens to
                    // hold `${` (a `client_secret`, a cookie secret), and the
                    // key this prefixes already says where it is.
                    problems.push(
                        "a `${` that does not start a reference: write ${NAME} (letters, \
                         digits and _), or $${ for a literal ${"
                            .to_string(),
                    );
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if !problems.is_empty() {
        Err(problems)
    } else if changed {
        Ok(Some(out))
    } else {
        Ok(None)
    }
}

/// The `NAME` of `NAME}...`, when well formed.
fn reference_name(after_brace: &str) -> Option<&str> {
    let end = after_brace.find('}')?;
    let name = &after_brace[..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Writes `value` as a YAML double-quoted scalar in which every character that could
/// end the string or the line is escaped.
fn push_double_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
                ) =>
            {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::walk;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("idp.example.com".into()),
            "EVIL" => Some("x\"\n  injected: true # \\ \u{2028}".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, Vec<String>> {
        let layout = walk(text).map_err(|e| vec![e.message])?;
        let done = interpolate(text, &layout, &env);
        if done.errors.is_empty() {
            Ok(done.text)
        } else {
            Err(done.errors.into_iter().map(|e| e.message).collect())
        }
    }

    #[test]
    fn failed_values_are_left_as_written_and_the_rest_is_expanded() {
        let text = "a: ${NOPE}\nb: ${HOST}\n";
        let layout = walk(text).unwrap();
        let done = interpolate(text, &layout, &env);
        assert_eq!(done.text, "a: ${NOPE}\nb: \"idp.example.com\"\n");
        assert_eq!(done.errors.len(), 1);
        assert_eq!(done.errors[0].path.to_string(), "a");
    }

    #[test]
    fn expands_plain_and_quoted_values() {
        assert_eq!(
            run("a: https://${HOST}/x\nb: \"*.${HOST}\"\nc: '${HOST}'\n").unwrap(),
            "a: \"https://idp.example.com/x\"\nb: \"*.idp.example.com\"\nc: \"idp.example.com\"\n"
        );
    }

    #[test]
    fn leaves_other_dollars_alone() {
        let text = "r: ^/a$\ns: $HOST\nt: $${HOST}\n";
        assert_eq!(run(text).unwrap(), "r: ^/a$\ns: $HOST\nt: \"${HOST}\"\n");
    }

    #[test]
    fn escapes_injection_attempts() {
        let out = run("a: ${EVIL}\n").unwrap();
        assert_eq!(out, "a: \"x\\\"\\n  injected: true # \\\\ \\u2028\"\n");
    }

    #[test]
    fn reports_every_unset_or_malformed_reference() {
        let errors = run("a: ${NOPE}\nb: \"${ALSO_NOPE} ${HOST}\"\nc: ${1x}\n").unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("a: environment variable `NOPE` is not set"));
        assert!(errors[1].starts_with("b: environment variable `ALSO_NOPE`"));
        assert!(errors[2].starts_with("c: a `${` that does not start a reference"));
        // Never the text itself: it may be a secret holding `${`.
        let errors = run("secret: \"Xy7${Qp9-Zr!\"\n").unwrap_err();
        assert!(!errors[0].contains("Qp9"), "{errors:?}");
    }

    #[test]
    fn refuses_block_scalars_with_references() {
        let errors = run("a: |\n  ${HOST}\n").unwrap_err();
        assert!(errors[0].contains("block scalar"), "{errors:?}");
    }
}
