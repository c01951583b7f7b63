//! Frame cost of the jobs screen with 10,000 jobs in memory, the most the dashboard keeps.
//! Only the rows on screen are built, so this should not depend on the number of jobs.

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use raibid_model::{Event, Job, JobStatus, NewJob};
use raibid_tui::{App, DataEvent, JobsUpdate, Kubeconfig};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const JOBS: u32 = 10_000;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap()
}

fn id(i: u32) -> String {
    format!("01JXK4Q3ZP8M5T7V2W9R{i:06}")
}

fn jobs() -> Vec<Job> {
    (0..JOBS)
        .rev()
        .map(|i| {
            // Every tenth job is the first of a build of five, which the list shows with its
            // four jobs' combined status.
            let first = i % 10 == 0;
            let status = if first {
                JobStatus::Success
            } else {
                JobStatus::ALL[i as usize % JobStatus::ALL.len()]
            };
            let mut spec = NewJob::new(
                format!("org-{}/repo-{}", i % 13, i % 101),
                "",
                format!("refs/heads/branch-{}", i % 17),
                "0123456789abcdef0123456789abcdef01234567",
                Event::Push,
            );
            spec.number = Some(u64::from(i / 10 + 1));
            let created_at = now() - chrono::Duration::seconds(i64::from(i) * 30);
            let started_at =
                (status != JobStatus::Queued).then(|| created_at + chrono::Duration::seconds(5));
            Job {
                id: id(i),
                spec,
                status,
                attempt: 1,
                created_at,
                started_at,
                finished_at: status
                    .is_final()
                    .then(|| created_at + chrono::Duration::seconds(95)),
                agent: started_at.map(|_| format!("agent-{}", i % 8)),
                reason: None,
                cancel_requested: false,
                steps: Vec::new(),
                images: Vec::new(),
                children: if first {
                    (i + 1..(i + 5).min(JOBS)).map(id).collect()
                } else {
                    Vec::new()
                },
                artifacts: None,
                tests: None,
                log_pruned: false,
                log_erased: None,
                concurrency: None,
                approved_by: None,
            }
        })
        .collect()
}

fn app_with_jobs() -> App {
    let mut app = App::new("http://127.0.0.1:8080", Kubeconfig::Absent, "raibid-ci");
    app.apply(DataEvent::Jobs(JobsUpdate {
        newest: jobs(),
        at: now(),
        ..JobsUpdate::default()
    }));
    app
}

fn render(c: &mut Criterion) {
    let mut app = app_with_jobs();
    for (w, h) in [(80, 24), (160, 48)] {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("test backend");
        c.bench_function(&format!("jobs screen, {JOBS} jobs, {w}x{h}"), |b| {
            b.iter(|| {
                terminal.draw(|frame| app.draw(frame, now())).expect("draw");
            });
        });
    }
    // What a poll brings in practice: the newest page, merged into a full store, then the
    // shown rows recomputed. The copy of the page is made outside the timed part.
    let newest: Vec<Job> = jobs().into_iter().take(200).collect();
    c.bench_function(
        &format!("apply a poll (200 newest) to {JOBS} jobs (merge, filter, sort)"),
        |b| {
            b.iter_batched(
                || newest.clone(),
                |page| {
                    app.apply(DataEvent::Jobs(JobsUpdate {
                        newest: page,
                        at: now(),
                        ..JobsUpdate::default()
                    }));
                },
                BatchSize::SmallInput,
            );
        },
    );
}

criterion_group!(benches, render);
criterion_main!(benches);
