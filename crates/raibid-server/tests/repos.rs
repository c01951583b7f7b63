//! The repositories API and pages against the real server and a real redis-server: which
//! repositories have builds, and each branch's, pull request's and tag's newest build.

mod support;

use raibid_model::{Event, JobStatus, NewJob, Outcome};
use reqwest::StatusCode;
use serde_json::Value;
use support::{SHA, TestServer, json};

const REPO: &str = "acme/app";

fn spec(repo: &str, git_ref: &str, event: Event) -> NewJob {
    let mut spec = NewJob::new(
        repo,
        format!("https://git.example/{repo}.git"),
        git_ref,
        SHA,
        event,
    );
    if let Some(number) = git_ref
        .strip_prefix("refs/pull/")
        .and_then(|r| r.strip_suffix("/head"))
    {
        spec.pr_number = Some(number.parse().unwrap());
        spec.target_branch = Some("main".into());
        spec.source_branch = Some(format!("feature-{number}"));
    }
    spec
}

fn push(branch: &str) -> NewJob {
    spec(REPO, &format!("refs/heads/{branch}"), Event::Push)
}

/// `name=status(job id)` of each entry of `list`.
fn refs(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}={}({})",
                r["name"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["job"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_repository_shows_each_ref_s_newest_build() {
    let server = TestServer::start().await;
    let old_main = server.run_to(push("main"), JobStatus::Failure).await;
    let dev = server.run_to(push("dev"), JobStatus::Failure).await;
    let pr = server
        .run_to(
            spec(REPO, "refs/pull/7/head", Event::PullRequest),
            JobStatus::Success,
        )
        .await;
    let tag = server
        .run_to(spec(REPO, "refs/tags/v1.0", Event::Tag), JobStatus::Success)
        .await;
    let other = server
        .run_to(
            spec("acme/lib", "refs/heads/main", Event::Push),
            JobStatus::Success,
        )
        .await;
    // main's newest build is a matrix: its first job passed, one variant still runs.
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

    let response = server.get(&format!("/api/v1/repos/{REPO}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let overview = json(response).await;
    assert_eq!(overview["repo"], REPO);
    assert_eq!(
        refs(&overview["branches"]),
        [
            format!("main=running({parent})"),
            format!("dev=failure({dev})")
        ],
        "{overview}"
    );
    assert_eq!(
        overview["branches"][0]["description"],
        "1 of 2 variants finished"
    );
    assert!(overview["branches"][1].get("description").is_none());
    assert_eq!(
        refs(&overview["pull_requests"]),
        [format!("7=success({pr})")]
    );
    assert_eq!(
        overview["pull_requests"][0]["job"]["source_branch"],
        "feature-7"
    );
    assert_eq!(refs(&overview["tags"]), [format!("v1.0=success({tag})")]);
    assert_eq!(overview["scanned"], 7);
    assert_eq!(overview["complete"], true);
    assert!(!overview.to_string().contains(&old_main));

    // The variant fails: so does main's build.
    assert!(
        server
            .queue
            .ack(&second, &Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    let overview = json(server.get(&format!("/api/v1/repos/{REPO}")).await).await;
    assert_eq!(overview["branches"][0]["status"], "failure");
    assert_eq!(
        overview["branches"][0]["description"],
        "1 of 2 variants failed: A=2"
    );

    // The list: the most recently active repository first, with its newest build (the
    // matrix's first job, not the variant queued after it).
    let list = json(server.get("/api/v1/repos").await).await;
    let repos = list["repos"].as_array().unwrap();
    assert_eq!(repos.len(), 2, "{list}");
    assert_eq!(repos[0]["repo"], REPO);
    assert_eq!(repos[0]["latest"]["job"]["id"], parent.as_str());
    assert_eq!(repos[0]["latest"]["status"], "failure");
    assert_eq!(repos[1]["repo"], "acme/lib");
    assert_eq!(repos[1]["latest"]["job"]["id"], other.as_str());
    assert!(
        repos[0]["last_queued_at"].as_str().unwrap() > repos[1]["last_queued_at"].as_str().unwrap()
    );
}

#[tokio::test]
async fn unknown_and_malformed_repositories_are_refused_by_name() {
    let server = TestServer::start().await;
    let response = server.get("/api/v1/repos/acme/none").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json(response).await["error"]["message"],
        "no jobs of acme/none"
    );
    let response = server.get("/api/v1/repos/acme/.git").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(response).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("repo"),
        "{body}"
    );
    let list = json(server.get("/api/v1/repos").await).await;
    assert_eq!(list["repos"], serde_json::json!([]));
}

/// A repository with more jobs than are read says the list may miss refs.
#[tokio::test]
async fn a_long_history_is_read_only_in_part() {
    let server = TestServer::start().await;
    let queue = &server.queue;
    let mut pipe_specs = Vec::new();
    for i in 0..1001 {
        pipe_specs.push(push(&format!("b{i}")));
    }
    for spec in pipe_specs {
        queue.enqueue(spec).await.unwrap();
    }
    let overview = json(server.get(&format!("/api/v1/repos/{REPO}")).await).await;
    assert_eq!(overview["scanned"], 1000);
    assert_eq!(overview["complete"], false);
    let branches = overview["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 100);
    assert_eq!(branches[0]["name"], "b1000");
    assert_eq!(branches[0]["status"], "queued");
}

#[tokio::test]
async fn the_repository_pages_show_the_same() {
    let server = TestServer::start().await;
    let main = server.run_to(push("main"), JobStatus::Success).await;
    let pr = server
        .run_claimed(spec(REPO, "refs/pull/7/head", Event::PullRequest))
        .await;

    let response = server.get("/repos").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<a href=\"/repos/acme/app\">acme/app</a>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("href=\"/jobs/{}\"", pr.job.id)),
        "{page}"
    );
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "a build runs: {page}"
    );

    let response = server.get("/repos/acme/app").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("<h2>Branches</h2>"), "{page}");
    assert!(page.contains("<h2>Pull requests</h2>"), "{page}");
    assert!(!page.contains("<h2>Tags</h2>"), "no tag built: {page}");
    assert!(page.contains(&format!("href=\"/jobs/{main}\"")), "{page}");
    assert!(
        page.contains("href=\"/jobs?repo=acme%2Fapp&#38;branch=main\""),
        "{page}"
    );
    assert!(page.contains("feature-7 → main"), "{page}");
    assert!(page.contains("status-running"), "{page}");

    let response = server.get("/repos/acme/none").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("no jobs of acme/none")
    );
}
