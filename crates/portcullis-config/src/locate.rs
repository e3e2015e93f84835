//! Placing a message about a config path (`routes[3].match.path_regex`) at the
//! position in the file where that value is written, for errors found after
//! loading (by the compilation `serve` runs, which knows paths, not positions).

use crate::diagnostic::Diagnostic;
use crate::layout::walk;
use crate::path::KeyPath;
use crate::position::LineIndex;

/// A [`Diagnostic`] for `message` at the value of `path` in the config `text`, or at
/// its nearest written ancestor; at `1:1` when `path` is not a config path or the
/// text does not parse.
pub fn locate(text: &str, file: &str, path: &str, message: &str) -> Diagnostic {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let offset = parse_path(path)
        .zip(walk(text).ok())
        .and_then(|(path, layout)| layout.value_offset(&path));
    let (line, column) = offset.map_or((1, 1), |o| {
        let pos = LineIndex::new(text).pos(text, o);
        (pos.line, pos.column)
    });
    Diagnostic::new(file, line, column, message)
}

/// True when `text` reads as a config path: keys of `[a-z0-9_]` with `[N]` indexes,
/// joined by dots.
pub fn is_config_path(text: &str) -> bool {
    parse_path(text).is_some()
}

fn parse_path(text: &str) -> Option<KeyPath> {
    let mut path = KeyPath::root();
    if text.is_empty() {
        return None;
    }
    for part in text.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return None;
        }
        path = path.key(key);
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']')?;
            path = path.index(index.parse().ok()?);
            rest = match after {
                "" => "",
                more => more.strip_prefix('[')?,
            };
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_a_path_at_its_value_or_nearest_ancestor() {
        let text = "server:\n  listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    match: { path_regex: \"(\" }\n";
        let d = locate(text, "f.yaml", "routes[0].match.path_regex", "bad");
        assert_eq!((d.line, d.column), (5, 26));
        let d = locate(text, "f.yaml", "routes[0].upstream", "m");
        assert_eq!((d.line, d.column), (4, 5), "the route itself");
        let d = locate(text, "f.yaml", "not a path", "m");
        assert_eq!((d.line, d.column), (1, 1));
        assert!(is_config_path("providers[1][2].claims.x_y"));
        assert!(!is_config_path("routes[x]"));
        assert!(!is_config_path("Host `a`"));
    }
}
