//! Key paths into the config document (`routes[1].match.path_regex`), shared by the
//! YAML layout walk and by validation so that both name a value the same way.

use std::fmt;

/// One step of a [`KeyPath`]: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A path from the document root to a value, displayed the way a user would point at
/// it: `providers[0].claims.roles`, `policy.allow[0].claims["https://x/roles"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root.
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        KeyPath(segments)
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    /// The enclosing path, or `None` at the root.
    pub(crate) fn parent(&self) -> Option<Self> {
        let (_, rest) = self.0.split_last()?;
        Some(KeyPath(rest.to_vec()))
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The top-level section this path is in.
    pub(crate) fn section(&self) -> Option<&str> {
        match self.0.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }
}

/// Keys made only of these characters are shown bare; anything else (dots, spaces,
/// URLs used as claim names) is bracketed and quoted so the path stays unambiguous.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '<')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) if is_bare_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_a_user_would_write_it() {
        let p = KeyPath::root()
            .key("routes")
            .index(1)
            .key("match")
            .key("path_regex");
        assert_eq!(p.to_string(), "routes[1].match.path_regex");
        let c = KeyPath::root()
            .key("claims")
            .key("https://example.com/roles");
        assert_eq!(c.to_string(), "claims[\"https://example.com/roles\"]");
        assert_eq!(
            p.parent().map(|p| p.to_string()).as_deref(),
            Some("routes[1].match")
        );
        assert!(KeyPath::root().parent().is_none());
    }
}
