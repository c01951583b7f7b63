//! Fixed data for the tests: the same jobs, pools and agents at the same instants every run.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use raibid_client::AgentEntry;
use raibid_model::{
    AgentInfo, ConsumerStats, Event as GitEvent, Job, JobStatus, NewJob, PoolName, PoolStats,
};

/// `secs` after the fixtures' epoch, 2025-06-02 12:00:00 UTC.
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

pub fn key(code: KeyCode) -> Event {
    key_with(code, KeyModifiers::NONE)
}

pub fn key_with(code: KeyCode, modifiers: KeyModifiers) -> Event {
    Event::Key(KeyEvent {
        code,
        modifiers,
        kind: KeyEventKind::Press,
        state: KeyEventState::NONE,
    })
}

/// The key presses that type `text`.
pub fn typed(text: &str) -> Vec<Event> {
    text.chars().map(|c| key(KeyCode::Char(c))).collect()
}

/// A job created a minute before the epoch, on `main`; started and finished as its status
/// implies.
pub fn job(id: &str, repo: &str, status: JobStatus) -> Job {
    let created_at = at(-60);
    let started_at = (status != JobStatus::Queued).then(|| at(-50));
    let finished_at = status.is_final().then(|| at(-5));
    Job {
        id: id.to_owned(),
        spec: NewJob {
            repo: repo.to_owned(),
            clone_url: format!("https://git.example/{repo}.git"),
            git_ref: "refs/heads/main".to_owned(),
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            event: GitEvent::Push,
            pool: PoolName::default(),
            forge: None,
            pr_number: None,
            from_fork: false,
            sender: None,
            delivery_id: None,
            env: BTreeMap::new(),
            retry_of: None,
        },
        status,
        attempt: u32::from(started_at.is_some()),
        created_at,
        started_at,
        finished_at,
        agent: started_at.map(|_| "agent-1".to_owned()),
        reason: None,
        cancel_requested: false,
        steps: Vec::new(),
        images: Vec::new(),
    }
}

pub fn pool(name: &str, lag: u64) -> PoolStats {
    PoolStats {
        pool: PoolName::new(name).unwrap(),
        stream: format!("raibid:jobs:{name}"),
        length: lag + 40,
        lag,
        pending: 1,
        consumers: vec![ConsumerStats {
            name: "agent-1".into(),
            pending: 1,
            idle_ms: 200,
        }],
        oldest_queued_ms: (lag > 0).then_some(95_000),
        dead_letters: 0,
    }
}

pub fn agent(name: &str, pools: &[&str], job: Option<&str>, stale: bool) -> AgentEntry {
    AgentEntry {
        info: AgentInfo {
            name: name.to_owned(),
            arch: "aarch64".into(),
            pools: pools.iter().map(|p| PoolName::new(*p).unwrap()).collect(),
            labels: BTreeMap::from([("host".to_owned(), "dgx".to_owned())]),
            current_jobs: job.into_iter().map(str::to_owned).collect(),
            started_at: at(-3600),
            last_heartbeat: if stale { at(-300) } else { at(-2) },
            jobs_done: 17,
            version: "0.1.0".into(),
        },
        stale,
    }
}
