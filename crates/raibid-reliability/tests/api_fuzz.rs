//! Arbitrary query strings and ids against a real `raibid server`, on the API and on the web
//! pages: every request gets an answer, and none is a 5xx. Requests go out as raw bytes so that nothing on the client side
//! tidies them up first.
//!
//! `PROPTEST_CASES` raises the case count (`scripts/fuzz.sh` runs them long).

use std::io::{Read, Write};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use raibid_client::SubmitJob;
use raibid_reliability::{Settings, Stack, exclusive, report};
use serde_json::json;

/// Inputs that once needed care, always sent before the generated ones.
const REGRESSIONS: [&str; 20] = [
    "limit=0",
    "limit=1001",
    "limit=18446744073709551616",
    "limit=-1",
    "limit=%2B5",
    "status=",
    "status=%00",
    "repo=%2e%2e%2fetc",
    "repo=a%2Fb%2Fc",
    "pool=%FF",
    "cursor=../../x",
    "cursor=%00%00",
    // Found by this test on 2026-12-02: `XRANGE (<max id>` is a Redis error, so it was a 503.
    "cursor=18446744073709551615-18446744073709551615",
    "cursor=%2B5-%2B5",
    "cursor=007-01",
    "status=queued&status=running",
    "&&&==&=",
    "branch=..&event=%00",
    "branch=refs%2Fheads%2Fmain&event=push",
    "step=%FF",
];

/// GETs `target` and returns the status code, or `None` without an answer.
fn get(port: u16, target: &[u8]) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percent_encoded() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..40)
        .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect())
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "queued",
            "running",
            "success",
            "acme/app",
            "default",
            "01JABCDEFGHJKMNPQRSTVWXYZ0",
            "1",
            "50",
            "1000",
            "true",
            "0-0",
            "18446744073709551615-18446744073709551615",
        ])
        .prop_map(str::to_owned),
        "[!#-~]{0,60}",
        percent_encoded(),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "status", "repo", "pool", "cursor", "limit", "follow", "after", "branch", "event",
            "step"
        ])
        .prop_map(str::to_owned),
        "[!#-~&&[^&=]]{0,10}",
    ];
    prop::collection::vec((key, value()), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Raw bytes after `?`: whatever hyper lets through must not trouble the handlers.
fn raw_query() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80).prop_map(|bytes| {
        bytes
            .into_iter()
            .filter(|b| !b" \r\n".contains(b))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_query_strings_never_get_a_5xx() {
    let _machine = exclusive();
    let stack = Stack::start(&Settings::default(), 0, 1);
    let port = stack.port;
    // One finished job, so that the logs endpoint has something to read (and to follow to its
    // end) rather than answering 404 to everything.
    let client = stack.client();
    let job = client
        .submit(&SubmitJob {
            repo: "acme/app".into(),
            clone_url: "https://git.example/acme/app.git".into(),
            sha: Some("a".repeat(40)),
            ..Default::default()
        })
        .await
        .unwrap();
    client.cancel(&job.id).await.unwrap();
    let logs = format!("/api/v1/jobs/{}/logs", job.id);
    // The web pages read the same parameters and the same job; the sign-in form reads `next`,
    // "Run pipeline" its repository, clone URL and ref, the secrets page whose secrets (both want
    // a signed-in browser); the repositories' pages and API read a repository's name.
    let page = format!("/jobs/{}", job.id);
    let paths = [
        "/api/v1/jobs",
        logs.as_str(),
        "/jobs",
        page.as_str(),
        "/login",
        "/run",
        "/schedules",
        "/secrets",
        "/api/v1/repos",
        "/repos",
        "/api/v1/repos/acme/app",
        "/repos/acme/app",
    ];

    let check = |target: Vec<u8>| -> Result<(), TestCaseError> {
        let status = get(port, &target);
        let shown = String::from_utf8_lossy(&target).into_owned();
        prop_assert!(status.is_some(), "no answer to {shown:?}");
        prop_assert!(status < Some(500), "{shown:?} answered {status:?}");
        Ok(())
    };
    tokio::task::block_in_place(|| {
        for q in REGRESSIONS {
            for path in paths {
                check(format!("{path}?{q}").into_bytes()).unwrap();
            }
        }
        let mut runner = TestRunner::new(Config::default());
        let cases = runner.config().cases;
        runner
            .run(&(query(), 0..paths.len()), |(q, path)| {
                check(format!("{}?{q}", paths[path]).into_bytes())
            })
            .unwrap();
        runner
            .run(&(raw_query(), 0..paths.len()), |(q, path)| {
                let mut target = format!("{}?", paths[path]).into_bytes();
                target.extend_from_slice(&q);
                check(target)
            })
            .unwrap();
        runner
            .run(&prop_oneof!["[!-~]{0,80}", percent_encoded()], |id| {
                check(format!("/api/v1/jobs/{id}").into_bytes())?;
                check(format!("/jobs/{id}").into_bytes())?;
                check(format!("/api/v1/jobs/{id}/logs?follow=true").into_bytes())?;
                check(format!("/api/v1/repos/acme/{id}").into_bytes())?;
                check(format!("/repos/{id}/app").into_bytes())
            })
            .unwrap();
        report(
            "api_query_fuzz",
            json!({ "cases_per_property": cases, "properties": 3, "regressions": REGRESSIONS.len() }),
        );
    });
    assert!(
        stack.client().ready().await.unwrap(),
        "the server still answers"
    );
}
