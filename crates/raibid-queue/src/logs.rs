//! Per-job log streams: append-only, bounded, readable from an offset and followable.

use std::time::Duration;

use raibid_model::JobStatus;
use redis::Value;

use crate::conn::bounded;
use crate::queue::valid_id;
use crate::{Queue, QueueError, reply, scripts};

/// Where a reader is in a job's log: the id of the last entry it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogCursor(pub String);

impl LogCursor {
    pub fn start() -> Self {
        Self("0-0".into())
    }

    /// Parses a cursor given by a client; only stream ids are accepted, and they are kept in
    /// Redis's own spelling (`+5` or `007` would be Redis errors, hence 5xx, not 4xx).
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self(format!(
            "{}-{}",
            ms.parse::<u64>().ok()?,
            seq.parse::<u64>().ok()?
        )))
    }

    /// The largest stream id: nothing can follow it (and `XRANGE (` refuses it).
    fn is_last_possible(&self) -> bool {
        self.0 == format!("{}-{}", u64::MAX, u64::MAX)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub cursor: LogCursor,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    pub chunks: Vec<LogChunk>,
    /// Where to continue reading.
    pub next: LogCursor,
    /// The job has finished and nothing more will be written.
    pub finished: bool,
}

/// A job record's `log_bytes`, `log_truncated` and `log_lines`.
type LogCounts = (Option<u64>, Option<String>, Option<String>);

/// The most entries [`Queue::read_log_end`] asks for at once after its first read.
const LOG_END_MAX_READ: usize = 4096;

/// The end of a log ([`Queue::read_log_end`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    /// Oldest first.
    pub chunks: Vec<LogChunk>,
    /// Bytes of the log before `chunks`.
    pub skipped: u64,
    /// Line breaks in the log before `chunks`, so that a page of its end numbers its lines as
    /// in the whole log without reading it; `None` for a log whose lines were not counted as
    /// it was written (begun or appended to by an agent older than the count), to be counted
    /// by reading it.
    pub lines_before: Option<u64>,
    /// The newest entry: a follower continues after it.
    pub cursor: LogCursor,
    /// The job has finished and nothing more will be written.
    pub finished: bool,
}

/// One writer of a job's log that tries a chunk again when an append timed out
/// ([`Queue::append_log_as`]). A timed-out append may still land, late, when a stalled Redis
/// catches up, and its retry would then print the chunk twice; a writer numbers its chunks,
/// and the job's record keeps the number of the last one it appended.
#[derive(Debug, Clone)]
pub struct LogWriter {
    /// The record's field for this writer: one per writer, since steps side by side each
    /// write the job's log through a writer of their own.
    field: String,
}

impl LogWriter {
    pub fn new() -> Self {
        Self {
            field: format!("log_chunk:{}", ulid::Ulid::new()),
        }
    }
}

impl Default for LogWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    /// Appends output; returns `false` once the log has hit its cap, or when the job no
    /// longer exists (pruned): the output is dropped.
    pub async fn append_log(&self, job_id: &str, data: &[u8]) -> Result<bool, QueueError> {
        self.append(job_id, data, None).await
    }

    /// [`Queue::append_log`] of `writer`'s chunk number `chunk`, which is not appended again
    /// when it was `writer`'s last (a retry of an append that landed after all).
    pub async fn append_log_as(
        &self,
        job_id: &str,
        data: &[u8],
        writer: &LogWriter,
        chunk: u64,
    ) -> Result<bool, QueueError> {
        self.append(job_id, data, Some((writer, chunk))).await
    }

    async fn append(
        &self,
        job_id: &str,
        data: &[u8],
        chunk: Option<(&LogWriter, u64)>,
    ) -> Result<bool, QueueError> {
        if data.is_empty() {
            return Ok(true);
        }
        let mut invocation = scripts::APPEND_LOG.prepare_invoke();
        invocation
            .key(self.keys.job(job_id))
            .key(self.keys.log(job_id))
            .arg(data)
            .arg(self.options.log_max_bytes)
            .arg(line_breaks(data));
        if let Some((writer, chunk)) = chunk {
            invocation.arg(&writer.field).arg(chunk);
        }
        let stored: i64 = self.conn.script(&invocation).await?;
        Ok(stored == 1)
    }

    /// Reads what follows `after`, at most `count` chunks, without waiting.
    pub async fn read_log(
        &self,
        job_id: &str,
        after: &LogCursor,
        count: usize,
    ) -> Result<LogBatch, QueueError> {
        if !valid_id(job_id) {
            return Err(QueueError::NotFound(job_id.to_owned()));
        }
        if after.is_last_possible() {
            return decode_entries(&[], after);
        }
        let reply: Value = self
            .conn
            .run(
                redis::cmd("XRANGE")
                    .arg(self.keys.log(job_id))
                    .arg(format!("({}", after.0))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await?;
        decode_entries(reply::array(&reply), after)
    }

    /// The end of job `job_id`'s log: its newest entries, read backwards until they hold at
    /// least `min_bytes` or the log's start is reached, so a page that shows a log's last MiB
    /// reads about that much rather than the whole log (up to `log_max_bytes`, 10 MiB by
    /// default) for every view. The first read takes `count` entries, the next ones as many as
    /// the bytes still wanted take at the size of the entries read so far: an agent's entries
    /// are anything from a line to 64 KiB, and a fixed count that reads a MiB of lines reads a
    /// whole log of 64 KiB entries at once.
    ///
    /// The first read and the job's byte count are one transaction, so `skipped`, the bytes
    /// before the returned chunks, is exact even while the job writes; later reads only go
    /// back over entries that never change.
    pub async fn read_log_end(
        &self,
        job_id: &str,
        min_bytes: usize,
        count: usize,
    ) -> Result<LogEnd, QueueError> {
        if !valid_id(job_id) {
            return Err(QueueError::NotFound(job_id.to_owned()));
        }
        let count = count.max(1);
        let log = self.keys.log(job_id);
        let mut first = redis::pipe();
        first
            .atomic()
            .cmd("HMGET")
            .arg(self.keys.job(job_id))
            .arg("log_bytes")
            .arg("log_truncated")
            .arg("log_lines")
            .cmd("XREVRANGE")
            .arg(&log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count);
        let (counts, entries): (LogCounts, Value) = self.conn.pipe(&first).await?;
        let (logged, truncated) = (counts.0.unwrap_or(0), counts.1.as_deref() == Some("1"));
        let lines = counts.2.as_deref().and_then(|l| counted_lines(l, logged));
        let entries = reply::array(&entries);
        let mut newest_first = decode_entries(entries, &LogCursor::start())?;
        let end = LogEnd {
            // The newest entry of any kind (the end marker has no output).
            cursor: decode_entries(&entries[..entries.len().min(1)], &LogCursor::start())?.next,
            finished: newest_first.finished,
            chunks: Vec::new(),
            skipped: 0,
            lines_before: None,
        };
        // The byte count leaves out the notice a truncated log ends with, its newest entry.
        let notice = match (truncated, newest_first.chunks.first()) {
            (true, Some(chunk)) => chunk.data.len() as u64,
            _ => 0,
        };
        let mut chunks = std::mem::take(&mut newest_first.chunks);
        let mut bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        let mut at_start = entries.len() < count;
        while bytes < min_bytes && !at_start {
            let Some(oldest) = chunks.last().map(|c| c.cursor.clone()) else {
                break;
            };
            let average = (bytes / chunks.len()).max(1);
            let count = (min_bytes - bytes)
                .div_ceil(average)
                .clamp(1, LOG_END_MAX_READ);
            let reply: Value = self
                .conn
                .run(
                    redis::cmd("XREVRANGE")
                        .arg(&log)
                        .arg(format!("({}", oldest.0))
                        .arg("-")
                        .arg("COUNT")
                        .arg(count),
                )
                .await?;
            let older = reply::array(&reply);
            at_start = older.len() < count;
            let batch = decode_entries(older, &oldest)?;
            bytes += batch.chunks.iter().map(|c| c.data.len()).sum::<usize>();
            chunks.extend(batch.chunks);
        }
        chunks.reverse();
        let read = bytes as u64;
        if read == 0 {
            return Ok(LogEnd { chunks, ..end });
        }
        let breaks: u64 = chunks.iter().map(|c| line_breaks(&c.data)).sum();
        Ok(LogEnd {
            chunks,
            skipped: (logged + notice).saturating_sub(read),
            lines_before: lines.map(|total| total.saturating_sub(breaks)),
            ..end
        })
    }

    /// Opens a dedicated connection for following one log with `XREAD BLOCK`.
    pub async fn log_follower(&self, job_id: &str) -> Result<LogFollower, QueueError> {
        if !valid_id(job_id) {
            return Err(QueueError::NotFound(job_id.to_owned()));
        }
        Ok(LogFollower {
            conn: self.conn.dedicated().await?,
            key: self.keys.log(job_id),
            job_key: self.keys.job(job_id),
            timeout: self.conn.timeout(),
        })
    }
}

/// The line count of a job record's `log_lines` (`<log_bytes>:<lines>`, kept by the append
/// script), if it counts the `logged` bytes the record has now.
fn counted_lines(field: &str, logged: u64) -> Option<u64> {
    let (bytes, lines) = field.split_once(':')?;
    (bytes.parse::<u64>().ok()? == logged).then_some(())?;
    lines.parse().ok()
}

/// The number of `\n` in `bytes`: how the append script's count of a log's lines is kept, and
/// how a reader counts the lines it reads.
pub fn line_breaks(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Waits for new output of one job; each follower holds its own connection.
pub struct LogFollower {
    conn: redis::aio::MultiplexedConnection,
    key: String,
    job_key: String,
    timeout: Duration,
}

/// Entries per read while following.
const FOLLOW_BATCH: usize = 512;

impl LogFollower {
    /// Returns new chunks after `after`, waiting up to `block` for the first one.
    ///
    /// A job that printed nothing has no log stream and so no end marker (the queue does not
    /// create a stream, 4 KiB in Redis, only to say it ended): when a wait ends empty-handed,
    /// the job's status says whether more can come.
    pub async fn next(
        &mut self,
        after: &LogCursor,
        block: Duration,
    ) -> Result<LogBatch, QueueError> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(FOLLOW_BATCH)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&after.0);
        let reply: Value = bounded(block + self.timeout, cmd.query_async(&mut self.conn)).await?;
        let entries = reply::array(&reply)
            .first()
            .map(|stream| reply::array(stream).get(1).map(reply::array).unwrap_or(&[]))
            .unwrap_or(&[]);
        if !entries.is_empty() {
            return decode_entries(entries, after);
        }
        let status: Option<String> = bounded(
            self.timeout,
            redis::cmd("HGET")
                .arg(&self.job_key)
                .arg("status")
                .query_async(&mut self.conn),
        )
        .await?;
        let ended = match status {
            // Pruned: nothing will ever be written again.
            None => true,
            Some(s) => s.parse::<JobStatus>().is_ok_and(|s| s.is_final()),
        };
        if !ended || after.is_last_possible() {
            let mut batch = decode_entries(&[], after)?;
            batch.finished = ended;
            return Ok(batch);
        }
        // Output written between the empty wait and the status read is still to be passed on.
        let rest: Value = bounded(
            self.timeout,
            redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(format!("({}", after.0))
                .arg("+")
                .arg("COUNT")
                .arg(FOLLOW_BATCH)
                .query_async(&mut self.conn),
        )
        .await?;
        let rest = reply::array(&rest);
        let mut batch = decode_entries(rest, after)?;
        batch.finished |= rest.len() < FOLLOW_BATCH;
        Ok(batch)
    }
}

fn decode_entries(entries: &[Value], after: &LogCursor) -> Result<LogBatch, QueueError> {
    let mut batch = LogBatch {
        chunks: Vec::new(),
        next: after.clone(),
        finished: false,
    };
    for entry in entries {
        let parts = reply::array(entry);
        let id = parts
            .first()
            .map(reply::string)
            .transpose()?
            .unwrap_or_default();
        let fields = parts.get(1).map(reply::array).unwrap_or(&[]);
        batch.next = LogCursor(id.clone());
        for pair in fields.chunks(2) {
            match pair {
                [k, Value::BulkString(data)] if reply::string(k)? == "d" => {
                    batch.chunks.push(LogChunk {
                        cursor: LogCursor(id.clone()),
                        data: data.clone(),
                    });
                }
                [k, _] if reply::string(k)? == "eof" => batch.finished = true,
                _ => {}
            }
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_accepts_stream_ids_only() {
        assert!(LogCursor::parse("1700000000000-3").is_some());
        assert!(LogCursor::parse("+").is_none());
        assert!(LogCursor::parse("1-x").is_none());
        assert!(LogCursor::parse("abc").is_none());
        assert!(LogCursor::parse("+5-1").is_none());
        assert!(LogCursor::parse("5-").is_none());
        assert_eq!(LogCursor::parse("007-01").unwrap().0, "7-1");
        assert!(LogCursor::parse("18446744073709551616-0").is_none());
        assert!(
            LogCursor::parse("18446744073709551615-18446744073709551615")
                .unwrap()
                .is_last_possible()
        );
    }

    #[test]
    fn a_line_count_holds_only_for_the_bytes_it_counted() {
        assert_eq!(counted_lines("120:7", 120), Some(7));
        assert_eq!(counted_lines("0:0", 0), Some(0));
        assert_eq!(
            counted_lines("120:7", 130),
            None,
            "stale: appended uncounted"
        );
        assert_eq!(counted_lines("120", 120), None);
        assert_eq!(counted_lines("x:7", 120), None);
        assert_eq!(counted_lines("120:", 120), None);
    }
}
