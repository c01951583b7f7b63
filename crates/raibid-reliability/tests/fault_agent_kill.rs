//! Agents SIGKILLed at chosen moments of a job: during the checkout, in the middle of a step,
//! and after the last step but before the ack. Delivery is at-least-once, so each kill may
//! cost a rerun, but no job may be lost, none may end twice, and the reruns must add up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use raibid_client::SubmitJob;
use raibid_model::JobStatus;
use raibid_reliability::{
    EventTap, Ledger, Settings, Up, exclusive, job_of_agent, procs, report, settled, size,
    submit_until_accepted,
};
use raibid_testkit::GitRepo;
use serde_json::json;

/// Where in a job's life the agent dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// A `git` child is running: mirror fetch, workspace clone or checkout.
    Checkout,
    /// The step's sandbox (`bwrap`) is running.
    Step,
    /// The step has just exited; the agent is flushing the log, removing the workspace and
    /// about to ack.
    AfterStep,
}

const PHASES: [Phase; 3] = [Phase::Checkout, Phase::Step, Phase::AfterStep];

/// What the agent is doing, as its child processes tell.
fn observe(pid: i32) -> Option<Phase> {
    let git = procs::children(pid)
        .into_iter()
        .any(|kid| procs::comm(kid).as_deref() == Some("git"));
    if git {
        Some(Phase::Checkout)
    } else if procs::in_step(pid) {
        Some(Phase::Step)
    } else {
        None
    }
}

#[derive(Debug)]
struct Kill {
    phase: Phase,
    job: String,
    /// The job was still running after the kill, so the kill interrupted it; otherwise the
    /// ack had already landed and the kill cost nothing.
    interrupted: bool,
}

/// A repository whose checkout takes long enough to be caught (many files), with one step
/// that leaves many files for the agent to remove before it acks.
fn repository() -> (GitRepo, String) {
    let repo = GitRepo::new();
    let data = repo.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..1500 {
        std::fs::write(data.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    repo.git(&["add", "data"]);
    let sha = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: work\n    run: |\n      sleep 0.8\n      \
             mkdir junk && cd junk && seq 1 3000 | xargs touch\n",
        )],
        "a pipeline with a slow checkout and a slow cleanup",
    );
    (repo, sha)
}

/// Kills `kills` agents, cycling through the phases, until the kills are done or every job has
/// finished. A phase that does not show up within 20 s is skipped for that round.
fn killer(up: &Up, tap: &EventTap, jobs: usize, kills: usize) -> (Vec<Kill>, usize) {
    let mut conn = up.redis.connection();
    let mut done = Vec::new();
    let mut skipped = 0;
    let mut last_phase: BTreeMap<i32, Phase> = BTreeMap::new();
    let mut killed_pids = BTreeSet::new();
    let mut agents = Vec::new();
    let mut refreshed = Instant::now() - Duration::from_secs(1);
    let mut round_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(size(240, 900));
    while done.len() < kills && tap.finished() < jobs && Instant::now() < deadline {
        let target = PHASES[(done.len() + skipped) % PHASES.len()];
        if round_started.elapsed() > Duration::from_secs(20) {
            skipped += 1;
            round_started = Instant::now();
            continue;
        }
        if refreshed.elapsed() > Duration::from_millis(100) {
            agents = up.agents();
            refreshed = Instant::now();
        }
        for (pid, name) in &agents {
            if killed_pids.contains(pid) || !procs::is_alive(*pid) {
                continue;
            }
            let now = observe(*pid);
            let before = match now {
                Some(phase) => last_phase.insert(*pid, phase),
                None => last_phase.remove(pid),
            };
            let hit = match target {
                Phase::AfterStep => now.is_none() && before == Some(Phase::Step),
                phase => now == Some(phase),
            };
            if !hit {
                continue;
            }
            procs::signal(*pid, Signal::SIGKILL);
            killed_pids.insert(*pid);
            if let Some((job, status)) = job_of_agent(&mut conn, name) {
                done.push(Kill {
                    phase: target,
                    job,
                    interrupted: status == "running",
                });
                round_started = Instant::now();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    (done, skipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agents_lose_no_job_and_finish_none_twice() {
    let _machine = exclusive();
    let jobs = size(40, 200);
    let kills = size(10, 50);
    let settings = Settings::default();
    let mut up = Up::start(&settings, 4);
    let tap = EventTap::start(&up.redis.url());
    let client = up.client();
    let (repo, sha) = repository();

    let started = Instant::now();
    let mut ledger = Ledger::default();
    for _ in 0..jobs {
        let submission = SubmitJob {
            repo: "acme/kill".into(),
            clone_url: repo.url(),
            git_ref: Some("main".into()),
            sha: Some(sha.clone()),
            ..Default::default()
        };
        let (job, _) = submit_until_accepted(&client, &submission, Duration::from_secs(30)).await;
        ledger.add(job.id);
    }

    let (killed, skipped) = tokio::task::block_in_place(|| killer(&up, &tap, jobs, kills));
    let verdict = ledger
        .wait_finished(&tap, Duration::from_secs(size(300, 1200)))
        .await;
    let elapsed = started.elapsed();

    verdict.assert_each_once(JobStatus::Success, &up.logs());
    assert_eq!(killed.len(), kills, "kills made: {killed:?}\n{}", up.logs());
    let interrupted = killed.iter().filter(|k| k.interrupted).count() as u64;
    assert_eq!(
        verdict.total_deliveries() - jobs as u64,
        interrupted,
        "every interrupted job ran exactly once more, and nothing else reran: {killed:?}"
    );
    for kill in killed.iter().filter(|k| k.interrupted) {
        assert!(
            verdict.deliveries[&kill.job] >= 2,
            "{} was interrupted ({:?}) but never rerun",
            kill.job,
            kill.phase
        );
    }
    // The API tells the same story as the events: `attempt` counts the deliveries.
    for id in &ledger.ids {
        let job = client.job(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Success);
        assert_eq!(job.attempt, verdict.deliveries[id], "attempt of {id}");
    }
    let leaked_workspaces = std::fs::read_dir(up.data.join("agent/workspaces"))
        .map(|d| d.count())
        .unwrap_or(0);

    assert!(
        up.service.terminate(Duration::from_secs(30)),
        "raibid up stopped cleanly\n{}",
        up.logs()
    );
    assert!(
        settled(Duration::from_secs(10), || up.leftovers().is_empty()).await,
        "processes left: {:?}",
        up.leftovers()
    );

    let by_phase = |phase: Phase| {
        let of_phase: Vec<&Kill> = killed.iter().filter(|k| k.phase == phase).collect();
        json!({
            "kills": of_phase.len(),
            "interrupted": of_phase.iter().filter(|k| k.interrupted).count(),
        })
    };
    report(
        "agent_sigkill",
        json!({
            "jobs": jobs,
            "kills": killed.len(),
            "kills_that_interrupted_a_job": interrupted,
            "phase_rounds_skipped": skipped,
            "checkout": by_phase(Phase::Checkout),
            "mid_step": by_phase(Phase::Step),
            "after_step_before_ack": by_phase(Phase::AfterStep),
            "deliveries": verdict.total_deliveries(),
            "lost": verdict.unfinished.len(),
            "finished_twice": verdict.finished_twice.len(),
            "queued_to_final_p50_ms": verdict.latency_quantile(0.5),
            "queued_to_final_max_ms": verdict.latency_quantile(1.0),
            "leaked_workspaces": leaked_workspaces,
            "elapsed_s": elapsed.as_secs(),
        }),
    );
}

/// Once bug 1 of RELIABILITY.md: the workspace of a job whose agent was SIGKILLed stayed on
/// disk for good. The next agent to start (or a long-running one after each job) now removes
/// workspaces of attempts that can no longer be running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_leaves_no_workspace_behind() {
    let _machine = exclusive();
    let up = Up::start(&Settings::default(), 1);
    let client = up.client();
    let repo = GitRepo::new();
    let sha = repo.commit(
        &[(".raibid.yaml", "steps:\n  - name: slow\n    run: sleep 2\n")],
        "pipeline",
    );
    let job = client
        .submit(&SubmitJob {
            repo: "acme/leak".into(),
            clone_url: repo.url(),
            sha: Some(sha),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if let Some((pid, _)) = up
            .agents()
            .into_iter()
            .find(|(pid, _)| observe(*pid) == Some(Phase::Step))
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    procs::signal(victim, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.job(&job.id).await.unwrap().status.is_final() {
        assert!(Instant::now() < deadline, "the job never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = || -> Vec<_> {
        std::fs::read_dir(up.data.join("agent/workspaces"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect()
    };
    assert!(
        settled(Duration::from_secs(30), || left().is_empty()).await,
        "workspaces left behind: {:?}",
        left()
    );
}
