//! A witness of every status change.
//!
//! The queue appends each transition (`queued`, `running`, a final status, a requeue) to one
//! events stream in the same Lua script as the change itself, so reading that stream as it is
//! written gives the complete history of every job, even of jobs whose records the reaper has
//! since pruned. The stream is capped (`MAXLEN ~ 10000`); the tap reads continuously so nothing
//! is trimmed before it has been seen. It reconnects by itself while Redis is down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use raibid_model::JobStatus;
use redis::Value;

/// The events stream for the default `redis.stream_name`.
pub const EVENTS_KEY: &str = "raibid:ci-jobs:events";

/// One transition as the queue recorded it; `at_ms` comes from the stream entry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub job: String,
    pub status: JobStatus,
    pub at_ms: u64,
}

pub struct EventTap {
    seen: Arc<Mutex<Vec<Transition>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventTap {
    /// Starts reading `redis_url`'s events stream from its current end.
    pub fn start(redis_url: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let url = redis_url.to_owned();
        let start_id = current_end(&url);
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || tail(&url, start_id, &seen, &stop))
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn transitions(&self) -> Vec<Transition> {
        self.seen.lock().expect("lock").clone()
    }

    /// Per job, its transitions in order.
    pub fn histories(&self) -> BTreeMap<String, Vec<Transition>> {
        let mut by_job: BTreeMap<String, Vec<Transition>> = BTreeMap::new();
        for t in self.transitions() {
            by_job.entry(t.job.clone()).or_default().push(t);
        }
        by_job
    }

    /// How many jobs have reached a final status at least once.
    pub fn finished(&self) -> usize {
        self.histories()
            .values()
            .filter(|h| h.iter().any(|t| t.status.is_final()))
            .count()
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn current_end(url: &str) -> String {
    let mut conn = connect(url).expect("connect to redis for the event tap");
    let last: Value = redis::cmd("XREVRANGE")
        .arg(EVENTS_KEY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut conn)
        .expect("XREVRANGE");
    entries(&last)
        .first()
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| "0-0".into())
}

fn tail(url: &str, mut after: String, seen: &Mutex<Vec<Transition>>, stop: &AtomicBool) {
    let mut conn = None;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            conn = connect(url);
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(EVENTS_KEY)
            .arg(&after)
            .query(conn.as_mut().expect("connected"));
        let Ok(reply) = reply else {
            conn = None;
            continue;
        };
        let batch: Vec<(String, BTreeMap<String, String>)> = match &reply {
            Value::Array(streams) => streams
                .iter()
                .flat_map(|s| match s {
                    Value::Array(parts) if parts.len() == 2 => entries(&parts[1]),
                    _ => Vec::new(),
                })
                .collect(),
            Value::Map(streams) => streams.iter().flat_map(|(_, v)| entries(v)).collect(),
            _ => Vec::new(),
        };
        let mut seen = seen.lock().expect("lock");
        for (id, fields) in batch {
            let at_ms = id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .unwrap_or(0);
            after = id;
            if let (Some(job), Some(Ok(status))) = (
                fields.get("job"),
                fields.get("status").map(|s| s.parse::<JobStatus>()),
            ) {
                seen.push(Transition {
                    job: job.clone(),
                    status,
                    at_ms,
                });
            }
        }
    }
}

fn connect(url: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(url).ok()?;
    let conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(conn)
}

/// Stream entries as (id, fields).
fn entries(value: &Value) -> Vec<(String, BTreeMap<String, String>)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = text(pair.first()?)?;
            let Value::Array(raw) = pair.get(1)? else {
                return None;
            };
            let fields = raw
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
