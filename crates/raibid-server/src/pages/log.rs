//! The end of a job's log, as HTML with its colours.

use raibid_queue::{LogCursor, Queue, QueueError};

/// The most of a log a page shows: browsers slow down on megabytes of text, and the end is
/// where a build says why it failed. The raw log has the rest.
pub(super) const TAIL_BYTES: usize = 1024 * 1024;
/// Chunks per Redis read.
const READ_BATCH: usize = 512;

/// The last [`TAIL_BYTES`] of a log and where a follower continues from.
pub(super) struct Tail {
    pub text: Vec<u8>,
    /// Bytes before `text` that are not in it.
    pub skipped: u64,
    /// The log's last entry read: a follower starts after it.
    pub cursor: LogCursor,
}

/// The last `max` bytes of job `id`'s log, starting at a line when a line starts close enough
/// to the cut; read from the end, so a long log costs about `max`, not its whole length.
pub(super) async fn tail(queue: &Queue, id: &str, max: usize) -> Result<Tail, QueueError> {
    let end = queue.read_log_end(id, max, READ_BATCH).await?;
    let mut text = Vec::with_capacity(end.chunks.iter().map(|c| c.data.len()).sum());
    for chunk in &end.chunks {
        text.extend_from_slice(&chunk.data);
    }
    let cut = cut_at_line(&text, max);
    text.drain(..cut);
    Ok(Tail {
        text,
        skipped: end.skipped + cut as u64,
        cursor: end.cursor,
    })
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
        let plain = strip_ansi_escapes::strip_str(&text);
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
    fn other_escape_sequences_and_bad_bytes_do_not_reach_the_page() {
        let out = html(b"\x1b]0;title\x07\x1b[2Kdone \xff\n");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("done \u{fffd}"), "{out:?}");
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
