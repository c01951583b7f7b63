//! A concurrency group (`concurrency: deploy`) while agents are SIGKILLed in the middle of its
//! step: every job still ends once, and no two jobs of the group ever run their step at the
//! same time, the killed holder keeping the group through its requeue. Mutual exclusion is
//! read from the steps' own clock readings in the job logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use raibid_client::SubmitJob;
use raibid_model::JobStatus;
use raibid_reliability::{
    EventTap, Ledger, Settings, Up, exclusive, job_of_agent, log_of, procs, report, size,
    submit_until_accepted,
};
use raibid_testkit::GitRepo;
use serde_json::json;

/// The step says when it starts and ends, in nanoseconds of the machine's clock.
const PIPELINE: &str = "concurrency: deploy\nsteps:\n  - name: deploy\n    run: |\n      \
                        echo \"start $(date +%s%N)\"\n      sleep 1\n      \
                        echo \"end $(date +%s%N)\"\n";

/// Kills the agent of a running step `kills` times, each time of another job (killing one
/// job's agent `max_attempts` times would rightly give the job up), or until every job has
/// finished. Half a second into the step, so that its first line has reached the job log.
fn killer(up: &Up, tap: &EventTap, jobs: usize, kills: usize) -> usize {
    let mut conn = up.redis.connection();
    let mut killed = BTreeSet::new();
    let mut spared = BTreeSet::new();
    let mut seen: BTreeMap<i32, Instant> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(size(180, 900));
    while killed.len() < kills && tap.finished() < jobs && Instant::now() < deadline {
        for (pid, name) in up.agents() {
            if spared.contains(&pid) || !procs::is_alive(pid) || !procs::in_step(pid) {
                seen.remove(&pid);
                continue;
            }
            let since = *seen.entry(pid).or_insert_with(Instant::now);
            if since.elapsed() < Duration::from_millis(500) {
                continue;
            }
            match job_of_agent(&mut conn, &name) {
                Some((job, _)) if !killed.contains(&job) => {
                    procs::signal(pid, Signal::SIGKILL);
                    killed.insert(job);
                    break;
                }
                _ => {
                    spared.insert(pid);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    killed.len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    Start,
    End,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_group_runs_one_job_at_a_time_through_agent_kills() {
    let _machine = exclusive();
    let jobs = size(8, 30);
    let kills = size(3, 10);
    let settings = Settings::default();
    let up = Up::start(&settings, 4);
    let tap = EventTap::start(&up.redis.url());
    let client = up.client();
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", PIPELINE)], "one deployment at a time");

    let started = Instant::now();
    let mut ledger = Ledger::default();
    for _ in 0..jobs {
        let submission = SubmitJob {
            repo: "acme/deploy".into(),
            clone_url: repo.url(),
            git_ref: Some("main".into()),
            sha: Some(sha.clone()),
            ..Default::default()
        };
        let (job, _) = submit_until_accepted(&client, &submission, Duration::from_secs(30)).await;
        ledger.add(job.id);
    }
    let killed = tokio::task::block_in_place(|| killer(&up, &tap, jobs, kills));
    let verdict = ledger
        .wait_finished(&tap, Duration::from_secs(size(300, 1200)))
        .await;
    let elapsed = started.elapsed();
    verdict.assert_each_once(JobStatus::Success, &up.logs());
    assert_eq!(killed, kills, "kills made\n{}", up.logs());

    // Every clock reading of every attempt, in time order.
    let mut marks: Vec<(u128, Mark, String)> = Vec::new();
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ledger.ids {
        let log = log_of(&client, id).await;
        for line in log.lines() {
            let line = line.trim();
            let (mark, at) = if let Some(at) = line.strip_prefix("start ") {
                (Mark::Start, at)
            } else if let Some(at) = line.strip_prefix("end ") {
                (Mark::End, at)
            } else {
                continue;
            };
            let Ok(at) = at.parse::<u128>() else {
                continue;
            };
            if mark == Mark::Start {
                *starts.entry(id.clone()).or_default() += 1;
            }
            marks.push((at, mark, id.clone()));
        }
    }
    marks.sort();
    // A step may start only when the one before it has ended, or be the same job starting
    // again after its agent was killed (it kept the group).
    let mut current: Option<(&str, bool)> = None;
    for (at, mark, id) in &marks {
        match mark {
            Mark::Start => {
                if let Some((holder, ended)) = current {
                    assert!(
                        ended || holder == id,
                        "{id} started at {at} while {holder} held the group: {marks:?}"
                    );
                }
                current = Some((id, false));
            }
            Mark::End => {
                assert_eq!(current.map(|c| c.0), Some(id.as_str()), "{marks:?}");
                current = Some((id, true));
            }
        }
    }
    let ends = marks.iter().filter(|m| m.1 == Mark::End).count();
    assert_eq!(ends, jobs, "every job's step ended once: {marks:?}");
    // The kills interrupted steps, which ran again (a later attempt) holding the group.
    let mut attempts = BTreeMap::new();
    for id in &ledger.ids {
        attempts.insert(id.clone(), client.job(id).await.unwrap().attempt);
    }
    let rerun = attempts.values().filter(|&&a| a > 1).count();
    assert!(rerun >= 1, "no killed job ran again: {attempts:?}");
    assert!(
        starts.values().any(|&n| n > 1),
        "a killed step's first start is in its log too: {starts:?}"
    );

    report(
        "concurrency_group_sigkill",
        json!({
            "jobs": jobs,
            "kills": killed,
            "jobs_whose_step_ran_again": rerun,
            "elapsed_s": elapsed.as_secs(),
        }),
    );
}
