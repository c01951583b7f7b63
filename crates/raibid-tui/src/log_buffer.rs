//! The log of the open job: styled lines as they arrive, bounded, searchable.

use std::collections::VecDeque;

use crate::ansi::{AnsiParser, StyledLine};

/// Lines kept per job. The dashboard is for watching a build, not archiving it (the full log
/// is one `raibid job logs` away), and this bounds memory for builds that print without end.
const MAX_LINES: usize = 100_000;
/// A line with no newline in sight is cut here, so `\r`-redrawn progress bars that never end
/// their line cannot grow one string without bound.
const MAX_OPEN_LINE: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    lines: VecDeque<StyledLine>,
    /// Raw text of the last line while no newline has ended it; it is parsed again whenever
    /// more arrives, so a line split across two chunks renders as one.
    open: Option<String>,
    /// The parser as it was where the open line starts.
    open_start: AnsiParser,
    parser: AnsiParser,
}

impl LogBuffer {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&StyledLine> {
        self.lines.get(index)
    }

    /// Adds a chunk of output; returns how many old lines were dropped from the front, so
    /// positions into the buffer can be moved along.
    pub fn push(&mut self, text: &str) -> usize {
        let mut pending = match self.open.take() {
            Some(open) => {
                self.lines.pop_back();
                self.parser = self.open_start.clone();
                open
            }
            None => String::new(),
        };
        pending.push_str(text);
        let mut pieces = pending.split('\n').peekable();
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            if last && piece.is_empty() {
                break;
            }
            if last && piece.len() < MAX_OPEN_LINE {
                self.open_start = self.parser.clone();
                self.open = Some(piece.to_owned());
            }
            let line = self.parser.parse_line(piece);
            self.lines.push_back(line);
        }
        let excess = self.lines.len().saturating_sub(MAX_LINES);
        self.lines.drain(..excess);
        excess
    }

    /// The next line after (or before) `from` whose text contains `query`, ignoring ASCII
    /// case, wrapping around the end.
    pub fn find(&self, query: &str, from: usize, forward: bool) -> Option<usize> {
        let n = self.lines.len();
        if n == 0 || query.is_empty() {
            return None;
        }
        let needle = query.to_ascii_lowercase();
        let from = from.min(n - 1);
        (1..=n)
            .map(|step| {
                if forward {
                    (from + step) % n
                } else {
                    (from + n * 2 - step) % n
                }
            })
            .find(|&i| self.lines[i].plain.to_ascii_lowercase().contains(&needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(b: &LogBuffer) -> Vec<&str> {
        (0..b.len())
            .map(|i| b.get(i).unwrap().plain.as_str())
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_join() {
        let mut b = LogBuffer::default();
        b.push("compiling fo");
        assert_eq!(texts(&b), ["compiling fo"]);
        b.push("o\nrunning\n");
        assert_eq!(texts(&b), ["compiling foo", "running"]);
        b.push("\r\n");
        assert_eq!(texts(&b), ["compiling foo", "running", ""]);
    }

    #[test]
    fn style_survives_a_split_line() {
        let mut b = LogBuffer::default();
        b.push("\x1b[31mred ");
        b.push("still red\x1b[0m\nplain\n");
        let first = &b.get(0).unwrap().line;
        assert_eq!(first.spans.len(), 1);
        assert_eq!(first.spans[0].content, "red still red");
        assert_eq!(b.get(1).unwrap().line.spans[0].style.fg, None);
    }

    #[test]
    fn old_lines_are_dropped_beyond_the_limit() {
        let mut b = LogBuffer::default();
        let chunk = "x\n".repeat(MAX_LINES);
        assert_eq!(b.push(&chunk), 0);
        assert_eq!(b.push("y\nz\n"), 2);
        assert_eq!(b.len(), MAX_LINES);
        assert_eq!(b.get(MAX_LINES - 1).unwrap().plain, "z");
    }

    #[test]
    fn an_endless_line_is_cut() {
        let mut b = LogBuffer::default();
        b.push(&"=".repeat(MAX_OPEN_LINE));
        b.push("more");
        assert_eq!(b.len(), 2);
        assert_eq!(b.get(1).unwrap().plain, "more");
    }

    #[test]
    fn find_wraps_both_ways_ignoring_case() {
        let mut b = LogBuffer::default();
        b.push("error one\nok\nERROR two\nok\n");
        assert_eq!(b.find("error", 0, true), Some(2));
        assert_eq!(b.find("error", 2, true), Some(0));
        assert_eq!(b.find("error", 0, false), Some(2));
        assert_eq!(b.find("error", 3, false), Some(2));
        assert_eq!(b.find("missing", 0, true), None);
        assert_eq!(b.find("", 0, true), None);
    }
}
