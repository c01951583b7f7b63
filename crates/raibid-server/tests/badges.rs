//! Status badges against the real server and a real redis-server: what a README shows.

mod support;

use raibid_model::{Event, JobStatus, NewJob, Outcome};
use reqwest::StatusCode;
use support::{SHA, TestServer};

const REPO: &str = "acme/app";

fn spec(git_ref: &str, event: Event) -> NewJob {
    NewJob::new(
        REPO,
        "https://git.example/acme/app.git",
        git_ref,
        SHA,
        event,
    )
}

fn push(branch: &str) -> NewJob {
    spec(&format!("refs/heads/{branch}"), Event::Push)
}

/// The badge's verdict, from its accessible label, after checking what a README needs.
async fn badge(server: &TestServer, query: &str) -> String {
    labelled(server, query, "build").await
}

/// The verdict of a badge whose label is `label`.
async fn labelled(server: &TestServer, query: &str, label: &str) -> String {
    let response = server
        .get(&format!("/api/v1/repos/{REPO}/badge.svg{query}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "image/svg+xml;charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache, max-age=0");
    let svg = response.text().await.unwrap();
    let label = svg
        .split(&format!("aria-label=\"{label}: "))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no label in {svg}"));
    label.to_owned()
}

#[tokio::test]
async fn badges_show_the_newest_finished_build_of_the_branch() {
    let server = TestServer::start().await;
    assert_eq!(badge(&server, "?branch=main").await, "unknown");
    assert_eq!(badge(&server, "").await, "unknown");

    server.run_to(push("main"), JobStatus::Success).await;
    assert_eq!(badge(&server, "?branch=main").await, "passing");
    // Newer, and none of them about main as a branch: another branch, a pull request into
    // main, a tag, a build of main still running.
    server.run_to(push("dev"), JobStatus::Failure).await;
    let mut pr = spec("refs/pull/7/head", Event::PullRequest);
    pr.target_branch = Some("main".into());
    server.run_to(pr, JobStatus::Failure).await;
    server
        .run_to(spec("refs/tags/v1", Event::Tag), JobStatus::Error)
        .await;
    let _unfinished = server.run_claimed(push("main")).await;
    assert_eq!(badge(&server, "?branch=main").await, "passing");
    assert_eq!(badge(&server, "?branch=dev").await, "failing");
    assert_eq!(badge(&server, "?branch=gone").await, "unknown");
    // Without a branch: the newest finished build of any branch.
    assert_eq!(badge(&server, "").await, "failing");
    // Other repositories' jobs are not this one's.
    let other = server
        .get("/api/v1/repos/acme/other/badge.svg?branch=dev")
        .await
        .text()
        .await
        .unwrap();
    assert!(other.contains("aria-label=\"build: unknown\""), "{other}");

    server.run_to(push("main"), JobStatus::Cancelled).await;
    assert_eq!(badge(&server, "?branch=main").await, "cancelled");
    server.run_to(push("main"), JobStatus::Error).await;
    assert_eq!(badge(&server, "?branch=main").await, "error");

    // A matrix job: its own success means only that it queued its variants; the badge waits
    // for them, and their verdict is its.
    let parent = server.run_to(push("main"), JobStatus::Success).await;
    let variant = |name: &str| {
        let mut spec = push("main");
        spec.matrix_parent = Some(parent.clone());
        spec.env.insert("RAIBID_MATRIX".into(), name.into());
        spec
    };
    let first = server.run_to(variant("A=1"), JobStatus::Success).await;
    let second = server.run_claimed(variant("A=2")).await;
    server
        .queue
        .set_children(&parent, &[first, second.job.id.clone()])
        .await
        .unwrap();
    assert_eq!(
        badge(&server, "?branch=main").await,
        "error",
        "a matrix still running shows the build before it"
    );
    assert!(
        server
            .queue
            .ack(&second, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    assert_eq!(badge(&server, "?branch=main").await, "failing");
}

/// `?workflow=`: one workflow of `.raibid/`, as GitHub's per-workflow badges, from the newest
/// finished build of the branch that ran it.
#[tokio::test]
async fn a_badge_may_show_one_workflow() {
    let server = TestServer::start().await;
    let child = |parent: &str, workflow: &str, variant: Option<&str>| {
        let mut spec = push("main");
        spec.matrix_parent = Some(parent.to_owned());
        spec.env.insert("RAIBID_WORKFLOW".into(), workflow.into());
        if let Some(variant) = variant {
            spec.env.insert("RAIBID_MATRIX".into(), variant.into());
        }
        spec
    };
    // A push ran build (passed) and test's two variants (one failed).
    let older = server.run_to(push("main"), JobStatus::Success).await;
    let kids = [
        server
            .run_to(child(&older, "build", None), JobStatus::Success)
            .await,
        server
            .run_to(child(&older, "test", Some("A=1")), JobStatus::Success)
            .await,
        server
            .run_to(child(&older, "test", Some("A=2")), JobStatus::Failure)
            .await,
    ];
    server.queue.set_children(&older, &kids).await.unwrap();
    assert_eq!(
        labelled(&server, "?branch=main&workflow=build", "build").await,
        "passing"
    );
    assert_eq!(
        labelled(&server, "?branch=main&workflow=test", "test").await,
        "failing"
    );
    assert_eq!(
        labelled(&server, "?branch=main&workflow=deploy", "deploy").await,
        "unknown"
    );
    assert_eq!(badge(&server, "?branch=main").await, "failing");

    // A newer push ran build only (test's `when` left it out), and it failed.
    let newer = server.run_to(push("main"), JobStatus::Success).await;
    let kid = server
        .run_to(child(&newer, "build", None), JobStatus::Failure)
        .await;
    server.queue.set_children(&newer, &[kid]).await.unwrap();
    assert_eq!(
        labelled(&server, "?branch=main&workflow=build", "build").await,
        "failing"
    );
    assert_eq!(
        labelled(&server, "?branch=main&workflow=test", "test").await,
        "failing",
        "the newest build that ran test"
    );
    // One workflow submitted by hand is a build of it.
    let mut alone = push("main");
    alone.env.insert("RAIBID_WORKFLOW".into(), "deploy".into());
    server.run_to(alone, JobStatus::Success).await;
    assert_eq!(
        labelled(&server, "?branch=main&workflow=deploy", "deploy").await,
        "passing"
    );
    assert_eq!(
        labelled(&server, "?branch=main&workflow=build", "build").await,
        "failing"
    );

    let response = server
        .get(&format!("/api/v1/repos/{REPO}/badge.svg?workflow=a/b"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_badge_requests_are_refused_and_redis_down_is_503() {
    let mut server = TestServer::start().await;
    let response = server.get("/api/v1/repos/acme/a%20b/badge.svg").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = support::json(response).await;
    assert_eq!(body["error"]["code"], "invalid_parameter", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("repo"),
        "{body}"
    );
    server.redis.kill();
    let response = server.get(&format!("/api/v1/repos/{REPO}/badge.svg")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}
