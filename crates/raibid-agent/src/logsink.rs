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
///
/// The work per byte does not grow with the number of secrets: a multi-line key adds a secret
/// per line, and every job masks every secret of the agent.
#[derive(Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    /// Built from `secrets` when they are first needed after one was added.
    automata: Option<Automata>,
    pending: Vec<u8>,
    /// How many bytes at the start of `pending` a secret that began in bytes already emitted
    /// covers.
    carried: usize,
    /// Whether the last byte emitted was masked: covered bytes right after it continue its run.
    in_run: bool,
}

/// What the masker looks for secrets with.
struct Automata {
    matcher: AhoCorasick,
    prefixes: Prefixes,
    /// The state of `prefixes` after the bytes read so far: its chain of suffixes holds every
    /// suffix of them that could start a secret.
    state: u32,
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
        // Rebuilt once for all the forms and secrets added before the next write.
        self.automata = None;
    }

    /// Builds the automata for the secrets added since they were last built, if any. Built
    /// afresh, the state is that after the bytes held back, which are all that could start a
    /// secret.
    fn build(&mut self) {
        if self.automata.is_none() && !self.secrets.is_empty() {
            let matcher = AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(&self.secrets)
                .expect("literal patterns always build");
            let prefixes = Prefixes::new(&self.secrets, DENSE_TRANSITIONS);
            let state = prefixes.read(ROOT, &self.pending);
            self.automata = Some(Automata {
                matcher,
                prefixes,
                state,
            });
        }
    }

    /// Accepts more output; returns what is safe to emit now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.build();
        let held = match &mut self.automata {
            Some(a) => {
                // Only the last `longest - 1` bytes can start a secret that is not complete:
                // from a piece at least that long, reading its end from the root is enough.
                let window = a.prefixes.longest - 1;
                let (from, tail) = match data.len().checked_sub(window) {
                    Some(skip) => (ROOT, &data[skip..]),
                    None => (a.state, data),
                };
                a.state = a.prefixes.read(from, tail);
                a.prefixes.held(a.state)
            }
            None => 0,
        };
        self.pending.extend_from_slice(data);
        // Bytes before the longest tail that could start a secret are covered or not for good:
        // every secret that could reach them is complete in `pending`.
        let cut = self.pending.len() - held;
        self.emit(cut)
    }

    /// Everything held back, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        self.build();
        let out = self.emit(self.pending.len());
        self.carried = 0;
        self.in_run = false;
        if let Some(a) = &mut self.automata {
            a.state = ROOT;
        }
        out
    }

    /// Writes out the first `cut` bytes of `pending`, masked, and keeps the rest.
    fn emit(&mut self, cut: usize) -> Vec<u8> {
        if cut == 0 {
            return Vec::new();
        }
        let runs = self.covered();
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

    /// The runs of bytes of `pending` that belong to some secret, in order, merged where they
    /// overlap or touch.
    fn covered(&self) -> Vec<std::ops::Range<usize>> {
        // Overlapping matches come in order of their end; sorted by start they merge in one pass.
        let mut found: Vec<_> = match &self.automata {
            Some(a) => a
                .matcher
                .find_overlapping_iter(&self.pending)
                .map(|m| m.range())
                .collect(),
            None => Vec::new(),
        };
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
}

/// The root of [`Prefixes`]: nothing read could start a secret.
const ROOT: u32 = 0;

/// How many transitions [`Prefixes`] keeps in full (128 KiB): enough for the shallow states in
/// which ordinary output keeps it, whatever the secrets.
const DENSE_TRANSITIONS: usize = 1 << 15;

/// The trie of the secrets with Aho-Corasick failure links, kept to answer one question: how
/// many of the last bytes read could be the start of a secret (the longest suffix that is a
/// proper prefix of one). After each byte the state is the node of the longest suffix that is a
/// prefix of a secret; its answer is that node's depth, or when no secret goes on from there
/// (the node is a whole secret), the answer of the next shorter such suffix, along its failure
/// links.
///
/// Nodes are numbered breadth first, and the shallowest have every transition in a table, so
/// that output that only now and then looks like the start of a secret costs a lookup per
/// byte. Deeper nodes keep their children and follow failure links: a byte costs at most as
/// many links as earlier bytes took the state deeper, so amortized constant time per byte
/// either way, whatever the number of secrets.
struct Prefixes {
    /// Bytes found in no secret share one class: they lead to the same nodes.
    classes: Box<[u8; 256]>,
    /// The number of classes.
    stride: usize,
    /// The transitions of nodes `0..dense_len`, by node then class. Nodes are named by their
    /// state (see [`Self::state`]), here and in `children` and `fail`.
    dense: Vec<u32>,
    dense_len: u32,
    /// Each node's children, sorted by byte.
    children: Vec<Vec<(u8, u32)>>,
    /// The node of the longest proper suffix of each node's bytes that is a prefix of a secret.
    fail: Vec<u32>,
    /// For each node, by number, how many bytes to hold back in that state.
    held: Vec<u32>,
    /// The length of the longest secret.
    longest: usize,
}

impl Prefixes {
    /// The automaton for `secrets`, with at most `dense_transitions` transitions in full (at
    /// least the root's).
    fn new(secrets: &[Vec<u8>], dense_transitions: usize) -> Self {
        // The trie, numbered as inserted.
        let mut trie: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        for secret in secrets {
            let mut node = ROOT as usize;
            for &b in secret {
                node = match trie[node].iter().find(|&&(c, _)| c == b) {
                    Some(&(_, next)) => next as usize,
                    None => {
                        let next = trie.len();
                        trie.push(Vec::new());
                        trie[node].push((b, next as u32));
                        next
                    }
                };
            }
        }
        // Renumbered breadth first: parents and failure links come before a node.
        let mut order = vec![ROOT];
        let mut depth = vec![0u32];
        let mut number = vec![ROOT; trie.len()];
        let mut i = 0;
        while i < order.len() {
            let node = order[i] as usize;
            trie[node].sort_unstable_by_key(|&(b, _)| b);
            for &(_, child) in &trie[node] {
                number[child as usize] = order.len() as u32;
                order.push(child);
                depth.push(depth[i] + 1);
            }
            i += 1;
        }
        let children: Vec<Vec<(u8, u32)>> = order
            .iter()
            .map(|&old| {
                trie[old as usize]
                    .iter()
                    .map(|&(b, child)| (b, number[child as usize]))
                    .collect()
            })
            .collect();

        let mut seen = [false; 256];
        for secret in secrets {
            for &b in secret {
                seen[b as usize] = true;
            }
        }
        let mut classes = Box::new([0u8; 256]);
        let mut stride = 0;
        // With every byte in some secret there is no class of bytes found in none.
        if seen.contains(&false) {
            stride = 1;
        }
        for b in 0..256 {
            if seen[b] {
                classes[b] = stride as u8;
                stride += 1;
            }
        }
        // A byte of each class.
        let mut sample = vec![0u8; stride];
        for b in (0..256).rev() {
            sample[classes[b] as usize] = b as u8;
        }

        let nodes = children.len();
        let mut prefixes = Prefixes {
            classes,
            stride,
            dense: Vec::new(),
            dense_len: 0,
            children,
            fail: vec![ROOT; nodes],
            held: vec![0; nodes],
            longest: secrets.iter().map(Vec::len).max().unwrap_or(0),
        };
        for (node, &depth) in depth.iter().enumerate() {
            let failed = prefixes.fail[node];
            prefixes.held[node] = if prefixes.children[node].is_empty() {
                prefixes.held[failed as usize]
            } else {
                depth
            };
            for i in 0..prefixes.children[node].len() {
                let (b, child) = prefixes.children[node][i];
                prefixes.fail[child as usize] = if node == ROOT as usize {
                    ROOT
                } else {
                    prefixes.step(failed, b)
                };
            }
        }
        let dense_len = nodes.min((dense_transitions / stride).max(1));
        let mut dense = Vec::with_capacity(dense_len * stride);
        for node in 0..dense_len {
            for &b in &sample {
                let edges = &prefixes.children[node];
                dense.push(match edges.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(i) => edges[i].1,
                    Err(_) if node == ROOT as usize => ROOT,
                    Err(_) => {
                        let class = prefixes.classes[b as usize] as usize;
                        dense[prefixes.fail[node] as usize * stride + class]
                    }
                });
            }
        }
        // Until now nodes were named by number, as the state of each while `dense` was empty.
        prefixes.dense_len = dense_len as u32;
        let state = |id: u32| prefixes.state(id);
        let dense: Vec<u32> = dense.into_iter().map(state).collect();
        let fail: Vec<u32> = prefixes.fail.iter().map(|&id| state(id)).collect();
        let children: Vec<Vec<(u8, u32)>> = prefixes
            .children
            .iter()
            .map(|edges| edges.iter().map(|&(b, id)| (b, state(id))).collect())
            .collect();
        prefixes.dense = dense;
        prefixes.fail = fail;
        prefixes.children = children;
        prefixes
    }

    /// The state of the node numbered `id`: for a node in `dense`, where its transitions start
    /// there, which saves a multiplication per byte; for the others, their number after those.
    fn state(&self, id: u32) -> u32 {
        if id < self.dense_len {
            id * self.stride as u32
        } else {
            id - self.dense_len + self.dense_len * self.stride as u32
        }
    }

    /// The number of the node in `state`.
    fn id(&self, state: u32) -> u32 {
        let dense_end = self.dense_len * self.stride as u32;
        if state < dense_end {
            state / self.stride as u32
        } else {
            state - dense_end + self.dense_len
        }
    }

    /// The state after reading `b` in `state`.
    fn step(&self, mut state: u32, b: u8) -> u32 {
        let dense_end = self.dense.len() as u32;
        loop {
            if state < dense_end {
                return self.dense[state as usize + self.classes[b as usize] as usize];
            }
            let id = (state - dense_end + self.dense_len) as usize;
            let edges = &self.children[id];
            if let Ok(i) = edges.binary_search_by_key(&b, |&(c, _)| c) {
                return edges[i].1;
            }
            // Only while the automaton is built, with no node in `dense`.
            if state == ROOT {
                return ROOT;
            }
            state = self.fail[id];
        }
    }

    /// The state after reading `data` in `state`.
    fn read(&self, state: u32, data: &[u8]) -> u32 {
        data.iter().fold(state, |state, &b| self.step(state, b))
    }

    /// How many of the last bytes read could start a secret, in `state`.
    fn held(&self, state: u32) -> usize {
        self.held[self.id(state) as usize] as usize
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

    /// The longest suffix of `data` that is a proper prefix of some secret, the slow way: what
    /// the masker must hold back.
    fn held_slow(secrets: &[Vec<u8>], data: &[u8]) -> usize {
        let longest = secrets.iter().map(Vec::len).max().unwrap_or(0);
        (1..=data.len().min(longest))
            .rev()
            .find(|&k| {
                let suffix = &data[data.len() - k..];
                secrets.iter().any(|s| s.len() > k && s.starts_with(suffix))
            })
            .unwrap_or(0)
    }

    /// Secrets that share first bytes and prefixes, and secrets inside others, cut at random
    /// into pieces shorter and longer than the longest secret: the output is the whole text
    /// masked at once, and after each piece exactly the bytes that could start a secret are
    /// held.
    #[test]
    fn secrets_sharing_prefixes_are_masked_however_the_output_is_cut() {
        let mut next = xorshift(0x5DEE_CE66_D1CE_4E5B);
        let secret_sets: [&[&str]; 4] = [
            &[
                "abcX", "abcY", "abZZ", "bcdX", "cabc", "abcabcZ", "aaab", "ab\ncd\n",
            ],
            &["abab", "ababX", "babY", "abXa", "bXab"],
            &["aaaa", "aaab", "aaba", "abaa", "baaa", "aaaaaaaaX"],
            &["abcd\nbcda\n  cdab\n", "dabc", "bcda\ncd", "cdXa"],
        ];
        let alphabet = b"abcdXYZ \n";
        for set in secret_sets {
            let mut m = Masker::default();
            for s in set {
                m.add_secret(s);
            }
            let longest = m.secrets.iter().map(Vec::len).max().unwrap();
            for _ in 0..300 {
                let mut text = Vec::new();
                while text.len() < 300 {
                    if next(5) == 0 {
                        let secret = &m.secrets[next(m.secrets.len())];
                        text.extend_from_slice(secret);
                    } else {
                        text.push(alphabet[next(alphabet.len())]);
                    }
                }
                let expected = mask_whole(&m.secrets, &text);
                let mut out = Vec::new();
                let mut at = 0;
                while at < text.len() {
                    let len = (1 + next(2 * longest + 2)).min(text.len() - at);
                    out.extend(m.push(&text[at..at + len]));
                    at += len;
                    assert_eq!(
                        m.pending.len(),
                        held_slow(&m.secrets, &text[..at]),
                        "secrets {set:?}, after {:?}",
                        String::from_utf8_lossy(&text[..at])
                    );
                }
                out.extend(m.finish());
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "secrets {set:?}, text {:?}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    /// With all, some or none of the nodes below the root in full, the automaton goes through
    /// the same states, and holds back what could start a secret.
    #[test]
    fn the_prefix_automaton_does_not_depend_on_how_much_of_it_is_dense() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let mut m = Masker::default();
        for s in [
            "abcX",
            "abcY",
            "abZZ",
            "bcdX",
            "cabc",
            "abcabcZ",
            "aaab",
            "ab\ncd\nabcabd",
        ] {
            m.add_secret(s);
        }
        let full = Prefixes::new(&m.secrets, usize::MAX);
        let nodes = full.fail.len();
        assert_eq!(full.dense.len(), nodes * full.stride);
        let alphabet = b"abcdXYZ\n";
        let text: Vec<u8> = (0..5000).map(|_| alphabet[next(alphabet.len())]).collect();
        for rows in [1, 2, 5, nodes / 2, nodes - 1] {
            let partial = Prefixes::new(&m.secrets, rows * full.stride);
            assert_eq!(partial.dense.len(), rows * full.stride);
            let (mut a, mut b) = (ROOT, ROOT);
            for (i, &byte) in text.iter().enumerate() {
                a = full.step(a, byte);
                b = partial.step(b, byte);
                assert_eq!(full.id(a), partial.id(b), "{rows} rows, at {i}");
                assert_eq!(full.held(a), held_slow(&m.secrets, &text[..=i]));
                assert_eq!(partial.held(b), full.held(a));
            }
        }
    }

    /// A secret added while bytes are held back is looked for in them too.
    #[test]
    fn a_secret_added_while_bytes_are_held_is_looked_for_in_them() {
        let mut m = Masker::default();
        m.add_secret("abcdef");
        assert_eq!(m.push(b"xxabc"), b"xx");
        m.add_secret("bcXY");
        assert_eq!(m.push(b"X"), b"a");
        assert_eq!(m.pending, b"bcX");
        assert_eq!(m.push(b"Y!"), b"***!");
        assert!(m.finish().is_empty());
    }

    #[test]
    fn without_secrets_nothing_is_held() {
        let mut m = Masker::default();
        assert_eq!(m.push(b"abc"), b"abc");
    }

    /// xorshift64*: reproducible pseudo-random numbers without a dependency.
    fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    /// Throughput of the masker, measured by hand, never asserted (timings belong in
    /// BENCHMARKS.md, not in a test that fails on a slow machine):
    /// `cargo test -p raibid-agent --release -- --ignored masker_throughput --nocapture`.
    /// 20 MB of log-like text, pushed in 4 KiB and in 64-byte pieces, masked with (a) one
    /// single-line secret, (b) a 50-line PEM-like key plus 5 single-line secrets.
    #[test]
    #[ignore = "a measurement, run by hand in release"]
    fn masker_throughput() {
        const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut next = xorshift(0x0123_4567_89AB_CDEF);
        let mut pem = String::from("-----BEGIN RSA PRIVATE KEY-----\n");
        for _ in 0..50 {
            pem.extend((0..64).map(|_| BASE64[next(BASE64.len())] as char));
            pem.push('\n');
        }
        pem.push_str("-----END RSA PRIVATE KEY-----\n");
        let others = [
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "npm_0123456789abcdef",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "hunter2-correct-horse",
        ];
        // Build-log-like lines: words of printable ASCII, now and then a path or a hash.
        let mut text = Vec::with_capacity(20 << 20);
        while text.len() < 20 << 20 {
            let words = 3 + next(12);
            for w in 0..words {
                if w > 0 {
                    text.push(b' ');
                }
                for _ in 0..1 + next(10) {
                    text.push(match next(4) {
                        0 => BASE64[next(BASE64.len())],
                        1 => b"-./:=_"[next(6)],
                        _ => b'a' + next(26) as u8,
                    });
                }
            }
            text.push(b'\n');
        }
        let cases: [(&str, Vec<&str>); 2] = [
            ("(a) 1 single-line secret", vec![others[0]]),
            ("(b) 50-line PEM + 5 others", {
                let mut v = vec![pem.as_str()];
                v.extend(others);
                v
            }),
        ];
        for (name, secrets) in &cases {
            for chunk in [4096, 64] {
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let mut m = Masker::default();
                    for s in secrets {
                        m.add_secret(s);
                    }
                    let start = std::time::Instant::now();
                    let mut written = 0;
                    for piece in text.chunks(chunk) {
                        written += std::hint::black_box(m.push(piece)).len();
                    }
                    written += m.finish().len();
                    best = best.min(start.elapsed().as_secs_f64());
                    assert_eq!(written, text.len());
                }
                println!(
                    "masker_throughput: {name}, {chunk}-byte pieces: {:.0} MB/s",
                    text.len() as f64 / best / 1e6
                );
            }
        }
    }
}
