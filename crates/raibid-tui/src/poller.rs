//! The background tasks that feed the dashboard: a poller for jobs, pools and agents, and a
//! follower for the open job's log. They talk to the server through `raibid-client` and to
//! the event loop through its channel only; when the channel closes, they stop.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use raibid_client::{Client, ClientError, ListJobs, LogEvent};
use raibid_model::JobStatus;
use tokio::sync::{Notify, mpsc, watch};

use crate::components::MAX_JOBS;
use crate::data::{DataEvent, JobsUpdate};
use crate::event::Message;

/// The newest jobs re-read at every poll; more than this many new jobs between two polls
/// reach the list only once they finish or through later history pages.
const NEWEST_PAGE: usize = 200;
/// The server's largest page: used for running jobs and for history. Queued jobs are re-read
/// with [`NEWEST_PAGE`]: a queue only changes at its old end (claims) and its new end (the
/// newest page), so re-reading the newest 1,000 of a deep queue every second refreshed nothing
/// and cost a megabyte of JSON per poll (BENCHMARKS.md, dashboard).
const FULL_PAGE: usize = 1000;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Doubling waits between failed attempts, from `first` up to [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration) -> Self {
        Self { first, next: first }
    }

    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Where the history walk is: the cursor of the next older page, and how much was read.
#[derive(Debug, Default)]
struct History {
    started: bool,
    cursor: Option<String>,
    loaded: usize,
}

pub(crate) struct Poller {
    pub client: Client,
    pub events: mpsc::UnboundedSender<Message>,
    pub refresh: Duration,
    /// The job whose record is re-read at every poll.
    pub open_job: watch::Receiver<Option<String>>,
    /// Poll now rather than at the next tick (after cancel, retry or opening a job).
    pub wake: Arc<Notify>,
}

impl Poller {
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let mut history = History::default();
        loop {
            let pause = match self.poll(&mut history).await {
                Ok(events) => {
                    backoff.reset();
                    for event in events {
                        if self.events.send(Message::Data(event)).is_err() {
                            return;
                        }
                    }
                    self.refresh
                }
                Err(error) => {
                    let wait = backoff.next_wait();
                    let retry_at = Utc::now() + wait;
                    let event = DataEvent::Disconnected {
                        error: error.to_string(),
                        retry_at,
                    };
                    if self.events.send(Message::Data(event)).is_err() {
                        return;
                    }
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// One look at the server: every request must succeed for the round to count, so the
    /// screens never mix fresh and stale halves of the same moment.
    async fn poll(&self, history: &mut History) -> Result<Vec<DataEvent>, ClientError> {
        let open = self.open_job.borrow().clone();
        let client = &self.client;
        let at = Utc::now();
        let newest_query = ListJobs {
            limit: Some(NEWEST_PAGE),
            ..ListJobs::default()
        };
        let queued_query = ListJobs {
            status: Some(JobStatus::Queued),
            limit: Some(NEWEST_PAGE),
            ..ListJobs::default()
        };
        let running_query = ListJobs {
            status: Some(JobStatus::Running),
            limit: Some(FULL_PAGE),
            ..ListJobs::default()
        };
        let (newest, queued, running, queues, agents, job) = tokio::try_join!(
            client.list(&newest_query),
            client.list(&queued_query),
            client.list(&running_query),
            client.queues(),
            client.agents(),
            async {
                match &open {
                    Some(id) => match client.job(id).await {
                        Ok(job) => Ok(Some(job)),
                        // Pruned while open: the screen keeps what it last saw.
                        Err(ClientError::Api { status: 404, .. }) => Ok(None),
                        Err(e) => Err(e),
                    },
                    None => Ok(None),
                }
            },
        )?;
        if !history.started {
            history.started = true;
            history.cursor = newest.next_cursor.clone();
        }
        let mut older = Vec::new();
        if let Some(cursor) = history.cursor.clone()
            && history.loaded < MAX_JOBS
        {
            let page = client
                .list(&ListJobs {
                    cursor: Some(cursor),
                    limit: Some(FULL_PAGE),
                    ..ListJobs::default()
                })
                .await?;
            history.loaded += page.jobs.len();
            history.cursor = page.next_cursor;
            older = page.jobs;
        }
        let mut events = vec![
            DataEvent::Jobs(JobsUpdate {
                newest: newest.jobs,
                active: queued.jobs.into_iter().chain(running.jobs).collect(),
                older,
                at,
            }),
            DataEvent::Pools {
                pools: queues.pools,
                scalers: queues.scalers,
                at,
            },
            DataEvent::Agents(agents),
        ];
        if let Some(job) = job {
            events.push(DataEvent::Job(Box::new(job)));
        }
        events.push(DataEvent::Connected { at });
        Ok(events)
    }
}

/// Streams `job_id`'s log into the event loop until the job ends, resuming after the last
/// chunk received whenever the stream breaks. Runs until aborted or the job's log is complete.
pub(crate) async fn follow_log(
    client: Client,
    job_id: String,
    events: mpsc::UnboundedSender<Message>,
) {
    let mut last_event: Option<String> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1));
    loop {
        let resume_after = last_event.clone();
        let result = client
            .follow_logs(&job_id, resume_after.as_deref(), |event| {
                if let LogEvent::Log { id, text } = event {
                    if id.is_some() {
                        last_event.clone_from(id);
                    }
                    backoff.reset();
                    let _ = events.send(Message::Data(DataEvent::Log {
                        job_id: job_id.clone(),
                        text: text.clone(),
                    }));
                }
            })
            .await;
        let (error, retrying) = match result {
            Ok(Some(status)) => {
                let _ = events.send(Message::Data(DataEvent::LogEnd { job_id, status }));
                return;
            }
            Ok(None) => ("the server closed the stream".to_owned(), true),
            // The job is gone or we may not read it: asking again will not change that.
            Err(ClientError::Api {
                status: 400..=499,
                message,
                ..
            }) => (message, false),
            Err(e) => (e.to_string(), true),
        };
        let event = DataEvent::LogInterrupted {
            job_id: job_id.clone(),
            error,
            retrying,
        };
        if events.send(Message::Data(event)).is_err() || !retrying {
            return;
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(1));
    }
}
