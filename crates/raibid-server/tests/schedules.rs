//! The scheduler against a real redis-server and real git repositories, with a clock the tests
//! move: each occurrence queues one job however many servers run, a missed occurrence older
//! than its period is not run, and a branch that cannot be resolved is logged and retried
//! without stopping the other schedules.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use raibid_config::{Config, CronExpr, Schedule, ScheduleName};
use raibid_model::{Event, Job};
use raibid_server::{Clock, ServerOptions};
use raibid_testkit::{GitRepo, RedisServer};
use support::{TestServer, config, queue_for};

/// A clock the test sets; every server of a test shares one.
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn at(t: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(t)))
    }

    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    // March 2026: the 2nd is a Monday.
    Utc.with_ymd_and_hms(2026, 3, d, h, m, s).unwrap()
}

fn schedule(name: &str, repo: &GitRepo, branch: &str, cron: &str) -> Schedule {
    Schedule {
        name: ScheduleName::new(name).unwrap(),
        repo: "local/app".into(),
        clone_url: repo.url(),
        branch: branch.into(),
        cron: CronExpr::parse(cron).unwrap(),
        pool: None,
        env: [("FULL".to_owned(), "1".to_owned())].into(),
    }
}

fn with_schedules(schedules: Vec<Schedule>) -> Config {
    let mut config = config();
    config.server.schedules = schedules;
    config
}

async fn jobs(server: &TestServer) -> Vec<Job> {
    server
        .queue
        .list(&Default::default(), None, 1000)
        .await
        .unwrap()
        .jobs
}

/// Waits (the scheduler wakes every 2 s) until `done` holds, for at most 20 s.
async fn eventually<F: AsyncFn() -> bool>(what: &str, done: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Long enough for every scheduler to have woken at least twice.
async fn a_few_wake_ups() {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn two_servers_queue_one_job_per_occurrence() {
    let repo = GitRepo::new();
    let head = repo.commit(&[("README", "one\n")], "one");
    let clock = TestClock::at(at(4, 2, 59, 30));
    let config = with_schedules(vec![schedule("nightly", &repo, "main", "0 3 * * *")]);
    let redis = RedisServer::start();
    let url = redis.url();
    let first = TestServer::start_with_clock(redis, config.clone(), clock.clone()).await;
    // The second replica: another server on the same Redis, with the same time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(raibid_server::serve(
        listener,
        ServerOptions {
            config,
            queue: queue_for_url(&url),
            instance: "second".into(),
            clock: clock.clone(),
        },
        async move {
            let _ = stopped.await;
        },
    ));

    // The schedule is new: the 03:00 of yesterday is marked, not run.
    eventually("the schedule to be seen", async || {
        first
            .queue
            .schedule_mark("nightly")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    a_few_wake_ups().await;
    assert!(jobs(&first).await.is_empty());

    clock.set(at(4, 3, 0, 1));
    eventually("the 03:00 job", async || !jobs(&first).await.is_empty()).await;
    a_few_wake_ups().await;
    let queued = jobs(&first).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    let job = &queued[0];
    assert_eq!(job.spec.event, Event::Cron);
    assert_eq!(job.spec.sha, head);
    assert_eq!(job.spec.git_ref, "refs/heads/main");
    assert_eq!(job.spec.schedule.as_deref(), Some("nightly"));
    assert_eq!(job.spec.env["FULL"], "1");
    let occurrence = at(4, 3, 0, 0).timestamp();
    assert_eq!(
        job.spec.delivery_id.as_deref(),
        Some(format!("cron:nightly:{occurrence}").as_str())
    );

    // The API says what ran last and what runs next.
    let listed: serde_json::Value = first.get("/api/v1/schedules").await.json().await.unwrap();
    let nightly = &listed["schedules"][0];
    assert_eq!(nightly["name"], "nightly");
    assert_eq!(nightly["cron"], "0 3 * * *");
    assert_eq!(nightly["branch"], "main");
    assert_eq!(nightly["pool"], "default");
    assert_eq!(nightly["last_job"], job.id.as_str());
    assert_eq!(nightly["next"], "2026-03-05T03:00:00Z");

    // The next occurrence: one more job, at the branch's new head.
    let second_head = repo.commit(&[("README", "two\n")], "two");
    clock.set(at(5, 3, 0, 1));
    eventually("the next day's job", async || jobs(&first).await.len() == 2).await;
    a_few_wake_ups().await;
    let queued = jobs(&first).await;
    assert_eq!(queued.len(), 2, "{queued:#?}");
    assert_eq!(queued[0].spec.sha, second_head);

    let _ = stop.send(());
    second.await.unwrap().unwrap();
}

fn queue_for_url(url: &str) -> raibid_queue::Queue {
    let mut options = raibid_queue::QueueOptions::new(url);
    options.command_timeout = Duration::from_secs(2);
    raibid_queue::Queue::open(options).unwrap()
}

/// Monday 08:00, after a weekend without a server: Friday's 09:00 of a weekday schedule is
/// three days old against a period of one day, so it is not run; an hourly schedule last
/// handled at 05:00 runs its 08:00 once, not the three it missed.
#[tokio::test]
async fn a_missed_occurrence_older_than_its_period_is_not_run() {
    let repo = GitRepo::new();
    repo.commit(&[("README", "one\n")], "one");
    let redis = RedisServer::start();
    let queue = queue_for(&redis);
    queue
        .mark_schedule(
            "weekdays",
            at(5, 9, 0, 0).timestamp(),
            Some("01J0000000000000000000000A"),
        )
        .await
        .unwrap();
    queue
        .mark_schedule("hourly", at(9, 5, 0, 0).timestamp(), None)
        .await
        .unwrap();
    let clock = TestClock::at(at(9, 8, 0, 10));
    let config = with_schedules(vec![
        schedule("weekdays", &repo, "main", "0 9 * * 1-5"),
        schedule("hourly", &repo, "main", "@hourly"),
    ]);
    let server = TestServer::start_with_clock(redis, config, clock).await;

    eventually("friday's occurrence to be passed over", async || {
        server
            .queue
            .schedule_mark("weekdays")
            .await
            .unwrap()
            .map(|m| m.occurrence)
            == Some(at(6, 9, 0, 0).timestamp())
    })
    .await;
    eventually("the hourly job", async || !jobs(&server).await.is_empty()).await;
    a_few_wake_ups().await;
    let queued = jobs(&server).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0].spec.schedule.as_deref(), Some("hourly"));
    assert_eq!(
        queued[0].spec.delivery_id.as_deref(),
        Some(format!("cron:hourly:{}", at(9, 8, 0, 0).timestamp()).as_str())
    );
    // The passed-over occurrence keeps the last job that did run.
    let mark = server
        .queue
        .schedule_mark("weekdays")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark.job_id.as_deref(), Some("01J0000000000000000000000A"));
}

#[tokio::test]
async fn an_unresolvable_branch_is_logged_and_retried_and_the_others_go_on() {
    let logs = support::capture_logs(tracing::Level::INFO);
    let repo = GitRepo::new();
    let head = repo.commit(&[("README", "one\n")], "one");
    let clock = TestClock::at(at(4, 10, 0, 30));
    let config = with_schedules(vec![
        schedule("gone", &repo, "feature", "* * * * *"),
        schedule("fine", &repo, "main", "* * * * *"),
    ]);
    let server = TestServer::start_with_clock(RedisServer::start(), config, clock.clone()).await;
    eventually("both schedules to be seen", async || {
        server.queue.schedule_mark("gone").await.unwrap().is_some()
            && server.queue.schedule_mark("fine").await.unwrap().is_some()
    })
    .await;

    clock.set(at(4, 10, 1, 5));
    eventually("the job of the schedule that works", async || {
        !jobs(&server).await.is_empty()
    })
    .await;
    eventually("the warning", async || {
        let text = logs.text();
        text.lines().any(|l| {
            l.contains("WARN") && (l.contains("schedule=\"gone\"") || l.contains("schedule=gone"))
        })
    })
    .await;
    a_few_wake_ups().await;
    let queued = jobs(&server).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0].spec.schedule.as_deref(), Some("fine"));
    let text = logs.text();
    let warning = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("gone"))
        .expect("a warning about the schedule");
    assert!(warning.contains("refs/heads/feature"), "{warning}");

    // The branch appears while the occurrence is still within its period: it is retried.
    repo.git(&["branch", "feature"]);
    eventually("the retried job", async || jobs(&server).await.len() == 2).await;
    let queued = jobs(&server).await;
    assert_eq!(queued[0].spec.schedule.as_deref(), Some("gone"));
    assert_eq!(queued[0].spec.sha, head);
    assert_eq!(
        queued[0].spec.delivery_id.as_deref(),
        Some(format!("cron:gone:{}", at(4, 10, 1, 0).timestamp()).as_str())
    );
}
