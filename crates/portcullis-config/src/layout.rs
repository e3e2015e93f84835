//! Where every key and value sits in the user's file.
//!
//! serde gives us typed values but no positions; validation must report
//! `FILE:LINE:COL` for the offending value. So the file is walked once at the YAML
//! event level (no alias expansion, so a YAML bomb costs nothing here) and every
//! node's key and value span is recorded under its [`KeyPath`]. The same walk
//! collects the scalar values that contain `${`, which interpolation rewrites.

use crate::limits;
use crate::path::KeyPath;
use crate::position::{LineIndex, Pos};
use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, Span, StructureStyle};
use std::collections::HashMap;
use std::ops::Range;

/// The spans of one node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The mapping key that introduced this value, when there is one.
    pub(crate) key: Option<Range<usize>>,
    /// The value itself (for collections: from its start to the end of its last child).
    pub(crate) value: Range<usize>,
    /// Number of items, for a sequence.
    pub(crate) items: Option<usize>,
}

/// A scalar value (never a key) that may hold `${NAME}` references.
#[derive(Debug, Clone)]
pub(crate) struct ValueScalar {
    pub(crate) path: KeyPath,
    pub(crate) style: ScalarStyle,
    /// The value after YAML unescaping.
    pub(crate) value: String,
    /// The scalar's source span, quotes included.
    pub(crate) span: Range<usize>,
}

/// The walk could not read the document: a YAML syntax error or a limit.
#[derive(Debug, Clone)]
pub(crate) struct WalkError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Positions of every node of one YAML document.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    nodes: HashMap<KeyPath, Node>,
    /// Top-level keys in document order, with the span of each key.
    pub(crate) top_keys: Vec<(String, Range<usize>)>,
    /// Value scalars containing `$`, in document order.
    pub(crate) dollar_scalars: Vec<ValueScalar>,
    /// True when the document has no content at all (empty file, only comments).
    pub(crate) empty: bool,
}

impl Layout {
    /// The node at exactly `path`.
    pub(crate) fn node(&self, path: &KeyPath) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The start of the value at `path`, or of its nearest recorded ancestor (a value
    /// that came from a default, an alias or a merge has no position of its own).
    pub(crate) fn value_offset(&self, path: &KeyPath) -> Option<usize> {
        let mut current = Some(path.clone());
        while let Some(p) = current {
            if let Some(node) = self.nodes.get(&p) {
                return Some(node.value.start);
            }
            current = p.parent();
        }
        None
    }

    /// The start of the key that introduced `path`, falling back like [`Self::value_offset`].
    pub(crate) fn key_offset(&self, path: &KeyPath) -> Option<usize> {
        match self.nodes.get(path) {
            Some(Node { key: Some(k), .. }) => Some(k.start),
            _ => self.value_offset(path),
        }
    }

    /// The key path a parse error at `offset` is about; see [`Anchor`].
    pub(crate) fn path_at(&self, offset: usize, anchor: Anchor) -> Option<KeyPath> {
        let key_here = || {
            self.nodes
                .iter()
                .find(|(_, n)| n.key.as_ref().is_some_and(|k| k.start == offset))
                .map(|(p, _)| p)
        };
        match anchor {
            Anchor::KeyOfParent => {
                if let Some(path) = key_here() {
                    return path.parent();
                }
            }
            Anchor::Container => {
                if let Some((path, _)) = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.value.start == offset)
                    .max_by_key(|(p, _)| depth(p))
                {
                    return Some(path.clone());
                }
            }
            Anchor::Value => {
                if let Some(path) = key_here() {
                    return Some(path.clone());
                }
            }
        }
        self.nodes
            .iter()
            .filter(|(_, n)| n.value.start <= offset && offset <= n.value.end)
            .min_by_key(|(p, n)| (n.value.end - n.value.start, std::cmp::Reverse(depth(p))))
            .map(|(p, _)| p.clone())
    }
}

/// What a parse error's position points at, to name the right key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// A key that is wrong in its mapping (unknown, duplicate): name the mapping.
    KeyOfParent,
    /// The start of a mapping that lacks something: name that mapping.
    Container,
    /// A value (or a key) that is itself wrong.
    Value,
}

fn depth(path: &KeyPath) -> usize {
    let mut n = 0;
    let mut current = path.parent();
    while let Some(p) = current {
        n += 1;
        current = p.parent();
    }
    n
}

enum Frame {
    Map {
        path: KeyPath,
        flow: bool,
        pending_key: Option<(String, Range<usize>)>,
        end: usize,
    },
    Seq {
        path: KeyPath,
        flow: bool,
        next: usize,
        end: usize,
    },
    /// Inside a mapping used as a key (`? {a: 1}: x`): nothing to record.
    ComplexKey { depth: usize },
}

/// Walks `text` and records its [`Layout`].
pub(crate) fn walk(text: &str) -> Result<Layout, WalkError> {
    let lines = LineIndex::new(text);
    let offset_of = |m: &Marker| {
        m.byte_offset().unwrap_or_else(|| {
            lines.offset(
                text,
                Pos {
                    line: m.line(),
                    column: m.col() + 1,
                },
            )
        })
    };
    let mut options = serde_saphyr::granit_parser::Options::default();
    options.emit_comments = false;
    options.block_nesting_limit = limits::MAX_DEPTH + 1;
    options.flow_nesting_limit = limits::MAX_DEPTH;
    let mut parser = Parser::new_from_str_with_options(text, options);

    let mut layout = Layout {
        empty: true,
        ..Layout::default()
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut documents = 0usize;
    let mut events = 0usize;

    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| WalkError {
            offset: offset_of(e.marker()),
            message: e.info(),
        })?;
        events += 1;
        if events > limits::MAX_EVENTS {
            return Err(WalkError {
                offset: offset_of(&span.start),
                message: format!(
                    "the file has more than {} YAML nodes: that is not a config",
                    limits::MAX_EVENTS
                ),
            });
        }
        let range = span_range(&span, &offset_of);
        match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(WalkError {
                        offset: range.start,
                        message: "only one YAML document is allowed: remove the second `---`"
                            .to_string(),
                    });
                }
            }
            Event::Scalar(value, style, _, _) => {
                layout.empty = false;
                if let Some(path) = place(&mut stack, &mut layout, Some(&value), range.clone()) {
                    if value.contains('$') {
                        layout.dollar_scalars.push(ValueScalar {
                            path,
                            style,
                            value: value.into_owned(),
                            span: range,
                        });
                    }
                }
            }
            Event::Alias(_) => {
                layout.empty = false;
                place(&mut stack, &mut layout, Some("*"), range);
            }
            Event::MappingStart(style, _, _) | Event::SequenceStart(style, _, _) => {
                layout.empty = false;
                let is_map = matches!(event, Event::MappingStart(..));
                if let Some(Frame::ComplexKey { depth }) = stack.last_mut() {
                    *depth += 1;
                    continue;
                }
                if let Some(Frame::Map {
                    pending_key: pending @ None,
                    ..
                }) = stack.last_mut()
                {
                    *pending = Some(("?".to_string(), range));
                    stack.push(Frame::ComplexKey { depth: 1 });
                    continue;
                }
                let Some(path) = place(&mut stack, &mut layout, None, range.clone()) else {
                    continue;
                };
                let flow = style == StructureStyle::Flow;
                stack.push(if is_map {
                    Frame::Map {
                        path,
                        flow,
                        pending_key: None,
                        end: range.end,
                    }
                } else {
                    Frame::Seq {
                        path,
                        flow,
                        next: 0,
                        end: range.end,
                    }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::ComplexKey { depth }) = stack.last_mut() {
                    *depth -= 1;
                    if *depth == 0 {
                        stack.pop();
                    }
                    continue;
                }
                let (path, end, items) = match stack.pop() {
                    Some(Frame::Map {
                        path, flow, end, ..
                    }) => (path, if flow { range.end.max(end) } else { end }, None),
                    Some(Frame::Seq {
                        path,
                        flow,
                        next,
                        end,
                    }) => (
                        path,
                        if flow { range.end.max(end) } else { end },
                        Some(next),
                    ),
                    _ => continue,
                };
                if let Some(node) = layout.nodes.get_mut(&path) {
                    node.value.end = end.max(node.value.start);
                    node.items = items;
                }
                extend_parent(&mut stack, end);
            }
            _ => {}
        }
    }
    Ok(layout)
}

fn span_range(span: &Span, offset_of: &dyn Fn(&Marker) -> usize) -> Range<usize> {
    let start = offset_of(&span.start);
    let end = offset_of(&span.end).max(start);
    start..end
}

fn extend_parent(stack: &mut [Frame], end: usize) {
    match stack.last_mut() {
        Some(Frame::Map { end: e, .. }) | Some(Frame::Seq { end: e, .. }) => *e = (*e).max(end),
        _ => {}
    }
}

/// Places a node in its parent: records a key, or records a value under its path and
/// returns that path. `scalar` is the text of a scalar (or `*` for an alias).
fn place(
    stack: &mut [Frame],
    layout: &mut Layout,
    scalar: Option<&str>,
    range: Range<usize>,
) -> Option<KeyPath> {
    let at_root_map = stack.len() == 1;
    let (path, key) = match stack.last_mut() {
        Some(Frame::ComplexKey { .. }) => return None,
        Some(Frame::Map {
            path,
            pending_key,
            end,
            ..
        }) => match pending_key.take() {
            None => {
                // This node is a key.
                let text = scalar.unwrap_or("?").to_string();
                if at_root_map {
                    layout.top_keys.push((text.clone(), range.clone()));
                }
                *pending_key = Some((text, range.clone()));
                *end = (*end).max(range.end);
                return None;
            }
            Some((key, key_range)) => (path.key(&key), Some(key_range)),
        },
        Some(Frame::Seq { path, next, .. }) => {
            let p = path.index(*next);
            *next += 1;
            (p, None)
        }
        None => (KeyPath::root(), None),
    };
    layout.nodes.insert(
        path.clone(),
        Node {
            key,
            value: range.clone(),
            items: None,
        },
    );
    extend_parent(stack, range.end);
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, offset: usize) -> (usize, usize) {
        let p = LineIndex::new(text).pos(text, offset);
        (p.line, p.column)
    }

    #[test]
    fn records_keys_values_and_items() {
        let text = "server:\n  listen: 1.2.3.4:5\nroutes:\n  - name: a\n    match: {path: /x}\n  - name: b\n";
        let layout = walk(text).unwrap();
        let listen = KeyPath::root().key("server").key("listen");
        let node = layout.node(&listen).unwrap();
        assert_eq!(at(text, node.value.start), (2, 11));
        assert_eq!(at(text, layout.key_offset(&listen).unwrap()), (2, 3));
        let routes = KeyPath::root().key("routes");
        assert_eq!(layout.node(&routes).unwrap().items, Some(2));
        let path = routes.index(0).key("match").key("path");
        assert_eq!(at(text, layout.value_offset(&path).unwrap()), (5, 19));
        // A path that is not in the file falls back to its nearest ancestor.
        let missing = routes.index(1).key("upstream");
        assert_eq!(at(text, layout.value_offset(&missing).unwrap()), (6, 5));
        assert_eq!(
            layout
                .top_keys
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["server", "routes"]
        );
        let key = node.key.clone().unwrap().start;
        let value_path = layout.path_at(key, Anchor::Value).unwrap();
        assert_eq!(value_path.to_string(), "server.listen");
        let parent = layout.path_at(key, Anchor::KeyOfParent).unwrap();
        assert_eq!(parent.to_string(), "server");
        let item = layout.node(&routes.index(0)).unwrap().value.start;
        let container = layout.path_at(item, Anchor::Container).unwrap();
        assert_eq!(container.to_string(), "routes[0]");
    }

    #[test]
    fn collects_dollar_scalars_but_not_keys() {
        let text = "a: ${X}\n\"${K}\": 'q ${Y}'\nb: [x, \"${Z}\"]\n";
        let layout = walk(text).unwrap();
        let found: Vec<_> = layout
            .dollar_scalars
            .iter()
            .map(|s| (s.path.to_string(), s.value.clone(), &text[s.span.clone()]))
            .collect();
        assert_eq!(
            found,
            [
                ("a".to_string(), "${X}".to_string(), "${X}"),
                ("[\"${K}\"]".to_string(), "q ${Y}".to_string(), "'q ${Y}'"),
                ("b[1]".to_string(), "${Z}".to_string(), "\"${Z}\""),
            ]
        );
    }

    #[test]
    fn refuses_a_second_document_and_reports_syntax_errors() {
        assert!(walk("a: 1\n---\nb: 2\n").is_err());
        let err = walk("a: {b: 1\n").unwrap_err();
        assert!(!err.message.is_empty());
        assert!(walk("").unwrap().empty);
        assert!(walk("# only a comment\n").unwrap().empty);
    }
}
