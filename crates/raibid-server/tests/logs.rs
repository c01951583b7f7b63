//! Reading and following job logs.

mod support;

use std::time::Duration;

use raibid_model::{JobStatus, Outcome};
use raibid_queue::Claimed;
use reqwest::StatusCode;
use serde_json::json;
use support::sse::SseReader;
use support::{SHA, TestServer, eventually, json};

const WAIT: Duration = Duration::from_secs(10);

async fn running_job(server: &TestServer) -> Claimed {
    let id = queued_job(server).await;
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, id);
    claimed
}

async fn read_plain(server: &TestServer, path: &str) -> (String, String, String) {
    let response = server.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let cursor = response.headers()["x-raibid-log-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    let finished = response.headers()["x-raibid-log-finished"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.text().await.unwrap(), cursor, finished)
}

#[tokio::test]
async fn plain_reads_continue_from_the_cursor_until_finished() {
    let server = TestServer::start().await;
    let claimed = running_job(&server).await;
    let id = &claimed.job.id;
    server.queue.append_log(id, b"line 1\n").await.unwrap();
    server.queue.append_log(id, b"line 2\n").await.unwrap();

    let base = format!("/api/v1/jobs/{id}/logs");
    let (text, cursor, finished) = read_plain(&server, &base).await;
    assert_eq!(
        (text.as_str(), finished.as_str()),
        ("line 1\nline 2\n", "false")
    );

    server.queue.append_log(id, b"line 3\n").await.unwrap();
    let (text, cursor, finished) = read_plain(&server, &format!("{base}?cursor={cursor}")).await;
    assert_eq!((text.as_str(), finished.as_str()), ("line 3\n", "false"));

    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let (text, cursor, finished) = read_plain(&server, &format!("{base}?cursor={cursor}")).await;
    assert_eq!((text.as_str(), finished.as_str()), ("", "true"));
    let (text, _, finished) = read_plain(&server, &format!("{base}?cursor={cursor}")).await;
    assert_eq!(
        (text.as_str(), finished.as_str()),
        ("", "true"),
        "past the end is still the end"
    );
    let (text, _, finished) = read_plain(&server, &base).await;
    assert_eq!(
        (text.as_str(), finished.as_str()),
        ("line 1\nline 2\nline 3\n", "true")
    );

    let bad = server.get(&format!("{base}?cursor=latest")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(bad).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cursor")
    );
    let unknown = server
        .get("/api/v1/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0/logs")
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn following_streams_chunks_as_they_come_then_the_end() {
    let server = TestServer::start().await;
    let claimed = running_job(&server).await;
    let id = claimed.job.id.clone();
    server.queue.append_log(&id, b"first\n").await.unwrap();

    let path = format!("/api/v1/jobs/{id}/logs?follow=true");
    let mut events = SseReader::new(server.get(&path).await);
    let first = events.next(WAIT).await.unwrap();
    assert_eq!(first.event, "log");
    assert_eq!(first.data, json!({ "text": "first\n" }));
    let first_id = first.id.clone().expect("log events carry their cursor");

    // Output written while the client follows arrives as it is written.
    server
        .queue
        .append_log(&id, b"second\nthird\n")
        .await
        .unwrap();
    let second = events.next(WAIT).await.unwrap();
    assert_eq!(second.data, json!({ "text": "second\nthird\n" }));
    server
        .queue
        .append_log(&id, "ünïcode ✓\n".as_bytes())
        .await
        .unwrap();
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "ünïcode ✓\n" })
    );

    // The agent finishes the job: claim was made above, ack ends the log.
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    let end = events.next(WAIT).await.unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data, json!({ "status": "failure" }));
    assert_eq!(events.next(WAIT).await, None, "the stream closes after end");

    // A reconnect with Last-Event-ID resumes after that event, and ends at once.
    let resumed = server
        .client
        .get(server.url(&path))
        .header("last-event-id", &first_id)
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(resumed);
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "second\nthird\n" })
    );
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "ünïcode ✓\n" })
    );
    assert_eq!(events.next(WAIT).await.unwrap().event, "end");
    assert_eq!(events.next(WAIT).await, None);

    // Following from the end of a finished log just ends.
    let last = server
        .client
        .get(server.url(&path))
        .header("last-event-id", second.id.unwrap())
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(last);
    assert_eq!(events.next(WAIT).await.unwrap().event, "log");
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "status": "failure" })
    );
}

#[tokio::test]
async fn following_a_queued_job_waits_for_its_first_output() {
    let server = TestServer::start().await;
    let response = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    let id = json(response).await["id"].as_str().unwrap().to_owned();
    let mut events = SseReader::new(
        server
            .get(&format!("/api/v1/jobs/{id}/logs?follow=1"))
            .await,
    );
    let cancel = server
        .post_json(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(json(cancel).await["result"], "cancelled");
    let end = events.next(WAIT).await.unwrap();
    assert_eq!(
        (end.event.as_str(), &end.data),
        ("end", &json!({ "status": "cancelled" }))
    );
}

/// A raw connection of the test's own to the server's Redis, kept open so that reading
/// counters does not itself count as a new connection.
struct RedisInfo {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl RedisInfo {
    fn connect(server: &TestServer) -> Self {
        let stream = std::net::TcpStream::connect(("127.0.0.1", server.redis.port())).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self {
            reader: std::io::BufReader::new(stream),
        }
    }

    /// One numeric field of `INFO <section>`.
    fn field(&mut self, section: &str, name: &str) -> u64 {
        use std::io::{BufRead, Read, Write};
        write!(self.reader.get_mut(), "INFO {section}\r\n").unwrap();
        let mut header = String::new();
        self.reader.read_line(&mut header).unwrap();
        let len: usize = header
            .trim_end()
            .strip_prefix('$')
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; len + 2];
        self.reader.read_exact(&mut body).unwrap();
        String::from_utf8(body)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("INFO {section} has no {name}"))
            .parse()
            .unwrap()
    }
}

async fn queued_job(server: &TestServer) -> String {
    let response = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": "acme/app", "clone_url": "https://git.example/acme/app.git", "sha": SHA }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await["id"].as_str().unwrap().to_owned()
}

/// A server with these log stream limits (in all, per client), a queued job and the path that
/// follows its log.
async fn with_stream_limits(total: u32, per_client: u32) -> (TestServer, String, String) {
    with_stream_limits_behind(total, per_client, &[]).await
}

/// The same, with `server.trusted_proxies`.
async fn with_stream_limits_behind(
    total: u32,
    per_client: u32,
    proxies: &[&str],
) -> (TestServer, String, String) {
    let mut config = support::config();
    config.server.max_log_streams = total;
    config.server.max_log_streams_per_client = per_client;
    config.server.trusted_proxies = proxies
        .iter()
        .map(|p| raibid_config::IpRange::parse(p).unwrap())
        .collect();
    let server = TestServer::start_with(config).await;
    let id = queued_job(&server).await;
    let path = format!("/api/v1/jobs/{id}/logs?follow=true");
    (server, id, path)
}

/// Each follow of a job that can still write holds a Redis connection: past
/// `server.max_log_streams` a follow is refused, and a slot frees when a follower leaves.
#[tokio::test]
async fn follow_streams_beyond_the_limit_are_refused_until_one_ends() {
    let (server, id, path) = with_stream_limits(2, 32).await;

    let first = server.get(&path).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = server.get(&path).await;
    assert_eq!(second.status(), StatusCode::OK);

    let refused = server.get(&path).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body = json(refused).await;
    assert_eq!(body["error"]["code"], "too_many_log_streams");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("server.max_log_streams = 2"), "{message}");
    // Reads that hold no stream are not limited.
    let plain = server.get(&format!("/api/v1/jobs/{id}/logs")).await;
    assert_eq!(plain.status(), StatusCode::OK);

    drop(first);
    let third = eventually(WAIT, "a free stream slot", || async {
        let response = server.get(&path).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let mut events = SseReader::new(third);
    server.queue.append_log(&id, b"hello\n").await.unwrap();
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "hello\n" })
    );
    drop(second);
}

/// A finished job's log is drained over the shared connection: following it must not open
/// a Redis connection per request.
#[tokio::test]
async fn following_a_finished_job_opens_no_redis_connection() {
    let server = TestServer::start().await;
    let claimed = running_job(&server).await;
    let id = claimed.job.id.clone();
    server.queue.append_log(&id, b"done\n").await.unwrap();
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let path = format!("/api/v1/jobs/{id}/logs?follow=true");
    // Warm-up: the server's shared connection is open once a follow has been answered.
    let mut events = SseReader::new(server.get(&path).await);
    while events.next(WAIT).await.is_some() {}

    let mut info = RedisInfo::connect(&server);
    let before = info.field("stats", "total_connections_received");
    for _ in 0..10 {
        let mut events = SseReader::new(server.get(&path).await);
        assert_eq!(events.next(WAIT).await.unwrap().event, "log");
        let end = events.next(WAIT).await.unwrap();
        assert_eq!(end.data, json!({ "status": "success" }));
        assert_eq!(events.next(WAIT).await, None);
    }
    let after = info.field("stats", "total_connections_received");
    assert_eq!(after - before, 0, "connections opened by 10 follows");
}

/// A stream is closed without an `end` event after `server.log_stream_max_secs`, releases
/// its slot, and the client resumes after the last event it saw.
#[tokio::test]
async fn a_stream_ends_without_end_event_after_its_maximum_lifetime() {
    let mut config = support::config();
    config.server.max_log_streams = 1;
    config.server.log_stream_max_secs = 1;
    let server = TestServer::start_with(config).await;
    let claimed = running_job(&server).await;
    let id = claimed.job.id.clone();
    server.queue.append_log(&id, b"one\n").await.unwrap();
    let path = format!("/api/v1/jobs/{id}/logs?follow=true");

    let started = std::time::Instant::now();
    let mut events = SseReader::new(server.get(&path).await);
    let first = events.next(WAIT).await.unwrap();
    assert_eq!(first.data, json!({ "text": "one\n" }));
    assert_eq!(events.next(WAIT).await, None, "closed without an end event");
    assert!(started.elapsed() >= Duration::from_secs(1));

    server.queue.append_log(&id, b"two\n").await.unwrap();
    let resumed = eventually(WAIT, "the slot of the expired stream", || async {
        let response = server
            .client
            .get(server.url(&path))
            .header("last-event-id", first.id.clone().unwrap())
            .send()
            .await
            .unwrap();
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let mut events = SseReader::new(resumed);
    assert_eq!(
        events.next(WAIT).await.unwrap().data,
        json!({ "text": "two\n" })
    );
}

/// A running job that printed `one`, followed, with that first line read.
async fn following_a_running_job(server: &TestServer) -> (raibid_queue::Claimed, SseReader) {
    let claimed = running_job(server).await;
    let id = claimed.job.id.clone();
    server.queue.append_log(&id, b"one\n").await.unwrap();
    let mut events = SseReader::new(
        server
            .get(&format!("/api/v1/jobs/{id}/logs?follow=true"))
            .await,
    );
    assert_eq!(events.next(WAIT).await.unwrap().event, "log");
    (claimed, events)
}

/// A job whose record is deleted while it is followed ends the stream with `gone`, not with
/// an `end` that has no status.
#[tokio::test]
async fn a_job_deleted_while_followed_ends_the_stream_with_gone() {
    let server = TestServer::start().await;
    let (claimed, mut events) = following_a_running_job(&server).await;
    let id = claimed.job.id.clone();

    let reply = server
        .redis
        .command(&format!("DEL raibid:ci-jobs:job:{id}"))
        .unwrap();
    assert_eq!(reply, ":1", "the job record existed");
    let gone = events.next(WAIT).await.unwrap();
    assert_eq!(gone.event, "gone");
    assert_eq!(gone.data["error"]["code"], "gone");
    assert!(
        gone.data["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&id)
    );
    assert_eq!(events.next(WAIT).await, None);
}

/// Shutdown while the final status cannot be read closes the stream without an `end` event,
/// so the client resumes instead of taking a status-less end for the job's.
#[tokio::test]
async fn shutdown_before_the_final_status_is_read_sends_no_end() {
    let mut server = TestServer::start().await;
    let (claimed, mut events) = following_a_running_job(&server).await;
    let id = claimed.job.id.clone();

    // A record the server cannot decode: reading the final status fails until shutdown.
    let reply = server
        .redis
        .command(&format!("HSET raibid:ci-jobs:job:{id} spec not-json"))
        .unwrap();
    assert_eq!(reply, ":0", "spec was overwritten");
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    // The follower sees the end marker at once and then retries the status every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.shutdown().await;
    assert_eq!(events.next(WAIT).await, None, "no end event on shutdown");
}

/// One client cannot take every log stream slot: past `server.max_log_streams_per_client` its
/// follows get 429 while other clients (another token) still get theirs. A made-up token is no
/// new identity: it counts as its peer address.
#[tokio::test]
async fn one_client_cannot_take_every_log_stream() {
    let (server, _, path) = with_stream_limits(10, 2).await;

    let first = server.get(&path).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = server.get(&path).await;
    assert_eq!(second.status(), StatusCode::OK);
    let refused = server.get(&path).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body = json(refused).await;
    assert_eq!(body["error"]["code"], "too_many_log_streams_for_client");
    let made_up = server
        .client
        .get(server.url(&path))
        .bearer_auth("not-a-configured-token")
        .send()
        .await
        .unwrap();
    assert_eq!(made_up.status(), StatusCode::TOO_MANY_REQUESTS);

    // A token holder is a client of its own.
    let authed = server.get_authed(&path).await;
    assert_eq!(authed.status(), StatusCode::OK);

    drop(first);
    let again = eventually(WAIT, "a free slot for the first client", || async {
        let response = server.get(&path).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    drop((second, authed, again));
}

/// Behind a trusted reverse proxy, anonymous followers are told apart by the address the proxy
/// forwards; anyone else's `X-Forwarded-For` is ignored, or a client could make up addresses
/// to take every slot.
#[tokio::test]
async fn clients_behind_a_trusted_proxy_get_slots_of_their_own() {
    let follow_from = |server: &TestServer, path: &str, forwarded: &str| {
        server
            .client
            .get(server.url(path))
            .header("x-forwarded-for", forwarded)
            .send()
    };

    // Not trusted: the made-up addresses are one client, the peer.
    let (mut server, _, path) = with_stream_limits(10, 1).await;
    let first = follow_from(&server, &path, "198.51.100.1").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = follow_from(&server, &path, "198.51.100.2").await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
    server.shutdown().await;

    // The test client's loopback address is the trusted proxy.
    let (mut server, _, path) = with_stream_limits_behind(10, 1, &["127.0.0.0/8", "::1"]).await;
    let first = follow_from(&server, &path, "198.51.100.1").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let other = follow_from(&server, &path, "6.6.6.6, 198.51.100.2")
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // The same client, whatever it puts in front of what the proxy appended.
    let again = follow_from(&server, &path, "7.7.7.7, 198.51.100.1")
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    drop((first, other));
    server.shutdown().await;
}

/// `DELETE /api/v1/jobs/{id}/logs`: a finished job's log is erased; what reads it (plain,
/// followed, the job's page) then says who erased it and when. A running job's is refused.
#[tokio::test]
async fn a_finished_job_s_log_is_erased_for_a_token_holder() {
    let server = TestServer::start().await;
    let claimed = running_job(&server).await;
    let id = claimed.job.id.clone();
    server
        .queue
        .append_log(&id, b"password=hunter2\n")
        .await
        .unwrap();
    let erase = |token: Option<&'static str>| {
        let request = server
            .client
            .delete(server.url(&format!("/api/v1/jobs/{id}/logs")));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };

    let refused = erase(Some(support::TOKEN)).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body = json(refused).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is running: a log is erased once its job has ended"),
        "{body}"
    );
    assert_eq!(erase(None).await.status(), StatusCode::UNAUTHORIZED);

    server.end(&claimed, JobStatus::Success).await;
    assert_eq!(erase(None).await.status(), StatusCode::UNAUTHORIZED);
    let erased = erase(Some(support::TOKEN)).await;
    assert_eq!(erased.status(), StatusCode::OK);
    let job = json(erased).await;
    assert_eq!(job["status"], "success");
    let by = job["log_erased"]["by"].as_str().unwrap().to_owned();
    assert!(!by.is_empty(), "{job}");

    let (text, _, finished) = read_plain(&server, &format!("/api/v1/jobs/{id}/logs")).await;
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.starts_with(&format!("[raibid] this job's log was erased by {by} at ")),
        "{text}"
    );
    assert_eq!(finished, "true");
    let mut events = SseReader::new(
        server
            .get(&format!("/api/v1/jobs/{id}/logs?follow=true"))
            .await,
    );
    let first = events.next(WAIT).await.unwrap();
    assert!(
        first.data["text"]
            .as_str()
            .unwrap()
            .contains("this job's log was erased by"),
        "{first:?}"
    );
    let page = server
        .get(&format!("/jobs/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("hunter2"), "{page}");
    assert!(page.contains("This job&#39;s log was erased by"), "{page}");

    let missing = server
        .delete_authed("/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/logs")
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// `DELETE /api/v1/jobs/{id}/build/logs`: a build's logs, the first job's and those of every
/// job it queued (here a workflow that queued a variant of its own), erased together once all
/// have ended; refused, with nothing erased, while one runs; a token of another repository
/// may not.
#[tokio::test]
async fn a_build_s_logs_are_erased_together_once_it_has_ended() {
    use raibid_config::{ApiToken, TokenHash, TokenScope, hash_token};
    let mut cfg = support::config();
    let other = "rbd_other_team_token_77";
    cfg.server.tokens.push(ApiToken {
        name: "other".into(),
        hash: TokenHash::parse(&hash_token(other)).unwrap(),
        scopes: vec![TokenScope::Jobs],
        repos: vec!["other/*".into()],
    });
    let server = TestServer::start_with(cfg).await;
    let first = queued_job(&server).await;
    let workflow = queued_job(&server).await;
    let variant = queued_job(&server).await;
    let unrelated = queued_job(&server).await;
    server
        .queue
        .set_children(&first, std::slice::from_ref(&workflow))
        .await
        .unwrap();
    server
        .queue
        .set_children(&workflow, std::slice::from_ref(&variant))
        .await
        .unwrap();
    let build = [&first, &workflow, &variant];
    let mut claimed = Vec::new();
    for id in build.iter().copied().chain([&unrelated]) {
        server
            .queue
            .append_log(id, format!("{id}: password=hunter2\n").as_bytes())
            .await
            .unwrap();
        let job = server.claim_one("agent-1").await;
        assert_eq!(job.job.id, *id);
        claimed.push(job);
    }
    let erase = |token: &'static str| {
        let request = server
            .client
            .delete(server.url(&format!("/api/v1/jobs/{first}/build/logs")))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let server = &server;
    let log = |id: &str| {
        let path = format!("/api/v1/jobs/{id}/logs");
        async move { read_plain(server, &path).await.0 }
    };

    // The variant still runs: nothing is erased.
    server.end(&claimed[0], JobStatus::Success).await;
    server.end(&claimed[1], JobStatus::Success).await;
    let refused = erase(support::TOKEN).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body = json(refused).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("job {variant} of this build is running")),
        "{body}"
    );
    for id in build {
        assert!(log(id).await.contains("hunter2"), "{id}");
    }

    server.end(&claimed[2], JobStatus::Failure).await;
    server.end(&claimed[3], JobStatus::Success).await;
    let forbidden = erase(other).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert!(log(&first).await.contains("hunter2"));
    let erased = erase(support::TOKEN).await;
    assert_eq!(erased.status(), StatusCode::OK);
    assert_eq!(
        json(erased).await,
        json!({ "erased": [first, workflow, variant] })
    );
    for id in build {
        let text = log(id).await;
        assert!(!text.contains("hunter2"), "{id}: {text}");
        assert!(
            text.starts_with("[raibid] this job's log was erased by "),
            "{text}"
        );
    }
    // Only the build's.
    assert!(log(&unrelated).await.contains("hunter2"));

    let missing = server
        .delete_authed("/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/build/logs")
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
