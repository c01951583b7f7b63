//! Frames rendered from fixed state and compared with the stored snapshots in `snapshots/`.
//! A change to a layout shows as a diff there; accept it with `cargo insta review` (or
//! `INSTA_UPDATE=always`) once it is what was meant.

use crossterm::event::KeyCode;
use raibid_model::{JobStatus, PoolName, ScalerStatus, StepResult, StepStatus};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::components::{Command, Kubeconfig};
use crate::test_support::{agent, at, cluster_status, job, key, pool, typed};
use crate::{App, ClusterUpdate, DataEvent, JobsUpdate};

/// The instant every frame is drawn at.
fn now() -> chrono::DateTime<chrono::Utc> {
    at(0)
}

fn ulid(n: u32) -> String {
    format!("01JXK4Q3ZP8M5T7V2W9R{n:06}")
}

fn fixture() -> App {
    fixture_with(Kubeconfig::Missing("/home/ci/.kube/config".into()))
}

/// The dashboard of a machine whose cluster answered 3 s before the frame.
fn with_cluster() -> App {
    let mut app = fixture_with(Kubeconfig::Found("/etc/rancher/k3s/k3s.yaml".into()));
    app.apply(DataEvent::Cluster(ClusterUpdate::Status {
        status: Box::new(cluster_status()),
        at: at(-3),
    }));
    on_tab(app, '5')
}

fn fixture_with(kubeconfig: Kubeconfig) -> App {
    let mut app = App::new("http://127.0.0.1:8080", kubeconfig, "raibid-ci");
    let mut jobs = Vec::new();
    let statuses = [
        (
            "acme/web",
            "refs/heads/main",
            JobStatus::Running,
            "Cache the session lookups",
        ),
        (
            "acme/web",
            "refs/heads/feature/login",
            JobStatus::Queued,
            "Log in with passkeys",
        ),
        (
            "acme/api",
            "refs/tags/v1.4.0",
            JobStatus::Success,
            "Release 1.4.0",
        ),
        (
            "acme/api",
            "refs/pull/42/head",
            JobStatus::Failure,
            "Paginate the orders endpoint, which returned every order at once",
        ),
        ("tools/lint", "refs/heads/main", JobStatus::Error, ""),
        (
            "acme/web",
            "refs/heads/main",
            JobStatus::Cancelled,
            "Fix the footer",
        ),
        (
            "acme/ml",
            "refs/heads/train",
            JobStatus::Dead,
            "Nightly training",
        ),
        (
            "acme/ml",
            "refs/heads/train",
            JobStatus::Success,
            "Nightly training",
        ),
    ];
    for (i, (repo, git_ref, status, title)) in statuses.into_iter().enumerate() {
        let mut j = job(&ulid(100 - i as u32), repo, status);
        j.spec.git_ref = git_ref.to_owned();
        j.spec.title = (!title.is_empty()).then(|| title.to_owned());
        if repo == "acme/ml" {
            j.spec.pool = PoolName::new("gpu").unwrap();
            j.agent = j.agent.map(|_| "dgx-spark-2".to_owned());
        }
        j.created_at = at(-600 * i as i64 - 60);
        if status == JobStatus::Dead {
            j.reason = Some("agent lost 3 times".into());
        }
        jobs.push(j);
    }
    jobs[0].steps = vec![
        step("checkout", StepStatus::Success, Some(0), Some(1_200)),
        step("build", StepStatus::Success, Some(0), Some(31_000)),
        step("test", StepStatus::Running, None, None),
        step("publish", StepStatus::Pending, None, None),
    ];
    app.apply(DataEvent::Jobs(JobsUpdate {
        newest: jobs,
        at: now(),
        ..Default::default()
    }));
    // A sample every 15 s over ten minutes, as a poller would take them (more slowly).
    for (minute, depth) in [0u64, 1, 3, 6, 8, 5, 4, 2, 3, 3].into_iter().enumerate() {
        for quarter in 0..4 {
            let secs = minute as i64 * 60 + quarter * 15 - 585;
            app.apply(DataEvent::Pools {
                pools: vec![
                    pool("default", depth),
                    paused(pool("gpu", (minute % 2) as u64)),
                ],
                scalers: vec![ScalerStatus {
                    pool: PoolName::default(),
                    source: "local".into(),
                    agents: 2,
                    starting: 1,
                    started: 1,
                    max_agents: 4,
                    lag: 3,
                    updated_at: at(-1),
                    held: None,
                }],
                at: at(secs),
            });
        }
    }
    app.apply(DataEvent::Agents(vec![
        agent("agent-1", &["default"], Some(&ulid(100)), false),
        agent("dgx-spark-2", &["gpu", "default"], None, false),
        agent("old-runner", &["default"], Some(&ulid(3)), true),
    ]));
    app.apply(DataEvent::Connected { at: at(-1) });
    app
}

/// The jobs of one push of a repository with workflows in `.raibid/`: the first job, a
/// workflow's matrix variants and a workflow waiting for it. The JOB column names them.
fn with_workflows() -> App {
    let mut app = App::new(
        "http://127.0.0.1:8080",
        Kubeconfig::Missing("/home/ci/.kube/config".into()),
        "raibid-ci",
    );
    app.apply(DataEvent::Jobs(JobsUpdate {
        newest: workflow_jobs(),
        at: now(),
        ..Default::default()
    }));
    app.apply(DataEvent::Connected { at: at(-1) });
    app
}

/// [`with_workflows`]'s jobs, newest first.
fn workflow_jobs() -> Vec<raibid_model::Job> {
    let parent = ulid(200);
    let mut jobs = Vec::new();
    let children = [
        (None, None, JobStatus::Success),
        (Some("test"), Some("RUST=1.80"), JobStatus::Running),
        (Some("test"), Some("RUST=stable"), JobStatus::Success),
        (Some("deploy"), None, JobStatus::Blocked),
    ];
    for (i, (workflow, variant, status)) in children.into_iter().enumerate() {
        let mut j = job(&ulid(200 - i as u32), "acme/web", status);
        j.created_at = at(-60 + i as i64);
        // One push: one pipeline number.
        j.spec.number = Some(7);
        if let Some(w) = workflow {
            j.spec.env.insert("RAIBID_WORKFLOW".into(), w.into());
        }
        if let Some(v) = variant {
            j.spec.matrix_parent = Some(parent.clone());
            j.spec.env.insert("RAIBID_MATRIX".into(), v.into());
        }
        jobs.push(j);
    }
    // The first job queued the others: the list shows their build's status on it.
    jobs[0].children = jobs[1..].iter().map(|j| j.id.clone()).collect();
    jobs
}

/// The first job of a build passed once it queued the others: the list and its page show
/// the build's status, theirs combined, which fails as soon as one of them has.
#[test]
fn the_first_job_of_a_build_shows_the_build_s_status() {
    let mut app = with_workflows();
    let first_row = |app: &mut App| {
        let text = screen_text(&render(app, 120, 12));
        let row = text.iter().find(|l| l.contains("2W9R000200")).cloned();
        row.unwrap_or_else(|| panic!("the first job's row in\n{}", text.join("\n")))
    };
    assert!(
        first_row(&mut app).contains(" running "),
        "{}",
        first_row(&mut app)
    );
    // The running variant fails.
    let mut jobs = workflow_jobs();
    assert_eq!(jobs[1].status, JobStatus::Running);
    jobs[1].status = JobStatus::Failure;
    app.apply(DataEvent::Jobs(JobsUpdate {
        newest: jobs,
        at: now(),
        ..Default::default()
    }));
    let row = first_row(&mut app);
    assert!(
        row.contains(" failure ") && !row.contains("success"),
        "{row}"
    );
    // Its page: its own status (it passed), then the build's.
    app.handle_input(&key(KeyCode::Enter));
    let text = screen_text(&render(&mut app, 120, 24)).join("\n");
    assert!(
        text.contains("  #7  success  build failure  attempt 1"),
        "{text}"
    );
}

/// The filter finds jobs by their label too.
#[test]
fn the_filter_matches_a_workflows_name() {
    let mut app = with_workflows();
    for event in std::iter::once(key(KeyCode::Char('/')))
        .chain(typed("deploy"))
        .chain([key(KeyCode::Enter)])
    {
        app.handle_input(&event);
    }
    let text = screen_text(&render(&mut app, 100, 12)).join("\n");
    assert!(text.contains("deploy") && text.contains("1/4"), "{text}");
    assert!(!text.contains("RUST=1.80"), "{text}");
    // And by the build's number.
    for event in [key(KeyCode::Esc), key(KeyCode::Char('/'))]
        .into_iter()
        .chain(typed("#7 test"))
        .chain([key(KeyCode::Enter)])
    {
        app.handle_input(&event);
    }
    let text = screen_text(&render(&mut app, 100, 12)).join("\n");
    assert!(
        text.contains("test/RUST=1.80") && text.contains("2/4"),
        "{text}"
    );
}

fn step(name: &str, status: StepStatus, exit: Option<i32>, ms: Option<u64>) -> StepResult {
    StepResult {
        name: name.into(),
        status,
        exit_code: exit,
        duration_ms: ms,
        tail: String::new(),
    }
}

/// Opens the newest job (running) and feeds it a coloured log.
fn with_open_job(mut app: App) -> App {
    assert_eq!(app.handle_input(&key(KeyCode::Char('1'))), None);
    let command = app.handle_input(&key(KeyCode::Enter));
    assert_eq!(command, Some(Command::FollowJob(ulid(100))));
    let mut log = String::from("\x1b[1m+ cargo build --release\x1b[0m\n");
    for i in 0..40 {
        log.push_str(&format!("   \x1b[32mCompiling\x1b[0m crate-{i} v0.{i}.0\n"));
    }
    log.push_str("\x1b[1;32m    Finished\x1b[0m release in 31.0s\n");
    log.push_str("\x1b[1m+ cargo test\x1b[0m\n");
    log.push_str("test api::lists_jobs ... \x1b[32mok\x1b[0m\n");
    log.push_str("test api::cancels ... \x1b[31mFAILED\x1b[0m\n");
    log.push_str("running 12 tests");
    app.apply(DataEvent::Log {
        job_id: ulid(100),
        text: log,
    });
    app
}

/// The open job as a nine-step pipeline that failed at its eighth step: more steps than the
/// table shows, the failure near the end.
fn with_failed_pipeline() -> App {
    let mut app = with_open_job(fixture());
    let mut failed = job(&ulid(100), "acme/web", JobStatus::Failure);
    failed.created_at = at(-60);
    let names = [
        "checkout",
        "deps",
        "fmt",
        "clippy",
        "build",
        "unit",
        "integration",
        "e2e",
        "publish",
    ];
    failed.steps = names
        .iter()
        .enumerate()
        .map(|(i, name)| match i {
            0..7 => step(
                name,
                StepStatus::Success,
                Some(0),
                Some(2_000 * (i as u64 + 1)),
            ),
            7 => step(name, StepStatus::Failure, Some(101), Some(48_500)),
            _ => step(name, StepStatus::Skipped, None, None),
        })
        .collect();
    app.apply(DataEvent::Job(Box::new(failed)));
    app
}

fn render(app: &mut App, width: u16, height: u16) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| app.draw(frame, now())).unwrap();
    terminal.backend().clone()
}

fn on_tab(mut app: App, tab: char) -> App {
    app.handle_input(&key(KeyCode::Char(tab)));
    app
}

fn screen_text(backend: &TestBackend) -> Vec<String> {
    let buffer = backend.buffer();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect()
        })
        .collect()
}

/// `stats` as a pool an operator paused a minute ago.
fn paused(mut stats: raibid_model::PoolStats) -> raibid_model::PoolStats {
    stats.paused = Some(raibid_model::PoolPause {
        by: "ops".into(),
        reason: "driver upgrade".into(),
        since: at(-60),
    });
    stats
}

macro_rules! snapshot_both_sizes {
    ($name:ident, $app:expr) => {
        #[test]
        fn $name() {
            for (w, h) in [(80, 24), (160, 48)] {
                let mut app = $app;
                let backend = render(&mut app, w, h);
                insta::assert_snapshot!(format!("{}_{w}x{h}", stringify!($name)), backend);
            }
        }
    };
}

snapshot_both_sizes!(jobs, fixture());
snapshot_both_sizes!(jobs_of_a_push, with_workflows());
snapshot_both_sizes!(job_detail, with_open_job(fixture()));
snapshot_both_sizes!(job_detail_long_pipeline, with_failed_pipeline());
snapshot_both_sizes!(queues, on_tab(fixture(), '3'));
snapshot_both_sizes!(agents, on_tab(fixture(), '4'));
snapshot_both_sizes!(cluster, on_tab(fixture(), '5'));
snapshot_both_sizes!(cluster_read, with_cluster());

/// A job that kept artifacts says so in its header.
#[test]
fn job_detail_names_the_artifacts() {
    let mut app = with_open_job(fixture());
    let mut done = job(&ulid(100), "acme/web", JobStatus::Success);
    done.created_at = at(-60);
    done.artifacts = Some(raibid_model::JobArtifacts {
        reference: "git.example/acme/web/artifacts@sha256:ab".into(),
        size: 2048,
        files: 3,
        expires_at: None,
        expired: false,
    });
    app.apply(DataEvent::Job(Box::new(done.clone())));
    let text = screen_text(&render(&mut app, 160, 48)).join("\n");
    assert!(text.contains(" · artifacts: 3 files"), "{text}");
    // Deleted from the registry: said so, not counted.
    if let Some(a) = done.artifacts.as_mut() {
        a.expired = true;
    }
    app.apply(DataEvent::Job(Box::new(done.clone())));
    let text = screen_text(&render(&mut app, 160, 48)).join("\n");
    assert!(text.contains(" · artifacts: expired"), "{text}");
    // What its JUnit reports said.
    done.tests = Some(raibid_model::TestReport {
        tests: 12,
        failed: 1,
        files: 1,
        ..Default::default()
    });
    app.apply(DataEvent::Job(Box::new(done)));
    let text = screen_text(&render(&mut app, 160, 48)).join("\n");
    assert!(text.contains(" · 12 tests: 11 passed, 1 failed"), "{text}");
}

#[test]
fn job_detail_shows_the_title() {
    let mut app = with_open_job(fixture());
    let mut titled = job(&ulid(100), "acme/web", JobStatus::Running);
    titled.spec.title = Some("Fix the flaky retry test".into());
    app.apply(DataEvent::Job(Box::new(titled)));
    let text = screen_text(&render(&mut app, 160, 48)).join("\n");
    assert!(
        text.contains("agent agent-1  Fix the flaky retry test"),
        "{text}"
    );
}

#[test]
fn cluster_unreachable_after_a_reading() {
    let mut app = with_cluster();
    app.apply(DataEvent::Cluster(ClusterUpdate::Unreachable {
        error: "no cluster reachable at https://127.0.0.1:6443/: connection refused".into(),
        retry_at: at(4),
    }));
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn cluster_before_the_first_reading() {
    let mut app = on_tab(
        fixture_with(Kubeconfig::Found("/etc/rancher/k3s/k3s.yaml".into())),
        '5',
    );
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn narrow_cluster_keeps_arch_readiness_and_phases() {
    let text = screen_text(&render(&mut with_cluster(), 60, 24)).join("\n");
    for expected in [
        "spark-01",
        "Ready",
        "arm64",
        "build-x86",
        "NotReady",
        "amd64",
        "raibid-agent-arm64-4xk2m-8fz7q",
        "Running",
        "Pending",
        "Failed",
        "raibid-agent-arm64",
        "yes",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
}
snapshot_both_sizes!(help, on_tab(fixture(), '?'));

#[test]
fn empty_dashboard_while_connecting() {
    let mut app = App::new("http://ci.example:8080", Kubeconfig::Absent, "raibid-ci");
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn job_tab_before_any_job_is_open() {
    let mut app = on_tab(
        App::new("http://ci.example:8080", Kubeconfig::Absent, "raibid-ci"),
        '2',
    );
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn long_pipeline_scrolled_up_two_steps() {
    let mut app = with_failed_pipeline();
    for _ in 0..2 {
        assert_eq!(app.handle_input(&key(KeyCode::Char('['))), None);
    }
    let backend = render(&mut app, 80, 24);
    let text = screen_text(&backend).join("\n");
    for expected in ["deps", "integration", "+1 more above", "+2 more below"] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(!text.contains("checkout"), "{text}");
    insta::assert_snapshot!(backend);
}

#[test]
fn cancel_confirmation() {
    let mut app = with_open_job(fixture());
    assert_eq!(app.handle_input(&key(KeyCode::Char('c'))), None);
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn filter_being_typed() {
    let mut app = fixture();
    for e in std::iter::once(key(KeyCode::Char('/'))).chain(typed("acme/web")) {
        app.handle_input(&e);
    }
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn log_search_highlights_the_match() {
    let mut app = with_open_job(fixture());
    for e in std::iter::once(key(KeyCode::Char('/'))).chain(typed("crate-7 ")) {
        app.handle_input(&e);
    }
    app.handle_input(&key(KeyCode::Enter));
    insta::assert_snapshot!(render(&mut app, 80, 24));
}

#[test]
fn lost_connection_shows_a_banner_with_the_countdown() {
    let mut app = fixture();
    app.apply(DataEvent::Disconnected {
        error: "cannot reach the raibid server at http://127.0.0.1:8080: connection refused".into(),
        retry_at: at(4),
    });
    let backend = render(&mut app, 80, 24);
    let text = screen_text(&backend);
    assert!(
        text[1].contains("connection to the server lost"),
        "{}",
        text[1]
    );
    assert!(text[1].contains("retrying in 4s"), "{}", text[1]);
    assert!(text[23].contains("offline"));
    insta::assert_snapshot!(backend);
    // The next successful poll takes the banner away.
    app.apply(DataEvent::Connected { at: at(0) });
    let text = screen_text(&render(&mut app, 80, 24));
    assert!(
        !text
            .iter()
            .any(|l| l.contains("connection to the server lost"))
    );
}

#[test]
fn ansi_colours_reach_the_buffer() {
    let mut app = with_open_job(fixture());
    let backend = render(&mut app, 160, 48);
    let buffer = backend.buffer();
    let (x, y) = (0..buffer.area.height)
        .find_map(|y| {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect();
            line.find("FAILED").map(|byte| {
                let col = line[..byte].chars().count();
                (u16::try_from(col).unwrap(), y)
            })
        })
        .expect("FAILED is on screen");
    assert_eq!(buffer[(x, y)].fg, ratatui::style::Color::Red);
}

#[test]
fn narrow_terminal_keeps_id_and_status() {
    let mut app = fixture();
    let text = screen_text(&render(&mut app, 60, 20));
    let header = &text[2];
    assert!(
        header.contains("ID") && header.contains("STATUS"),
        "{header}"
    );
    let first = &text[3];
    assert!(first.contains("R000100"), "short id shown: {first}");
    assert!(first.contains("running"), "status shown: {first}");
    for (row, status) in [(4, "queued"), (5, "success"), (6, "failure"), (9, "dead")] {
        assert!(text[row].contains(status), "{}", text[row]);
    }

    let mut app = with_open_job(fixture());
    let text = screen_text(&render(&mut app, 60, 20));
    assert!(text[2].contains(&ulid(100)), "{}", text[2]);
    assert!(text[2].contains("running"), "{}", text[2]);
    assert!(text.iter().any(|l| l.contains("running 12 tests")));

    for tab in ['3', '4', '5', '?'] {
        let mut app = on_tab(fixture(), tab);
        let text = screen_text(&render(&mut app, 60, 20));
        assert!(text[0].contains("raibid"));
    }
    let text = screen_text(&render(&mut on_tab(fixture(), '3'), 60, 20));
    assert!(
        text[2].contains("POOL") && text[2].contains("QUEUED"),
        "{}",
        text[2]
    );
    let text = screen_text(&render(&mut on_tab(fixture(), '4'), 60, 20));
    assert!(
        text.iter()
            .any(|l| l.contains("old-runner") && l.contains("STALE"))
    );
}

#[test]
fn tiny_terminals_do_not_panic() {
    for (w, h) in [(1, 1), (10, 3), (20, 5), (30, 8)] {
        for tab in ['1', '2', '3', '4', '5', '?'] {
            let mut app = with_open_job(fixture());
            app.handle_input(&key(KeyCode::Char(tab)));
            render(&mut app, w, h);
        }
        let mut app = with_open_job(fixture());
        app.handle_input(&key(KeyCode::Char('c')));
        render(&mut app, w, h);
        let mut app = with_failed_pipeline();
        app.handle_input(&key(KeyCode::Char(']')));
        render(&mut app, w, h);
    }
}

/// A ScaledJob KEDA holds (`raibid pool pause`) says so before its condition.
#[test]
fn a_paused_scaled_job_says_so() {
    let mut app = on_tab(
        fixture_with(Kubeconfig::Found("/etc/rancher/k3s/k3s.yaml".into())),
        '5',
    );
    let mut status = cluster_status();
    status.scaled_jobs[0].paused = true;
    app.apply(DataEvent::Cluster(ClusterUpdate::Status {
        status: Box::new(status),
        at: at(-3),
    }));
    let screen = screen_text(&render(&mut app, 160, 48));
    let row = screen
        .iter()
        .find(|l| l.contains("raibid-agent-arm64"))
        .unwrap_or_else(|| panic!("no arm64 row in\n{}", screen.join("\n")));
    assert!(row.contains("paused · "), "{row}");
    let other = screen
        .iter()
        .find(|l| l.contains("raibid-agent-amd64"))
        .unwrap();
    assert!(!other.contains("paused"), "{other}");
}
