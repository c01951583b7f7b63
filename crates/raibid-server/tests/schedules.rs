//! The scheduler against a real redis-server and real git repositories, with a clock the tests
//! move: each occurrence queues one job however many servers run, a missed occurrence older
//! than its period is not run, and a branch that cannot be resolved is logged and retried
//! without stopping the other schedules. A run by hand (`POST /api/v1/schedules/{name}/run`)
//! queues the same job at once and leaves the timetable as it was.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use raibid_config::{Config, CronExpr, Schedule, ScheduleName};
use raibid_model::{Event, Job, PoolName};
use raibid_server::{Clock, ServerOptions};
use raibid_testkit::{GitRepo, RedisServer};
use reqwest::StatusCode;
use support::{TOKEN, TestServer, config, json, queue_for};

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
    // Numbered like any job (the other server took a number for its duplicate too).
    assert!(job.spec.number.is_some());
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

/// `POST /api/v1/schedules/{name}/run` with `token` (none: no Authorization header).
async fn run_by_hand(server: &TestServer, name: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = server
        .client
        .post(server.url(&format!("/api/v1/schedules/{name}/run")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The status, code and message of an error answer.
async fn refusal(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body = json(response).await;
    let field = |name: &str| body["error"][name].as_str().unwrap_or_default().to_owned();
    (status, field("code"), field("message"))
}

#[tokio::test]
async fn a_run_by_hand_queues_the_occurrence_s_job_and_leaves_the_timetable_alone() {
    let repo = GitRepo::new();
    let head = repo.commit(&[("README", "one\n")], "one");
    let clock = TestClock::at(at(4, 2, 59, 30));
    let mut nightly = schedule("nightly", &repo, "main", "0 3 * * *");
    nightly.pool = Some(PoolName::new("arm64").unwrap());
    let server = TestServer::start_with_clock(
        RedisServer::start(),
        with_schedules(vec![nightly]),
        clock.clone(),
    )
    .await;
    eventually("the schedule to be seen", async || {
        server
            .queue
            .schedule_mark("nightly")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let mark = server.queue.schedule_mark("nightly").await.unwrap();

    let response = run_by_hand(&server, "nightly", Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let job: Job = serde_json::from_value(json(response).await).unwrap();
    assert_eq!(job.spec.event, Event::Cron);
    assert_eq!(job.spec.schedule.as_deref(), Some("nightly"));
    assert_eq!(job.spec.repo, "local/app");
    assert_eq!(job.spec.git_ref, "refs/heads/main");
    assert_eq!(job.spec.sha, head);
    assert_eq!(job.spec.pool.as_str(), "arm64");
    assert_eq!(job.spec.env["FULL"], "1");
    let delivery = job.spec.delivery_id.clone().unwrap_or_default();
    assert!(delivery.starts_with("cron:nightly:manual:"), "{delivery}");
    assert_eq!(
        server.queue.get(&job.id).await.unwrap().as_ref(),
        Some(&job)
    );

    // Another run is another job, at the branch's new head.
    let second_head = repo.commit(&[("README", "two\n")], "two");
    let response = run_by_hand(&server, "nightly", Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let again: Job = serde_json::from_value(json(response).await).unwrap();
    assert_ne!(again.id, job.id);
    assert_ne!(again.spec.delivery_id, job.spec.delivery_id);
    assert_eq!(again.spec.sha, second_head);

    // The scheduler's record is as it was, and the 03:00 occurrence still queues its job.
    a_few_wake_ups().await;
    assert_eq!(server.queue.schedule_mark("nightly").await.unwrap(), mark);
    assert_eq!(jobs(&server).await.len(), 2);
    clock.set(at(4, 3, 0, 1));
    eventually("the 03:00 job", async || jobs(&server).await.len() == 3).await;
    a_few_wake_ups().await;
    let queued = jobs(&server).await;
    assert_eq!(queued.len(), 3, "{queued:#?}");
    let occurrence = at(4, 3, 0, 0).timestamp();
    assert_eq!(
        queued[0].spec.delivery_id.as_deref(),
        Some(format!("cron:nightly:{occurrence}").as_str())
    );
    let mark = server
        .queue
        .schedule_mark("nightly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark.occurrence, occurrence);
    assert_eq!(mark.job_id.as_deref(), Some(queued[0].id.as_str()));
}

#[tokio::test]
async fn a_run_by_hand_needs_a_token_a_known_schedule_and_a_branch() {
    let repo = GitRepo::new();
    repo.commit(&[("README", "one\n")], "one");
    let server = TestServer::start_with(with_schedules(vec![
        schedule("nightly", &repo, "main", "0 3 * * *"),
        schedule("gone", &repo, "feature", "0 3 * * *"),
    ]))
    .await;

    for token in [None, Some("rbd_not_the_token")] {
        let (status, code, _) = refusal(run_by_hand(&server, "nightly", token).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{token:?}"
        );
    }
    let (status, code, message) = refusal(run_by_hand(&server, "weekly", Some(TOKEN)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert!(
        message.contains("weekly") && message.contains("server.schedules"),
        "{message}"
    );
    let (status, code, message) = refusal(run_by_hand(&server, "gone", Some(TOKEN)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unresolvable_ref")
    );
    assert!(message.contains("refs/heads/feature"), "{message}");
    assert_eq!(server.job_count().await, 0);
}

/// Where the scheduler would queue nothing, a token cannot make the server queue it either.
#[tokio::test]
async fn a_run_by_hand_is_refused_where_the_scheduler_queues_nothing() {
    let repo = GitRepo::new();
    repo.commit(&[("README", "one\n")], "one");
    let mut without_cron = with_schedules(vec![schedule("nightly", &repo, "main", "0 3 * * *")]);
    without_cron.server.events.retain(|e| *e != Event::Cron);
    let mut server = TestServer::start_with(without_cron).await;
    let (status, code, message) = refusal(run_by_hand(&server, "nightly", Some(TOKEN)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(
        message.contains("nightly")
            && message.contains("cron")
            && message.contains("server.events"),
        "{message}"
    );
    assert_eq!(server.job_count().await, 0);
    server.shutdown().await;

    let mut not_allowed = with_schedules(vec![schedule("nightly", &repo, "main", "0 3 * * *")]);
    not_allowed.server.allowed_repos = vec!["acme/*".into()];
    let server = TestServer::start_with(not_allowed).await;
    let (status, code, message) = refusal(run_by_hand(&server, "nightly", Some(TOKEN)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert!(message.contains("server.allowed_repos"), "{message}");
    assert_eq!(server.job_count().await, 0);
}

#[tokio::test]
async fn a_run_by_hand_without_redis_is_503_and_works_once_it_is_back() {
    let repo = GitRepo::new();
    repo.commit(&[("README", "one\n")], "one");
    let mut server = TestServer::start_with(with_schedules(vec![schedule(
        "nightly",
        &repo,
        "main",
        "0 3 * * *",
    )]))
    .await;
    server.redis.kill();
    let response = run_by_hand(&server, "nightly", Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let (_, code, _) = refusal(response).await;
    assert_eq!(code, "unavailable");

    server.redis.restart();
    eventually("a run to be accepted again", async || {
        run_by_hand(&server, "nightly", Some(TOKEN)).await.status() == StatusCode::CREATED
    })
    .await;
    // Through the API: the test's own queue connection broke with the restart.
    let listed = json(server.get("/api/v1/jobs").await).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
}

/// The web page `/schedules`: each schedule, when it runs next, and a Run button for a
/// signed-in token that may run its repository's jobs, which queues what the API's run does.
#[tokio::test]
async fn the_schedules_page_lists_them_and_runs_one_for_a_signed_in_token() {
    use raibid_config::{ApiToken, TokenHash, TokenScope, hash_token};
    use support::browser::{From, get_with, job_redirected_to, post_form, sign_in};

    let repo = GitRepo::new();
    let head = repo.commit(&[("README", "one\n")], "one");
    let mut config = with_schedules(vec![schedule("nightly", &repo, "main", "0 3 * * *")]);
    config.server.tokens.push(ApiToken {
        name: "other".into(),
        hash: TokenHash::parse(&hash_token("rbd_other_team_1")).unwrap(),
        scopes: vec![TokenScope::Jobs],
        repos: vec!["other/*".into()],
    });
    let clock = TestClock::at(at(4, 2, 59, 30));
    let server = TestServer::start_with_clock(RedisServer::start(), config, clock).await;

    let page = server.get("/schedules").await;
    assert_eq!(page.status(), StatusCode::OK);
    let body = page.text().await.unwrap();
    assert!(body.contains("<td>nightly</td>"), "{body}");
    assert!(body.contains("<code>0 3 * * *</code>"), "{body}");
    assert!(
        body.contains("title=\"2026-03-04T03:00:00Z\">in 30s</td>"),
        "{body}"
    );
    assert!(!body.contains("/schedules/nightly/run"), "{body}");
    let run_form = "action=\"/schedules/nightly/run\"";
    let other = sign_in(&server, "rbd_other_team_1").await;
    let (_, body) = get_with(&server, "/schedules", &other).await;
    assert!(!body.contains(run_form), "not its repository: {body}");
    let cookie = sign_in(&server, TOKEN).await;
    let (_, body) = get_with(&server, "/schedules", &cookie).await;
    assert!(body.contains(run_form), "{body}");

    let path = "/schedules/nightly/run";
    let (status, _, _) = post_form(&server, path, Some(&cookie), From::Elsewhere, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = post_form(&server, path, Some(&other), From::Here, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(server.job_count().await, 0);
    let (status, _, body) = post_form(
        &server,
        "/schedules/weekly/run",
        Some(&cookie),
        From::Here,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let answer = post_form(&server, path, Some(&cookie), From::Here, &[]).await;
    let job = job_redirected_to(&server, answer).await;
    assert_eq!(job.spec.event, Event::Cron);
    assert_eq!(job.spec.schedule.as_deref(), Some("nightly"));
    assert_eq!(job.spec.sha, head);
}
