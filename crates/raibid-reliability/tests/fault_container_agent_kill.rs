//! An agent of the container executor SIGKILLed in the middle of a step, under podman and
//! under docker. The engine, not the agent, runs the step's container, so it outlives the
//! agent, until its life limit (the step's timeout and more), in a workspace slot that the dead
//! agent's lock no longer keeps from the next job. The next agent to start removes it, and the
//! job is rerun.

use std::time::{Duration, Instant};

use raibid_client::SubmitJob;
use raibid_model::JobStatus;
use raibid_reliability::{Settings, Stack, exclusive, log_of, submit_until_accepted, wait_final};
use raibid_testkit::{BUSYBOX_IMAGE, Docker, GitRepo, Podman, TestEngine};

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_s_step_container_is_removed_by_the_next_agent_podman() {
    let _machine = exclusive();
    a_killed_agent_s_step_container_is_removed_by_the_next_agent(&Podman::new()).await;
}

/// Under docker the sweep matters most: there the container has no life limit of the engine's
/// own, only the dead agent's watchdog, which waits for the step's whole timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_s_step_container_is_removed_by_the_next_agent_docker() {
    let _machine = exclusive();
    a_killed_agent_s_step_container_is_removed_by_the_next_agent(&Docker::new()).await;
}

async fn a_killed_agent_s_step_container_is_removed_by_the_next_agent(engine: &impl TestEngine) {
    let _bridges = raibid_testkit::network_lock();
    let settings = Settings {
        executor: "container",
        // The limits come along to show that the agent's configuration reaches the engine;
        // the engine is named, as the machine may have the other one too.
        agent_yaml: format!(
            "  network: false\n  step_limits: {{pids: 64}}\n  container_engine: {}\n",
            engine.name()
        ),
        ..Settings::default()
    };
    let mut stack = Stack::start(&settings, 0, 1);
    let path = engine.path_env();
    let env = [("PATH", path.to_str().unwrap())];
    stack.add_agent("agent-0", 1, &env);

    let repo = GitRepo::new();
    // A service too: its container and its network are the dead agent's as well.
    let pipeline = format!(
        "image: {BUSYBOX_IMAGE}\n\
         services:\n  - name: helper\n    image: {BUSYBOX_IMAGE}\n    command: [sleep, '1000']\n\
         steps:\n  - name: work\n    run: |\n      \
         echo \"pids.max $(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)\"\n      \
         echo \"step attempt $RAIBID_ATTEMPT\"\n      \
         if [ \"$RAIBID_ATTEMPT\" = 1 ]; then trap '' TERM; sleep 1000; fi\n"
    );
    let sha = repo.commit(
        &[(".raibid.yaml", pipeline.as_str())],
        "a step that hangs once",
    );
    let client = stack.client();
    let submission = SubmitJob {
        repo: "acme/orphan".into(),
        clone_url: repo.url(),
        git_ref: Some("main".into()),
        sha: Some(sha),
        ..Default::default()
    };
    let (job, _) = submit_until_accepted(&client, &submission, Duration::from_secs(30)).await;

    // Once the step has printed, its container and the service's are the only ones (the
    // agent's first-run check of the engine has come and gone).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = log_of(&client, &job.id).await;
        if log.contains("step attempt 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the step never started:\n{log}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut orphans = engine.containers();
    orphans.sort();
    let networks = engine.raibid_networks();
    assert!(
        orphans.len() == 2 && networks.len() == 1,
        "expected the step's and the service's containers and one network: {orphans:?} \
         {networks:?}\n{}\n{}",
        log_of(&client, &job.id).await,
        stack.logs()
    );
    stack.agents[0].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut left = engine.containers();
    left.sort();
    assert_eq!(
        left, orphans,
        "the engine keeps the dead agent's containers running"
    );
    assert_eq!(engine.raibid_networks(), networks);
    // Under docker each has a watchdog, which outlives the agent.
    let expected = if engine.name() == "docker" { 2 } else { 0 };
    assert_eq!(watchdogs_of(&orphans).len(), expected, "{orphans:?}");

    stack.add_agent("agent-1", 1, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.containers().iter().any(|c| orphans.contains(c))
        || engine.raibid_networks().contains(&networks[0])
    {
        assert!(
            Instant::now() < deadline,
            "{orphans:?} {networks:?} outlived their agent:\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = wait_final(&client, &job.id, Duration::from_secs(120)).await;
    assert_eq!(done.status, JobStatus::Success, "{}", stack.logs());
    let log = log_of(&client, &job.id).await;
    assert!(log.contains("step attempt 2"), "{log}\n{}", stack.logs());
    assert!(log.contains("pids.max 64\n"), "{log}");
    assert!(
        stack.agents[1]
            .log()
            .contains("removed the step container of an agent that died"),
        "{}",
        stack.logs()
    );
    assert!(
        stack.agents[1]
            .log()
            .contains("removed the services' network of an agent that died"),
        "{}",
        stack.logs()
    );
    // The rerun's own services are gone with its end.
    assert_eq!(engine.containers(), Vec::<String>::new());
    assert_eq!(engine.raibid_networks(), Vec::<String>::new());
    // The sweep ended the dead agent's watchdogs with its containers: nothing left for them.
    assert_eq!(watchdogs_of(&orphans), Vec::<String>::new());
}

/// Command lines of the docker watchdogs of `containers` (see the container executor).
fn watchdogs_of(containers: &[String]) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| {
            c.contains("raibid-container-watchdog") && containers.iter().any(|n| c.contains(n))
        })
        .collect()
}
