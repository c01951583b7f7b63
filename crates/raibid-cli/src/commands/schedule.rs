//! `raibid schedule list`: what `GET /api/v1/schedules` says, as a table or JSON;
//! `raibid schedule run <NAME>`: a schedule's job now.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use raibid_client::ScheduleEntry;
use raibid_config::Config;

use crate::cli::{Output, ScheduleArgs, ScheduleCommand};
use crate::output::{ago, duration, table};

pub async fn run(config: &Config, args: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let client = super::api_client(config, &args.api)?;
    match args.command {
        ScheduleCommand::List => {
            let schedules = client.schedules().await?;
            if args.api.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&schedules)?);
            } else if schedules.is_empty() {
                println!("no schedules (server.schedules is empty)");
            } else {
                print!("{}", schedules_table(&schedules, Utc::now()));
            }
        }
        ScheduleCommand::Run { name } => {
            let job = client.run_schedule(&name).await?;
            let what = format!("schedule {name}: {}", super::job::source(&job));
            super::job::print_queued(&job, args.api.output == Output::Json, &what)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schedules_table(schedules: &[ScheduleEntry], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.repo.clone(),
                s.branch.clone(),
                s.cron.clone(),
                s.pool.clone(),
                s.next.map_or_else(
                    || "never".to_owned(),
                    |t| {
                        format!(
                            "{} (in {})",
                            t.format("%Y-%m-%d %H:%M UTC"),
                            duration(t - now)
                        )
                    },
                ),
                s.last_occurrence
                    .map_or_else(|| "-".to_owned(), |t| ago(t, now)),
                s.last_job.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "REPO", "BRANCH", "CRON", "POOL", "NEXT", "LAST", "LAST JOB",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_schedule() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T22:00:00Z")
            .unwrap()
            .to_utc();
        let entry = |name: &str, next, last: Option<DateTime<Utc>>| ScheduleEntry {
            name: name.into(),
            repo: "acme/app".into(),
            branch: "main".into(),
            cron: "0 3 * * *".into(),
            pool: "default".into(),
            next,
            last_occurrence: last,
            last_job: last.map(|_| "01JOB".into()),
        };
        let text = schedules_table(
            &[
                entry("nightly", Some(now + chrono::Duration::hours(5)), None),
                entry("gone", None, Some(now - chrono::Duration::minutes(3))),
            ],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(
            lines[1].contains("nightly") && lines[1].contains("2026-12-04 03:00 UTC (in 5h00m)"),
            "{text}"
        );
        assert!(lines[1].ends_with('-'), "{text}");
        assert!(
            lines[2].contains("never")
                && lines[2].contains("3m00s ago")
                && lines[2].ends_with("01JOB"),
            "{text}"
        );
    }
}
