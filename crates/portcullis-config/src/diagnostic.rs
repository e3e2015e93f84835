//! What the loader reports: one [`Diagnostic`] per problem, shown as
//! `FILE:LINE:COL: message`, the form editors and CI annotate.

use std::fmt;

/// One problem (or warning) in a config file, at a 1-based line and column.
///
/// `Display` is exactly `FILE:LINE:COL: message`, on one line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Diagnostic {
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong and what to do about it; always a single line.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic whose message is flattened onto one line (messages from
    /// dependencies, such as regex syntax errors, can span several).
    pub fn new(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: line.max(1),
            column: column.max(1),
            message: one_line(&message.into()),
        }
    }
}

/// Joins the lines of `text` with `; ` and drops control characters, so a diagnostic
/// can never break the one-problem-per-line output or smuggle terminal escapes.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
    }
    out
}

/// Every error found in a config; `Display` prints one [`Diagnostic`] per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.0
    }
}

/// Displays diagnostics one per line.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl IntoIterator for ConfigErrors {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_line_col_message_on_one_line() {
        let d = Diagnostic::new("p.yaml", 12, 9, "bad\n  regex\x1b[31m");
        assert_eq!(d.to_string(), "p.yaml:12:9: bad; regex [31m");
        let all = ConfigErrors(vec![d.clone(), Diagnostic::new("p.yaml", 0, 0, "x")]);
        assert_eq!(all.to_string(), format!("{d}\np.yaml:1:1: x"));
    }
}
