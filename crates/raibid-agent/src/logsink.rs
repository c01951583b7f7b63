//! From step output to the job's log stream: secrets masked, chunked, flushed often.
//!
//! No byte waits more than 50 ms before it is written (the clock starts when the first byte
//! enters an empty buffer, not at the last flush, so a line printed after a quiet spell is not
//! held for a whole period), and 64 KiB are written at once, so a follower sees lines almost as
//! they are printed while a chatty step costs one Redis write per 64 KiB. Masking
//! happens before anything leaves the agent, and holds back only as many trailing bytes as could
//! be the start of a secret, so a secret split across two reads is still caught.

use std::collections::VecDeque;
use std::time::Duration;

use aho_corasick::AhoCorasick;
use raibid_queue::Queue;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

/// The longest a byte of output waits in the agent before it is written to Redis.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
pub const FLUSH_BYTES: usize = 64 * 1024;
const MASK: &[u8] = b"***";
const TAIL_LINES: usize = 20;

/// Sleeps until `due`, or forever when nothing is buffered.
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Secrets shorter than this are not masked: masking `a` or `1` would shred every log and
/// protects nothing worth protecting.
const MIN_SECRET_LEN: usize = 4;

/// Replaces secrets in a byte stream that arrives in arbitrary pieces.
///
/// Every byte covered by any secret is masked, overlapping secrets included (each run of
/// covered bytes becomes one `***`). Only what could still turn out to be the start of a secret
/// is held back, judged on the raw bytes (a shorter secret found complete must not release the
/// start of a longer one that contains it), so at most the longest secret's length minus one:
/// a run of secrets printed back to back is written as it comes, its `***` once, and what
/// follows it continues the run without a second one. The output does not depend on how the
/// stream is cut into pieces.
#[derive(Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    matcher: Option<AhoCorasick>,
    pending: Vec<u8>,
    /// How many bytes at the start of `pending` a secret that began in bytes already emitted
    /// covers.
    carried: usize,
    /// Whether the last byte emitted was masked: covered bytes right after it continue its run.
    in_run: bool,
}

impl Masker {
    /// Masks `secret`, and also each form of it that is printed on its own: the value without
    /// its trailing line break (a YAML `|` block ends in one, which an unquoted `$TOKEN` drops)
    /// and, for a multi-line value (keys, certificates, kubeconfigs), each of its lines without
    /// the whitespace around it, as other CI systems do. Forms shorter than 4 bytes are left
    /// alone.
    pub fn add_secret(&mut self, secret: &str) {
        let trimmed = secret.trim_end_matches(['\r', '\n']);
        let lines = secret
            .split('\n')
            .map(|line| line.trim_matches(|c: char| c.is_ascii_whitespace()));
        for form in [secret, trimmed].into_iter().chain(lines) {
            self.add_pattern(form.as_bytes());
        }
    }

    fn add_pattern(&mut self, s: &[u8]) {
        if s.len() < MIN_SECRET_LEN || self.secrets.iter().any(|x| x == s) {
            return;
        }
        self.secrets.push(s.to_vec());
        self.matcher = Some(
            aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(&self.secrets)
                .expect("literal patterns always build"),
        );
    }

    /// Accepts more output; returns what is safe to emit now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        // Bytes before the longest tail that could start a secret are covered or not for good:
        // every secret that could reach them is complete in `pending`.
        let cut = self.pending.len() - self.partial_secret_suffix(&self.pending);
        self.emit(cut)
    }

    /// Everything held back, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = self.emit(self.pending.len());
        self.carried = 0;
        self.in_run = false;
        out
    }

    /// Writes out the first `cut` bytes of `pending`, masked, and keeps the rest.
    fn emit(&mut self, cut: usize) -> Vec<u8> {
        if cut == 0 {
            return Vec::new();
        }
        let runs = self.covered(&self.pending);
        let data = &self.pending[..cut];
        let mut out = Vec::with_capacity(cut);
        let mut at = 0;
        for run in runs.iter().take_while(|r| r.start < cut) {
            if run.start > at {
                out.extend_from_slice(&data[at..run.start]);
                self.in_run = false;
            }
            if !self.in_run {
                out.extend_from_slice(MASK);
                self.in_run = true;
            }
            at = run.end.min(cut);
        }
        if at < cut {
            out.extend_from_slice(&data[at..]);
            self.in_run = false;
        }
        // A run that started in what was emitted and reaches past it covers the kept bytes too.
        self.carried = runs
            .iter()
            .take_while(|r| r.start < cut)
            .last()
            .map_or(0, |r| r.end.saturating_sub(cut));
        self.pending.drain(..cut);
        out
    }

    /// The runs of bytes of `data` (the pending bytes) that belong to some secret, in order,
    /// merged where they overlap or touch.
    fn covered(&self, data: &[u8]) -> Vec<std::ops::Range<usize>> {
        // Overlapping matches come in order of their end; sorted by start they merge in one pass.
        let mut found: Vec<_> = self
            .matcher
            .iter()
            .flat_map(|m| m.find_overlapping_iter(data))
            .map(|m| m.range())
            .collect();
        if self.carried > 0 {
            found.push(0..self.carried);
        }
        found.sort_by_key(|r| r.start);
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for r in found {
            match runs.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => runs.push(r),
            }
        }
        runs
    }

    /// Length of the longest suffix of `data` that is a proper prefix of some secret.
    fn partial_secret_suffix(&self, data: &[u8]) -> usize {
        let longest = self.secrets.iter().map(Vec::len).max().unwrap_or(0);
        (1..longest.min(data.len() + 1))
            .rev()
            .find(|&k| {
                let suffix = &data[data.len() - k..];
                self.secrets
                    .iter()
                    .any(|s| s.len() > k && s.starts_with(suffix))
            })
            .unwrap_or(0)
    }
}

/// The log of one job as the agent writes it.
pub struct JobLog {
    queue: Queue,
    job_id: String,
    masker: Masker,
    buffer: Vec<u8>,
    /// When the oldest byte in `buffer` arrived; `None` while it is empty.
    oldest: Option<Instant>,
    tail: VecDeque<String>,
    partial_line: Vec<u8>,
    capped: bool,
    bytes_written: u64,
}

impl JobLog {
    pub fn new(queue: Queue, job_id: impl Into<String>) -> Self {
        Self {
            queue,
            job_id: job_id.into(),
            masker: Masker::default(),
            buffer: Vec::with_capacity(FLUSH_BYTES),
            oldest: None,
            tail: VecDeque::new(),
            partial_line: Vec::new(),
            capped: false,
            bytes_written: 0,
        }
    }

    pub fn mask(&mut self, secret: &str) {
        self.masker.add_secret(secret);
    }

    /// Bytes stored so far (after masking).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// A line of the agent's own (header lines, explanations), flushed at once.
    pub async fn line(&mut self, text: &str) {
        let mut data = text.as_bytes().to_vec();
        data.push(b'\n');
        self.write(&data).await;
        self.flush().await;
    }

    pub async fn write(&mut self, data: &[u8]) {
        let safe = self.masker.push(data);
        self.buffer_masked(&safe);
        if self.buffer.len() >= FLUSH_BYTES
            || matches!(self.flush_due(), Some(due) if due <= Instant::now())
        {
            self.flush_buffer().await;
        }
    }

    /// Flushes everything, including bytes held back for masking.
    pub async fn flush(&mut self) {
        let rest = self.masker.finish();
        self.buffer_masked(&rest);
        self.flush_buffer().await;
    }

    /// The last lines written since [`Self::start_tail`], for the step result.
    pub fn tail(&self) -> String {
        let mut lines: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        let partial = String::from_utf8_lossy(&self.partial_line);
        if !partial.is_empty() {
            lines.push(&partial);
            return lines.join("\n");
        }
        lines.join("\n")
    }

    pub fn start_tail(&mut self) {
        self.tail.clear();
        self.partial_line.clear();
    }

    /// Copies step output from `rx` into the log until the sender is dropped, flushing on time
    /// even when the step is quiet.
    pub async fn pump(&mut self, mut rx: mpsc::Receiver<Vec<u8>>) {
        loop {
            let due = self.flush_due();
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(data) => self.write(&data).await,
                    None => break,
                },
                _ = sleep_until_due(due) => self.flush_buffer().await,
            }
        }
        self.flush().await;
    }

    /// When the buffer must be written, so that no byte waits longer than `FLUSH_INTERVAL`.
    fn flush_due(&self) -> Option<Instant> {
        self.oldest.map(|t| t + FLUSH_INTERVAL)
    }

    fn buffer_masked(&mut self, data: &[u8]) {
        if self.oldest.is_none() && !data.is_empty() {
            self.oldest = Some(Instant::now());
        }
        self.buffer.extend_from_slice(data);
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial_line).into_owned();
                self.partial_line.clear();
                if self.tail.len() == TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail.push_back(line);
            } else if self.partial_line.len() < 1024 {
                self.partial_line.push(b);
            }
        }
    }

    async fn flush_buffer(&mut self) {
        self.oldest = None;
        if self.buffer.is_empty() || self.capped {
            self.buffer.clear();
            return;
        }
        let data = std::mem::take(&mut self.buffer);
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=5 {
            match self.queue.append_log(&self.job_id, &data).await {
                Ok(stored) => {
                    self.bytes_written += data.len() as u64;
                    self.capped = !stored;
                    break;
                }
                Err(e) if e.is_transient() && attempt < 5 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    warn!(job = %self.job_id, error = %e, bytes = data.len(), "dropping log output");
                    break;
                }
            }
        }
        self.buffer = data;
        self.buffer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(masker: &mut Masker, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend(masker.push(p));
        }
        out.extend(masker.finish());
        out
    }

    /// A shorter secret complete in the buffer must not release the rest of a longer one that
    /// starts with it.
    #[test]
    fn a_secret_containing_another_is_masked_whole_across_pieces() {
        let mut m = Masker::default();
        m.add_secret("deploybot");
        m.add_secret("deploybot:s3cr3t-pass");
        assert_eq!(
            run(&mut m, &[b"auth=deploybot", b":s3cr3t-pass\n"]),
            b"auth=***\n"
        );
        assert_eq!(
            run(&mut m, &[b"user deploybot", b" ok\n"]),
            b"user *** ok\n"
        );
    }

    #[test]
    fn overlapping_secrets_are_masked_as_one() {
        let mut m = Masker::default();
        m.add_secret("abcdef");
        m.add_secret("defXYZ");
        assert_eq!(run(&mut m, &[b"1 abcdef", b"XYZ 2\n"]), b"1 *** 2\n");
        assert_eq!(run(&mut m, &[b"abcdefXYZabcdef\n"]), b"***\n");
    }

    #[test]
    fn masks_whole_secrets() {
        let mut m = Masker::default();
        m.add_secret("hunter22");
        assert_eq!(run(&mut m, &[b"pw=hunter22 ok\n"]), b"pw=*** ok\n");
    }

    #[test]
    fn masks_secrets_split_across_chunks() {
        let mut m = Masker::default();
        m.add_secret("hunter22");
        let out = run(&mut m, &[b"pw=hun", b"te", b"r22 and hunter2", b"2\n"]);
        assert_eq!(out, b"pw=*** and ***\n");
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut m = Masker::default();
        m.add_secret("secretvalue");
        assert_eq!(m.push(b"hello wor"), b"hello wor");
        assert_eq!(m.push(b"ld sec"), b"ld ");
        assert_eq!(m.finish(), b"sec");
    }

    #[test]
    fn longer_secret_wins_over_its_prefix() {
        let mut m = Masker::default();
        m.add_secret("abcd");
        m.add_secret("abcdefgh");
        assert_eq!(run(&mut m, &[b"x abcdefgh y abcd z"]), b"x *** y *** z");
    }

    #[test]
    fn tiny_secrets_are_not_masked() {
        let mut m = Masker::default();
        m.add_secret("a");
        assert_eq!(run(&mut m, &[b"banana"]), b"banana");
    }

    /// Each line of a key or certificate is masked when printed alone, indented as in a
    /// manifest.
    #[test]
    fn lines_of_a_multi_line_secret_are_masked_on_their_own() {
        let mut m = Masker::default();
        m.add_secret("-----BEGIN KEY-----\nQUJDREVGR0hJSktMTU5PUA==\n-----END KEY-----\n");
        assert_eq!(
            run(&mut m, &[b"    QUJDREVGR0hJSktMTU5PUA==\n"]),
            b"    ***\n"
        );
        assert_eq!(
            run(&mut m, &[b"key:\r\n  -----END KEY-----\r\n"]),
            b"key:\r\n  ***\r\n"
        );
        // Lines too short to mask stay readable.
        let mut m = Masker::default();
        m.add_secret("{\n  \"k\": \"v3ry-s3cret\"\n}\n");
        assert_eq!(run(&mut m, &[b"{ ok }\n"]), b"{ ok }\n");
    }

    /// A YAML `|` value ends in a newline that an unquoted `$TOKEN` drops.
    #[test]
    fn a_secret_is_masked_without_its_trailing_newline() {
        let mut m = Masker::default();
        m.add_secret("npm_0123456789abcdef\n");
        let expected = [&b"+ curl -u ci:"[..], MASK, b" https://x\n"].concat();
        assert_eq!(
            run(&mut m, &[b"+ curl -u ci:npm_0123456789abcdef https://x\n"]),
            expected
        );
        let mut m = Masker::default();
        m.add_secret("npm_0123456789abcdef\r\n");
        assert_eq!(
            run(
                &mut m,
                &[b"+ curl -u ci:npm_0123", b"456789abcdef https://x\n"]
            ),
            expected
        );
    }

    /// A secret whose end is also its start, printed again and again, used to keep the whole
    /// output back (and rescan it on every write).
    #[test]
    fn secrets_printed_back_to_back_are_written_as_they_come() {
        let mut m = Masker::default();
        m.add_secret("abab");
        let mut out = Vec::new();
        for _ in 0..1000 {
            out.extend(m.push(b"abab"));
            assert!(m.pending.len() < 4, "{} bytes held", m.pending.len());
        }
        assert_eq!(out, MASK);
        out.extend(m.push(b" done\n"));
        assert_eq!(out, b"*** done\n");
        assert!(m.finish().is_empty());
    }

    /// Coverage byte by byte, the slow way: each run of bytes inside some secret becomes `***`.
    fn mask_whole(secrets: &[Vec<u8>], text: &[u8]) -> Vec<u8> {
        let mut covered = vec![false; text.len()];
        for s in secrets {
            for i in 0..text.len().saturating_sub(s.len() - 1) {
                if text[i..].starts_with(s) {
                    covered[i..i + s.len()].fill(true);
                }
            }
        }
        let mut out = Vec::new();
        for (i, &b) in text.iter().enumerate() {
            if !covered[i] {
                out.push(b);
            } else if i == 0 || !covered[i - 1] {
                out.extend_from_slice(MASK);
            }
        }
        out
    }

    /// However the output is cut into pieces, what is written is the whole text masked at
    /// once.
    #[test]
    fn the_output_does_not_depend_on_how_it_is_cut() {
        // xorshift64*: reproducible without a dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        };
        let secret_sets: [&[&str]; 5] = [
            &["abab"],
            &["aaaa", "abca"],
            &["abcab", "bcabc", "cabca"],
            &["deploybot", "deploybot:pass", "pass!"],
            &["-----BEGIN-----\nabcabc\n-----END-----\n", "xxxx"],
        ];
        let pieces: [&[u8]; 9] = [
            b"a",
            b"b",
            b"c",
            b"x",
            b"\n",
            b" ",
            b"abab",
            b"-----",
            b"deploybot",
        ];
        for set in secret_sets {
            let mut fresh = Masker::default();
            for s in set {
                fresh.add_secret(s);
            }
            for _ in 0..300 {
                let mut text = Vec::new();
                while text.len() < 200 {
                    if next(4) == 0 {
                        let secret = set[next(set.len())].as_bytes();
                        text.extend_from_slice(secret);
                    } else {
                        text.extend_from_slice(pieces[next(pieces.len())]);
                    }
                }
                let expected = mask_whole(&fresh.secrets, &text);
                let mut chunks = Vec::new();
                let mut at = 0;
                while at < text.len() {
                    let len = (1 + next(12)).min(text.len() - at);
                    chunks.push(&text[at..at + len]);
                    at += len;
                }
                let mut m = Masker::default();
                for s in set {
                    m.add_secret(s);
                }
                let longest = m.secrets.iter().map(Vec::len).max().unwrap();
                let mut out = Vec::new();
                for chunk in &chunks {
                    out.extend(m.push(chunk));
                    assert!(m.pending.len() < longest);
                }
                out.extend(m.finish());
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "secrets {set:?}, pieces {chunks:?}"
                );
                assert_eq!(run(&mut m, &[&text]), expected);
            }
        }
    }

    #[test]
    fn without_secrets_nothing_is_held() {
        let mut m = Masker::default();
        assert_eq!(m.push(b"abc"), b"abc");
    }
}
