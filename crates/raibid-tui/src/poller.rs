//! The background tasks that feed the dashboard: a poller for jobs, pools and agents, and a
//! follower for the open job's log. They talk to the server through `raibid-client` and to
//! the event loop through its channel only; when the channel closes, they stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use raibid_client::{Backoff, Client, ClientError, ListJobs, LogEvent};
use raibid_model::{Job, JobStatus, ListedJob};
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
/// and cost a megabyte of JSON per poll (BENCHMARKS.md, dashboard). Queued jobs deeper than
/// that page are re-read a few at a time instead (see [`Watch`]).
const FULL_PAGE: usize = 1000;
/// Longest wait between reconnection attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Jobs re-read one by one per poll (see [`Watch`]): enough for the jobs agents finish in a
/// second on a busy farm, few enough that a deep queue, whose old end is re-read in turns,
/// costs the server 50 small reads a poll rather than a megabyte of list.
const MAX_REREADS: usize = 50;
/// Single-job reads in flight at once.
const REREAD_CONCURRENCY: usize = 8;

/// Where the history walk is: the cursor of the next older page, and how much was read.
#[derive(Debug, Default)]
struct History {
    started: bool,
    cursor: Option<String>,
    loaded: usize,
}

/// The jobs last seen queued or running, each with the poll that last read it.
///
/// A poll's lists cover the newest page, the newest queued page and the running jobs, and
/// history pages are read once; a job older than the newest page that leaves those lists
/// (it finished, was cancelled, or was queued deeper than the queued page) would stay on
/// screen as last seen, a build "running" for ever. So each poll re-reads the watched jobs
/// its lists did not cover, least recently read first so that none waits for ever behind
/// jobs that stay queued, at most [`MAX_REREADS`], the rest at the next polls.
#[derive(Debug, Default)]
struct Watch {
    polls: u64,
    last_read: HashMap<String, u64>,
}

impl Watch {
    /// The watched jobs not in `covered` that are due for a re-read: least recently read
    /// first, oldest first among equals.
    fn due(&self, covered: &HashSet<&str>) -> Vec<String> {
        let mut due: Vec<(u64, &String)> = self
            .last_read
            .iter()
            .filter(|(id, _)| !covered.contains(id.as_str()))
            .map(|(id, read)| (*read, id))
            .collect();
        due.sort_unstable();
        due.into_iter()
            .take(MAX_REREADS)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Takes in what one poll read: every job of its lists and re-reads, and the re-read
    /// ids the server no longer has.
    fn record<'a>(&mut self, read: impl IntoIterator<Item = &'a Job>, gone: &[String]) {
        self.polls += 1;
        for job in read {
            if job.status.is_final() {
                self.last_read.remove(&job.id);
            } else {
                self.last_read.insert(job.id.clone(), self.polls);
            }
        }
        for id in gone {
            self.last_read.remove(id);
        }
    }
}

/// The records of listed jobs.
fn jobs(listed: Vec<ListedJob>) -> Vec<Job> {
    listed.into_iter().map(|l| l.job).collect()
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
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
        let mut history = History::default();
        let mut watch = Watch::default();
        loop {
            let pause = match self.poll(&mut history, &mut watch).await {
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
    async fn poll(
        &self,
        history: &mut History,
        watch: &mut Watch,
    ) -> Result<Vec<DataEvent>, ClientError> {
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
        // Jobs waiting for approval stay on screen, and change when someone approves them.
        let blocked_query = ListJobs {
            status: Some(JobStatus::Blocked),
            limit: Some(NEWEST_PAGE),
            ..ListJobs::default()
        };
        let (newest, queued, running, blocked, queues, agents, job) = tokio::try_join!(
            client.list(&newest_query),
            client.list(&queued_query),
            client.list(&running_query),
            client.list(&blocked_query),
            client.queues(),
            client.agents(),
            async {
                match &open {
                    // Pruned while open (None): the screen keeps what it last saw.
                    Some(id) => client.find_job(id).await,
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
            older = jobs(page.jobs);
        }
        // The dashboard combines a build's status from the jobs it holds (`JobStore`), which
        // the watch keeps fresh; the lists' own combination would go stale on a first job
        // that is no longer listed.
        let newest = jobs(newest.jobs);
        let active: Vec<Job> = jobs(blocked.jobs)
            .into_iter()
            .chain(jobs(queued.jobs))
            .chain(jobs(running.jobs))
            .collect();
        let covered: HashSet<&str> = newest
            .iter()
            .chain(&active)
            .chain(&older)
            .map(|j| j.id.as_str())
            .collect();
        let rereads: Vec<Result<Job, String>> = futures::stream::iter(watch.due(&covered))
            // Err(id): pruned since it was last seen.
            .map(|id| async move { client.find_job(&id).await.map(|found| found.ok_or(id)) })
            .buffered(REREAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut refreshed = Vec::new();
        let mut gone = Vec::new();
        for reread in rereads {
            match reread {
                Ok(job) => refreshed.push(job),
                Err(id) => gone.push(id),
            }
        }
        watch.record(
            newest.iter().chain(&active).chain(&older).chain(&refreshed),
            &gone,
        );
        let mut events = vec![
            DataEvent::Jobs(JobsUpdate {
                newest,
                active,
                older,
                refreshed,
                gone,
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
    let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
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
        let retry_after = match &result {
            Err(ClientError::Api { retry_after, .. }) => *retry_after,
            _ => None,
        };
        let (error, retrying) = match result {
            Ok(Some(status)) => {
                let _ = events.send(Message::Data(DataEvent::LogEnd { job_id, status }));
                return;
            }
            Ok(None) => ("the server closed the stream".to_owned(), true),
            // Too many streams for this client (another dashboard, a `raibid job logs -f`):
            // one frees up as those end, like the server-wide limit's 503.
            Err(ClientError::Api {
                status: 429,
                message,
                ..
            }) => (message, true),
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
        tokio::time::sleep(retry_wait(retry_after, &mut backoff)).await;
    }
}

/// The server's `Retry-After` when it sent one (capped like the backoff), else the backoff.
fn retry_wait(retry_after: Option<Duration>, backoff: &mut Backoff) -> Duration {
    let next = backoff.next_wait();
    retry_after.map_or(next, |wait| wait.min(MAX_BACKOFF))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::JobStore;
    use crate::test_support::job;
    use raibid_model::{Event, NewJob, Outcome, PoolName};
    use raibid_queue::{Enqueued, Queue, QueueOptions};
    use raibid_testkit::RedisServer;

    #[test]
    fn the_server_s_retry_after_wins_over_the_backoff() {
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
        assert_eq!(
            retry_wait(Some(Duration::from_secs(7)), &mut backoff),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_wait(Some(Duration::from_secs(3600)), &mut backoff),
            MAX_BACKOFF
        );
        let without = retry_wait(None, &mut backoff);
        assert!(without <= MAX_BACKOFF && without != Duration::from_secs(7));
    }

    fn covered<'a>(ids: &[&'a str]) -> HashSet<&'a str> {
        ids.iter().copied().collect()
    }

    #[test]
    fn watch_rereads_active_jobs_the_lists_missed() {
        let mut watch = Watch::default();
        watch.record(
            &[
                job("03", "a/a", JobStatus::Queued),
                job("02", "a/a", JobStatus::Running),
                job("01", "a/a", JobStatus::Success),
            ],
            &[],
        );
        // 03 is still on a list; 02 left them all; 01 had finished already.
        assert_eq!(watch.due(&covered(&["03"])), ["02"]);
        watch.record(&[job("02", "a/a", JobStatus::Success)], &[]);
        assert!(watch.due(&covered(&[])).contains(&"03".to_owned()));
        assert!(!watch.due(&covered(&[])).contains(&"02".to_owned()));
        // A job the server no longer has is not asked for again.
        watch.record(&[], &["03".to_owned()]);
        assert!(watch.due(&covered(&[])).is_empty());
    }

    #[test]
    fn watch_rereads_a_bounded_number_in_turns() {
        let mut watch = Watch::default();
        let queued: Vec<Job> = (0..120)
            .map(|i| job(&format!("{i:03}"), "a/a", JobStatus::Queued))
            .collect();
        watch.record(&queued, &[]);
        let first = watch.due(&covered(&[]));
        assert_eq!(first.len(), MAX_REREADS);
        assert_eq!(first[0], "000", "oldest first");
        assert_eq!(first[MAX_REREADS - 1], "049");
        // Still queued when re-read: they go to the back of the line, so the next poll
        // reads the next 50 rather than the same ones again.
        let reread: Vec<&Job> = queued.iter().take(MAX_REREADS).collect();
        watch.record(reread, &[]);
        let second = watch.due(&covered(&[]));
        assert_eq!(second[0], "050");
        assert_eq!(second[MAX_REREADS - 1], "099");
    }

    /// A server that refuses the first log stream as raibid's does when a client holds too
    /// many (429 with Retry-After), then streams one line and the end. Returns its URL and
    /// the number of log requests so far.
    async fn log_server_refusing_once() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use raibid_testkit::canned_http::{answering, http_response};
        let refused = r#"{"error":{"code":"too_many_log_streams_for_client","message":"this client already follows 4 logs"}}"#;
        let log = "event: log\nid: 1-0\ndata: {\"text\":\"hello\\n\"}\n\n\
                   event: end\ndata: {\"status\":\"success\"}\n\n";
        answering(vec![
            http_response(429, "application/json", &["retry-after: 1"], refused),
            http_response(200, "text/event-stream", &[], log),
        ])
        .await
    }

    /// A 429 (this client follows too many logs) stopped following for good, though a
    /// stream frees up as soon as another one ends.
    #[tokio::test]
    async fn a_refused_log_stream_is_asked_for_again() {
        let (url, requests) = log_server_refusing_once().await;
        let client = Client::new(&url, None).expect("client");
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Without a retry that ends, it would reconnect for ever: bound the test, not the
        // code.
        tokio::time::timeout(Duration::from_secs(60), follow_log(client, "01".into(), tx))
            .await
            .expect("the log was followed to its end");
        let mut seen = Vec::new();
        while let Ok(Message::Data(event)) = rx.try_recv() {
            seen.push(match event {
                DataEvent::LogInterrupted {
                    error, retrying, ..
                } => format!("interrupted retrying={retrying}: {error}"),
                DataEvent::Log { text, .. } => format!("log: {text}"),
                DataEvent::LogEnd { status, .. } => format!("end: {status:?}"),
                _ => continue,
            });
        }
        assert_eq!(
            seen,
            [
                "interrupted retrying=true: this client already follows 4 logs",
                "log: hello\n",
                "end: Success",
            ]
        );
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    fn queue(redis: &RedisServer) -> Queue {
        let mut options = QueueOptions::new(redis.url());
        options.command_timeout = Duration::from_secs(2);
        Queue::open(options).expect("open queue")
    }

    async fn enqueue(queue: &Queue, n: usize, pool: &str) -> Job {
        let mut spec = NewJob::new(
            "e2e/poller",
            "https://git.example/e2e/poller.git",
            "refs/heads/main",
            format!("{n:040x}"),
            Event::Manual,
        );
        spec.pool = PoolName::new(pool).expect("pool name");
        match queue.enqueue(spec).await.expect("enqueue") {
            Enqueued::Created(job) => *job,
            Enqueued::Duplicate { .. } => panic!("a fresh job cannot be a duplicate"),
        }
    }

    fn jobs_update(events: Vec<DataEvent>) -> JobsUpdate {
        events
            .into_iter()
            .find_map(|e| match e {
                DataEvent::Jobs(update) => Some(update),
                _ => None,
            })
            .expect("a poll brings jobs")
    }

    /// Against a real server and Redis: jobs that finish, are cancelled or are pruned after
    /// more than a newest page of jobs was queued in front of them reach the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_that_leave_the_lists_are_reread_from_a_real_server() {
        let redis = RedisServer::start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(raibid_server::serve(
            listener,
            raibid_server::ServerOptions {
                config: raibid_config::Config::default(),
                queue: queue(&redis),
                instance: "tui-poller".into(),
                clock: raibid_server::system_clock(),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let queue = queue(&redis);
        // Oldest first: one to be pruned, one to be cancelled while queued (in a pool no
        // agent serves), one long build.
        let pruned = enqueue(&queue, 0, "default").await;
        let cancelled = enqueue(&queue, 1, "other").await;
        let build = enqueue(&queue, 2, "default").await;
        let mut claimer = queue.claimer("agent").await.expect("claimer");
        let mut claims = Vec::new();
        for expected in [&pruned, &build] {
            let claimed = claimer
                .claim(&[PoolName::default()], Duration::ZERO)
                .await
                .expect("claim")
                .expect("a job to claim");
            assert_eq!(claimed.job.id, expected.id);
            claims.push(claimed);
        }

        let (events, _inbox) = mpsc::unbounded_channel();
        let (_open, open_job) = watch::channel(None);
        let poller = Poller {
            client: Client::new(&url, None).expect("client"),
            events,
            refresh: Duration::from_secs(1),
            open_job,
            wake: Arc::new(Notify::new()),
        };
        let mut history = History::default();
        let mut watch = Watch::default();
        let mut store = JobStore::default();
        store.apply(jobs_update(
            poller.poll(&mut history, &mut watch).await.expect("poll"),
        ));
        let status = |store: &JobStore, id: &str| store.get(id).map(|j| j.status);
        assert_eq!(status(&store, &build.id), Some(JobStatus::Running));
        assert_eq!(status(&store, &cancelled.id), Some(JobStatus::Queued));

        // A newest page of jobs queued after them, then they change.
        for n in 0..NEWEST_PAGE {
            enqueue(&queue, 100 + n, "default").await;
        }
        for claimed in &claims {
            assert!(
                queue
                    .ack(claimed, &Outcome::new(JobStatus::Success))
                    .await
                    .expect("ack")
            );
        }
        queue.cancel(&cancelled.id).await.expect("cancel");
        let total = u64::try_from(NEWEST_PAGE + 3).unwrap();
        assert_eq!(queue.prune(total - 1).await.expect("prune"), 1);

        let update = jobs_update(poller.poll(&mut history, &mut watch).await.expect("poll"));
        let gone = update.gone.clone();
        store.apply(update);
        assert_eq!(status(&store, &build.id), Some(JobStatus::Success));
        assert_eq!(status(&store, &cancelled.id), Some(JobStatus::Cancelled));
        assert_eq!(status(&store, &pruned.id), None, "pruned: dropped");
        assert_eq!(gone, [pruned.id]);
        // Nothing is left to watch beyond the lists: the next poll re-reads nothing.
        let update = jobs_update(poller.poll(&mut history, &mut watch).await.expect("poll"));
        assert!(update.refreshed.is_empty() && update.gone.is_empty());

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("server stopped")
            .expect("server task")
            .expect("server result");
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_secs(1));
    }
}
