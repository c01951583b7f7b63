//! The runner's `artifacts:` step, after the job's steps: pack the paths, push them to the
//! forge's registry, and record where they went on the job.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use raibid_model::{Job, JobArtifacts, JobStatus, Outcome};
use raibid_pipeline::Artifacts;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::artifacts::{self, ArtifactsError};
use crate::logsink::JobLog;
use crate::runner::{Runner, human_size, listed};

impl Runner {
    /// Keeps the job's artifacts as `artifacts.when` says. Artifacts that this agent does not
    /// keep (no registry, a fork) are a note in the log; artifacts it should keep but cannot
    /// (too large, the registry refused) end a passing job in `error`, as a release whose
    /// files were lost must not show green.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn keep_artifacts(
        &self,
        job: &Job,
        artifacts: &Artifacts,
        workspace: &Path,
        private: &Path,
        outcome: &mut Outcome,
        stop: &CancellationToken,
        log: &mut JobLog,
    ) {
        let note = |text: &str| format!("\x1b[33martifacts: {text}\x1b[0m");
        if artifacts.paths.is_empty() {
            // Only `reports:`, which `read_test_reports` read.
            return;
        }
        if stop.is_cancelled()
            || !matches!(
                outcome.status,
                JobStatus::Success | JobStatus::Failure | JobStatus::Error
            )
        {
            log.line("artifacts: not kept: the job was stopped").await;
            return;
        }
        let succeeded = outcome.status == JobStatus::Success;
        if !artifacts.when.keeps(succeeded) {
            log.line(&format!(
                "artifacts: not kept: `when: {}` and the job {}",
                artifacts.when.as_str(),
                if succeeded { "succeeded" } else { "failed" }
            ))
            .await;
            return;
        }
        let Some(store) = &self.artifacts else {
            log.line(&note(if self.settings.ephemeral {
                "not kept: raibid exec keeps them in a registry of its own, which needs \
                 docker-registry installed"
            } else {
                "not kept: this agent keeps none (it needs a registry, agent.registry.host or \
                 gitea.url, and agent.artifacts_max_bytes above 0)"
            }))
            .await;
            return;
        };
        if !self.secrets.trusts(job) {
            log.line(&note(
                "not kept: pull requests from forks push nothing to the registry unless \
                 agent.secrets_for_forks is on",
            ))
            .await;
            return;
        }

        let started = Instant::now();
        let archive = private.join("artifacts.tar.gz");
        let packed = {
            let (workspace, paths, archive, max, stop) = (
                workspace.to_path_buf(),
                artifacts.paths.clone(),
                archive.clone(),
                store.max_bytes,
                stop.clone(),
            );
            tokio::task::spawn_blocking(move || {
                artifacts::pack(&workspace, &paths, &archive, max, &stop)
            })
            .await
            .unwrap_or_else(|e| {
                Err(ArtifactsError::Io {
                    what: "packing",
                    path: "the artifacts".into(),
                    source: std::io::Error::other(e),
                })
            })
        };
        let packed = match packed {
            Ok(packed) => packed,
            Err(ArtifactsError::Stopped) => {
                log.line("artifacts: not kept: the job was stopped").await;
                return;
            }
            Err(e) => {
                fail(job, outcome, log, format!("artifacts: {e}")).await;
                let _ = tokio::fs::remove_file(&archive).await;
                return;
            }
        };
        for (path, why) in &packed.skipped {
            log.line(&note(&format!("{path} not kept: {why}"))).await;
        }
        for file in &packed.left_out {
            log.line(&note(&format!("left out {file}"))).await;
        }
        if packed.left_out_count > packed.left_out.len() {
            log.line(&note(&format!(
                "left out {} more",
                packed.left_out_count - packed.left_out.len()
            )))
            .await;
        }
        if packed.paths.is_empty() {
            log.line(&note("nothing to keep: none of the paths could be kept"))
                .await;
            let _ = tokio::fs::remove_file(&archive).await;
            return;
        }

        let tag = store.tag(&job.spec.repo, &job.id);
        let annotations = BTreeMap::from([
            (
                "org.opencontainers.image.created".to_owned(),
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            (
                "org.opencontainers.image.revision".to_owned(),
                job.spec.sha.clone(),
            ),
            ("dev.raibid.job".to_owned(), job.id.clone()),
            ("dev.raibid.repo".to_owned(), job.spec.repo.clone()),
            ("dev.raibid.ref".to_owned(), job.spec.git_ref.clone()),
        ]);
        let options = store.fetch_options();
        let push = raibid_oci::push_artifact(&tag, &archive, &annotations, &options);
        let pushed = tokio::select! {
            pushed = push => pushed,
            () = stop.cancelled() => {
                log.line("artifacts: not kept: the job was stopped").await;
                let _ = tokio::fs::remove_file(&archive).await;
                return;
            }
        };
        let _ = tokio::fs::remove_file(&archive).await;
        match pushed {
            Ok(pushed) => {
                // Scheduled before the job records them: an agent dying in between leaves an
                // entry whose deletion finds a job without them, not artifacts never deleted.
                let (lifetime, source) = store.lifetime(artifacts.expire_in);
                let expires_at = lifetime
                    .filter(|_| !self.settings.ephemeral)
                    .and_then(|after| chrono::Duration::from_std(after).ok())
                    .and_then(|after| Utc::now().checked_add_signed(after));
                if let Some(at) = expires_at
                    && let Err(e) = self
                        .queue
                        .schedule_artifacts_expiry(&job.id, &pushed.reference, at)
                        .await
                {
                    warn!(job = %job.id, error = %e, "cannot schedule the artifacts' expiry");
                }
                let fetch = if self.settings.ephemeral {
                    String::new()
                } else {
                    format!("; `raibid job artifacts {}` fetches them", job.id)
                };
                log.line(&format!(
                    "artifacts: kept {} ({} files, {}; {} compressed) as {} in {:.2}s{fetch}",
                    listed(&packed.paths),
                    packed.files,
                    human_size(packed.bytes),
                    human_size(pushed.size),
                    pushed.reference,
                    started.elapsed().as_secs_f64(),
                ))
                .await;
                if let Some(at) = expires_at {
                    log.line(&format!(
                        "artifacts: kept until {} ({source})",
                        at.format("%Y-%m-%d %H:%M UTC")
                    ))
                    .await;
                } else if artifacts.expire_in.is_some() && !self.settings.ephemeral {
                    log.line(&format!("artifacts: kept for ever ({source})"))
                        .await;
                }
                outcome.artifacts = Some(JobArtifacts {
                    reference: pushed.reference,
                    size: pushed.size,
                    files: packed.files,
                    expires_at,
                    expired: false,
                });
            }
            Err(e) => fail(job, outcome, log, format!("artifacts: not kept: {e}")).await,
        }
    }
}

impl Runner {
    /// Reads the pipeline's JUnit reports (`artifacts: reports: junit:`) after the steps,
    /// whatever the verdict (failures are what reports are for), and records their summary on
    /// the job. A report that cannot be read is a note in the log, never a failure of the job:
    /// the steps' exit codes decide that.
    pub(crate) async fn read_test_reports(
        &self,
        job: &Job,
        artifacts: &Artifacts,
        workspace: &Path,
        outcome: &mut Outcome,
        stop: &CancellationToken,
        log: &mut JobLog,
    ) {
        // Nothing ran (every step's `when` said no): nothing can have written a report.
        let nothing_ran = outcome
            .steps
            .iter()
            .all(|s| s.status == raibid_model::StepStatus::Skipped);
        if artifacts.junit.is_empty() || stop.is_cancelled() || nothing_ran {
            return;
        }
        let (workspace, paths, stop) = (
            workspace.to_path_buf(),
            artifacts.junit.clone(),
            stop.clone(),
        );
        let collected = tokio::task::spawn_blocking(move || {
            crate::test_reports::collect(&workspace, &paths, &stop)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| c.map_err(|e| e.to_string()));
        let collected = match collected {
            Ok(collected) => collected,
            Err(e) => {
                warn!(job = %job.id, error = %e, "cannot read the test reports");
                log.line(&format!("\x1b[33mtests: reports not read: {e}\x1b[0m"))
                    .await;
                return;
            }
        };
        for note in &collected.notes {
            log.line(&format!("\x1b[33mtests: {note}\x1b[0m")).await;
        }
        let Some(report) = collected.report else {
            log.line("\x1b[33mtests: no report could be read\x1b[0m")
                .await;
            return;
        };
        let colour = if report.failed > 0 { "31" } else { "32" };
        log.line(&format!(
            "\x1b[{colour}mtests: {} ({} report{}, {:.1}s)\x1b[0m",
            report.summary(),
            report.files,
            if report.files == 1 { "" } else { "s" },
            report.seconds
        ))
        .await;
        for failure in report.failures.iter().take(SHOWN_FAILURES) {
            log.line(&format!("\x1b[31mtests: failed: {failure}\x1b[0m"))
                .await;
        }
        if report.failed > SHOWN_FAILURES as u64 {
            log.line(&format!(
                "\x1b[31mtests: and {} more failed (`raibid job show {}`)\x1b[0m",
                report.failed - SHOWN_FAILURES as u64,
                job.id
            ))
            .await;
        }
        outcome.tests = Some(report);
    }
}

/// Failed tests the log names; the job's record keeps more.
const SHOWN_FAILURES: usize = 5;

/// A passing job whose artifacts were lost ends in `error`; a failed one keeps its verdict.
async fn fail(job: &Job, outcome: &mut Outcome, log: &mut JobLog, message: String) {
    warn!(job = %job.id, %message, "artifacts not kept");
    log.line(&format!("\x1b[31m{message}\x1b[0m")).await;
    if outcome.status == JobStatus::Success {
        outcome.status = JobStatus::Error;
        outcome.reason = Some(message);
    }
}

/// Deleted at most this many per pass, so an agent that starts is not held up by a backlog.
const EXPIRE_BATCH: usize = 100;

/// A deletion the registry refused is tried again this much later.
const RETRY_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Deletes the artifacts due by now from the registry (a batch) and marks their jobs'
/// artifacts expired; returns how many were deleted. Run by each agent as it starts, beside
/// its first job: agents come and go with the queue, so the due ones never wait long while
/// jobs run. When the registry refuses one (no deletes allowed, down), that one and the rest
/// of the batch are tried again an hour later.
pub async fn expire_artifacts(
    queue: &raibid_queue::Queue,
    store: &crate::artifacts::ArtifactStore,
) -> usize {
    let due = match queue.take_due_artifacts(Utc::now(), EXPIRE_BATCH).await {
        Ok(due) => due,
        Err(e) => {
            warn!(error = %e, "cannot look for expired artifacts");
            return 0;
        }
    };
    let options = store.fetch_options();
    let mut deleted = 0;
    let mut due = due.into_iter();
    while let Some(artifacts) = due.next() {
        match raibid_oci::delete_artifact(&artifacts.reference, &options).await {
            Ok(found) => {
                deleted += usize::from(found);
                if let Err(e) = queue
                    .mark_artifacts_expired(&artifacts.job_id, &artifacts.reference)
                    .await
                {
                    warn!(job = %artifacts.job_id, error = %e, "cannot mark artifacts expired");
                }
                tracing::info!(job = %artifacts.job_id, reference = %artifacts.reference, "expired artifacts deleted");
            }
            Err(e) => {
                warn!(
                    job = %artifacts.job_id,
                    reference = %artifacts.reference,
                    error = %e,
                    "cannot delete expired artifacts; trying again in an hour (the registry must \
                     allow deletes: docker-registry's storage.delete.enabled)"
                );
                // The rest would most likely fail alike, each after its timeout, while this
                // agent (a pod with its job done) waits to exit.
                for artifacts in std::iter::once(artifacts).chain(due.by_ref()) {
                    let _ = queue
                        .schedule_artifacts_expiry(
                            &artifacts.job_id,
                            &artifacts.reference,
                            Utc::now() + RETRY_AFTER,
                        )
                        .await;
                }
            }
        }
    }
    deleted
}
