//! Newer builds cancelling older ones, through the real webhook endpoint and a real
//! redis-server: what a forge's pushes and pull request updates do to the builds before them.

mod support;

use raibid_model::{Event, JobStatus, NewJob, Outcome};
use raibid_queue::Enqueued;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use support::{SECRET, TestServer, fixture, gitea_headers, hmac_hex, json, push_body};

const REPO: &str = "acme/app";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// Pushes `commit` to `branch` as Gitea does; returns the reply's JSON.
async fn push(server: &TestServer, branch: &str, commit: char) -> serde_json::Value {
    let body = push_body(REPO, branch, &sha(commit));
    let delivery = format!("d-{branch}-{commit}");
    let response = server
        .post_webhook(
            "gitea",
            gitea_headers("push", &delivery, SECRET, &body),
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    json(response).await
}

/// A push of `commit` to `branch` as the queue takes it, without a webhook.
fn pushed(branch: &str, commit: char) -> NewJob {
    NewJob::new(
        REPO,
        "https://git.example/acme/app.git",
        format!("refs/heads/{branch}"),
        sha(commit),
        Event::Push,
    )
}

async fn job(server: &TestServer, id: &str) -> raibid_model::Job {
    server.queue.get(id).await.unwrap().expect("job exists")
}

fn superseded(reply: &serde_json::Value) -> Vec<String> {
    reply
        .get("superseded")
        .map(|s| serde_json::from_value(s.clone()).unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_push_cancels_the_builds_of_its_branch_that_it_makes_out_of_date() {
    let server = TestServer::start().await;
    let first = push(&server, "main", 'a').await;
    let first_id = first["job_id"].as_str().unwrap().to_owned();
    assert_eq!(first.get("superseded"), None, "nothing before it: {first}");
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, first_id);
    let other_branch = push(&server, "dev", 'a').await;

    let second = push(&server, "main", 'b').await;
    let second_id = second["job_id"].as_str().unwrap().to_owned();
    assert_eq!(superseded(&second), vec![first_id.clone()]);
    let running = job(&server, &first_id).await;
    assert_eq!(running.status, JobStatus::Running);
    assert!(running.cancel_requested, "its agent is asked to stop");

    let third = push(&server, "main", 'c').await;
    let third_id = third["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        superseded(&third),
        vec![second_id.clone()],
        "the running one was asked already"
    );
    let queued = job(&server, &second_id).await;
    assert_eq!(queued.status, JobStatus::Cancelled);
    assert_eq!(
        queued.reason.as_deref(),
        Some(format!("superseded by job {third_id} (cccccccccc)").as_str())
    );

    // The agent stops as for any cancel; the job says which build superseded it.
    let mut outcome = Outcome::new(JobStatus::Cancelled);
    outcome.reason = Some("cancelled".into());
    assert!(server.queue.ack(&claimed, &outcome).await.unwrap());
    assert_eq!(
        job(&server, &first_id).await.reason.as_deref(),
        Some(format!("superseded by job {second_id} (bbbbbbbbbb)").as_str())
    );
    let dev = job(&server, other_branch["job_id"].as_str().unwrap()).await;
    assert_eq!(
        dev.status,
        JobStatus::Queued,
        "another branch is left alone"
    );
    assert_eq!(job(&server, &third_id).await.status, JobStatus::Queued);

    // A redelivery of the newest push is a duplicate and cancels nothing more.
    let body = push_body(REPO, "main", &sha('c'));
    let response = server
        .post_webhook(
            "gitea",
            gitea_headers("push", "d-main-c", SECRET, &body),
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(job(&server, &third_id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn a_pull_request_update_cancels_the_build_of_its_previous_head() {
    let server = TestServer::start().await;
    let response = server.deliver("gitea/pull_request-opened").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let opened = json(response).await;
    let opened_id = opened["job_id"].as_str().unwrap().to_owned();

    // The recorded synchronize carries the same head as the opening; a real one follows a
    // push, so it gets a new head commit and is signed again.
    let (body, headers) = fixture("gitea/pull_request-synchronized");
    let mut payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    payload["pull_request"]["head"]["sha"] = sha('d').into();
    let body = serde_json::to_vec(&payload).unwrap();
    let response = server
        .post_webhook("gitea", signed(headers, &body), body)
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let synchronized = json(response).await;
    assert_eq!(superseded(&synchronized), vec![opened_id.clone()]);
    let old = job(&server, &opened_id).await;
    assert_eq!(old.status, JobStatus::Cancelled);
    assert_eq!(old.spec.event, Event::PullRequest);
}

/// Gitea's recorded headers for `body`, signed again (a payload the test changed).
fn signed(mut headers: reqwest::header::HeaderMap, body: &[u8]) -> reqwest::header::HeaderMap {
    let signature = hmac_hex(SECRET, body);
    for name in ["x-gitea-signature", "x-gogs-signature"] {
        headers.insert(name, HeaderValue::from_str(&signature).unwrap());
    }
    headers.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&format!("sha256={signature}")).unwrap(),
    );
    headers.remove("x-hub-signature");
    headers
}

/// The recorded opening of a pull request, closed (Gitea sends `closed` on closing and on
/// merging): its builds still queued or running are cancelled, the branch's are not.
#[tokio::test]
async fn closing_a_pull_request_cancels_its_builds() {
    let closing = || {
        let (body, headers) = fixture("gitea/pull_request-opened");
        let mut payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        payload["action"] = "closed".into();
        let number = payload["pull_request"]["number"].as_u64().unwrap();
        let body = serde_json::to_vec(&payload).unwrap();
        (signed(headers, &body), body, number)
    };

    // Off when pull request builds are not superseded: the build runs on.
    let mut config = support::config();
    config.server.cancel_superseded = vec![Event::Push];
    let server = TestServer::start_with(config).await;
    let opened = json(server.deliver("gitea/pull_request-opened").await).await;
    let (headers, body, _) = closing();
    let response = server.post_webhook("gitea", headers, body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let reply = json(response).await;
    assert!(
        reply["ignored"].as_str().unwrap().contains("left to run"),
        "{reply}"
    );
    let id = opened["job_id"].as_str().unwrap();
    assert_eq!(job(&server, id).await.status, JobStatus::Queued);

    // On by default.
    let server = TestServer::start().await;
    let opened = json(server.deliver("gitea/pull_request-opened").await).await;
    let opened_id = opened["job_id"].as_str().unwrap().to_owned();
    let branch = push(&server, "main", 'a').await;
    let (headers, body, number) = closing();
    let response = server.post_webhook("gitea", headers, body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let reply = json(response).await;
    assert_eq!(reply["closed"], number, "{reply}");
    assert_eq!(
        reply["cancelled"],
        serde_json::json!([opened_id]),
        "{reply}"
    );
    let cancelled = job(&server, &opened_id).await;
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        cancelled.reason.as_deref(),
        Some(format!("pull request #{number} closed").as_str())
    );
    let branch_id = branch["job_id"].as_str().unwrap();
    assert_eq!(job(&server, branch_id).await.status, JobStatus::Queued);
    // A redelivery finds nothing left.
    let (headers, body, _) = closing();
    let again = json(server.post_webhook("gitea", headers, body).await).await;
    assert_eq!(again["cancelled"], serde_json::json!([]), "{again}");
}

#[tokio::test]
async fn superseding_follows_server_cancel_superseded() {
    let mut config = support::config();
    config.server.cancel_superseded = vec![Event::PullRequest];
    let server = TestServer::start_with(config).await;
    let first = push(&server, "main", 'a').await;
    let second = push(&server, "main", 'b').await;
    assert_eq!(second.get("superseded"), None, "{second}");
    assert_eq!(
        job(&server, first["job_id"].as_str().unwrap()).await.status,
        JobStatus::Queued,
        "pushes do not supersede when only pull_request is listed"
    );
}

#[tokio::test]
async fn cancelling_a_matrix_job_cancels_its_variants() {
    let server = TestServer::start().await;
    let Enqueued::Created(parent) = server.queue.enqueue(pushed("main", 'a')).await.unwrap() else {
        panic!("not created");
    };
    let claimed = server.claim_one("agent-1").await;
    let mut variants = Vec::new();
    for name in ["a", "b"] {
        let mut spec = parent.spec.clone();
        spec.matrix_parent = Some(parent.id.clone());
        spec.env.insert("RAIBID_MATRIX".into(), name.into());
        let Enqueued::Created(v) = server.queue.enqueue(spec).await.unwrap() else {
            panic!("not created");
        };
        variants.push(v.id);
    }
    server
        .queue
        .set_children(&parent.id, &variants)
        .await
        .unwrap();
    server.end(&claimed, JobStatus::Success).await;
    let running_variant = server.claim_one("agent-2").await;
    assert_eq!(running_variant.job.id, variants[0]);

    let response = server
        .post_json(
            &format!("/api/v1/jobs/{}/cancel", parent.id),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply = json(response).await;
    assert_eq!(reply["result"], "already_finished");
    assert_eq!(reply["variants"], serde_json::json!(variants));
    let reason = format!("job {}, which queued it, was cancelled", parent.id);
    let queued = job(&server, &variants[1]).await;
    assert_eq!(
        (queued.status, queued.reason.as_deref()),
        (JobStatus::Cancelled, Some(reason.as_str()))
    );
    assert!(job(&server, &variants[0]).await.cancel_requested);

    // A plain job's reply has no variants.
    let Enqueued::Created(plain) = server.queue.enqueue(pushed("dev", 'b')).await.unwrap() else {
        panic!("not created");
    };
    let reply = json(
        server
            .post_json(
                &format!("/api/v1/jobs/{}/cancel", plain.id),
                &serde_json::json!({}),
            )
            .await,
    )
    .await;
    assert_eq!(reply["result"], "cancelled");
    assert_eq!(reply.get("variants"), None);
}

/// Redis failing between queueing a job and superseding for it (here: the server's Redis user
/// may not read lanes) answers 503 naming the job, so the forge delivers again; the
/// redelivery is a duplicate that supersedes, and the job is in its lane for later pushes.
#[tokio::test]
async fn a_push_whose_superseding_failed_finishes_it_when_delivered_again() {
    let redis = raibid_testkit::RedisServer::start();
    assert_eq!(
        redis
            .command("ACL SETUSER raibid on >secret ~* &* +@all -zrange")
            .unwrap(),
        "+OK"
    );
    let url = redis
        .url()
        .replacen("redis://", "redis://raibid:secret@", 1);
    let mut options = raibid_queue::QueueOptions::new(url);
    options.command_timeout = std::time::Duration::from_secs(2);
    let server_queue = raibid_queue::Queue::open(options).unwrap();
    let server = TestServer::start_with_queue(
        redis,
        support::config(),
        raibid_server::system_clock(),
        server_queue,
    )
    .await;
    // The test's own queue may read lanes: it stands in for the first push, already in its lane.
    let Enqueued::Created(first) = server.queue.enqueue(pushed("main", 'a')).await.unwrap() else {
        panic!("not created");
    };
    assert!(server.queue.supersede(&first).await.unwrap().is_empty());

    let body = push_body(REPO, "main", &sha('b'));
    let deliver = || async {
        server
            .post_webhook(
                "gitea",
                gitea_headers("push", "d-main-b", SECRET, &body),
                body.clone(),
            )
            .await
    };
    let response = deliver().await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let message = json(response).await["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_id = server
        .queue
        .list(&Default::default(), None, 10)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .find(|j| j.spec.sha == sha('b'))
        .expect("the job was queued")
        .id;
    assert!(
        message.contains(&format!("job {second_id} is queued"))
            && message.contains("deliver this webhook again"),
        "{message}"
    );
    assert_eq!(job(&server, &first.id).await.status, JobStatus::Queued);

    server
        .redis
        .command("ACL SETUSER raibid +zrange")
        .expect("Redis answers");
    let response = deliver().await;
    assert_eq!(response.status(), StatusCode::OK);
    let reply = json(response).await;
    assert_eq!(reply["job_id"], second_id.as_str());
    assert_eq!(reply["duplicate"], true);
    assert_eq!(superseded(&reply), vec![first.id.clone()]);
    assert_eq!(job(&server, &first.id).await.status, JobStatus::Cancelled);

    // The second build joined its lane: the next push finds it.
    let third = push(&server, "main", 'c').await;
    assert_eq!(superseded(&third), vec![second_id]);
}
