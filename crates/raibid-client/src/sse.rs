//! Just enough of the Server-Sent Events format for the log stream.

use raibid_model::JobStatus;
use serde::Deserialize;

/// One event of `GET /api/v1/jobs/{id}/logs?follow=true`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    /// Output; `id` is the cursor to resume from (`Last-Event-ID`).
    Log {
        id: Option<String>,
        text: String,
    },
    End {
        status: JobStatus,
    },
    /// The job was deleted before its log ended: nothing more will come, and reconnecting
    /// would only find no job. `message` is the server's explanation.
    Gone {
        message: String,
    },
}

#[derive(Deserialize)]
struct LogData {
    text: String,
}

#[derive(Deserialize)]
struct EndData {
    status: JobStatus,
}

/// `gone` carries the server's usual error body.
#[derive(Deserialize)]
struct GoneData {
    error: GoneDetail,
}

#[derive(Deserialize)]
struct GoneDetail {
    message: String,
}

/// Incremental parser: feed it bytes as they arrive, get complete events back.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.0).collect();
            self.buffer.drain(..end.1);
            if let Some(e) = parse_block(&String::from_utf8_lossy(&block)) {
                events.push(e);
            }
        }
        events
    }
}

/// Returns (end of block, length of the separator).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
    }
    None
}

fn parse_block(block: &str) -> Option<LogEvent> {
    let mut event = "message";
    let mut id = None;
    let mut data = String::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => {
                event = match value {
                    "end" => "end",
                    "log" => "log",
                    "gone" => "gone",
                    _ => "other",
                }
            }
            "id" => id = Some(value.to_owned()),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    match event {
        "log" | "message" if !data.is_empty() => {
            let text = serde_json::from_str::<LogData>(&data).ok()?.text;
            Some(LogEvent::Log { id, text })
        }
        "end" => {
            let status = serde_json::from_str::<EndData>(&data).ok()?.status;
            Some(LogEvent::End { status })
        }
        "gone" => {
            // Whatever the body, the event alone says the job is gone.
            let message = serde_json::from_str::<GoneData>(&data)
                .map(|d| d.error.message)
                .unwrap_or_else(|_| "the job was deleted before its log ended".into());
            Some(LogEvent::Gone { message })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(
            p.feed(b"event: log\nid: 1-0\ndata: {\"text\":\"hel")
                .is_empty()
        );
        let events =
            p.feed(b"lo\\n\"}\n\n: keep-alive\n\nevent: end\ndata: {\"status\":\"success\"}\n\n");
        assert_eq!(
            events,
            vec![
                LogEvent::Log {
                    id: Some("1-0".into()),
                    text: "hello\n".into()
                },
                LogEvent::End {
                    status: JobStatus::Success
                }
            ]
        );
    }

    #[test]
    fn gone_is_understood_with_or_without_its_message() {
        let mut p = SseParser::default();
        let events = p.feed(
            b"event: gone\ndata: {\"error\":{\"code\":\"gone\",\"message\":\"job X was deleted\"}}\n\n\
              event: gone\ndata: {}\n\n",
        );
        assert_eq!(
            events,
            vec![
                LogEvent::Gone {
                    message: "job X was deleted".into()
                },
                LogEvent::Gone {
                    message: "the job was deleted before its log ended".into()
                }
            ]
        );
    }

    #[test]
    fn ignores_garbage() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: log\ndata: not json\n\n").is_empty());
        assert!(p.feed(b"\r\n\r\n").is_empty());
    }
}
