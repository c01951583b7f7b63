//! A job's log as its page shows it: its end, or one step's lines, as HTML with its colours in
//! numbered lines.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use raibid_model::step_log::StepFilter;
use raibid_queue::{LogChunk, LogCursor, Queue, QueueError, line_breaks};

/// The most of a log a page shows: browsers slow down on megabytes of text, and the end is
/// where a build says why it failed. The raw log has the rest.
pub(super) const TAIL_BYTES: usize = 1024 * 1024;
/// Chunks per Redis read of a whole log.
const READ_BATCH: usize = 512;
/// Chunks of a log's end read first: a MiB of the agent's largest (64 KiB), after which the
/// queue reads as many more as the chunks' size so far says the rest takes.
const END_FIRST_READ: usize = 16;

/// The last [`TAIL_BYTES`] of a log and where a follower continues from.
pub(super) struct Tail {
    pub text: Vec<u8>,
    /// Bytes before `text` that are not in it.
    pub skipped: u64,
    /// The log's last entry read: a follower starts after it.
    pub cursor: LogCursor,
    /// The number of `text`'s first line in the whole log (from 1), so that a line's link
    /// names the same line whatever part of the log a page shows.
    pub first_line: u64,
}

/// The last `max` bytes of job `id`'s log, starting at a line when a line starts close enough
/// to the cut. Read from the end, so it costs about `max` however long the log: the log's
/// count of its lines numbers them. A log whose lines were not counted as it was written (an
/// older agent's) has the line breaks before its end counted by reading them, not kept.
pub(super) async fn tail(queue: &Queue, id: &str, max: usize) -> Result<Tail, QueueError> {
    let end = queue.read_log_end(id, max, END_FIRST_READ).await?;
    let mut text: Vec<u8> = end
        .chunks
        .iter()
        .flat_map(|c| c.data.iter().copied())
        .collect();
    let before = match (end.skipped, end.lines_before, end.chunks.first()) {
        (0, _, _) | (_, _, None) => 0,
        (_, Some(lines), _) => lines,
        (_, None, Some(first)) => line_breaks_before(queue, id, &first.cursor).await?,
    };
    let cut = cut_at_line(&text, max);
    let first_line = 1 + before + line_breaks(&text[..cut]);
    text.drain(..cut);
    Ok(Tail {
        text,
        skipped: end.skipped + cut as u64,
        cursor: end.cursor,
        first_line,
    })
}

/// The line breaks of job `id`'s log before its entry `stop`.
async fn line_breaks_before(queue: &Queue, id: &str, stop: &LogCursor) -> Result<u64, QueueError> {
    let mut lines = 0;
    each_chunk(queue, id, |chunk| {
        if chunk.cursor == *stop {
            return ControlFlow::Break(());
        }
        lines += line_breaks(&chunk.data);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(lines)
}

/// Reads job `id`'s log from its start, batch by batch, handing each chunk to `each` until it
/// breaks or the log ends; returns where the last batch read ends.
async fn each_chunk(
    queue: &Queue,
    id: &str,
    mut each: impl FnMut(&LogChunk) -> ControlFlow<()>,
) -> Result<LogCursor, QueueError> {
    let mut cursor = LogCursor::start();
    loop {
        let batch = queue.read_log(id, &cursor, READ_BATCH).await?;
        if batch.chunks.is_empty() {
            return Ok(cursor);
        }
        for chunk in &batch.chunks {
            if each(chunk).is_break() {
                return Ok(cursor);
            }
        }
        cursor = batch.next;
    }
}

/// One step's lines of a log, as `raibid job logs --step` shows them, each numbered as in the
/// whole log, and where a follower of the log goes on from.
pub(super) struct StepLines {
    pub html: String,
    pub empty: bool,
    /// The step's first lines, left out to keep the page under its size.
    pub hidden: u64,
    /// The log's last entry read.
    pub cursor: LogCursor,
    /// The number of the log's unfinished last line, or of the next line.
    pub next: u64,
    /// With `follow`: the log's unfinished last line, not shown yet (whether it is the step's
    /// is known once it is whole).
    pub partial: String,
    /// The log read so far ends inside the step's section.
    pub inside: bool,
}

/// The step's lines of job `id`'s log, at most the last `max` bytes of them. The whole log is
/// read (at most its cap, `redis.log_max_bytes`): a step's section may be anywhere in it; but
/// batch by batch, holding only the step's last `max` bytes of lines and the line being read.
/// With `follow` (a job still running) an unfinished last line is left for the follower.
pub(super) async fn step_lines(
    queue: &Queue,
    id: &str,
    step: &str,
    max: usize,
    follow: bool,
) -> Result<StepLines, QueueError> {
    let mut lines = StepSection::new(step, max);
    let cursor = each_chunk(queue, id, |chunk| {
        lines.read(&chunk.data);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(lines.end(cursor, follow))
}

/// [`step_lines`]' state between reads.
struct StepSection {
    filter: StepFilter,
    max: usize,
    /// The step's last lines read, each with its number, their bytes at most `max`.
    kept: VecDeque<(u64, String)>,
    size: usize,
    /// The step's lines dropped from the front of `kept`.
    hidden: u64,
    /// The number of the line `unfinished` belongs to.
    next: u64,
    /// What was read after the last line break.
    unfinished: Vec<u8>,
}

impl StepSection {
    fn new(step: &str, max: usize) -> Self {
        Self {
            filter: StepFilter::new(step),
            max,
            kept: VecDeque::new(),
            size: 0,
            hidden: 0,
            next: 1,
            unfinished: Vec::new(),
        }
    }

    fn read(&mut self, data: &[u8]) {
        // Taken out while its lines are read, so that they are borrowed, not copied, one by one.
        let mut unfinished = std::mem::take(&mut self.unfinished);
        unfinished.extend_from_slice(data);
        let mut start = 0;
        while let Some(at) = unfinished[start..].iter().position(|&b| b == b'\n') {
            let end = start + at;
            self.line(&String::from_utf8_lossy(&unfinished[start..end]), "\n");
            start = end + 1;
        }
        unfinished.drain(..start);
        self.unfinished = unfinished;
    }

    fn line(&mut self, body: &str, end: &str) {
        if let Some(shown) = self.filter.keep(body) {
            let line = format!("{shown}{end}");
            self.size += line.len();
            self.kept.push_back((self.next, line));
            while self.size > self.max {
                let Some((_, dropped)) = self.kept.pop_front() else {
                    break;
                };
                self.size -= dropped.len();
                self.hidden += 1;
            }
        }
        self.next += 1;
    }

    /// The log read up to `cursor`: its unfinished last line left for a follower, or else
    /// read as a line.
    fn end(mut self, cursor: LogCursor, follow: bool) -> StepLines {
        let unfinished =
            String::from_utf8_lossy(&std::mem::take(&mut self.unfinished)).into_owned();
        let partial = if follow {
            unfinished
        } else {
            if !unfinished.is_empty() {
                self.line(&unfinished, "");
            }
            String::new()
        };
        StepLines {
            html: self
                .kept
                .iter()
                .map(|(number, line)| numbered(line.as_bytes(), *number).html)
                .collect(),
            empty: self.kept.is_empty() && self.hidden == 0,
            hidden: self.hidden,
            cursor,
            next: self.next,
            partial,
            inside: self.filter.inside(),
        }
    }
}

/// A log's HTML cut into lines, each a `<span class="line" id="L<n>">` led by a link to itself
/// (its number shown by CSS, so that copying the log copies no numbers).
pub(super) struct Lines {
    pub html: String,
    /// The number of the line the log's next byte belongs to: the last one if it is `open`.
    pub next: u64,
    /// The last line has no line break yet: what comes next continues it.
    pub open: bool,
}

/// [`html`] of `text`, its lines numbered from `first`. A colour that runs on past a line
/// break is closed at the break and opened again on the next line, so each line's markup is
/// whole.
pub(super) fn numbered(text: &[u8], first: u64) -> Lines {
    let coloured = html(text);
    let mut out = String::with_capacity(coloured.len() + coloured.len() / 8);
    let mut open_tags: Vec<&str> = Vec::new();
    let mut line = first;
    let mut in_line = false;
    let mut rest = coloured.as_str();
    let start_line = |out: &mut String, line: u64, open_tags: &[&str]| {
        out.push_str(&format!(
            "<span class=\"line\" id=\"L{line}\"><a class=\"ln\" href=\"#L{line}\" data-n=\"{line}\"></a>"
        ));
        open_tags.iter().for_each(|tag| out.push_str(tag));
    };
    let end_line = |out: &mut String, open_tags: &[&str]| {
        for tag in open_tags.iter().rev() {
            out.push_str("</");
            out.push_str(tag_name(tag));
            out.push('>');
        }
        out.push_str("</span>");
    };
    while !rest.is_empty() {
        if rest.starts_with('<') {
            // The converter's own markup: text's `<` comes escaped.
            let end = rest.find('>').map_or(rest.len(), |i| i + 1);
            let (tag, after) = rest.split_at(end);
            rest = after;
            if tag.starts_with("</") {
                open_tags.pop();
            } else {
                open_tags.push(tag);
            }
            // Tags between lines are carried by `open_tags` into the next line.
            if in_line {
                out.push_str(tag);
            }
            continue;
        }
        let end = rest.find(['<', '\n']).map_or(rest.len(), |i| {
            if rest.as_bytes()[i] == b'\n' {
                i + 1
            } else {
                i
            }
        });
        let (piece, after) = rest.split_at(end);
        rest = after;
        if !in_line {
            start_line(&mut out, line, &open_tags);
            in_line = true;
        }
        out.push_str(piece);
        if piece.ends_with('\n') {
            end_line(&mut out, &open_tags);
            in_line = false;
            line += 1;
        }
    }
    if in_line {
        end_line(&mut out, &open_tags);
    }
    Lines {
        html: out,
        next: line,
        open: in_line,
    }
}

/// `span` of `<span style='...'>`, `b` of `<b>`.
fn tag_name(tag: &str) -> &str {
    let name = tag.trim_start_matches('<').trim_end_matches('>');
    name.split(char::is_whitespace).next().unwrap_or(name)
}

/// Where to cut `text` to keep at most `max` bytes: just after a line break when one comes in
/// the first 4 KiB past the plain cut, so the page does not start mid-line (or mid-character,
/// or inside a colour's escape sequence).
fn cut_at_line(text: &[u8], max: usize) -> usize {
    const LOOK: usize = 4096;
    let Some(cut) = text.len().checked_sub(max) else {
        return 0;
    };
    if cut == 0 || text[cut - 1] == b'\n' {
        return cut;
    }
    let window = &text[cut..text.len().min(cut + LOOK)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => cut + i + 1,
        None => cut,
    }
}

/// Build output as HTML: escaped, with its SGR colours and styles as `<span style>`s (other
/// escape sequences dropped), bytes that are not UTF-8 replaced.
pub(super) fn html(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    ansi_to_html::convert(&text).unwrap_or_else(|_| {
        // A sequence the converter cannot read: the text without any of them.
        let plain = anstream::adapter::strip_str(&text).to_string();
        ansi_to_html::convert(&plain).unwrap_or_else(|_| escape(&plain))
    })
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "checkout abc\n\
        \u{1b}[1;36m▶ step build\u{1b}[0m 2026-12-05T00:00:00.000Z\n\
        compiling ä\n\
        linking\n\
        \u{1b}[32m✔ build (1.00s)\u{1b}[0m\n\
        \u{1b}[1;36m▶ step test\u{1b}[0m 2026-12-05T00:00:01.000Z\n\
        ok 1";

    fn section(pieces: &[&[u8]], max: usize, follow: bool, step: &str) -> StepLines {
        let mut s = StepSection::new(step, max);
        pieces.iter().for_each(|p| s.read(p));
        s.end(LogCursor::start(), follow)
    }

    #[test]
    fn a_step_s_lines_are_the_same_however_the_log_is_read() {
        let whole = section(&[LOG.as_bytes()], 1 << 20, false, "build");
        assert!(whole.html.contains("id=\"L3\""), "numbered as in the log");
        assert!(whole.html.contains("compiling ä"));
        assert!(!whole.html.contains("L1\"") && !whole.html.contains("L6\""));
        assert_eq!((whole.hidden, whole.next, whole.empty), (0, 8, false));
        // Byte by byte, a character and the escape codes cut between reads.
        let bytes: Vec<&[u8]> = LOG.as_bytes().chunks(1).collect();
        let cut = section(&bytes, 1 << 20, false, "build");
        assert_eq!(cut.html, whole.html);
        assert_eq!((cut.hidden, cut.next), (0, 8));

        // Followed: the unfinished last line waits; it is the next line's number.
        let test = section(&bytes, 1 << 20, true, "test");
        assert_eq!(
            (test.partial.as_str(), test.next, test.inside),
            ("ok 1", 7, true)
        );
        let ended = section(&bytes, 1 << 20, false, "test");
        assert!(ended.html.contains("ok 1") && ended.partial.is_empty());
        assert!(section(&bytes, 1 << 20, false, "deploy").empty);
    }

    #[test]
    fn only_the_step_s_last_lines_that_fit_are_kept() {
        // "linking\n" and the result line fit in 40 bytes; "compiling ä\n" does not.
        let last = section(&[LOG.as_bytes()], 40, false, "build");
        assert_eq!(last.hidden, 2, "the header and compiling");
        assert!(last.html.contains("linking") && !last.html.contains("compiling"));
        assert!(!last.empty);
        let none = section(&[LOG.as_bytes()], 3, false, "build");
        assert_eq!(
            (none.hidden, none.html.as_str(), none.empty),
            (4, "", false)
        );
    }

    #[test]
    fn a_cut_starts_at_the_next_line_when_there_is_one() {
        let text = b"first line\nsecond line\nthird\n";
        // Keeping 14 bytes would start inside "second line": the page starts at "third".
        let cut = cut_at_line(text, 14);
        assert_eq!(&text[cut..], b"third\n");
        assert_eq!(cut_at_line(text, 100), 0, "short enough: all of it");
        assert_eq!(cut_at_line(text, text.len()), 0);
        // The plain cut already starts a line: nothing more is dropped.
        assert_eq!(cut_at_line(text, 18), 11);
        // No line break near the cut: cut exactly.
        let long = vec![b'x'; 10_000];
        assert_eq!(cut_at_line(&long, 100), 9_900);
    }

    #[test]
    fn output_is_escaped_and_keeps_its_colours() {
        let out = html(b"\x1b[31merror\x1b[0m: <script>alert(1)</script> & \"q\"\n");
        assert!(
            out.contains("<span style='color:var(--red,#a00)'>error</span>"),
            "{out}"
        );
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp;"),
            "{out}"
        );
        assert!(!out.contains("<script>"), "{out}");
    }

    #[test]
    fn lines_are_numbered_and_each_line_s_markup_is_whole() {
        let lines = numbered(b"plain\n\x1b[31mred\nstill red\x1b[0m after\n<b>\n", 7);
        assert_eq!(
            lines.html,
            "<span class=\"line\" id=\"L7\"><a class=\"ln\" href=\"#L7\" data-n=\"7\"></a>plain\n</span>\
             <span class=\"line\" id=\"L8\"><a class=\"ln\" href=\"#L8\" data-n=\"8\"></a>\
             <span style='color:var(--red,#a00)'>red\n</span></span>\
             <span class=\"line\" id=\"L9\"><a class=\"ln\" href=\"#L9\" data-n=\"9\"></a>\
             <span style='color:var(--red,#a00)'>still red</span> after\n</span>\
             <span class=\"line\" id=\"L10\"><a class=\"ln\" href=\"#L10\" data-n=\"10\"></a>&lt;b&gt;\n</span>"
        );
        assert_eq!((lines.next, lines.open), (11, false));
        // Every tag opened is closed, line by line.
        for line in lines.html.split("<span class=\"line\"").skip(1) {
            assert_eq!(
                line.matches("<span").count() + 1,
                line.matches("</span>").count(),
                "{line}"
            );
        }
    }

    #[test]
    fn an_unfinished_last_line_is_left_open_for_what_follows() {
        let lines = numbered(b"one\ntwo", 1);
        assert!(
            lines.html.ends_with("data-n=\"2\"></a>two</span>"),
            "{}",
            lines.html
        );
        assert_eq!((lines.next, lines.open), (2, true));
        let empty = numbered(b"", 5);
        assert_eq!(
            (empty.html.as_str(), empty.next, empty.open),
            ("", 5, false)
        );
    }

    #[test]
    fn other_escape_sequences_and_bad_bytes_do_not_reach_the_page() {
        let out = html(b"\x1b]0;title\x07\x1b[2Kdone \xff\n");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("done \u{fffd}"), "{out:?}");
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
