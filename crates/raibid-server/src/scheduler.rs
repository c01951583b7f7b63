//! The scheduler: queues the jobs of `server.schedules` (event `cron`) as their occurrences
//! come, as Woodpecker's cron pipelines and Gitea Actions' `on: schedule` do.
//!
//! Every server replica runs one, like the reaper, and all of them queue each occurrence once:
//! its job carries the delivery id `cron:<name>:<occurrence, unix seconds>`, which the enqueue
//! script turns into a duplicate for every replica but the first. A mark per schedule in Redis
//! (the newest occurrence handled, and the last job) tells a replica what was handled before
//! it started, also past the 24 h the delivery ids are kept.
//!
//! The rule for occurrences missed while no server ran, as a Kubernetes CronJob with a
//! starting deadline: only the latest one is run, once, and only while it is less than one
//! period old; the period is the time between it and the occurrence before it (an hour for
//! `@hourly`; for `0 9 * * 1-5`, on Monday that of Friday 09:00 is three days old against a
//! period of one day, so it is not run). Never a backlog. A schedule a server sees for the
//! first time (no mark yet) starts from then: its past occurrences are not run.
//!
//! Time comes from a [`Clock`], so tests move it rather than wait for minutes to pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use raibid_config::{CronExpr, Schedule};
use raibid_model::{Event, NewJob};
use raibid_queue::{Enqueued, QueueError};
use tracing::{debug, info, warn};

use crate::AppState;
use crate::api::git::{self, ResolveError};
use crate::api::validate;

/// How often the scheduler looks at the time: occurrences are whole minutes, so a job starts
/// within a few seconds of its time, and a failed attempt is retried as soon.
const EVERY: Duration = Duration::from_secs(2);

/// Where the scheduler and the expiry of approvals (the reaper) get the time from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock, which the product uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock behind the trait object the server keeps.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScheduleError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot resolve the branch: {0}")]
    Resolve(#[from] ResolveError),
}

/// What a schedule needs at some moment, given its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The latest occurrence was handled already (or there is none).
    Nothing,
    /// No scheduler has seen the schedule before: mark its latest occurrence, without a job.
    FirstSight(DateTime<Utc>),
    /// Queue this occurrence's job.
    Run(DateTime<Utc>),
    /// This occurrence was missed by a period or more: mark it, without a job.
    PastDeadline(DateTime<Utc>),
}

/// The missed-occurrence rule (see the module's documentation): `mark` is the newest
/// occurrence handled, in unix seconds.
pub(crate) fn due(cron: &CronExpr, mark: Option<i64>, now: DateTime<Utc>) -> Due {
    let Some(latest) = cron.latest_until(now) else {
        return Due::Nothing;
    };
    match mark {
        None => Due::FirstSight(latest),
        Some(mark) if latest.timestamp() <= mark => Due::Nothing,
        Some(_) => match cron.previous_before(latest) {
            Some(before) if now - latest >= latest - before => Due::PastDeadline(latest),
            _ => Due::Run(latest),
        },
    }
}

pub(crate) async fn run(state: AppState) {
    let schedules: Vec<Schedule> = state
        .config()
        .server
        .schedules
        .iter()
        .filter(|s| usable(&state, s))
        .cloned()
        .collect();
    if schedules.is_empty() {
        return;
    }
    if !state.config().server.events.contains(&Event::Cron) {
        warn!(
            schedules = schedules.len(),
            "server.events does not have cron: the schedules queue nothing"
        );
        return;
    }
    info!(schedules = schedules.len(), "scheduler running");
    // The last error of each schedule: repeated every wake-up while it lasts, it is logged as a
    // warning once and then quietly.
    let mut failing: HashMap<String, String> = HashMap::new();
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            _ = ticks.tick() => {}
        }
        for schedule in &schedules {
            let name = schedule.name.as_str();
            let now = state.clock().now();
            match tick(&state, schedule, now).await {
                Ok(()) => {
                    if failing.remove(name).is_some() {
                        info!(schedule = name, "schedule works again");
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    if failing.get(name) == Some(&message) {
                        debug!(schedule = name, error = %message, "schedule still failing");
                    } else {
                        warn!(
                            schedule = name,
                            error = %message,
                            "schedule could not queue its job; retrying at the next wake-up \
                             while the occurrence is within its deadline"
                        );
                        failing.insert(name.to_owned(), message);
                    }
                }
            }
        }
    }
}

/// Whether the server can run `schedule` at all; says why not once, at start.
fn usable(state: &AppState, schedule: &Schedule) -> bool {
    match unusable(state, schedule) {
        Some(problem) => {
            warn!(
                schedule = schedule.name.as_str(),
                problem, "schedule skipped"
            );
            false
        }
        None => true,
    }
}

/// Why the server cannot run `schedule`, if it cannot: what the scheduler skips at start and a
/// run by hand refuses, so a token cannot queue what the timetable never would.
pub(crate) fn unusable(state: &AppState, schedule: &Schedule) -> Option<String> {
    validate::repo(&schedule.repo)
        .err()
        .map(|m| format!("repo: {m}"))
        .or_else(|| {
            validate::clone_url(&schedule.clone_url)
                .err()
                .map(|m| format!("clone_url: {m}"))
        })
        .or_else(|| {
            validate::full_ref(&format!("refs/heads/{}", schedule.branch))
                .err()
                .map(|m| format!("branch: {m}"))
        })
        .or_else(|| {
            (!state.repos().is_allowed(&schedule.repo))
                .then(|| "repo: not in server.allowed_repos".to_owned())
        })
}

/// Handles `schedule` at `now`: queues the job of an occurrence that is due.
pub(crate) async fn tick(
    state: &AppState,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<(), ScheduleError> {
    let queue = state.queue();
    let name = schedule.name.as_str();
    let mark = queue.schedule_mark(name).await?;
    match due(&schedule.cron, mark.map(|m| m.occurrence), now) {
        Due::Nothing => {}
        Due::FirstSight(latest) => {
            queue.mark_schedule(name, latest.timestamp(), None).await?;
            debug!(schedule = name, next = ?schedule.cron.next_after(now), "new schedule");
        }
        Due::PastDeadline(missed) => {
            if queue.mark_schedule(name, missed.timestamp(), None).await? {
                info!(
                    schedule = name,
                    occurrence = %missed,
                    "occurrence missed by more than a period while no server ran: not run"
                );
            }
        }
        Due::Run(occurrence) => {
            let delivery_id = format!("cron:{name}:{}", occurrence.timestamp());
            let enqueued = enqueue(state, schedule, delivery_id).await?;
            queue
                .mark_schedule(name, occurrence.timestamp(), Some(enqueued.job_id()))
                .await?;
            if let Enqueued::Created(job) = &enqueued {
                info!(
                    schedule = name,
                    job = %job.id,
                    occurrence = %occurrence,
                    sha = %job.spec.sha,
                    pool = %job.spec.pool,
                    "scheduled job queued"
                );
            }
        }
    }
    Ok(())
}

/// Queues `schedule`'s job for the head of its branch, resolved now, under `delivery_id`: the
/// job of an occurrence and of a run by hand (`POST /api/v1/schedules/{name}/run`) differ only
/// in it. Moves no mark: that is the occurrence's business.
pub(crate) async fn enqueue(
    state: &AppState,
    schedule: &Schedule,
    delivery_id: String,
) -> Result<Enqueued, ScheduleError> {
    let git_ref = format!("refs/heads/{}", schedule.branch);
    let sha = git::resolve(&schedule.clone_url, &git_ref).await?;
    let spec = NewJob {
        number: Some(state.queue().next_pipeline_number(&schedule.repo).await?),
        source_branch: None,
        pr_labels: Vec::new(),
        title: None,
        repo_url: None,
        pool: schedule
            .pool
            .clone()
            .unwrap_or_else(|| state.repos().pool_for(&schedule.repo).clone()),
        env: schedule.env.clone(),
        delivery_id: Some(delivery_id),
        schedule: Some(schedule.name.to_string()),
        ..NewJob::new(
            &schedule.repo,
            &schedule.clone_url,
            git_ref,
            sha,
            Event::Cron,
        )
    };
    let enqueued = state.queue().enqueue(spec).await?;
    if let Enqueued::Created(job) = &enqueued {
        state.metrics().job_queued(&job.spec.pool);
    }
    Ok(enqueued)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        // March 2026: the 2nd is a Monday.
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    fn cron(expr: &str) -> CronExpr {
        CronExpr::parse(expr).unwrap()
    }

    #[test]
    fn a_new_schedule_starts_from_now() {
        assert_eq!(
            due(&cron("0 3 * * *"), None, at(4, 15, 0)),
            Due::FirstSight(at(4, 3, 0))
        );
    }

    #[test]
    fn an_occurrence_runs_once() {
        let c = cron("*/10 * * * *");
        let handled = at(4, 10, 0).timestamp();
        assert_eq!(due(&c, Some(handled), at(4, 10, 9)), Due::Nothing);
        assert_eq!(
            due(&c, Some(handled), at(4, 10, 10)),
            Due::Run(at(4, 10, 10))
        );
        let handled = at(4, 10, 10).timestamp();
        assert_eq!(due(&c, Some(handled), at(4, 10, 10)), Due::Nothing);
    }

    /// After three hours without a server, an hourly schedule runs its latest occurrence once,
    /// not the three it missed.
    #[test]
    fn only_the_latest_missed_occurrence_runs() {
        let c = cron("@hourly");
        let handled = at(4, 10, 0).timestamp();
        assert_eq!(
            due(&c, Some(handled), at(4, 13, 30)),
            Due::Run(at(4, 13, 0))
        );
    }

    /// Friday 09:00 seen on Monday 08:00 is three days old, its period one day: not run. On
    /// Monday 09:00 Monday's own occurrence runs.
    #[test]
    fn a_missed_occurrence_older_than_its_period_is_not_run() {
        let c = cron("0 9 * * 1-5");
        let thursday = at(5, 9, 0).timestamp();
        assert_eq!(
            due(&c, Some(thursday), at(9, 8, 0)),
            Due::PastDeadline(at(6, 9, 0))
        );
        // Within the period it still runs: Friday 09:00 seen on Saturday 08:00.
        assert_eq!(due(&c, Some(thursday), at(7, 8, 0)), Due::Run(at(6, 9, 0)));
        let friday = at(6, 9, 0).timestamp();
        assert_eq!(due(&c, Some(friday), at(9, 9, 0)), Due::Run(at(9, 9, 0)));
    }
}
