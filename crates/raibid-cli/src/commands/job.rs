use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use raibid_client::{ListJobs, LogEvent, SubmitJob};
use raibid_config::Config;
use raibid_model::{Job, JobStatus};

use crate::cli::{JobArgs, JobCommand, Output};
use crate::output::{ago, duration, table};

pub async fn run(config: &Config, args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = super::api_client(config, &args.api)?;
    let json = args.api.output == Output::Json;
    match args.command {
        JobCommand::Submit {
            repo,
            clone_url,
            git_ref,
            sha,
            pool,
            env,
        } => {
            let env = parse_env(&env)?;
            let job = client
                .submit(&SubmitJob {
                    repo,
                    clone_url,
                    git_ref,
                    sha,
                    pool,
                    env,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                println!(
                    "queued {} ({} at {})",
                    job.id,
                    job.spec.repo,
                    short(&job.spec.sha)
                );
            }
        }
        JobCommand::List {
            status,
            repo,
            pool,
            limit,
            cursor,
        } => {
            let page = client
                .list(&ListJobs {
                    status,
                    repo,
                    pool,
                    cursor,
                    limit: Some(limit),
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print!("{}", jobs_table(&page.jobs));
                if let Some(next) = page.next_cursor {
                    println!("more: --cursor {next}");
                }
            }
        }
        JobCommand::Show { id } => {
            let job = client.job(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", describe(&job));
            }
        }
        JobCommand::Logs { id, follow } => {
            if follow {
                let mut stdout = std::io::stdout();
                let status = client
                    .follow_logs(&id, None, |event| {
                        if let LogEvent::Log { text, .. } = event {
                            let _ = stdout.write_all(text.as_bytes());
                            let _ = stdout.flush();
                        }
                    })
                    .await?;
                match status {
                    Some(status) => {
                        eprintln!("job {id} finished: {status}");
                        return Ok(exit_for(status));
                    }
                    None => bail!(
                        "the log stream ended before the job did; run the command again to resume"
                    ),
                }
            }
            let mut cursor: Option<String> = None;
            loop {
                let part = client.logs(&id, cursor.as_deref()).await?;
                print!("{}", part.text);
                if part.text.is_empty() || part.cursor == cursor {
                    break;
                }
                cursor = part.cursor;
            }
        }
        JobCommand::Cancel { id } => {
            let reply = client.cancel(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                match reply.result.as_str() {
                    "cancelled" => println!("cancelled {id}"),
                    "requested" => println!("cancel requested: {id} stops within one heartbeat"),
                    _ => println!("{id} had already finished: {}", reply.status),
                }
            }
        }
        JobCommand::Retry { id } => {
            let job = client.retry(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                println!("queued {} (retry of {id})", job.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `logs --follow` exits like the job: scripts can wait for a build with it.
fn exit_for(status: JobStatus) -> ExitCode {
    if status == JobStatus::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--env {p:?}: expected KEY=VALUE"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

pub fn jobs_table(jobs: &[Job]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.spec.repo.clone(),
                j.spec.git_ref.trim_start_matches("refs/").to_owned(),
                short(&j.spec.sha).to_owned(),
                j.spec.pool.to_string(),
                j.status.to_string(),
                j.agent.clone().unwrap_or_default(),
                ago(j.created_at, now),
                j.duration(now).map(duration).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "REPO", "REF", "SHA", "POOL", "STATUS", "AGENT", "QUEUED", "DURATION",
        ],
        &rows,
    )
}

fn describe(job: &Job) -> String {
    let now = Utc::now();
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    field("id", job.id.clone());
    field("status", job.status.to_string());
    field("repo", job.spec.repo.clone());
    field("ref", job.spec.git_ref.clone());
    field("sha", job.spec.sha.clone());
    field("event", job.spec.event.to_string());
    field("pool", job.spec.pool.to_string());
    field("attempt", job.attempt.to_string());
    field("queued", ago(job.created_at, now));
    if let Some(agent) = &job.agent {
        field("agent", agent.clone());
    }
    if let Some(d) = job.duration(now) {
        field("duration", duration(d));
    }
    if let Some(r) = &job.reason {
        field("reason", r.clone());
    }
    if let Some(r) = &job.spec.retry_of {
        field("retry of", r.clone());
    }
    if !job.steps.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = job
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    format!("{:?}", s.status).to_lowercase(),
                    s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    s.duration_ms
                        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(&["STEP", "STATUS", "EXIT", "TIME"], &rows));
    }
    for image in &job.images {
        out.push_str(&format!("image      {image}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_parse() {
        let env = parse_env(&["A=1".into(), "B=x=y".into()]).unwrap();
        assert_eq!(env["B"], "x=y");
        assert!(parse_env(&["nope".into()]).is_err());
    }
}
