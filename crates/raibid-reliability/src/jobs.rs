//! What a test queued, and the verdict on what became of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use raibid_client::{Client, ClientError, SubmitJob};
use raibid_forge::send::{Push, gitea_push_body, gitea_push_headers};
use raibid_model::{Job, JobStatus};

use crate::events::{EventTap, Transition};

/// The jobs a test queued, by id.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub ids: BTreeSet<String>,
}

impl Ledger {
    pub fn add(&mut self, id: impl Into<String>) {
        self.ids.insert(id.into());
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Waits until every job has reached a final status (or `timeout`), then judges.
    pub async fn wait_finished(&self, tap: &EventTap, timeout: Duration) -> Verdict {
        let deadline = Instant::now() + timeout;
        loop {
            let verdict = Verdict::judge(&self.ids, &tap.histories());
            if verdict.unfinished.is_empty() || Instant::now() > deadline {
                return verdict;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What the events stream says about a set of jobs.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub jobs: usize,
    /// Jobs without any final status: lost or still running.
    pub unfinished: Vec<String>,
    /// Jobs that reached a final status more than once (an ack after a requeue would do that).
    pub finished_twice: Vec<String>,
    /// Final status of each finished job.
    pub finals: BTreeMap<String, JobStatus>,
    /// Deliveries (`running` transitions) per job: `Job::attempt` as the events saw it.
    pub deliveries: BTreeMap<String, u32>,
    /// Jobs that appeared in the events but were never queued by the test.
    pub strangers: Vec<String>,
    /// Milliseconds from the first `queued` to the final status, per finished job.
    pub latency_ms: BTreeMap<String, u64>,
}

impl Verdict {
    pub fn judge(ids: &BTreeSet<String>, histories: &BTreeMap<String, Vec<Transition>>) -> Self {
        let mut verdict = Verdict {
            jobs: ids.len(),
            ..Default::default()
        };
        for id in ids {
            let history = histories.get(id).map(Vec::as_slice).unwrap_or_default();
            let finals: Vec<&Transition> = history.iter().filter(|t| t.status.is_final()).collect();
            let runs = history
                .iter()
                .filter(|t| t.status == JobStatus::Running)
                .count() as u32;
            verdict.deliveries.insert(id.clone(), runs);
            match finals.as_slice() {
                [] => verdict.unfinished.push(id.clone()),
                [first, rest @ ..] => {
                    if !rest.is_empty() {
                        verdict.finished_twice.push(id.clone());
                    }
                    verdict.finals.insert(id.clone(), first.status);
                    if let Some(queued) = history.first() {
                        verdict
                            .latency_ms
                            .insert(id.clone(), first.at_ms.saturating_sub(queued.at_ms));
                    }
                }
            }
        }
        verdict.strangers = histories
            .keys()
            .filter(|id| !ids.contains(*id))
            .cloned()
            .collect();
        verdict
    }

    /// Total deliveries over all jobs.
    pub fn total_deliveries(&self) -> u64 {
        self.deliveries.values().map(|&d| u64::from(d)).sum()
    }

    /// Jobs whose final status is not `expected`.
    pub fn not(&self, expected: JobStatus) -> Vec<(String, JobStatus)> {
        self.finals
            .iter()
            .filter(|(_, s)| **s != expected)
            .map(|(id, s)| (id.clone(), *s))
            .collect()
    }

    /// The promise to users: every job ended once, as `expected`, and nothing else appeared.
    pub fn assert_each_once(&self, expected: JobStatus, context: &str) {
        assert!(
            self.unfinished.is_empty(),
            "{} of {} jobs never finished (lost): {:?}\n{context}",
            self.unfinished.len(),
            self.jobs,
            self.unfinished
        );
        assert!(
            self.finished_twice.is_empty(),
            "jobs finished twice: {:?}\n{context}",
            self.finished_twice
        );
        assert!(
            self.not(expected).is_empty(),
            "jobs that did not end {expected}: {:?}\n{context}",
            self.not(expected)
        );
        assert!(
            self.strangers.is_empty(),
            "jobs nobody queued: {:?}\n{context}",
            self.strangers
        );
    }

    /// The `q`-quantile of queued-to-final latency, in milliseconds.
    pub fn latency_quantile(&self, q: f64) -> u64 {
        let mut all: Vec<u64> = self.latency_ms.values().copied().collect();
        all.sort_unstable();
        quantile(&all, q)
    }
}

pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Headers and body of a signed Gitea push of `sha` to `git_ref`, delivery id `delivery`.
pub fn push_webhook(
    secret: &str,
    repo: &str,
    clone_url: &str,
    git_ref: &str,
    sha: &str,
    delivery: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = gitea_push_body(&Push {
        repo: repo.to_owned(),
        clone_url: clone_url.to_owned(),
        git_ref: git_ref.to_owned(),
        before: "0".repeat(40),
        after: sha.to_owned(),
        sender: "reliability".to_owned(),
        message: "push".into(),
    });
    let headers = gitea_push_headers(&body, secret.as_bytes(), delivery);
    (headers, body)
}

/// Submits through the API, retrying what a well-behaved client retries: 503 (queue full or
/// Redis away) after a short pause. Returns the job and how many 503s it took.
pub async fn submit_until_accepted(
    client: &Client,
    job: &SubmitJob,
    timeout: Duration,
) -> (Job, u32) {
    let deadline = Instant::now() + timeout;
    let mut refusals = 0;
    loop {
        match client.submit(job).await {
            Ok(accepted) => return (accepted, refusals),
            Err(ClientError::Api { status: 503, .. }) if Instant::now() < deadline => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("submission refused after {refusals} retries: {e}"),
        }
    }
}

/// Polls the API until job `id` has a final status; fails the test after `within`.
pub async fn wait_final(client: &Client, id: &str, within: Duration) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = client.job(id).await.unwrap();
        if job.status.is_final() {
            return job;
        }
        assert!(Instant::now() < deadline, "{id} still {}", job.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job agent `agent` ran (or runs), and its status now, read straight from Redis: a
/// `raibid up` agent runs one job (`--once`) under a name of its own.
pub fn job_of_agent(conn: &mut redis::Connection, agent: &str) -> Option<(String, String)> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg("raibid:ci-jobs:jobs")
        .arg(0)
        .arg(-1)
        .query(conn)
        .unwrap();
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HMGET")
            .arg(format!("raibid:ci-jobs:job:{id}"))
            .arg("agent")
            .arg("status");
    }
    let fields: Vec<(Option<String>, Option<String>)> = pipe.query(conn).unwrap();
    ids.into_iter()
        .zip(fields)
        .find(|(_, (a, _))| a.as_deref() == Some(agent))
        .map(|(id, (_, status))| (id, status.unwrap_or_default()))
}

/// The whole stored log of job `id`.
pub async fn log_of(client: &Client, id: &str) -> String {
    client.logs(id, None).await.unwrap().text
}
