use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use raibid_client::{Backoff, Client, ClientError, ListJobs, LogEvent, SubmitJob};
use raibid_config::Config;
use raibid_model::{BuildStatus, Job, JobStatus, ListedJob};

use crate::cli::{JobArgs, JobCommand, Output};
use crate::output::{ago, duration, table};
use raibid_model::step_log::StepFilter;

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
            follow,
            retry_for,
        } => {
            if follow && json {
                bail!("--follow prints the build's log, which is not JSON: drop --output json");
            }
            let env = parse_env(&env)?;
            let submission = SubmitJob {
                repo,
                clone_url,
                git_ref,
                sha,
                pool,
                env,
            };
            let job = submit(&client, &submission, Duration::from_secs(retry_for)).await?;
            print_queued(&job, json, &source(&job))?;
            if follow {
                let retry_for = Duration::from_secs(retry_for);
                return follow_build(&client, &job.id, retry_for, None).await;
            }
        }
        JobCommand::List {
            status,
            repo,
            pool,
            branch,
            event,
            limit,
            cursor,
        } => {
            let page = client
                .list(&ListJobs {
                    status,
                    repo,
                    pool,
                    branch,
                    event,
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
            let (job, build) = match client.build(&id).await {
                Ok(build) => {
                    let status = BuildStatus {
                        status: build.status,
                        description: build.description,
                    };
                    (build.job, Some(status))
                }
                // A server older than `/build` (or no such job, which this says again).
                Err(ClientError::Api { status: 404, .. }) => (client.job(&id).await?, None),
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", describe(&job, build.as_ref(), client.base_url()));
                if let Some(line) = held(&client, &job).await {
                    println!("{line}");
                }
            }
        }
        JobCommand::Logs {
            id,
            follow,
            step,
            retry_for,
        } => {
            if follow {
                return follow_build(
                    &client,
                    &id,
                    Duration::from_secs(retry_for),
                    step.as_deref(),
                )
                .await;
            }
            let mut filter = step.as_deref().map(StepFilter::new);
            let mut cursor: Option<String> = None;
            let mut stdout = anstream::stdout().lock();
            loop {
                let part = client.logs(&id, cursor.as_deref()).await?;
                match &mut filter {
                    Some(f) => stdout.write_all(f.push(&part.text).as_bytes())?,
                    None => stdout.write_all(part.text.as_bytes())?,
                }
                if part.text.is_empty() || part.cursor == cursor {
                    break;
                }
                cursor = part.cursor;
            }
            if let Some(f) = &mut filter {
                stdout.write_all(f.finish().as_bytes())?;
            }
            stdout.flush()?;
        }
        JobCommand::Artifacts {
            id,
            dir,
            from_registry,
        } => {
            let job = client.job(&id).await?;
            let dest = dir.unwrap_or_else(|| PathBuf::from(format!("{id}-artifacts")));
            let from = if from_registry {
                ArtifactSource::Registry(config)
            } else {
                ArtifactSource::Server(&client)
            };
            let (reference, files) = download_artifacts(from, &job, &dest).await?;
            if json {
                let reply = serde_json::json!({
                    "job": id, "reference": reference, "dir": dest, "files": files,
                });
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                let plural = if files == 1 { "" } else { "s" };
                println!("{files} file{plural} of {reference} in {}", dest.display());
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
                    _ if !reply.variants.is_empty() => {}
                    _ => println!("{id} had already finished: {}", reply.status),
                }
                if !reply.variants.is_empty() {
                    println!("cancelled the jobs it queued: {}", reply.variants.join(" "));
                }
            }
        }
        JobCommand::Retry { id, failed: false } => {
            let job = client.retry(&id).await?;
            print_queued(&job, json, &format!("retry of {id}"))?;
        }
        JobCommand::Retry { id, failed: true } => {
            let retried = client.retry_failed(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&retried)?);
            } else {
                for job in &retried {
                    let of = job.spec.retry_of.as_deref().unwrap_or("?");
                    print_queued(job, false, &format!("retry of {of}"))?;
                }
            }
        }
        JobCommand::Approve { id } => {
            let job = client.approve(&id).await?;
            print_queued(&job, json, "approved")?;
        }
        JobCommand::EraseLog { id, build: true } => {
            let erased = client.erase_build_logs(&id).await?;
            if json {
                let erased = serde_json::json!({ "erased": erased });
                println!("{}", serde_json::to_string_pretty(&erased)?);
            } else {
                println!("erased the logs of {} job(s) of the build:", erased.len());
                for id in erased {
                    println!("  {id}");
                }
            }
        }
        JobCommand::EraseLog { id, build: false } => {
            let job = client.erase_log(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                let note = job.log_erased.as_ref().map(|e| e.note());
                println!(
                    "{}",
                    note.unwrap_or_else(|| format!("erased the log of {id}"))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `raibid job artifacts` gets the archive.
pub(crate) enum ArtifactSource<'a> {
    /// `GET /api/v1/jobs/{id}/artifacts`: the server's registry login, the user's API token.
    Server(&'a Client),
    /// The registry itself, with this configuration's `agent.registry` login.
    Registry(&'a Config),
}

/// Pulls the job's artifacts (pinned by digest) and unpacks them into `dest`; returns the
/// reference and the number of files.
pub(crate) async fn download_artifacts(
    from: ArtifactSource<'_>,
    job: &Job,
    dest: &Path,
) -> anyhow::Result<(String, u64)> {
    let Some(artifacts) = &job.artifacts else {
        bail!(
            "job {} has no artifacts: its pipeline has no `artifacts:`, the job has not \
             finished, or they were not kept (`raibid job logs {}` says why)",
            job.id,
            job.id
        );
    };
    if artifacts.expired {
        bail!(
            "the artifacts of job {} expired{}: they were deleted from the registry (the \
             pipeline's `expire_in`, else agent.artifacts_expire_days); run the job again \
             (`raibid job retry {}`) to build them anew",
            job.id,
            artifacts
                .expires_at
                .map(|at| format!(" on {}", at.format("%Y-%m-%d")))
                .unwrap_or_default(),
            job.id
        );
    }
    let reference = artifacts.reference.clone();
    // Beside the destination rather than in /tmp, which may be a small tmpfs.
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let archive = tempfile::Builder::new()
        .prefix(".raibid-artifacts-")
        .suffix(".tar.gz")
        .tempfile_in(&parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    match from {
        ArtifactSource::Server(client) => {
            client
                .download_artifacts(&job.id, archive.path())
                .await
                .with_context(|| format!("downloading {reference} through the server"))?;
        }
        ArtifactSource::Registry(config) => {
            raibid_oci::pull_artifact(
                &reference,
                archive.path(),
                &registry_options(config, &reference),
            )
            .await
            .with_context(|| format!("downloading {reference}"))?;
        }
    }
    let (path, into) = (archive.path().to_path_buf(), dest.to_path_buf());
    let files = tokio::task::spawn_blocking(move || raibid_agent::artifacts::unpack(&path, &into))
        .await?
        .with_context(|| format!("unpacking {reference} into {}", dest.display()))?;
    Ok((reference, files))
}

/// `agent.registry`'s login on its host, none elsewhere.
fn registry_options(config: &Config, reference: &str) -> raibid_oci::FetchOptions {
    let (insecure, credentials) = config.registry_login_for(reference);
    raibid_oci::FetchOptions {
        insecure,
        timeout: Duration::from_secs(60),
        credentials,
    }
}

/// `logs --follow`: the job's log until it ends, then, for a matrix job or one that queued
/// the workflows of `.raibid/`, the logs of the jobs it queued, each in turn (their own
/// children too), as `raibid exec` prints them: a matrix job ends as soon as it has queued its
/// variants, which are the build, and a script waiting for the build must wait for them.
/// Exits 0 only if every job that ran steps succeeded (or was skipped).
async fn follow_build(
    client: &Client,
    root: &str,
    retry_for: Duration,
    step: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut pending = vec![root.to_owned()];
    while let Some(id) = pending.pop() {
        if id != root {
            let job = read_job(client, &id, retry_for).await?;
            eprintln!(
                "\n── {} ({id}) ──",
                job.label().unwrap_or_else(|| "job".into())
            );
        }
        let filter = step.map(StepFilter::new);
        let status = follow_logs(client, &id, retry_for, filter).await?;
        let children = if status.is_final() {
            read_job(client, &id, retry_for).await?.children
        } else {
            Vec::new()
        };
        if children.is_empty() {
            eprintln!("job {id} finished: {status}");
            failed |= !matches!(status, JobStatus::Success | JobStatus::Skipped);
        } else {
            eprintln!("job {id} queued {} job(s); following them", children.len());
            pending.extend(children.into_iter().rev());
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Queues `submission`, sending it again while the server answers that it cannot now (a 503:
/// Redis away, the pool's queue full; a 429) or does not answer, for `retry_for`. One
/// `Idempotency-Key` throughout: a sending whose answer was lost may have queued the job,
/// and the server then answers the next with that job instead of queueing a second build.
async fn submit(
    client: &Client,
    submission: &SubmitJob,
    retry_for: Duration,
) -> anyhow::Result<Job> {
    let key = ulid::Ulid::new().to_string();
    retrying("queue the job", retry_for, || {
        client.submit_with_key(submission, &key)
    })
    .await
}

/// Reads job `id` for [`follow_build`], trying again through what a log stream survives (a
/// server restarting) for `retry_for`; an answer that asking again will not change (no such
/// job, not allowed) at once.
async fn read_job(client: &Client, id: &str, retry_for: Duration) -> anyhow::Result<Job> {
    retrying(&format!("read job {id}"), retry_for, || client.job(id)).await
}

/// `call`'s answer, asking again after failures for `retry_for` (waiting at least what the
/// server's `Retry-After` asks), and saying so on stderr; an answer that asking again will not
/// change ends it at once. `what` completes "cannot ..." in those lines.
async fn retrying<T, F, Fut>(what: &str, retry_for: Duration, call: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    let mut backoff = reconnect_backoff();
    loop {
        match call().await {
            Ok(answer) => return Ok(answer),
            Err(e) if is_final_answer(&e) => return Err(e.into()),
            Err(e) if started.elapsed() >= retry_for => {
                bail!(
                    "could not {what} for {} s ({e}); giving up",
                    retry_for.as_secs()
                )
            }
            Err(e) => {
                let asked = match &e {
                    ClientError::Api { retry_after, .. } => retry_after.unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                let left = retry_for.saturating_sub(started.elapsed());
                let wait = backoff.next_wait().max(asked).min(left);
                eprintln!(
                    "raibid: cannot {what} ({e}); trying again in {:.1} s",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `logs --follow` of one job: prints the log until the job ends, reconnecting after the last
/// event seen whenever the stream breaks (server restart, proxy timeout, the server's stream lifetime),
/// so a long build can be watched to its end and each line is printed once. Gives up when the
/// job could not be read for `retry_for`, or at once on answers that asking again will not
/// change (no such job, not allowed, job deleted).
async fn follow_logs(
    client: &Client,
    id: &str,
    retry_for: Duration,
    mut filter: Option<StepFilter>,
) -> anyhow::Result<JobStatus> {
    let mut stdout = anstream::stdout();
    let mut last_event: Option<String> = None;
    let mut backoff = reconnect_backoff();
    // The last time the server showed it could read the job.
    let mut readable_at = Instant::now();
    loop {
        let resume_after = last_event.clone();
        let mut progressed = false;
        let result = client
            .follow_logs(id, resume_after.as_deref(), |event| {
                if let LogEvent::Log { id, text } = event {
                    let shown = match &mut filter {
                        Some(f) => std::borrow::Cow::Owned(f.push(text)),
                        None => std::borrow::Cow::Borrowed(text.as_str()),
                    };
                    let _ = stdout.write_all(shown.as_bytes());
                    let _ = stdout.flush();
                    if id.is_some() {
                        last_event.clone_from(id);
                    }
                    progressed = true;
                }
            })
            .await;
        let reason = match result {
            Ok(Some(status)) => {
                if let Some(f) = &mut filter {
                    let _ = stdout.write_all(f.finish().as_bytes());
                }
                return Ok(status);
            }
            Ok(None) => {
                readable_at = Instant::now();
                "the server closed the stream".to_owned()
            }
            Err(e) if is_final_answer(&e) => return Err(e.into()),
            Err(e) => e.to_string(),
        };
        if progressed {
            readable_at = Instant::now();
            backoff.reset();
        }
        let left = retry_for.saturating_sub(readable_at.elapsed());
        if left.is_zero() {
            bail!(
                "could not read job {id} for {} s ({reason}); giving up",
                retry_for.as_secs()
            );
        }
        let wait = backoff.next_wait().min(left);
        eprintln!(
            "raibid: log stream interrupted ({reason}); reconnecting in {:.1} s",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

/// An answer that asking again will not change: no such job, not allowed, job deleted (a
/// 4xx other than a timeout or too many requests).
fn is_final_answer(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status, .. }
        if (400..500).contains(status) && *status != 408 && *status != 429)
}

/// Waits between reconnects: short at first, capped so a server that comes back is found soon.
fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(10))
}

pub(crate) fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
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

/// What a command that queued `job` prints: the job as JSON, or `queued <id> (<what>)`.
pub(crate) fn print_queued(job: &Job, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(job)?);
    } else {
        println!("queued {} ({what})", job.id);
    }
    Ok(())
}

/// `<repo> at <short sha>`: what a queued job builds.
pub(crate) fn source(job: &Job) -> String {
    format!("{} at {}", job.spec.repo, short(&job.spec.sha))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

/// STATUS is the build's for the first job of a matrix or of several workflows (see
/// [`ListedJob`]), as the web list and the dashboard show it.
pub fn jobs_table(jobs: &[ListedJob]) -> String {
    let now = Utc::now();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|listed| {
            let j = &listed.job;
            vec![
                j.id.clone(),
                j.spec.repo.clone(),
                j.spec.git_ref.trim_start_matches("refs/").to_owned(),
                short(&j.spec.sha).to_owned(),
                j.list_name().unwrap_or_default(),
                j.spec.pool.to_string(),
                listed.status().to_string(),
                j.agent.clone().unwrap_or_default(),
                ago(j.created_at, now),
                j.duration(now).map(duration).unwrap_or_default(),
                j.spec.title.as_deref().map(cut_title).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "REPO", "REF", "SHA", "JOB", "POOL", "STATUS", "AGENT", "QUEUED", "DURATION",
            "TITLE",
        ],
        &rows,
    )
}

/// The most of a title the job list shows: last on its line, as `gh run list` leads with it,
/// and cut so that one long pull request title does not wrap every row (`raibid job show` has
/// it whole).
const LIST_TITLE_CHARS: usize = 50;

fn cut_title(title: &str) -> String {
    if title.chars().count() <= LIST_TITLE_CHARS {
        return title.to_owned();
    }
    let mut cut: String = title.chars().take(LIST_TITLE_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `job` as `raibid job show` prints it; `server` is the server's address, for the job's page.
/// Why a queued job does not start, when its pool is paused; `None` otherwise, or when the
/// queues cannot be read (the job's own record is what was asked for).
async fn held(client: &raibid_client::Client, job: &Job) -> Option<String> {
    if job.status != JobStatus::Queued {
        return None;
    }
    let queues = client.queues().await.ok()?;
    let pool = queues.pools.iter().find(|p| p.pool == job.spec.pool)?;
    let pause = pool.paused.as_ref()?;
    Some(format!(
        "{:<10} pool {} {}: the job waits (`raibid pool resume {}`)",
        "held",
        job.spec.pool,
        pause.describe(Utc::now()),
        job.spec.pool
    ))
}

/// `raibid job show`'s text. `build`: the status of the build `job` is the first job of (a
/// matrix, several workflows), once it passed: its jobs' combined, with what it says.
fn describe(job: &Job, build: Option<&BuildStatus>, server: &str) -> String {
    let now = Utc::now();
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    field("id", job.id.clone());
    field("status", job.status.to_string());
    if let Some(BuildStatus {
        status,
        description: Some(description),
    }) = build
    {
        // The job's own status says only that it queued its jobs.
        field("build", format!("{status}: {description}"));
    }
    if let Some(page) = job.page_url(server) {
        field("page", page);
    }
    field("repo", job.spec.repo.clone());
    if let Some(number) = job.spec.number {
        field("pipeline", format!("#{number}"));
    }
    if let Some(title) = &job.spec.title {
        field("title", title.clone());
    }
    field("ref", job.spec.git_ref.clone());
    field("sha", job.spec.sha.clone());
    field("event", job.spec.event.to_string());
    if let Some(pr) = job.spec.pr_number {
        let branches = match (&job.spec.source_branch, &job.spec.target_branch) {
            (Some(from), Some(into)) => format!(" ({from} into {into})"),
            (None, Some(into)) => format!(" (into {into})"),
            _ => String::new(),
        };
        field("pull", format!("#{pr}{branches}"));
    }
    if !job.spec.pr_labels.is_empty() {
        field("labels", job.spec.pr_labels.join(", "));
    }
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
    if let Some(workflow) = job.spec.env.get("RAIBID_WORKFLOW") {
        field("workflow", workflow.clone());
    }
    if let Some(variant) = job.spec.env.get("RAIBID_MATRIX") {
        field("variant", variant.clone());
    }
    if let Some(parent) = &job.spec.matrix_parent {
        field("queued by", parent.clone());
    }
    for (name, value) in job.spec.variables() {
        // One line each: a value's line breaks and other control characters escaped.
        field("variable", format!("{name}={}", value.escape_debug()));
    }
    if let Some(approver) = &job.approved_by {
        field("approver", approver.clone());
    }
    if let Some(group) = &job.concurrency {
        field("concurrency", group.clone());
    }
    if let Some(needs) = &job.spec.needs {
        field(
            "waits for",
            format!(
                "{} ({}), {}",
                needs.workflows.join(", "),
                needs.jobs.join(" "),
                needs.after()
            ),
        );
    }
    if !job.children.is_empty() {
        field("children", job.children.join(" "));
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
    if let Some(artifacts) = &job.artifacts {
        if let Some(note) = artifacts.expired_note() {
            out.push_str(&format!("artifacts  {note}\n"));
        } else {
            out.push_str(&format!(
                "artifacts  {} ({})\n",
                artifacts.reference,
                artifacts.summary(&job.id)
            ));
        }
    }
    if let Some(tests) = &job.tests {
        out.push_str(&format!("tests      {}\n", tests.summary()));
        for failure in &tests.failures {
            out.push_str(&format!("  failed   {failure}\n"));
        }
        let unnamed = tests.failed.saturating_sub(tests.failures.len() as u64);
        if unnamed > 0 {
            out.push_str(&format!("  and {unnamed} more failed\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use raibid_testkit::canned_http::http_response;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The loopback server of [`raibid_testkit::canned_http`], answering JSON.
    async fn answering(answers: Vec<(u16, String)>) -> (String, Arc<AtomicUsize>) {
        let responses = answers
            .into_iter()
            .map(|(status, body)| http_response(status, "application/json", &[], &body))
            .collect();
        raibid_testkit::canned_http::answering(responses).await
    }

    fn job_json(id: &str) -> String {
        let spec = raibid_model::NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            "refs/heads/main",
            "a".repeat(40),
            raibid_model::Event::Push,
        );
        serde_json::to_string(&Job::queued(id.to_owned(), spec, Utc::now())).unwrap()
    }

    const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const UNAVAILABLE: &str = r#"{"error":"redis_unavailable","message":"Redis is down"}"#;

    /// Between two followed jobs the server may be restarting: the job is read again until
    /// it answers.
    #[tokio::test]
    async fn reading_a_followed_job_waits_out_a_server_that_is_away() {
        let (url, asked) = answering(vec![
            (503, UNAVAILABLE.into()),
            (503, UNAVAILABLE.into()),
            (200, job_json(ID)),
        ])
        .await;
        let client = Client::new(&url, None).unwrap();
        let job = read_job(&client, ID, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(job.id, ID);
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    /// An answer asking again will not change ends it at once; one that might, once
    /// `retry_for` has passed.
    #[tokio::test]
    async fn reading_a_followed_job_gives_up_on_final_answers_and_after_its_time() {
        let missing = r#"{"error":"not_found","message":"job not found"}"#;
        let (url, asked) = answering(vec![(404, missing.into())]).await;
        let client = Client::new(&url, None).unwrap();
        let e = read_job(&client, ID, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "not asked again");

        let (url, asked) = answering(vec![(503, UNAVAILABLE.into())]).await;
        let client = Client::new(&url, None).unwrap();
        let e = read_job(&client, ID, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("could not read job {ID} for 1 s")),
            "{e}"
        );
        // Asked at once and after the first wait (0.5 s), and, unless that answer came after
        // its second (a loaded machine), after the second wait (1 s more).
        let asked = asked.load(Ordering::SeqCst);
        assert!((2..=3).contains(&asked), "asked {asked} times");
    }

    #[test]
    fn reconnect_waits_double_to_a_ceiling_and_reset() {
        let mut b = reconnect_backoff();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(500));
    }

    #[test]
    fn a_workflow_job_says_what_it_belongs_to_and_waits_for() {
        let mut spec = raibid_model::NewJob::new(
            "acme/app",
            "u",
            "refs/heads/main",
            "a".repeat(40),
            raibid_model::Event::Push,
        );
        spec.env.insert("RAIBID_WORKFLOW".into(), "deploy".into());
        spec.matrix_parent = Some("P".into());
        spec.number = Some(17);
        spec.needs = Some(raibid_model::Needs {
            workflows: vec!["build".into(), "test".into()],
            jobs: vec!["B".into(), "T".into()],
            on_failure: false,
            on_success: true,
        });
        let mut job = Job::queued("D".to_owned(), spec, Utc::now());
        job.status = raibid_model::JobStatus::Blocked;
        let shown = describe(&job, None, "");
        for line in [
            "workflow   deploy\n",
            "pipeline   #17\n",
            "queued by  P\n",
            "waits for  build, test (B T), if they succeed\n",
        ] {
            assert!(shown.contains(line), "{line:?} in\n{shown}");
        }
        assert!(!shown.contains("approver"), "{shown}");
        assert!(!shown.contains("variable"), "{shown}");
        job.approved_by = Some("release-bot".into());
        assert!(describe(&job, None, "").contains("approver   release-bot\n"));
    }

    #[test]
    fn show_gives_a_build_s_combined_status_after_the_job_s_own() {
        let spec = raibid_model::NewJob::new(
            "o/r",
            "u",
            "refs/heads/main",
            "a".repeat(40),
            raibid_model::Event::Push,
        );
        let mut job = Job::queued("01MATRIX".to_owned(), spec, Utc::now());
        job.status = JobStatus::Success;
        let build = BuildStatus {
            status: JobStatus::Failure,
            description: Some("1 of 2 variants failed: N=2".to_owned()),
        };
        let shown = describe(&job, Some(&build), "");
        assert!(
            shown.starts_with(
                "id         01MATRIX\nstatus     success\nbuild      failure: 1 of 2 variants \
                 failed: N=2\n"
            ),
            "{shown}"
        );
        assert!(!describe(&job, None, "").contains("build"));
    }

    #[test]
    fn a_job_shows_the_variables_it_was_given_one_per_line() {
        let mut spec = raibid_model::NewJob::new(
            "acme/app",
            "u",
            "refs/heads/main",
            "a".repeat(40),
            raibid_model::Event::Manual,
        );
        spec.env.insert("DEPLOY_TO".into(), "staging".into());
        spec.env.insert("NOTE".into(), "two\nlines".into());
        spec.env.insert("RAIBID_MATRIX".into(), "go-1.22".into());
        let shown = describe(&Job::queued("V".to_owned(), spec, Utc::now()), None, "");
        for line in [
            "variable   DEPLOY_TO=staging\n",
            "variable   NOTE=two\\nlines\n",
            "variant    go-1.22\n",
        ] {
            assert!(shown.contains(line), "{line:?} in\n{shown}");
        }
        assert!(!shown.contains("RAIBID_MATRIX"), "{shown}");
    }

    #[test]
    fn a_pull_request_s_job_shows_its_branches_labels_and_title() {
        let mut spec = raibid_model::NewJob::new(
            "acme/app",
            "u",
            "refs/pull/7/head",
            "a".repeat(40),
            raibid_model::Event::PullRequest,
        );
        spec.pr_number = Some(7);
        spec.target_branch = Some("main".into());
        let mut job = Job::queued("P".to_owned(), spec, Utc::now());
        let shown = describe(&job, None, "");
        assert!(shown.contains("pull       #7 (into main)\n"), "{shown}");
        assert!(!shown.contains("labels"), "{shown}");
        assert!(!shown.contains("title"), "{shown}");
        job.spec.source_branch = Some("fix".into());
        job.spec.pr_labels = vec!["bug".into(), "ui".into()];
        job.spec.title = Some("Fix the parser".into());
        let shown = describe(&job, None, "");
        assert!(shown.contains("pull       #7 (fix into main)\n"), "{shown}");
        assert!(shown.contains("labels     bug, ui\n"), "{shown}");
        assert!(shown.contains("title      Fix the parser\n"), "{shown}");
    }

    #[test]
    fn a_job_shows_its_test_report_and_failures() {
        let spec = raibid_model::NewJob::new(
            "acme/app",
            "u",
            "refs/heads/main",
            "a".repeat(40),
            raibid_model::Event::Push,
        );
        let mut job = Job::queued("T".to_owned(), spec, Utc::now());
        job.tests = Some(raibid_model::TestReport {
            tests: 40,
            failed: 22,
            skipped: 1,
            seconds: 3.5,
            files: 2,
            failures: (0..20)
                .map(|i| raibid_model::TestFailure {
                    suite: if i == 0 { "app".into() } else { String::new() },
                    name: format!("t{i}"),
                    message: if i == 0 { "boom".into() } else { String::new() },
                })
                .collect(),
        });
        let shown = describe(&job, None, "");
        for line in [
            "tests      40 tests: 17 passed, 22 failed, 1 skipped\n",
            "  failed   app t0: boom\n",
            "  failed   t19\n",
            "  and 2 more failed\n",
        ] {
            assert!(shown.contains(line), "{line:?} in\n{shown}");
        }
    }

    #[test]
    fn the_job_list_names_each_job_of_a_push() {
        let job = |env: &[(&str, &str)], parent: bool| {
            let mut spec = raibid_model::NewJob::new(
                "acme/app",
                "u",
                "refs/heads/main",
                "a".repeat(40),
                raibid_model::Event::Push,
            );
            for (k, v) in env {
                spec.env.insert((*k).into(), (*v).into());
            }
            spec.matrix_parent = parent.then(|| "P".into());
            Job::queued("J".to_owned(), spec, Utc::now())
        };
        let jobs = [
            job(&[], false),
            job(
                &[("RAIBID_WORKFLOW", "test"), ("RAIBID_MATRIX", "RUST=1.80")],
                true,
            ),
            job(&[("RAIBID_WORKFLOW", "deploy")], true),
            job(&[("RAIBID_MATRIX", "OS=linux")], true),
            // Submitted as one variant by hand: the whole job.
            job(&[("RAIBID_MATRIX", "OS=linux")], false),
        ];
        let labels: Vec<String> = jobs.iter().map(|j| j.label().unwrap_or_default()).collect();
        assert_eq!(labels, ["", "test/RUST=1.80", "deploy", "OS=linux", ""]);
        let listed = |job: &Job| ListedJob {
            job: job.clone(),
            build: None,
        };
        let table = jobs_table(&jobs.iter().map(listed).collect::<Vec<_>>());
        assert!(
            table.lines().next().unwrap().contains("SHA         JOB"),
            "{table}"
        );
        assert!(table.lines().next().unwrap().ends_with(" TITLE"), "{table}");
        // Numbered, as the web list names them: the pipeline's number, then the label.
        let names: Vec<String> = jobs
            .iter()
            .map(|j| {
                let mut numbered = j.clone();
                numbered.spec.number = Some(17);
                let table = jobs_table(&[listed(&numbered)]);
                let row = table.lines().nth(1).unwrap().to_owned();
                row.split("  ").filter(|c| c.starts_with('#')).collect()
            })
            .collect();
        assert_eq!(
            names,
            [
                "#17",
                "#17 test/RUST=1.80",
                "#17 deploy",
                "#17 OS=linux",
                "#17"
            ]
        );
        let mut titled = jobs[0].clone();
        titled.spec.title = Some(format!("Fix {}", "x".repeat(60)));
        let table = jobs_table(&[listed(&titled)]);
        let row = table.lines().nth(1).unwrap();
        assert!(row.ends_with(&format!("Fix {}…", "x".repeat(45))), "{row}");
        assert!(row.contains(" queued "), "{row}");

        // The first job of a build: its build's status, not its own.
        let build = ListedJob {
            build: Some(raibid_model::BuildStatus {
                status: JobStatus::Failure,
                description: Some("1 of 2 variants failed: N=2".into()),
            }),
            ..listed(&titled)
        };
        let row = jobs_table(&[build]).lines().nth(1).unwrap().to_owned();
        assert!(row.contains(" failure "), "{row}");
        assert!(!row.contains(" queued "), "{row}");
    }

    #[test]
    fn env_pairs_parse() {
        let env = parse_env(&["A=1".into(), "B=x=y".into()]).unwrap();
        assert_eq!(env["B"], "x=y");
        assert!(parse_env(&["nope".into()]).is_err());
    }
}
