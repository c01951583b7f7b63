//! Fixed data for the tests: the same jobs, pools and agents at the same instants every run.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use raibid_client::AgentEntry;
use raibid_model::{
    AgentInfo, ConsumerStats, Event as GitEvent, Job, JobStatus, NewJob, PoolName, PoolStats,
};

/// `secs` after the fixtures' epoch, 2025-06-02 12:00:00 UTC.
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

pub fn key(code: KeyCode) -> Event {
    key_with(code, KeyModifiers::NONE)
}

pub fn key_with(code: KeyCode, modifiers: KeyModifiers) -> Event {
    Event::Key(KeyEvent {
        code,
        modifiers,
        kind: KeyEventKind::Press,
        state: KeyEventState::NONE,
    })
}

/// The key presses that type `text`.
pub fn typed(text: &str) -> Vec<Event> {
    text.chars().map(|c| key(KeyCode::Char(c))).collect()
}

/// A job created a minute before the epoch, on `main`; started and finished as its status
/// implies.
pub fn job(id: &str, repo: &str, status: JobStatus) -> Job {
    let created_at = at(-60);
    let started_at = (status != JobStatus::Queued).then(|| at(-50));
    let finished_at = status.is_final().then(|| at(-5));
    let spec = NewJob::new(
        repo,
        format!("https://git.example/{repo}.git"),
        "refs/heads/main",
        "0123456789abcdef0123456789abcdef01234567",
        GitEvent::Push,
    );
    Job {
        status,
        attempt: u32::from(started_at.is_some()),
        started_at,
        finished_at,
        agent: started_at.map(|_| "agent-1".to_owned()),
        ..Job::queued(id, spec, created_at)
    }
}

pub fn pool(name: &str, lag: u64) -> PoolStats {
    PoolStats {
        pool: PoolName::new(name).unwrap(),
        stream: format!("raibid:jobs:{name}"),
        length: lag + 40,
        lag,
        pending: 1,
        consumers: vec![ConsumerStats {
            name: "agent-1".into(),
            pending: 1,
            idle_ms: 200,
        }],
        oldest_queued_ms: (lag > 0).then_some(95_000),
        dead_letters: 0,
        paused: None,
    }
}

pub fn agent(name: &str, pools: &[&str], job: Option<&str>, stale: bool) -> AgentEntry {
    AgentEntry {
        info: AgentInfo {
            name: name.to_owned(),
            arch: "aarch64".into(),
            pools: pools.iter().map(|p| PoolName::new(*p).unwrap()).collect(),
            labels: BTreeMap::from([("host".to_owned(), "dgx".to_owned())]),
            current_jobs: job.into_iter().map(str::to_owned).collect(),
            started_at: at(-3600),
            last_heartbeat: if stale { at(-300) } else { at(-2) },
            jobs_done: 17,
            version: "0.1.0".into(),
        },
        stale,
    }
}

/// A small k3s cluster as `raibid_infra::cluster_status` reads it: the same picture as the
/// recorded API answers in tests/fixtures/k8s-api/k3s-arm64, fixed here so frames never
/// depend on the network.
pub fn cluster_status() -> raibid_infra::ClusterStatus {
    use raibid_infra::Component;
    use raibid_infra::cluster::{ComponentPods, NodeStatus, PodStatus, ScaledJobStatus};
    let node = |name: &str, ready, arch: &str| NodeStatus {
        name: name.into(),
        ready,
        arch: arch.into(),
        kubelet_version: "v1.34.2+k3s1".into(),
    };
    let pod = |name: &str, node: Option<&str>, phase: &str, ready, restarts| PodStatus {
        name: name.into(),
        node: node.map(Into::into),
        phase: phase.into(),
        ready,
        restarts,
    };
    let pods = |component, namespace: &str, pods| ComponentPods {
        component,
        namespace: namespace.into(),
        pods,
    };
    let scaled = |pool: &str, ready, message: &str, active_jobs| ScaledJobStatus {
        name: format!("raibid-agent-{pool}"),
        pool: Some(pool.into()),
        ready,
        message: message.into(),
        max_replicas: Some(20),
        active_jobs,
        paused: false,
    };
    raibid_infra::ClusterStatus {
        reachable: true,
        server: Some("https://127.0.0.1:6443/".into()),
        kubeconfig: "/etc/rancher/k3s/k3s.yaml".into(),
        error: None,
        nodes: vec![
            node("spark-01", true, "arm64"),
            node("build-x86", false, "amd64"),
        ],
        components: vec![
            pods(
                Component::Redis,
                "raibid-ci",
                vec![pod("raibid-redis-0", Some("spark-01"), "Running", true, 0)],
            ),
            pods(
                Component::Server,
                "raibid-ci",
                vec![pod(
                    "raibid-server-7c9d5f6b8-x2kqp",
                    Some("spark-01"),
                    "Running",
                    true,
                    1,
                )],
            ),
            pods(
                Component::Agents,
                "raibid-ci",
                vec![
                    pod(
                        "raibid-agent-arm64-h7v3r-k2p9s",
                        Some("spark-01"),
                        "Succeeded",
                        false,
                        0,
                    ),
                    pod(
                        "raibid-agent-arm64-9tq5w-c6n2d",
                        Some("spark-01"),
                        "Pending",
                        false,
                        0,
                    ),
                    pod(
                        "raibid-agent-amd64-p3m8n-w5r4t",
                        Some("build-x86"),
                        "Failed",
                        false,
                        0,
                    ),
                    pod(
                        "raibid-agent-arm64-4xk2m-8fz7q",
                        Some("spark-01"),
                        "Running",
                        true,
                        0,
                    ),
                ],
            ),
            pods(
                Component::Keda,
                "keda",
                vec![
                    pod(
                        "keda-operator-6c7f9d8b5-7hjkl",
                        Some("spark-01"),
                        "Running",
                        true,
                        0,
                    ),
                    pod(
                        "keda-operator-metrics-apiserver-7d8b9c6f5-mn4bv",
                        Some("spark-01"),
                        "Running",
                        true,
                        2,
                    ),
                ],
            ),
            pods(Component::Flux, "flux-system", vec![]),
        ],
        scaled_jobs: vec![
            scaled(
                "arm64",
                true,
                "Ready=True: ScaledJob is defined correctly and is ready to scaling",
                2,
            ),
            scaled(
                "amd64",
                false,
                "Ready=False: error getting scaler for trigger #0: error establishing redis connection: dial tcp 10.43.118.9:6379: i/o timeout",
                0,
            ),
        ],
        flux: vec![],
        notes: vec!["Flux: not installed (`raibid setup flux`)".into()],
    }
}
