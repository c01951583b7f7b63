//! Output a job log holds while Redis does not take it (an outage, a restart), written in
//! order once it answers, so that a Redis restart costs the log nothing. Bounded: past the
//! limit the newest output is counted instead of held, and the log says how much was lost
//! where it was.

use std::borrow::Cow;
use std::collections::VecDeque;

/// What one job log holds at most: a minute or two of a chatty step's output, little
/// beside the agent's own memory.
pub(super) const LIMIT: usize = 4 << 20;

/// A numbered chunk waiting to be appended (see [`raibid_queue::LogWriter`]).
#[derive(Debug)]
pub(super) struct Chunk {
    pub number: u64,
    data: Vec<u8>,
    /// Bytes of output lost in this chunk's place: then it is a notice saying so.
    lost: u64,
}

impl Chunk {
    /// What is appended: the output, or the notice of the output lost.
    pub fn data(&self) -> Cow<'_, [u8]> {
        if self.lost == 0 {
            Cow::Borrowed(&self.data)
        } else {
            Cow::Owned(
                format!(
                    "\n[raibid] {} bytes of output lost here: Redis was unavailable for longer \
                     than the agent could hold the output\n",
                    self.lost
                )
                .into_bytes(),
            )
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Held {
    chunks: VecDeque<Chunk>,
    bytes: usize,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes of output held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `data` as chunk `number`; past `limit` counts it lost instead, in the notice
    /// last held or, when the last is output, in a new notice numbered `number`.
    pub fn hold(&mut self, number: u64, data: &[u8], limit: usize) {
        if self.bytes + data.len() <= limit {
            self.bytes += data.len();
            self.chunks.push_back(Chunk {
                number,
                data: data.to_vec(),
                lost: 0,
            });
        } else if let Some(notice) = self.chunks.back_mut().filter(|c| c.lost > 0) {
            notice.lost += data.len() as u64;
        } else {
            self.chunks.push_back(Chunk {
                number,
                data: Vec::new(),
                lost: data.len() as u64,
            });
        }
    }

    /// The oldest chunk held: the next to append.
    pub fn front(&self) -> Option<&Chunk> {
        self.chunks.front()
    }

    pub fn pop_front(&mut self) {
        if let Some(chunk) = self.chunks.pop_front() {
            self.bytes -= chunk.data.len();
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(held: &mut Held) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(chunk) = held.front() {
            out.push((
                chunk.number,
                String::from_utf8_lossy(&chunk.data()).into_owned(),
            ));
            held.pop_front();
        }
        out
    }

    #[test]
    fn output_past_the_limit_becomes_one_notice_in_its_place() {
        let mut held = Held::default();
        held.hold(0, b"one\n", 10);
        held.hold(1, b"two\n", 10);
        assert_eq!(held.bytes(), 8);
        held.hold(2, b"three\n", 10);
        held.hold(3, b"four\n", 10);
        assert_eq!(held.bytes(), 8, "lost output is not held");
        let chunks = drain(&mut held);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[..2], [(0, "one\n".into()), (1, "two\n".into())]);
        assert_eq!(
            chunks[2].0, 2,
            "the notice takes the first lost chunk's number"
        );
        assert!(
            chunks[2].1.contains("11 bytes of output lost here"),
            "{:?}",
            chunks[2]
        );
        assert!(held.is_empty());
        assert_eq!(held.bytes(), 0);

        // Room again: output is held after the notice, and a later loss has a notice of its own.
        held.hold(4, b"0123456789", 10);
        held.hold(5, b"x", 10);
        held.hold(6, b"y", 10);
        held.pop_front();
        held.hold(7, b"z", 10);
        let chunks = drain(&mut held);
        assert_eq!(chunks.len(), 2);
        assert!(
            chunks[0].1.contains(" 2 bytes of output lost"),
            "{chunks:?}"
        );
        assert_eq!(chunks[1], (7, "z".into()));
    }
}
