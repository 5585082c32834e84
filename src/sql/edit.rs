//! Editing SQL text for the server while keeping the way back: an [`Editor`] copies a text
//! with some byte ranges replaced, and the [`PositionMap`] it yields turns a position Postgres
//! reports in the edited text (the `P` field of an ErrorResponse or NoticeResponse: a 1-based
//! character offset) into the same position in the client's original text.

use std::ops::Range;

/// One replacement whose length in characters differs from what it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shift {
    /// 0-based character offset of the replacement in the edited text.
    at: usize,
    /// Its length in characters.
    len: usize,
    /// 0-based character offset of the replaced text in the original.
    orig_at: usize,
    /// The replaced text's length in characters.
    orig_len: usize,
}

/// Maps character positions in an edited text back to the original text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionMap {
    shifts: Vec<Shift>,
}

impl PositionMap {
    /// True when no position moves.
    pub fn is_identity(&self) -> bool {
        self.shifts.is_empty()
    }

    /// The 1-based position in the original text of 1-based position `pos` in the edited one.
    /// A position inside a replacement maps to the start of the text it replaced.
    pub fn original(&self, pos: usize) -> usize {
        let Some(p) = pos.checked_sub(1) else {
            return pos;
        };
        for s in &self.shifts {
            if p < s.at {
                break;
            }
            if p < s.at + s.len {
                return s.orig_at + 1;
            }
        }
        let (new_end, orig_end) = self
            .shifts
            .iter()
            .rev()
            .find(|s| p >= s.at + s.len)
            .map_or((0, 0), |s| (s.at + s.len, s.orig_at + s.orig_len));
        orig_end + (p - new_end) + 1
    }
}

/// Builds an edited copy of a text; edits must come in increasing, non-overlapping order.
#[derive(Debug)]
pub struct Editor<'a> {
    src: &'a str,
    out: String,
    /// Bytes of `src` consumed so far.
    copied: usize,
    /// Characters of `src` consumed so far.
    src_chars: usize,
    /// Characters written to `out` so far.
    out_chars: usize,
    shifts: Vec<Shift>,
    changed: bool,
}

impl<'a> Editor<'a> {
    /// An editor over `src`.
    pub fn new(src: &'a str) -> Editor<'a> {
        Editor {
            src,
            out: String::new(),
            copied: 0,
            src_chars: 0,
            out_chars: 0,
            shifts: Vec::new(),
            changed: false,
        }
    }

    /// Replace the bytes `range` of the source (at or after every earlier edit, on character
    /// boundaries) with `with`. Returns false, changing nothing, for a range it cannot take.
    pub fn replace(&mut self, range: Range<usize>, with: &str) -> bool {
        let (Some(before), Some(old)) = (
            self.src.get(self.copied..range.start),
            self.src.get(range.clone()),
        ) else {
            return false;
        };
        if self.out.is_empty() {
            self.out.reserve(self.src.len() + with.len() + 16);
        }
        let n = before.chars().count();
        self.out.push_str(before);
        self.src_chars += n;
        self.out_chars += n;
        let (old_len, new_len) = (old.chars().count(), with.chars().count());
        if old_len != new_len {
            self.shifts.push(Shift {
                at: self.out_chars,
                len: new_len,
                orig_at: self.src_chars,
                orig_len: old_len,
            });
        }
        self.out.push_str(with);
        self.src_chars += old_len;
        self.out_chars += new_len;
        self.copied = range.end;
        self.changed = true;
        true
    }

    /// Insert `text` at byte `at` of the source.
    pub fn insert(&mut self, at: usize, text: &str) -> bool {
        self.replace(at..at, text)
    }

    /// Has anything been edited?
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The edited text and its map back to the original.
    pub fn finish(mut self) -> (String, PositionMap) {
        self.out
            .push_str(self.src.get(self.copied..).unwrap_or_default());
        (
            self.out,
            PositionMap {
                shifts: self.shifts,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_back_across_edits() {
        let src = "SELECT é, f() FROM t WHERE x";
        let mut e = Editor::new(src);
        let f = src.find("f()").unwrap();
        assert!(e.replace(f..f + 3, "unnest(a)"));
        let from = src.find(" FROM").unwrap();
        assert!(e.insert(from, " AS f"));
        assert!(!e.replace(0..1, "x"), "edits go forward only");
        let (text, map) = e.finish();
        assert_eq!(text, "SELECT é, unnest(a) AS f FROM t WHERE x");
        let pos = |s: &str, needle: &str| s[..s.find(needle).unwrap()].chars().count() + 1;
        for needle in ["SELECT", "é", "FROM", "WHERE", "x"] {
            assert_eq!(
                map.original(pos(&text, needle)),
                pos(src, needle),
                "{needle}"
            );
        }
        // Inside a replacement: the start of what it replaced.
        assert_eq!(map.original(pos(&text, "(a)")), pos(src, "f()"));
        assert_eq!(map.original(pos(&text, "AS f")), pos(src, " FROM"));
        // The end of input.
        assert_eq!(
            map.original(text.chars().count() + 1),
            src.chars().count() + 1
        );
        assert_eq!(map.original(0), 0);
    }

    #[test]
    fn insertions_map_back_to_the_insertion_point() {
        // Two fillers, as after two COMMITs: positions after each move back by its length.
        let src = "COMMIT; SELECT 1; END; SELECT x";
        let mut e = Editor::new(src);
        assert!(e.insert(6, ";SHOW ALL"));
        assert!(e.insert(21, ";SHOW ALL"));
        let (out, map) = e.finish();
        assert_eq!(out, "COMMIT;SHOW ALL; SELECT 1; END;SHOW ALL; SELECT x");
        let x = out.find('x').unwrap() + 1;
        assert_eq!(map.original(x), src.find('x').unwrap() + 1);
        assert_eq!(map.original(3), 3);
        // Inside a filler: the point it was inserted at.
        assert_eq!(map.original(10), 7);
    }

    #[test]
    fn same_length_edits_keep_positions() {
        let src = "LISTEN c; SELECT 1/x";
        let mut e = Editor::new(src);
        assert!(e.replace(0..8, "SELECT  "));
        let (text, map) = e.finish();
        assert_eq!(text, "SELECT  ; SELECT 1/x");
        assert!(map.is_identity());
        assert_eq!(map.original(20), 20);
    }
}
