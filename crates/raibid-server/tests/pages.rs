//! The web pages (`/jobs`, `/jobs/{id}`) against the real server and a real redis-server:
//! what a person who follows a forge's "Details" link sees.

mod support;

use raibid_config::{ApiToken, TokenHash, TokenScope, hash_token};
use raibid_model::{JobStatus, Outcome, StepResult, StepStatus, TestFailure, TestReport};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;
use support::browser::{
    From, browser, get_with, job_redirected_to, post_form, sign_in, sign_in_from,
};
use support::{SHA, TOKEN, TestServer, config};

/// Status, headers and body of `GET path`, as a browser would ask (no token).
async fn get(server: &TestServer, path: &str) -> (StatusCode, HeaderMap, String) {
    let response = server.get(path).await;
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// A page that must be there: 200, HTML, with the pages' headers.
async fn page(server: &TestServer, path: &str) -> String {
    let (status, headers, body) = get(server, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    body
}

async fn submit(server: &TestServer, repo: &str) -> String {
    let response = server
        .post_json(
            "/api/v1/jobs",
            &json!({ "repo": repo, "clone_url": format!("https://git.example/{repo}.git"), "sha": SHA }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    support::json(response).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_finished_job_shows_its_steps_tests_and_coloured_log_with_everything_escaped() {
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    server
        .queue
        .append_log(
            &id,
            b"\x1b[32mCompiling\x1b[0m app\n<script>alert('log')</script>\nerror: 1 test failed\n",
        )
        .await
        .unwrap();
    let mut outcome = Outcome::new(JobStatus::Failure).with_reason("step <b>test</b> failed");
    outcome.steps = vec![
        StepResult {
            name: "build".into(),
            status: StepStatus::Success,
            exit_code: Some(0),
            duration_ms: Some(65_000),
            tail: String::new(),
        },
        StepResult {
            name: "test<img src=x onerror=alert(1)>".into(),
            status: StepStatus::Failure,
            exit_code: Some(101),
            duration_ms: Some(4_000),
            tail: String::new(),
        },
    ];
    outcome.tests = Some(TestReport {
        tests: 12,
        failed: 1,
        skipped: 0,
        seconds: 0.5,
        files: 1,
        failures: vec![TestFailure {
            suite: "app".into(),
            name: "parses <input>".into(),
            message: "left != right".into(),
        }],
    });
    outcome.artifacts = Some(raibid_model::JobArtifacts {
        reference: "registry.example/acme/app/artifacts@sha256:00".into(),
        size: 2048,
        files: 3,
        expires_at: None,
        expired: false,
    });
    server.queue.ack(&claimed, &outcome).await.unwrap();

    let body = page(&server, &format!("/jobs/{id}")).await;
    // The artifacts, downloaded through the server.
    assert!(
        body.contains(&format!(
            "<a class=\"button\" href=\"/api/v1/jobs/{id}/artifacts\">Download</a> 3 files"
        )),
        "{body}"
    );
    // The header, the description and the steps.
    assert!(
        body.contains("<title>acme/app #1 · raibid-ci</title>"),
        "{body}"
    );
    assert!(
        body.contains("class=\"status status-failure\">failure</span>"),
        "{body}"
    );
    assert!(body.contains("spark-1"), "{body}");
    assert!(
        body.contains("title=\"this step's lines of the log\">build</a></td>"),
        "{body}"
    );
    assert!(body.contains("1m05s"), "{body}");
    assert!(body.contains("<td>101</td>"), "{body}");
    assert!(body.contains("12 tests"), "{body}");
    // The log's colours are spans, its markup text.
    assert!(
        body.contains("<span style='color:var(--green,#0a0)'>Compiling</span> app"),
        "{body}"
    );
    assert!(body.contains("error: 1 test failed"), "{body}");
    // Nothing from the job reaches the page as markup: log, step name, reason, test name.
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(!body.contains("<img"), "{body}");
    assert!(!body.contains("<b>test</b>"), "{body}");
    assert!(!body.contains("parses <input>"), "{body}");
    assert!(body.contains("&lt;script&gt;alert("), "{body}");
    assert!(body.contains("test&#60;img"), "{body}");
    // Finished: nothing to follow.
    assert!(body.contains("data-live=\"false\""), "{body}");
    assert!(!body.contains("job.js"), "{body}");
    // A submitted job's clone URL is not a forge's: no commit link.
    assert!(
        !body.contains("https://git.example/acme/app/commit"),
        "{body}"
    );
}

#[tokio::test]
async fn a_running_job_s_page_follows_its_log_from_where_it_stopped() {
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let queued = page(&server, &format!("/jobs/{id}")).await;
    assert!(queued.contains("No output yet."), "{queued}");
    assert!(queued.contains("data-cursor=\"0-0\""), "{queued}");
    assert!(queued.contains("data-live=\"true\""), "{queued}");
    assert!(
        queued.contains("<script src=\"/assets/job.js\" defer></script>"),
        "{queued}"
    );
    // An empty steps' table, hidden, for the script to fill as the agent reports steps.
    assert!(queued.contains("<section id=\"steps\" hidden>"), "{queued}");

    let _claimed = server.claim_one("spark-1").await;
    server.queue.append_log(&id, b"line 1\n").await.unwrap();
    server.queue.append_log(&id, b"line 2\n").await.unwrap();
    let running = page(&server, &format!("/jobs/{id}")).await;
    // Numbered lines, each a link to itself; the script goes on at line 3.
    assert!(
        running.contains(
            ">\
             <span class=\"line\" id=\"L1\"><a class=\"ln\" href=\"#L1\" data-n=\"1\"></a>line 1\n</span>\
             <span class=\"line\" id=\"L2\"><a class=\"ln\" href=\"#L2\" data-n=\"2\"></a>line 2\n</span>\
             </pre>"
        ),
        "{running}"
    );
    assert!(
        running.contains("data-line=\"3\" data-open=\"false\""),
        "{running}"
    );
    // The cursor the script follows from is the one the log API gives after these lines.
    let raw = server.get(&format!("/api/v1/jobs/{id}/logs")).await;
    let cursor = raw.headers()["x-raibid-log-cursor"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        running.contains(&format!("data-cursor=\"{cursor}\"")),
        "{cursor}: {running}"
    );
    assert!(!running.contains("No output"), "{running}");
}

#[tokio::test]
async fn a_long_log_shows_its_end_and_says_what_it_leaves_out() {
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let _claimed = server.claim_one("spark-1").await;
    // 1,200 lines of 1 KiB: 176 of them do not fit in the page's 1 MiB. One write each, so
    // that the page's read from the end (512 writes at a time) stops before the log's start
    // and the lines before what it read are numbered from the log's count of them.
    for line in 0..1200 {
        let mut data = format!("line {line:04} ").into_bytes();
        data.resize(1023, b'.');
        data.push(b'\n');
        assert!(server.queue.append_log(&id, &data).await.unwrap());
    }
    let body = page(&server, &format!("/jobs/{id}")).await;
    assert!(
        body.contains("The first 180224 bytes are not shown"),
        "{}",
        &body[..2000]
    );
    assert!(body.contains("line 1199 "));
    assert!(!body.contains("line 0175 "));
    // The page starts at a line, numbered as in the whole log, so that its link names the
    // same line as the raw log's line count.
    assert!(
        body.contains("<span class=\"line\" id=\"L177\"><a class=\"ln\" href=\"#L177\" data-n=\"177\"></a>line 0176 "),
        "the page starts at a line"
    );
    assert!(body.contains("data-n=\"1200\"></a>line 1199 "));
    assert!(!body.contains("id=\"L176\""));

    // A log an older agent wrote has no count of its lines: they are counted by reading it,
    // to the same numbers.
    let hdel = server
        .redis
        .command(&format!("HDEL raibid:ci-jobs:job:{id} log_lines"))
        .unwrap();
    assert_eq!(hdel, ":1", "the log counted its lines as it was written");
    let uncounted = page(&server, &format!("/jobs/{id}")).await;
    assert!(
        uncounted.contains("<span class=\"line\" id=\"L177\"><a class=\"ln\" href=\"#L177\" data-n=\"177\"></a>line 0176 "),
    );
    assert!(uncounted.contains("data-n=\"1200\"></a>line 1199 "));
}

/// The page's "raw" link: the whole log as plain text, for a browser. The API gives it in
/// pages of 8 MiB with its escape codes, which a browser shows as litter; this is the whole
/// log (here 600 writes, more than one read of Redis takes), escape codes stripped, one cut
/// between two writes included, tabs and carriage returns kept.
#[tokio::test]
async fn the_raw_log_is_the_whole_log_without_escape_codes() {
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    let mut expected = String::new();
    for part in [
        &b"\x1b[1;36m\xe2\x96\xb6 step build\x1b[0m\n\x1b[3"[..],
        b"2mok\x1b[0m\tdone\r\n",
    ] {
        assert!(server.queue.append_log(&id, part).await.unwrap());
    }
    expected.push_str("\u{25b6} step build\nok\tdone\r\n");
    for n in 0..600 {
        let line = format!("line {n}\n");
        let coloured = format!("\x1b[2m{}\x1b[0m", line);
        assert!(
            server
                .queue
                .append_log(&id, coloured.as_bytes())
                .await
                .unwrap()
        );
        expected.push_str(&line);
    }

    let body = page(&server, &format!("/jobs/{id}")).await;
    assert!(
        body.contains(&format!("<a href=\"/jobs/{id}/raw\">raw</a>")),
        "{body}"
    );
    let (status, headers, raw) = get(&server, &format!("/jobs/{id}/raw")).await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-disposition"],
        format!("inline; filename=\"job-{id}.log\"").as_str()
    );
    assert_eq!(raw, expected);

    // An erased log says so, as the page does.
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    server.queue.erase_log(&id, "alice").await.unwrap();
    let (status, _, raw) = get(&server, &format!("/jobs/{id}/raw")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        raw.starts_with("[raibid] this job's log was erased by alice"),
        "{raw}"
    );
    assert!(!raw.contains("line 0"), "{raw}");

    let (status, _, body) = get(&server, "/jobs/01JABCDEFGHJKMNPQRSTVWXYZ0/raw").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// A step's lines longer than the page holds: the page shows the last of them, numbered as in
/// the log, and says how many it leaves out.
#[tokio::test]
async fn a_long_step_shows_its_end_and_says_what_it_leaves_out() {
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    let mut log = b"checkout\n\xe2\x96\xb6 step big 2026-12-06T00:00:00.000Z\n".to_vec();
    for line in 0..1200 {
        let text = format!("line {line:04} ");
        log.extend_from_slice(text.as_bytes());
        log.extend(std::iter::repeat_n(b'.', 1023 - text.len()));
        log.push(b'\n');
    }
    log.extend_from_slice(b"\xe2\x9c\x94 big (9.00s)\nafter\n");
    for chunk in log.chunks(64 * 1024) {
        assert!(server.queue.append_log(&id, chunk).await.unwrap());
    }
    let step = StepResult {
        name: "big".into(),
        status: StepStatus::Success,
        exit_code: Some(0),
        duration_ms: None,
        tail: String::new(),
    };
    assert!(
        server
            .queue
            .record_progress(&claimed, &[step])
            .await
            .unwrap()
    );
    let body = page(&server, &format!("/jobs/{id}?step=big")).await;
    // 1,202 lines of the step (header, 1,200 of output, result); 1 MiB holds 1,024 of them
    // (the result's line is short): the header and the first 177 lines of output are left out.
    assert!(
        body.contains("The step's first 178 lines are not shown"),
        "{}",
        &body[..3000]
    );
    // Line 180 of the log is output line 0177: the log's first line is `checkout`.
    assert!(
        body.contains("id=\"L180\"><a class=\"ln\" href=\"#L180\" data-n=\"180\"></a>line 0177 "),
        "{}",
        &body[..3000]
    );
    assert!(!body.contains("line 0176 ") && !body.contains("after\n"));
    assert!(body.contains("data-n=\"1203\"></a>\u{2714} big (9.00s)\n"));
}

/// Three jobs of acme/app, the first recorded as having queued the other two: a build.
async fn build_of_two(server: &TestServer) -> (String, String, String) {
    let parent = submit(server, "acme/app").await;
    let a = submit(server, "acme/app").await;
    let b = submit(server, "acme/app").await;
    server
        .queue
        .set_children(&parent, &[a.clone(), b.clone()])
        .await
        .unwrap();
    (parent, a, b)
}

#[tokio::test]
async fn a_matrix_job_lists_its_variants_and_heads_with_its_build_s_status() {
    let server = TestServer::start().await;
    let (parent, a, b) = build_of_two(&server).await;
    let body = page(&server, &format!("/jobs/{parent}")).await;
    assert!(body.contains(&format!("<a href=\"/jobs/{a}\">")), "{body}");
    assert!(body.contains(&format!("<a href=\"/jobs/{b}\">")), "{body}");

    // Once the matrix job has queued them it has passed; the page heads with the build's
    // status, its jobs' combined (failed as soon as one has), and reloads until they have
    // all ended.
    // The page's headline status, its build line, and whether it reloads.
    let head = |body: &str| {
        let start = body.find("<span id=\"status\"").expect("a status badge");
        let status = body[start..].split('>').nth(1).unwrap().split('<').next();
        let build = body.split("<th>build</th><td>").nth(1);
        (
            status.unwrap().to_owned(),
            build.map(|rest| rest.split('<').next().unwrap().to_owned()),
            body.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        )
    };
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, parent);
    server.end(&claimed, JobStatus::Success).await;
    let body = page(&server, &format!("/jobs/{parent}")).await;
    let expected = ("running".into(), Some("0 of 2 jobs finished".into()), true);
    assert_eq!(head(&body), expected, "{body}");
    let first = server.claim_one("agent-1").await;
    assert_eq!(first.job.id, a);
    server.end(&first, JobStatus::Failure).await;
    let body = page(&server, &format!("/jobs/{parent}")).await;
    let failed = format!("1 of 2 jobs failed: {a}");
    let expected = ("failure".into(), Some(failed.clone()), true);
    assert_eq!(head(&body), expected, "{body}");
    let second = server.claim_one("agent-1").await;
    server.end(&second, JobStatus::Success).await;
    let body = page(&server, &format!("/jobs/{parent}")).await;
    assert_eq!(
        head(&body),
        ("failure".into(), Some(failed), false),
        "{body}"
    );
    // The API gives the same (`raibid job show` reads it), and for a job of its own its own.
    let build = support::json(server.get(&format!("/api/v1/jobs/{parent}/build")).await).await;
    assert_eq!(
        (&build["status"], &build["description"], &build["job"]["id"]),
        (
            &json!("failure"),
            &json!(format!("1 of 2 jobs failed: {a}")),
            &json!(parent)
        )
    );
    let single = support::json(server.get(&format!("/api/v1/jobs/{b}/build")).await).await;
    assert_eq!(single["status"], "success");
    assert!(single.get("description").is_none(), "{single}");
    let missing = server
        .get("/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/build")
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // A job of its own (here the variant) heads with its own status.
    let body = page(&server, &format!("/jobs/{b}")).await;
    assert_eq!(head(&body), ("success".into(), None, false), "{body}");
}

/// The job a recorded webhook queued.
async fn delivered(server: &TestServer, fixture: &str) -> raibid_model::Job {
    let response = server.deliver(fixture).await;
    assert!(response.status().is_success(), "{fixture}");
    let id = support::json(response).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.queue.get(&id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_webhook_s_job_links_to_its_commit_and_pull_request_on_the_forge() {
    let server = TestServer::start().await;
    let job = delivered(&server, "gitea/pull_request-opened").await;
    let body = page(&server, &format!("/jobs/{}", job.id)).await;
    assert!(
        body.contains(&format!(
            "href=\"https://try.gitea.io/jcitizen/my-repo/commit/{}\"",
            job.spec.sha
        )),
        "{body}"
    );
    assert!(
        body.contains("href=\"https://try.gitea.io/jcitizen/my-repo/pulls/1\">#1</a>"),
        "{body}"
    );
    assert!(body.contains("<th>from</th><td>feature</td>"), "{body}");
    assert!(body.contains("<th>into</th><td>master</td>"), "{body}");
    assert!(!body.contains("<th>labels</th>"), "{body}");

    // GitHub's pull request has a label, which the job keeps and its page shows.
    let job = delivered(&server, "github/pull_request-opened").await;
    assert_eq!(job.spec.pr_labels, vec!["bug".to_owned()]);
    let body = page(&server, &format!("/jobs/{}", job.id)).await;
    assert!(body.contains("<th>labels</th><td>bug</td>"), "{body}");
}

/// A webhook's job is named by its pull request's title or its head commit's subject, on its
/// page, in the job list and on its repository's page.
#[tokio::test]
async fn a_webhook_s_job_shows_its_title() {
    let server = TestServer::start().await;
    let pr = delivered(&server, "gitea/pull_request-opened").await;
    assert_eq!(pr.spec.title.as_deref(), Some("Add License File"));
    let push = delivered(&server, "github/push").await;
    assert_eq!(
        push.spec.title.as_deref(),
        Some("Fix multiline secrets replacer (#700)")
    );
    let body = page(&server, &format!("/jobs/{}", pr.id)).await;
    assert!(
        body.contains("<th>title</th><td>Add License File</td>"),
        "{body}"
    );
    let body = page(&server, "/jobs").await;
    assert!(
        body.contains(
            "<span class=\"detail title\" title=\"Add License File\">Add License File</span>"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "<span class=\"detail title\" title=\"Fix multiline secrets replacer (#700)\">Fix multiline secrets replacer (#700)</span>"
        ),
        "{body}"
    );
    let body = page(&server, "/repos/jcitizen/my-repo").await;
    assert!(
        body.contains(
            "<span class=\"detail title\" title=\"Add License File\">Add License File</span>"
        ),
        "{body}"
    );
    let api = support::json(server.get(&format!("/api/v1/jobs/{}", pr.id)).await).await;
    assert_eq!(api["title"], "Add License File");
}

#[tokio::test]
async fn missing_jobs_and_bad_parameters_are_pages_with_the_api_s_status_and_reason() {
    let server = TestServer::start().await;
    let (status, headers, body) = get(&server, "/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(
        body.contains("job 01ARZ3NDEKTSV4RRFFQ69G5FAV not found"),
        "{body}"
    );

    let (status, _, body) = get(&server, "/jobs?status=finished").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("query parameter status"), "{body}");

    let (status, _, body) = get(&server, "/jobs?repo=..%2Fetc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn with_read_requires_token_a_browser_is_told_why_and_a_token_holder_reads() {
    let mut cfg = config();
    cfg.server.read_requires_token = true;
    let other = "rbd_other_team_token_77";
    cfg.server.tokens.push(ApiToken {
        name: "other".into(),
        hash: TokenHash::parse(&hash_token(other)).unwrap(),
        scopes: vec![TokenScope::Read],
        repos: vec!["other/*".into()],
    });
    let server = TestServer::start_with(cfg).await;
    let id = submit(&server, "acme/app").await;

    let (status, headers, body) = get(&server, &format!("/jobs/{id}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(body.contains("server.read_requires_token"), "{body}");
    // The way to sign in, coming back to this page.
    let back = format!("/login?next=%2Fjobs%2F{id}");
    assert!(
        body.contains(&format!("href=\"{back}\">Sign in</a>")),
        "{body}"
    );
    let (status, _, _) = get(&server, "/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let with = |token: &str, path: &str| {
        server
            .client
            .get(server.url(path))
            .bearer_auth(token)
            .send()
    };
    let response = with(TOKEN, &format!("/jobs/{id}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The raw log reads as the page does.
    let (status, _, _) = get(&server, &format!("/jobs/{id}/raw")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = with(TOKEN, &format!("/jobs/{id}/raw")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A token for other repositories learns nothing of this one.
    let response = with(other, &format!("/jobs/{id}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = with(other, &format!("/jobs/{id}/raw")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let list = with(other, "/jobs").await.unwrap().text().await.unwrap();
    assert!(!list.contains(&id), "{list}");
    assert!(list.contains("No jobs"), "{list}");
}

#[tokio::test]
async fn the_job_list_filters_pages_and_refreshes_while_jobs_move() {
    let server = TestServer::start().await;
    let app = submit(&server, "acme/app").await;
    let lib = submit(&server, "acme/lib").await;

    let all = page(&server, "/jobs").await;
    assert!(
        all.contains(&format!("<a href=\"/jobs/{app}\">#1</a>")),
        "{all}"
    );
    assert!(
        all.contains(&format!("<a href=\"/jobs/{lib}\">#1</a>")),
        "{all}"
    );
    assert!(all.contains("data-refresh=\"10\""), "queued jobs: {all}");
    assert!(all.contains("src=\"/assets/list.js\""), "{all}");
    // The queues above them: both jobs wait in the default pool.
    assert!(
        all.contains("<tr><td>default</td><td>2</td><td>0</td>"),
        "{all}"
    );
    // A paused pool says so, by whom and why, beside its name.
    server
        .queue
        .pause_pool(&raibid_model::PoolName::default(), "ops", "disk <swap>")
        .await
        .unwrap();
    let paused = page(&server, "/jobs").await;
    assert!(
        paused.contains("<tr><td>default <strong class=\"paused\">paused by ops ")
            && paused.contains(" ago: disk &#60;swap&#62;</strong></td><td>2</td>"),
        "{paused}"
    );
    // So does the page of a job waiting in it.
    let waiting = page(&server, &format!("/jobs/{lib}")).await;
    assert!(
        waiting.contains(" ago: disk &#60;swap&#62;: the job waits"),
        "{waiting}"
    );
    server
        .queue
        .resume_pool(&raibid_model::PoolName::default())
        .await
        .unwrap();

    let only_lib = page(&server, "/jobs?repo=acme/lib").await;
    assert!(
        only_lib.contains(&lib) && !only_lib.contains(&app),
        "{only_lib}"
    );
    assert!(only_lib.contains("<title>Jobs of acme/lib · raibid-ci</title>"));
    assert!(
        only_lib.contains("<a href=\"/repos/acme/lib\">"),
        "the repository's page: {only_lib}"
    );
    assert!(
        only_lib.contains("value=\"acme/lib\""),
        "the form keeps the filter"
    );

    // Newest first, one per page: the link to the next page holds the filters and cursor.
    let row = |id: &str| format!("href=\"/jobs/{id}\"");
    let first = page(&server, "/jobs?limit=1&status=queued").await;
    assert!(
        first.contains(&row(&lib)) && !first.contains(&row(&app)),
        "{first}"
    );
    let next = format!("/jobs?status=queued&#38;limit=1&#38;cursor={lib}");
    assert!(first.contains(&next), "{first}");
    let second = page(&server, &next.replace("&#38;", "&")).await;
    assert!(
        second.contains(&row(&app)) && !second.contains(&row(&lib)),
        "{second}"
    );
    assert!(
        !second.contains("data-refresh") && !second.contains("list.js"),
        "only the first page reloads"
    );
    assert!(
        !second.contains("class=\"queues\""),
        "only the first page has the queues"
    );

    let none = page(&server, "/jobs?status=success").await;
    assert!(none.contains("No jobs match these filters."), "{none}");
    assert!(!none.contains("data-refresh"), "{none}");

    // The branch and event filters, kept by the form; a branch's ref links to its builds.
    let main = page(&server, "/jobs?branch=main&event=manual").await;
    assert!(
        main.contains(&row(&lib)) && main.contains(&row(&app)),
        "{main}"
    );
    assert!(main.contains("name=\"branch\" value=\"main\""), "{main}");
    assert!(
        main.contains("<option value=\"manual\" selected>manual</option>"),
        "{main}"
    );
    assert!(
        main.contains(
            "<a href=\"/jobs?repo=acme%2Fapp&#38;branch=main\" title=\"this branch's builds\">heads/main</a>"
        ),
        "{main}"
    );
    for query in ["event=push", "branch=dev"] {
        let none = page(&server, &format!("/jobs?{query}")).await;
        assert!(
            none.contains("No jobs match these filters."),
            "{query}: {none}"
        );
    }
}

#[tokio::test]
async fn the_pages_live_below_the_public_url_s_path_and_the_root_leads_to_them() {
    let mut cfg = config();
    cfg.server.public_url = "https://git.example/ci/".into();
    let server = TestServer::start_with(cfg).await;
    let id = submit(&server, "acme/app").await;
    let body = page(&server, &format!("/jobs/{id}")).await;
    assert!(body.contains("href=\"/ci/assets/raibid.css\""), "{body}");
    assert!(body.contains("href=\"/ci/repos/acme/app\""), "{body}");
    assert!(body.contains("src=\"/ci/assets/job.js\""), "{body}");
    assert!(body.contains("data-root=\"/ci\""), "{body}");

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/ci/jobs");

    for (path, kind) in [
        ("/assets/raibid.css", "text/css; charset=utf-8"),
        ("/assets/job.js", "text/javascript; charset=utf-8"),
        ("/assets/list.js", "text/javascript; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], kind, "{path}");
        assert!(!response.text().await.unwrap().is_empty());
    }
}

/// The value of attribute `name` of the page's first element that has one.
fn attribute<'a>(body: &'a str, name: &str) -> &'a str {
    let start = body
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + name.len()
        + 3;
    let end = start + body[start..].find('"').unwrap();
    &body[start..end]
}

#[tokio::test]
async fn the_page_s_script_follows_the_log_and_reloads_when_the_job_ends() {
    let node = node();
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    // The page ends inside line 2, which the script continues.
    server
        .queue
        .append_log(&id, b"line 1\nline 2 ")
        .await
        .unwrap();
    let body = page(&server, &format!("/jobs/{id}")).await;
    let cursor = attribute(&body, "data-cursor").to_owned();
    assert_eq!(attribute(&body, "data-line"), "2");
    assert_eq!(attribute(&body, "data-open"), "true");

    let script = follow(node, &server, &body);
    // What comes after the page was rendered, coloured, a colour cut in two by the chunks it
    // came in, a terminal title; then the end.
    for chunk in [
        &b"\x1b[31mgoes on\x1b[0m\n"[..],
        b"\x1b]0;title\x07\x1b[3",
        b"2mline 3\x1b[0m\nline 4\nline",
        b" 5\n",
    ] {
        server.queue.append_log(&id, chunk).await.unwrap();
    }
    // The steps as the agent reports them; the script shows them with the server's times.
    let step = |name: &str, status, exit_code, duration_ms| StepResult {
        name: name.into(),
        status,
        exit_code,
        duration_ms,
        tail: String::new(),
    };
    let mut outcome = Outcome::new(JobStatus::Success);
    outcome.steps = vec![
        step("build", StepStatus::Success, Some(0), Some(1_500)),
        step("test<b>", StepStatus::Success, Some(0), Some(185_000)),
        step("deploy", StepStatus::Skipped, None, None),
    ];
    server.queue.ack(&claimed, &outcome).await.unwrap();
    let seen = followed(script).await;
    assert_eq!(seen["error"], serde_json::Value::Null, "{seen}");
    assert_eq!(
        seen["url"],
        format!("/api/v1/jobs/{id}/logs?follow=true&cursor={cursor}")
    );
    // Only what the page did not have, its colour a style rather than escape codes: the
    // end of the page's last line, then lines numbered on from it, each with its link.
    assert_eq!(
        seen["continued"],
        json!([{ "text": "goes on", "color": "var(--red)" }, "\n"]),
        "{seen}"
    );
    assert_eq!(
        seen["appended"],
        json!([
            log_line(
                3,
                json!([{ "text": "line 3", "color": "var(--green)" }, "\n"])
            ),
            log_line(4, json!(["line 4\n"])),
            log_line(5, json!(["line", " 5\n"])),
        ]),
        "{seen}"
    );
    assert_eq!(seen["placeholderRemoved"], true);
    assert_eq!(
        (&seen["closed"], &seen["reloaded"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(seen["badge"]["textContent"], "success", "{seen}");
    assert_eq!(seen["badge"]["className"], "status status-success");
    assert_eq!(
        seen["steps"],
        json!([
            [
                format!("/jobs/{id}?step=build#log:build"),
                "status status-success:success",
                "0",
                "1.5s"
            ],
            [
                format!("/jobs/{id}?step=test%3Cb%3E#log:test<b>"),
                "status status-success:success",
                "0",
                "3m05s"
            ],
            [
                format!("/jobs/{id}?step=deploy#log:deploy"),
                "status status-skipped:skipped",
                "",
                ""
            ]
        ]),
        "{seen}"
    );
    assert_eq!(seen["stepsHidden"], false);
}

/// A step's name in the steps' table leads to its lines of the log (`?step=NAME`), numbered as
/// in the whole log; an unknown step is a 404. While the job runs, the page's script follows
/// the log, keeping the step's lines (the unfinished one the page ended with included) under
/// their numbers, and reloads the page when the job ends.
#[tokio::test]
async fn a_step_s_lines_of_the_log_have_a_page_of_their_own() {
    let node = node();
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    let log = "checkout\n\n\x1b[1;36m\u{25b6} step build\x1b[0m \x1b[2m2026-12-06T00:00:00.000Z\x1b[0m\n\
        compiling <x>\n\x1b[32m\u{2714} build (1.00s)\x1b[0m\n\
        \n\x1b[1;36m\u{25b6} step test\x1b[0m \x1b[2m2026-12-06T00:00:01.000Z\x1b[0m\nok 1\nok ";
    server.queue.append_log(&id, log.as_bytes()).await.unwrap();
    let step = |name: &str, status| StepResult {
        name: name.into(),
        status,
        exit_code: None,
        duration_ms: None,
        tail: String::new(),
    };
    let steps = [
        step("build", StepStatus::Success),
        step("test", StepStatus::Running),
    ];
    assert!(
        server
            .queue
            .record_progress(&claimed, &steps)
            .await
            .unwrap()
    );

    let build = page(&server, &format!("/jobs/{id}?step=build")).await;
    assert!(build.contains("<h2>Log of step build</h2>"), "{build}");
    assert!(
        build.contains(&format!("<a href=\"/jobs/{id}#log\">whole log</a>")),
        "{build}"
    );
    // Lines 3 to 5 of the log: its header, its output, its result.
    assert!(
        build.contains("<span class=\"line\" id=\"L3\">")
            && build.contains("data-n=\"4\"></a>compiling &lt;x&gt;\n</span>")
            && build.contains("<span class=\"line\" id=\"L5\">"),
        "{build}"
    );
    assert!(
        !build.contains("checkout") && !build.contains("ok 1") && !build.contains("id=\"L6\""),
        "{build}"
    );
    assert!(build.contains("data-step=\"build\""), "{build}");
    // The steps' table leads to each step's lines.
    assert!(
        build.contains(&format!("<a href=\"/jobs/{id}?step=test#log\"")),
        "{build}"
    );
    let test = page(&server, &format!("/jobs/{id}?step=test")).await;
    assert!(test.contains("data-n=\"8\"></a>ok 1\n</span>"), "{test}");
    // The unfinished line is the script's to judge once whole.
    assert!(!test.contains("id=\"L9\""), "{test}");
    assert!(
        test.contains("data-line=\"9\"")
            && test.contains("data-inside=\"true\"")
            && test.contains("data-partial=\"ok \""),
        "{test}"
    );
    let (status, _, body) = get(&server, &format!("/jobs/{id}?step=deploy")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("has no step &#34;deploy&#34;"), "{body}");

    let script = follow(node, &server, &test);
    // The unfinished line ends, then the step's result, then what is no longer the step's.
    for chunk in [
        &b"2\n\x1b[31m\xe2\x9c\x98 test: exit"[..],
        b" code 1 (0.50s)\x1b[0m\n",
        b"service db: ready\n",
    ] {
        server.queue.append_log(&id, chunk).await.unwrap();
    }
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let seen = followed(script).await;
    assert_eq!(
        seen["appended"],
        json!([
            log_line(9, json!(["ok 2\n"])),
            log_line(
                10,
                json!([{ "text": "\u{2718} test: exit code 1 (0.50s)", "color": "var(--red)" }, "\n"])
            ),
        ]),
        "{seen}"
    );
    assert_eq!(seen["reloaded"], true, "{seen}");
    assert_eq!(seen["badge"]["textContent"], "success", "{seen}");
}

/// The job page's script under node (tests/js/follow.mjs), given what `page` holds for it: a
/// whole log's page, or a step's (`data-step`).
fn follow(node: std::path::PathBuf, server: &TestServer, page: &str) -> tokio::process::Child {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = vec![
        "data-job",
        "data-cursor",
        "data-root",
        "data-line",
        "data-open",
    ];
    if page.contains(" data-step=\"") {
        names.extend(["data-step", "data-inside", "data-partial"]);
    }
    tokio::process::Command::new(node)
        .arg(dir.join("tests/js/follow.mjs"))
        .arg(dir.join("assets/job.js"))
        .arg(&server.base)
        .args(names.iter().map(|name| attribute(page, name)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// What the script did, once it has reloaded the page (within 30 s).
async fn followed(script: tokio::process::Child) -> serde_json::Value {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        script.wait_with_output(),
    )
    .await
    .expect("the script reloads the page within 30 s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A log line as follow.mjs reports what the page's script made of it: its id, the link its
/// number is, and its parts (text, or coloured text).
fn log_line(n: u32, parts: serde_json::Value) -> serde_json::Value {
    json!({
        "id": format!("L{n}"),
        "className": "line",
        "link": ["ln", format!("#L{n}"), n.to_string()],
        "parts": parts,
    })
}

/// node, which runs the pages' scripts in these tests.
fn node() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("node"))
                .find(|p| p.is_file())
        })
        .expect(
            "node is not installed: the web pages' scripts are tested under it \
             (apt-get install nodejs, or scripts/install-deps.sh test)",
        )
}

#[tokio::test]
async fn the_list_s_script_reloads_it_unless_a_filter_or_a_pause_reason_is_being_edited() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(node())
        .arg(dir.join("tests/js/list.mjs"))
        .arg(dir.join("assets/list.js"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        seen,
        json!({
            "idle": { "reloaded": true, "period": 10000 },
            "typed": { "reloaded": false, "period": 10000 },
            "focused": { "reloaded": false, "period": 10000 },
            "reasonTyped": { "reloaded": false, "period": 10000 },
            "reasonFocused": { "reloaded": false, "period": 10000 },
        })
    );
}

#[tokio::test]
async fn a_browser_signs_in_with_a_token_reads_under_read_requires_token_and_signs_out() {
    let mut cfg = config();
    cfg.server.read_requires_token = true;
    let server = TestServer::start_with(cfg).await;
    let id = submit(&server, "acme/app").await;
    let job_page = format!("/jobs/{id}");

    // The form, coming back to the job's page.
    let form = page(&server, &format!("/login?next=%2Fjobs%2F{id}")).await;
    assert!(form.contains("type=\"password\" name=\"token\""), "{form}");
    assert!(
        form.contains(&format!("name=\"next\" value=\"{job_page}\"")),
        "{form}"
    );

    // A wrong token: the form again, saying so, and no cookie.
    let (status, headers, body) = post_form(
        &server,
        "/login",
        None,
        From::Here,
        &[("token", "rbd_guess"), ("next", &job_page)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("not one of this server"), "{body}");
    assert!(!headers.contains_key("set-cookie"));

    // Another site may not sign the browser in (with a token of its choosing), nor a request
    // that says nowhere.
    for from in [
        From::Elsewhere,
        From::Nowhere,
        From::Origin("https://evil.example"),
    ] {
        let (status, headers, body) =
            post_form(&server, "/login", None, from, &[("token", TOKEN)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("own pages"), "{body}");
        assert!(!headers.contains_key("set-cookie"));
    }

    // The right token: back to the page, with a cookie no script reads.
    let host = server.base.trim_start_matches("http://").to_owned();
    let origin: &'static str = Box::leak(format!("http://{host}").into_boxed_str());
    let (status, headers, body) = post_form(
        &server,
        "/login",
        None,
        From::Origin(origin),
        &[("token", &format!(" {TOKEN}\n")), ("next", &job_page)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], job_page.as_str());
    // The cookie is a random session id, never the token; Redis keeps the session under a
    // hash of the id, naming the token by its hash.
    let set = headers["set-cookie"].to_str().unwrap();
    let (first, attributes) = set.split_once("; ").unwrap();
    assert_eq!(attributes, "Path=/; Max-Age=604800; HttpOnly; SameSite=Lax");
    let session = first.strip_prefix("raibid_session=").unwrap();
    assert_eq!(session.len(), 64, "{session}");
    assert!(session.bytes().all(|b| b.is_ascii_hexdigit()), "{session}");
    assert!(!set.contains(TOKEN), "{set}");
    let key = session_key(session);
    assert_eq!(
        server.queue.session(&key).await.unwrap(),
        Some(hash_token(TOKEN))
    );
    assert_ne!(
        sign_in(&server, TOKEN).await,
        format!("raibid_session={session}")
    );
    // `next` never leads to another site.
    let (_, headers, _) = post_form(
        &server,
        "/login",
        None,
        From::Here,
        &[("token", TOKEN), ("next", "//evil.example/x")],
    )
    .await;
    assert_eq!(headers["location"], "/jobs");

    // Signed in: the pages, and what their script asks for (the job, its log stream), read.
    let cookie = sign_in(&server, TOKEN).await;
    let (status, body) = get_with(&server, &job_page, &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Sign out</button>"), "{body}");
    assert!(!body.contains(">Sign in</a>"), "{body}");
    let (status, _) = get_with(&server, "/jobs", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get_with(&server, &format!("/api/v1/jobs/{id}"), &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = get_with(&server, &format!("/api/v1/jobs/{id}/logs"), &cookie).await;
    assert_eq!(status, StatusCode::OK);

    // The API's changes never take the cookie: another site's script could send it.
    let response = browser()
        .post(server.url(&format!("/api/v1/jobs/{id}/cancel")))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.queue.get(&id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    // A made-up session, or one whose token is no longer in server.tokens, signs nobody in.
    let (status, body) = get_with(&server, &job_page, "raibid_session=made-up").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("sign in again"), "{body}");
    let revoked = "0".repeat(64);
    server
        .queue
        .start_session(
            &session_key(&revoked),
            &hash_token("rbd_revoked_token"),
            std::time::Duration::from_secs(60),
            &Default::default(),
        )
        .await
        .unwrap();
    let (status, body) = get_with(&server, &job_page, &format!("raibid_session={revoked}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("sign in again"), "{body}");

    // Signing out forgets the cookie; only the server's own pages may sign a browser out.
    let (status, _, _) = post_form(&server, "/logout", Some(&cookie), From::Elsewhere, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = post_form(&server, "/logout", Some(&cookie), From::Here, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/jobs");
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("raibid_session=; Path=/; Max-Age=0;")
    );
    // Ended on the server: a copy of the cookie reads nothing more.
    let (status, _) = get_with(&server, &job_page, &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Where Redis keeps the session of cookie `id`, as the server derives it.
fn session_key(id: &str) -> String {
    hash_token(id).strip_prefix("sha256:").unwrap().to_owned()
}

#[tokio::test]
async fn a_signed_in_browser_approves_cancels_and_retries_with_its_token_s_rights() {
    let mut cfg = config();
    let token = |name: &str, secret: &str, scopes: Vec<TokenScope>, repos: &str| ApiToken {
        name: name.into(),
        hash: TokenHash::parse(&hash_token(secret)).unwrap(),
        scopes,
        repos: vec![repos.into()],
    };
    cfg.server.tokens = vec![
        token("maintainer", TOKEN, vec![TokenScope::Jobs], "*"),
        token("viewer", "rbd_viewer_token_1", vec![TokenScope::Read], "*"),
        token(
            "other",
            "rbd_other_token_2",
            vec![TokenScope::Jobs],
            "other/*",
        ),
    ];
    let server = TestServer::start_with(cfg).await;
    // Gitea's AGit pull request: a fork's, so it waits for approval.
    let id = delivered(&server, "gitea/pull_request-agit").await.id;
    let job_page = format!("/jobs/{id}");
    let status_of = |id: String| {
        let queue = server.queue.clone();
        async move { queue.get(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status_of(id.clone()).await, JobStatus::Blocked);

    let maintainer = sign_in(&server, TOKEN).await;
    let viewer = sign_in(&server, "rbd_viewer_token_1").await;
    let other = sign_in(&server, "rbd_other_token_2").await;
    let approve_form = format!("action=\"/jobs/{id}/approve\"");
    let decline_form = format!("action=\"/jobs/{id}/cancel\"");

    // Only a token that may change the job's repository sees buttons; nobody signed in is
    // offered to sign in.
    let (_, body) = get_with(&server, &job_page, &maintainer).await;
    assert!(body.contains(&approve_form), "{body}");
    assert!(body.contains(&decline_form), "{body}");
    assert!(body.contains(">Decline</button>"), "{body}");
    assert!(
        body.contains("<span class=\"user\">maintainer</span>"),
        "{body}"
    );
    for cookie in [&viewer, &other] {
        let (_, body) = get_with(&server, &job_page, cookie).await;
        assert!(!body.contains(&approve_form), "{body}");
        assert!(!body.contains("class=\"actions\""), "{body}");
    }
    let body = page(&server, &job_page).await;
    assert!(!body.contains(&approve_form), "{body}");
    assert!(body.contains(">Sign in</a>"), "{body}");

    // A form is refused, and changes nothing, without the right token or from elsewhere.
    let approve = format!("/jobs/{id}/approve");
    for (cookie, from, refused, says) in [
        (
            None,
            From::Here,
            StatusCode::UNAUTHORIZED,
            "sign in with an API token",
        ),
        (
            Some(&viewer),
            From::Here,
            StatusCode::FORBIDDEN,
            "`jobs` scope",
        ),
        (
            Some(&other),
            From::Here,
            StatusCode::FORBIDDEN,
            "may not change",
        ),
        (
            Some(&maintainer),
            From::Elsewhere,
            StatusCode::FORBIDDEN,
            "own pages",
        ),
        (
            Some(&maintainer),
            From::Nowhere,
            StatusCode::FORBIDDEN,
            "own pages",
        ),
    ] {
        let (status, headers, body) =
            post_form(&server, &approve, cookie.map(String::as_str), from, &[]).await;
        assert_eq!(status, refused, "{body}");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert!(body.contains(says), "{says}: {body}");
    }
    assert_eq!(status_of(id.clone()).await, JobStatus::Blocked);

    // Approve: queued, approved by the signed-in token, and back to the page.
    let (status, headers, body) =
        post_form(&server, &approve, Some(&maintainer), From::Here, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], job_page.as_str());
    let job = server.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.approved_by.as_deref(), Some("maintainer"));

    // Cancel what is queued; a second press is the API's answer (already finished), no error.
    let (_, body) = get_with(&server, &job_page, &maintainer).await;
    assert!(body.contains(">Cancel</button>"), "{body}");
    assert!(!body.contains(&approve_form), "{body}");
    let cancel = format!("/jobs/{id}/cancel");
    let (status, _, _) = post_form(&server, &cancel, Some(&maintainer), From::Here, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(status_of(id.clone()).await, JobStatus::Cancelled);

    // Retry what has ended: to the new job's page.
    let (_, body) = get_with(&server, &job_page, &maintainer).await;
    assert!(
        body.contains(&format!("action=\"/jobs/{id}/retry\"")),
        "{body}"
    );
    assert!(!body.contains("retry-failed"), "{body}");
    let answer = post_form(
        &server,
        &format!("/jobs/{id}/retry"),
        Some(&maintainer),
        From::Here,
        &[],
    )
    .await;
    let retried = job_redirected_to(&server, answer).await;
    assert_ne!(retried.id, id);
    assert_eq!(retried.spec.retry_of.as_deref(), Some(id.as_str()));
    // Queued at once: the person who pressed it may change the repository's jobs, as the
    // API's retry is.
    assert_eq!(retried.status, JobStatus::Queued);

    // No such button.
    let (status, _, body) = post_form(
        &server,
        &format!("/jobs/{id}/explode"),
        Some(&maintainer),
        From::Here,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no such button"), "{body}");

    // A button the job no longer offers is the API's refusal, as a page.
    let (status, _, body) = post_form(&server, &approve, Some(&maintainer), From::Here, &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_matrix_with_a_failed_variant_offers_to_retry_the_failed_ones() {
    let server = TestServer::start().await;
    let parent = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Success))
        .await
        .unwrap();
    let failed = submit(&server, "acme/app").await;
    let claimed = server.claim_one("spark-1").await;
    server
        .queue
        .ack(&claimed, &Outcome::new(JobStatus::Failure))
        .await
        .unwrap();
    server
        .queue
        .set_children(&parent, std::slice::from_ref(&failed))
        .await
        .unwrap();
    let cookie = sign_in(&server, TOKEN).await;
    let (_, body) = get_with(&server, &format!("/jobs/{parent}"), &cookie).await;
    assert!(
        body.contains(&format!("action=\"/jobs/{parent}/retry-failed\"")),
        "{body}"
    );
    let (status, headers, body) = post_form(
        &server,
        &format!("/jobs/{parent}/retry-failed"),
        Some(&cookie),
        From::Here,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], format!("/jobs/{parent}").as_str());
    let jobs = support::json(server.get_authed("/api/v1/jobs?repo=acme/app").await).await;
    let retries: Vec<_> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["retry_of"] == failed.as_str())
        .collect();
    assert_eq!(retries.len(), 1, "{jobs}");
}

/// "Run pipeline": a signed-in token that may run the repository's jobs queues a manual job of
/// a branch with variables, through the API's checks; others are refused, nothing queued.
#[tokio::test]
async fn a_signed_in_browser_runs_a_pipeline_for_a_branch_with_variables() {
    let repo = raibid_testkit::GitRepo::new();
    let head = repo.commit(&[("README", "hello\n")], "init");
    let mut cfg = config();
    cfg.server.tokens.push(ApiToken {
        name: "viewer".into(),
        hash: TokenHash::parse(&hash_token("rbd_viewer_token_1")).unwrap(),
        scopes: vec![TokenScope::Read],
        repos: vec!["*".into()],
    });
    let server = TestServer::start_with(cfg).await;
    let earlier = submit(&server, "acme/app").await;
    let cookie = sign_in(&server, TOKEN).await;
    let viewer = sign_in(&server, "rbd_viewer_token_1").await;

    // The job's page leads to the form, filled in for its repository and branch.
    let (_, body) = get_with(&server, &format!("/jobs/{earlier}"), &cookie).await;
    let href = "/run?repo=acme%2Fapp&#38;clone_url=https%3A%2F%2Fgit.example%2Facme%2Fapp.git&#38;ref=refs%2Fheads%2Fmain";
    assert!(body.contains(&format!("href=\"{href}\"")), "{body}");
    let (_, body) = get_with(&server, &format!("/jobs/{earlier}"), &viewer).await;
    assert!(!body.contains("/run?"), "{body}");
    // The form: the clone URL from the repository's newest job when the link has none.
    let (status, body) = get_with(&server, "/run?repo=acme/app&ref=refs/heads/dev", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("value=\"https://git.example/acme/app.git\""),
        "{body}"
    );
    assert!(body.contains("name=\"ref\" value=\"dev\""), "{body}");
    let (status, _) = get_with(&server, "/run?repo=acme/app", &viewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = get(&server, "/run").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A query that is not one is a page saying so.
    let (status, body) = get_with(&server, "/run?repo=a&repo=b", &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("<title>400 Bad Request"), "{body}");
    assert!(body.contains("duplicate field"), "{body}");

    let url = repo.url();
    let form = |variables: &'static str| {
        vec![
            ("repo", "acme/app".to_owned()),
            ("clone_url", url.clone()),
            ("ref", "main".to_owned()),
            ("variables", variables.to_owned()),
        ]
    };
    let post = |cookie: String, from: From, fields: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(server, "/run", Some(&cookie), from, &fields).await
        }
    };
    let count = server.job_count().await;
    for (cookie, from, variables, refused, says) in [
        (
            viewer.clone(),
            From::Here,
            "",
            StatusCode::FORBIDDEN,
            "`jobs` scope",
        ),
        (
            cookie.clone(),
            From::Elsewhere,
            "",
            StatusCode::FORBIDDEN,
            "own pages",
        ),
        (
            cookie.clone(),
            From::Here,
            "TARGET=prod\noops",
            StatusCode::BAD_REQUEST,
            "line 2",
        ),
        (
            cookie.clone(),
            From::Here,
            "RAIBID_SHA=x",
            StatusCode::BAD_REQUEST,
            "env.RAIBID_SHA",
        ),
    ] {
        let (status, _, body) = post(cookie, from, form(variables)).await;
        assert_eq!(status, refused, "{variables}: {body}");
        assert!(body.contains(says), "{says}: {body}");
    }
    let mut unknown = form("");
    unknown[2].1 = "nope".into();
    let (status, _, body) = post(cookie.clone(), From::Here, unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(server.job_count().await, count, "nothing queued");

    let answer = post(
        cookie.clone(),
        From::Here,
        form("# where to\nTARGET=prod\n"),
    )
    .await;
    let job = job_redirected_to(&server, answer).await;
    assert_eq!(job.spec.event, raibid_model::Event::Manual);
    assert_eq!(job.spec.git_ref, "refs/heads/main");
    assert_eq!(job.spec.sha, head);
    assert_eq!(job.spec.env["TARGET"], "prod");
    // The job's page lists what it was given, folded away until asked for.
    let (status, page) = get_with(&server, &format!("/jobs/{}", job.id), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<summary>Variables (1)</summary>"), "{page}");
    assert!(
        page.contains("<th><code>TARGET</code></th><td><code>prod</code></td>"),
        "{page}"
    );

    // The form carries a key of its own: sent twice (a second click, a reload that posts it
    // again), it queues one job and leads to it both times.
    let (_, body) = get_with(&server, "/run?repo=acme/app", &cookie).await;
    let key = body
        .split("name=\"key\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a key in the form: {body}"))
        .to_owned();
    let (_, again) = get_with(&server, "/run?repo=acme/app", &cookie).await;
    assert!(!again.contains(&key), "a new key with each form");
    let mut keyed = form("");
    keyed.push(("key", key));
    let count = server.job_count().await;
    let first = job_redirected_to(
        &server,
        post(cookie.clone(), From::Here, keyed.clone()).await,
    )
    .await;
    let second = job_redirected_to(
        &server,
        post(cookie.clone(), From::Here, keyed.clone()).await,
    )
    .await;
    assert_eq!(second.id, first.id);
    assert_eq!(server.job_count().await, count + 1);
    // Changed and sent again (back in the browser), it says to open the form again.
    keyed[3].1 = "TARGET=staging".to_owned();
    let (status, _, body) = post(cookie.clone(), From::Here, keyed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("open Run pipeline again"), "{body}");
    assert_eq!(server.job_count().await, count + 1);
    let mut bad = form("");
    bad.push(("key", "a/b".to_owned()));
    let (status, _, body) = post(cookie.clone(), From::Here, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("Idempotency-Key"), "{body}");
}

/// A colleague's token, besides [`TOKEN`].
const OTHER: &str = "rbd_other_person_token_5e1";

/// A server with reads behind a token, and two people's tokens: [`TOKEN`] and [`OTHER`].
async fn two_people() -> TestServer {
    let mut cfg = config();
    cfg.server.read_requires_token = true;
    cfg.server.tokens.push(ApiToken {
        name: "other".into(),
        hash: TokenHash::parse(&hash_token(OTHER)).unwrap(),
        scopes: TokenScope::ALL.to_vec(),
        repos: vec!["*".into()],
    });
    TestServer::start_with(cfg).await
}

/// The sessions page lists the browsers signed in with the viewer's token (not another
/// token's) and signs one out; not another token's, not by another site's form, not without
/// signing in.
#[tokio::test]
async fn the_sessions_page_lists_a_token_s_browsers_and_signs_one_out() {
    let server = two_people().await;
    let laptop = sign_in_from(&server, TOKEN, "Firefox/133.0 (laptop)").await;
    let phone = sign_in_from(&server, TOKEN, "Safari <phone>").await;
    let colleague = sign_in_from(&server, OTHER, "Chrome (colleague)").await;

    let (status, page) = get_with(&server, "/sessions", &laptop).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("/sessions\">sessions</a>"),
        "the header links it: {page}"
    );
    assert!(
        page.contains("Firefox/133.0 (laptop) <strong>(this browser)</strong>"),
        "{page}"
    );
    assert!(
        page.contains("Safari &#60;phone&#62;</td>"),
        "escaped: {page}"
    );
    assert!(page.contains("<td>127.0.0.1</td>"), "{page}");
    assert!(
        !page.contains("colleague"),
        "another token's session: {page}"
    );
    let marker = "name=\"session\" value=\"";
    assert_eq!(page.matches(marker).count(), 1, "one other browser: {page}");
    let at = page.find(marker).unwrap() + marker.len();
    let phone_key = page[at..at + 64].to_owned();

    let end = [("session", phone_key.as_str())];
    let refused = [
        (
            Some(&colleague),
            From::Here,
            StatusCode::NOT_FOUND,
            "another token",
        ),
        (
            Some(&laptop),
            From::Elsewhere,
            StatusCode::FORBIDDEN,
            "another site's form",
        ),
        (
            None,
            From::Here,
            StatusCode::UNAUTHORIZED,
            "nobody signed in",
        ),
    ];
    for (cookie, from, expected, why) in refused {
        let (status, _, body) = post_form(
            &server,
            "/sessions/end",
            cookie.map(String::as_str),
            from,
            &end,
        )
        .await;
        assert_eq!(status, expected, "{why}: {body}");
        assert_eq!(
            get_with(&server, "/jobs", &phone).await.0,
            StatusCode::OK,
            "{why}"
        );
    }
    let (status, _, body) = post_form(
        &server,
        "/sessions/end",
        Some(&laptop),
        From::Here,
        &[("session", "../not-a-key")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, headers, body) =
        post_form(&server, "/sessions/end", Some(&laptop), From::Here, &end).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], "/sessions");
    assert_eq!(
        get_with(&server, "/jobs", &phone).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_with(&server, "/jobs", &laptop).await.0, StatusCode::OK);
    assert_eq!(
        get_with(&server, "/jobs", &colleague).await.0,
        StatusCode::OK
    );
    let (_, page) = get_with(&server, "/sessions", &laptop).await;
    assert!(!page.contains("Safari"), "{page}");
    let (status, _, _) = post_form(&server, "/sessions/end", Some(&laptop), From::Here, &end).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "ended already");

    // Without signing in there is no page, and the header has no link.
    let (status, page) = get_with(&server, "/sessions", "raibid_session=made-up").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!page.contains("/sessions\">sessions</a>"), "{page}");
}

/// "Sign out everywhere" ends every session of the browser's token, in every browser,
/// and no other token's; another site's form ends nothing.
#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_the_token() {
    let server = two_people().await;
    let laptop = sign_in(&server, TOKEN).await;
    let phone = sign_in(&server, TOKEN).await;
    let colleague = sign_in(&server, OTHER).await;
    let (status, page) = get_with(&server, "/jobs", &phone).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<button name=\"everywhere\" value=\"1\""),
        "{page}"
    );

    let everywhere = [("everywhere", "1")];
    let (status, _, _) = post_form(
        &server,
        "/logout",
        Some(&phone),
        From::Elsewhere,
        &everywhere,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(get_with(&server, "/jobs", &laptop).await.0, StatusCode::OK);

    let (status, headers, _) =
        post_form(&server, "/logout", Some(&phone), From::Here, &everywhere).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    for (cookie, which) in [(&phone, "this browser"), (&laptop, "the other browser")] {
        let (status, _) = get_with(&server, "/jobs", cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{which}");
    }
    assert_eq!(
        get_with(&server, "/jobs", &colleague).await.0,
        StatusCode::OK,
        "another token's session stays"
    );
    // A plain sign-out ends only its own browser's session.
    let again = sign_in(&server, TOKEN).await;
    let (status, _, _) = post_form(&server, "/logout", Some(&colleague), From::Here, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        get_with(&server, "/jobs", &colleague).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get_with(&server, "/jobs", &again).await.0, StatusCode::OK);
}

/// `/agents`: each running agent, what it runs, whether it went silent; and what
/// the autoscalers last decided.
#[tokio::test]
async fn the_agents_page_shows_who_works_on_what() {
    let server = TestServer::start().await;
    let body = page(&server, "/agents").await;
    assert!(body.contains("No agent is running"), "{body}");
    assert!(!body.contains("http-equiv=\"refresh\""), "{body}");

    let job = submit(&server, "acme/app").await;
    let info = |name: &str, jobs: Vec<String>| raibid_model::AgentInfo {
        name: name.into(),
        arch: "aarch64".into(),
        pools: vec![raibid_model::PoolName::default()],
        labels: [("gpu".to_owned(), "1".to_owned())].into(),
        current_jobs: jobs,
        started_at: chrono::Utc::now() - chrono::Duration::minutes(5),
        last_heartbeat: chrono::Utc::now(),
        jobs_done: 7,
        version: "0.1.0".into(),
    };
    server
        .queue
        .agent_heartbeat(&info("spark-1", vec![job.clone()]))
        .await
        .unwrap();
    server
        .queue
        .agent_heartbeat(&info("spark-2", Vec::new()))
        .await
        .unwrap();
    // An agent last heard of two minutes ago: three heartbeats missed.
    let mut silent = info("spark-3", Vec::new());
    silent.last_heartbeat = chrono::Utc::now() - chrono::Duration::minutes(2);
    let json = serde_json::to_string(&silent).unwrap();
    assert!(!json.contains('\''));
    let reply = server
        .redis
        .command(&format!("HSET raibid:ci-jobs:agents spark-3 '{json}'"))
        .unwrap();
    assert_eq!(reply, ":1");
    server
        .queue
        .set_scaler_status(&raibid_model::ScalerStatus {
            pool: raibid_model::PoolName::default(),
            source: "local".into(),
            agents: 2,
            starting: 0,
            started: 0,
            max_agents: 4,
            lag: 1,
            updated_at: chrono::Utc::now(),
            held: Some("collecting the registry's garbage".into()),
        })
        .await
        .unwrap();

    let body = page(&server, "/agents").await;
    assert!(
        body.contains("http-equiv=\"refresh\" content=\"10\""),
        "{body}"
    );
    let row = |name: &str| {
        body.split("<tr>")
            .find(|r| r.contains(&format!("<td>{name}</td>")))
            .unwrap_or_else(|| panic!("no row of {name}: {body}"))
            .to_owned()
    };
    let working = row("spark-1");
    assert!(working.contains(">working</span>"), "{working}");
    assert!(
        working.contains(&format!("<a href=\"/jobs/{job}\">")),
        "{working}"
    );
    assert!(
        working.contains("gpu=1") && working.contains("aarch64"),
        "{working}"
    );
    assert!(
        working.contains("<td>7</td>") && working.contains("5m"),
        "{working}"
    );
    assert!(row("spark-2").contains(">idle</span>"));
    assert!(row("spark-3").contains(">stale</span>"));
    assert!(body.contains("<h2>Autoscalers</h2>"), "{body}");
    assert!(
        body.contains("collecting the registry&#39;s garbage"),
        "{body}"
    );
}

/// A finished job's page offers a token holder "Erase log"; pressed, the log is gone and the
/// page says who erased it.
#[tokio::test]
async fn a_signed_in_browser_erases_a_finished_job_s_log() {
    let server = TestServer::start().await;
    let id = submit(&server, "acme/app").await;
    let claimed = server.claim_one("agent-1").await;
    server
        .queue
        .append_log(&id, b"password=hunter2\n")
        .await
        .unwrap();
    let cookie = sign_in(&server, TOKEN).await;
    let form = format!("action=\"/jobs/{id}/erase-log\"");
    let (_, body) = get_with(&server, &format!("/jobs/{id}"), &cookie).await;
    assert!(
        !body.contains(&form),
        "a running job's log is still written: {body}"
    );
    assert!(
        server
            .queue
            .ack(&claimed, &raibid_model::Outcome::new(JobStatus::Failure))
            .await
            .unwrap()
    );
    let (_, body) = get_with(&server, &format!("/jobs/{id}"), &cookie).await;
    assert!(body.contains(&form), "{body}");
    // Asked twice, without a script: the first press only shows the button that erases.
    assert!(
        body.contains("<summary class=\"button danger\">Erase log…</summary>"),
        "{body}"
    );
    assert!(body.contains(">Erase the log for good</button>"), "{body}");
    assert!(body.contains("hunter2"), "{body}");

    let job = job_redirected_to(
        &server,
        post_form(
            &server,
            &format!("/jobs/{id}/erase-log"),
            Some(&cookie),
            From::Here,
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(job.id, id);
    assert!(job.log_erased.is_some());
    let (_, body) = get_with(&server, &format!("/jobs/{id}"), &cookie).await;
    assert!(!body.contains("hunter2"), "{body}");
    assert!(!body.contains(&form), "erased already: {body}");
    assert!(
        body.contains("<p class=\"note\">This job&#39;s log was erased by "),
        "{body}"
    );

    // From another site's form: refused, as every button is.
    let (status, _, _) = post_form(
        &server,
        &format!("/jobs/{id}/erase-log"),
        Some(&cookie),
        From::Elsewhere,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A build's first job, once every job it queued has ended, has a button that erases all
/// their logs (`DELETE /api/v1/jobs/{id}/build/logs`).
#[tokio::test]
async fn a_signed_in_browser_erases_a_build_s_logs() {
    let server = TestServer::start().await;
    let (parent, a, b) = build_of_two(&server).await;
    for id in [&parent, &a, &b] {
        server
            .queue
            .append_log(id, b"password=hunter2\n")
            .await
            .unwrap();
    }
    let cookie = sign_in(&server, TOKEN).await;
    let form = format!("action=\"/jobs/{parent}/erase-build-logs\"");
    let claimed = server.claim_one("agent-1").await;
    server.end(&claimed, JobStatus::Success).await;
    let first = server.claim_one("agent-1").await;
    server.end(&first, JobStatus::Failure).await;
    let (_, body) = get_with(&server, &format!("/jobs/{parent}"), &cookie).await;
    assert!(!body.contains(&form), "{b} has not run yet: {body}");
    let second = server.claim_one("agent-1").await;
    server.end(&second, JobStatus::Success).await;
    let (_, body) = get_with(&server, &format!("/jobs/{parent}"), &cookie).await;
    assert!(body.contains(&form), "{body}");
    assert!(
        body.contains("<summary class=\"button danger\">Erase the build&#39;s logs…</summary>"),
        "{body}"
    );
    // A job that queued nothing has only its own log's button.
    let (_, body) = get_with(&server, &format!("/jobs/{a}"), &cookie).await;
    assert!(!body.contains("erase-build-logs"), "{body}");

    let job = job_redirected_to(
        &server,
        post_form(
            &server,
            &format!("/jobs/{parent}/erase-build-logs"),
            Some(&cookie),
            From::Here,
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(job.id, parent);
    for id in [&parent, &a, &b] {
        let job = server.queue.get(id).await.unwrap().unwrap();
        assert!(job.log_erased.is_some(), "{id}");
        let (_, body) = get_with(&server, &format!("/jobs/{id}"), &cookie).await;
        assert!(!body.contains("hunter2"), "{body}");
    }
}

#[tokio::test]
async fn the_job_lists_show_a_build_s_status_on_its_first_job() {
    let server = TestServer::start().await;
    let (parent, a, b) = build_of_two(&server).await;
    // The API's list: each entry, and its `build` if it has one.
    let listed = || async {
        let list = support::json(server.get("/api/v1/jobs?repo=acme/app").await).await;
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["id"].as_str().unwrap().to_owned(), j.clone()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    // The web list's row of the first job: its status badge and what the build says.
    let row = |body: &str| {
        let start = body.find(&format!("<a href=\"/jobs/{parent}\">")).unwrap();
        let row = &body[start..start + body[start..].find("</tr>").unwrap()];
        let status = row.split("class=\"status status-").nth(1).unwrap();
        let build = row.split("class=\"detail title build\" title=\"").nth(1);
        (
            status.split('"').next().unwrap().to_owned(),
            build.map(|b| b.split('"').next().unwrap().to_owned()),
        )
    };

    // Queued, it is its own build: the API says so, with its own status.
    let jobs = listed().await;
    assert_eq!(jobs[&parent]["build"], json!({"status": "queued"}));
    assert!(jobs[&a].get("build").is_none(), "{}", jobs[&a]);
    let claimed = server.claim_one("agent-1").await;
    server.end(&claimed, JobStatus::Success).await;
    let jobs = listed().await;
    assert_eq!(jobs[&parent]["status"], "success");
    assert_eq!(
        jobs[&parent]["build"],
        json!({"status": "running", "description": "0 of 2 jobs finished"})
    );
    let body = page(&server, "/jobs").await;
    assert_eq!(
        row(&body),
        ("running".into(), Some("0 of 2 jobs finished".into()))
    );
    assert_eq!(
        ids_with(&server, "status=running").await,
        (vec![parent.clone()], None)
    );
    assert_eq!(ids_with(&server, "status=success").await, (vec![], None));

    let first = server.claim_one("agent-1").await;
    assert_eq!(first.job.id, a);
    server.end(&first, JobStatus::Failure).await;
    let failed = format!("1 of 2 jobs failed: {a}");
    let jobs = listed().await;
    assert_eq!(
        jobs[&parent]["build"],
        json!({"status": "failure", "description": failed})
    );
    assert!(jobs[&b].get("build").is_none(), "{}", jobs[&b]);
    let body = page(&server, "/jobs").await;
    assert_eq!(row(&body), ("failure".into(), Some(failed.clone())));
    // The status filter reads the status the lists show, as the dashboard's does: the first
    // job passed itself, but its build failed.
    assert_eq!(ids_with(&server, "status=success").await, (vec![], None));
    assert_eq!(
        ids_with(&server, "status=failure").await,
        (vec![a.clone(), parent.clone()], None)
    );
    // A page at a time, the two scans merged newest first.
    assert_eq!(
        ids_with(&server, "status=failure&limit=1").await,
        (vec![a.clone()], Some(a.clone()))
    );
    assert_eq!(
        ids_with(&server, &format!("status=failure&limit=1&cursor={a}")).await,
        (vec![parent.clone()], None)
    );
    let body = page(&server, "/jobs?status=failure").await;
    assert_eq!(row(&body), ("failure".into(), Some(failed.clone())));
    assert!(
        page(&server, "/jobs?status=success")
            .await
            .contains("No jobs")
    );
    // Running while a job of the build runs; then a success once the build is (a retry of
    // the failed job passed, here its record set to success).
    assert_eq!(
        ids_with(&server, "status=running&repo=acme/app").await,
        (vec![], None)
    );
    let second = server.claim_one("agent-1").await;
    assert_eq!(second.job.id, b);
    server.end(&second, JobStatus::Success).await;
    assert_eq!(
        ids_with(&server, "status=success").await,
        (vec![b.clone()], None)
    );
}

/// A page of failures on a history where builds that passed are newer than the failures:
/// the builds scan stops at the page's limit of builds, and the page reads on past it rather
/// than answering with none of the older failures.
#[tokio::test]
async fn a_status_page_reads_on_past_the_builds_that_passed() {
    let server = TestServer::start().await;
    // Submitted and ended one at a time, so that ids and ends are in this order.
    let run = |status: JobStatus| {
        let server = &server;
        async move {
            let id = submit(server, "acme/app").await;
            let claimed = server.claim_one("agent-1").await;
            assert_eq!(claimed.job.id, id);
            server.end(&claimed, status).await;
            id
        }
    };
    let old = [run(JobStatus::Failure).await, run(JobStatus::Failure).await];
    // Six builds of one job each, all passed but the third's job.
    let mut builds = Vec::new();
    for n in 0..6 {
        let parent = submit(&server, "acme/app").await;
        let child = submit(&server, "acme/app").await;
        server
            .queue
            .set_children(&parent, std::slice::from_ref(&child))
            .await
            .unwrap();
        for (id, status) in [
            (&parent, JobStatus::Success),
            (
                &child,
                if n == 2 {
                    JobStatus::Failure
                } else {
                    JobStatus::Success
                },
            ),
        ] {
            let claimed = server.claim_one("agent-1").await;
            assert_eq!(&claimed.job.id, id);
            server.end(&claimed, status).await;
        }
        builds.push((parent, child));
    }
    let (failed, its_job) = builds[2].clone();
    assert_eq!(
        ids_with(&server, "status=failure&limit=3").await,
        (
            vec![its_job.clone(), failed.clone(), old[1].clone()],
            Some(old[1].clone())
        )
    );
    assert_eq!(
        ids_with(
            &server,
            &format!("status=failure&limit=3&cursor={}", old[1])
        )
        .await,
        (vec![old[0].clone()], None)
    );
    // Pages of two: the first needs the builds scan's second read.
    assert_eq!(
        ids_with(&server, "status=failure&limit=2").await,
        (vec![its_job.clone(), failed.clone()], Some(failed.clone()))
    );
    assert_eq!(
        ids_with(&server, &format!("status=failure&limit=2&cursor={failed}")).await,
        (old.iter().rev().cloned().collect::<Vec<_>>(), None)
    );
    // Pages of one: the failed build's page does not hold its failed job, whose status is
    // read on its own.
    assert_eq!(
        ids_with(&server, &format!("status=failure&limit=1&cursor={its_job}")).await,
        (vec![failed.clone()], Some(failed.clone()))
    );
}

/// Reading on has a budget: a repository's scans for its failures and its builds read its
/// own index, up to `LIST_SCAN_MAX` records each, and a page that read that many answers with
/// a cursor rather than reading on.
#[tokio::test]
async fn a_status_page_stops_reading_on_at_its_budget() {
    let server = TestServer::start().await;
    let claimed = {
        let failed = submit(&server, "acme/app").await;
        let claimed = server.claim_one("agent-1").await;
        assert_eq!(claimed.job.id, failed);
        claimed
    };
    server.end(&claimed, JobStatus::Failure).await;
    // Queued after it, neither failures nor builds: the scans read past them all.
    futures::future::try_join_all((0..raibid_queue::LIST_SCAN_MAX + 10).map(|_| {
        server.queue.enqueue(raibid_model::NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            "refs/heads/main",
            SHA,
            raibid_model::Event::Push,
        ))
    }))
    .await
    .unwrap();
    let (first, cursor) = ids_with(&server, "status=failure&repo=acme/app&limit=5").await;
    assert!(first.is_empty(), "{first:?}");
    let cursor = cursor.expect("a cursor to go on from");
    assert_eq!(
        ids_with(
            &server,
            &format!("status=failure&repo=acme/app&limit=5&cursor={cursor}")
        )
        .await,
        (vec![claimed.job.id.clone()], None)
    );
}

/// A build an agent older than the index of builds ran (it records the build's jobs without
/// indexing it) is indexed by the server when its first job ends, so that once its job fails
/// the status filter lists it, though the index was filled from the records before.
#[tokio::test]
async fn a_build_an_older_agent_ran_is_listed_by_the_status_filter() {
    let server = TestServer::start().await;
    // Read once: the index of builds is taken as complete from now on.
    assert_eq!(ids_with(&server, "status=failure").await, (vec![], None));
    let parent = submit(&server, "acme/app").await;
    let child = submit(&server, "acme/app").await;
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, parent);
    // The older agent's `set_children`: the record's field alone.
    let reply = server
        .redis
        .command(&format!(
            "HSET raibid:ci-jobs:job:{parent} children '[\"{child}\"]'"
        ))
        .unwrap();
    assert_eq!(reply, ":1", "a field of its own");
    server.end(&claimed, JobStatus::Success).await;
    let claimed = server.claim_one("agent-1").await;
    assert_eq!(claimed.job.id, child);
    server.end(&claimed, JobStatus::Failure).await;
    // The server's reporter takes the ends from the events stream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (ids, _) = ids_with(&server, "status=failure").await;
        if ids == [child.clone(), parent.clone()] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "listed: {ids:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The ids of `GET /api/v1/jobs?<query>`, newest first, and its next cursor.
async fn ids_with(server: &TestServer, query: &str) -> (Vec<String>, Option<String>) {
    let list = support::json(server.get(&format!("/api/v1/jobs?{query}")).await).await;
    let ids = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, list["next_cursor"].as_str().map(str::to_owned))
}
