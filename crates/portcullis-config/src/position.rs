//! Positions in the config text: byte offsets ↔ 1-based line and character column,
//! and the map from the interpolated text back to what the user wrote.

use std::ops::Range;

/// A 1-based line and 1-based column counted in characters, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    /// The start of the file: where errors without a better place are reported.
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };
}

/// Line starts of one text, to convert between byte offsets and [`Pos`].
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// The position of byte `offset` (clamped into the text and onto a char boundary).
    pub(crate) fn pos(&self, text: &str, offset: usize) -> Pos {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = text.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        Pos { line, column }
    }

    /// The byte offset of `pos` (clamped to the end of its line / of the text).
    pub(crate) fn offset(&self, text: &str, pos: Pos) -> usize {
        let Some(&start) = self.starts.get(pos.line.saturating_sub(1)) else {
            return text.len();
        };
        let end = self.starts.get(pos.line).copied().unwrap_or(text.len());
        let line = text.get(start..end).unwrap_or("");
        let column = pos.column.saturating_sub(1);
        start
            + line
                .char_indices()
                .nth(column)
                .map_or(line.len(), |(i, _)| i)
    }
}

/// One replaced stretch of text: `original` bytes of the user's file became `rewritten`
/// bytes of the text that is actually parsed.
#[derive(Debug, Clone)]
pub(crate) struct Edit {
    pub(crate) original: Range<usize>,
    pub(crate) rewritten: Range<usize>,
}

/// Maps offsets in the interpolated text back to the user's file, so that every
/// diagnostic points at what the user wrote, not at what `${NAME}` expanded to.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceMap {
    /// Sorted, non-overlapping.
    edits: Vec<Edit>,
}

impl SourceMap {
    pub(crate) fn new(edits: Vec<Edit>) -> Self {
        SourceMap { edits }
    }

    /// The original offset of `rewritten` offset: inside a replaced value it is the
    /// start of that value; elsewhere it is shifted by the edits before it.
    pub(crate) fn to_original(&self, rewritten: usize) -> usize {
        let mut original_base = 0;
        let mut rewritten_base = 0;
        for edit in &self.edits {
            if rewritten < edit.rewritten.start {
                break;
            }
            if rewritten < edit.rewritten.end {
                return edit.original.start;
            }
            original_base = edit.original.end;
            rewritten_base = edit.rewritten.end;
        }
        original_base + (rewritten - rewritten_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_positions_round_trip() {
        let text = "a: 1\nbé: 2\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.pos(text, 0), Pos { line: 1, column: 1 });
        assert_eq!(idx.pos(text, 5), Pos { line: 2, column: 1 });
        // `:` after the two-byte `é` is the third character.
        let colon = text.find(": 2").unwrap_or(0);
        assert_eq!(idx.pos(text, colon), Pos { line: 2, column: 3 });
        assert_eq!(idx.offset(text, Pos { line: 2, column: 3 }), colon);
    }

    #[test]
    fn source_map_shifts_after_edits() {
        // original: `k: ${X} z`  rewritten: `k: "long value" z`
        let map = SourceMap::new(vec![Edit {
            original: 3..7,
            rewritten: 3..15,
        }]);
        assert_eq!(map.to_original(1), 1);
        assert_eq!(map.to_original(9), 3);
        assert_eq!(map.to_original(16), 8);
    }
}
