//! A job as Redis hash fields.
//!
//! What never changes after enqueue (the `NewJob`) is one JSON field, `spec`; what the Lua
//! scripts change (`status`, `entry`, `attempt`, timestamps, the verdict) are flat fields, so
//! each state change stays a single atomic script without a JSON codec in Lua. One field for
//! the spec rather than one per attribute halves the arguments every enqueue passes through
//! Lua and the fields every claim reads back (BENCHMARKS.md, queue). Records written before
//! the spec field existed (one field per attribute) are still read.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use raibid_model::{Job, LogErased, NewJob, PoolName, StepResult};

use crate::QueueError;

/// The `spec` field. The ENQUEUE script writes the new record: `id`, `spec`, `status` queued,
/// `attempt` 0, `created_at` (ms) and the stream `entry`.
pub(crate) fn spec_json(spec: &NewJob) -> String {
    serde_json::to_string(spec).expect("a job spec serializes")
}

/// The most the `steps` field may hold. Agents rewrite it after every step, and each step
/// carries the tail of its output (20 lines of up to 1 KiB, control characters six bytes each
/// in JSON): a pipeline of many noisy steps would otherwise grow the record, and the bytes
/// every step writes, without the bound `redis.log_max_bytes` puts on the log.
pub(crate) const STEPS_MAX_BYTES: usize = 256 * 1024;

/// The `steps` field: tails give way oldest step first until the whole fits in
/// [`STEPS_MAX_BYTES`] (the latest tails say why a job failed); should the steps alone not
/// fit, the last ones are left out.
pub(crate) fn steps_json(steps: &[StepResult]) -> String {
    let json = serde_json::to_string(steps).expect("steps serialize");
    if json.len() <= STEPS_MAX_BYTES {
        return json;
    }
    let size = |step: &StepResult| {
        serde_json::to_string(step)
            .expect("a step serializes")
            .len()
    };
    let mut kept = steps.to_vec();
    // Brackets, and a comma between steps.
    let mut total = 2 + kept.len().saturating_sub(1) + kept.iter().map(size).sum::<usize>();
    for step in kept.iter_mut() {
        if total <= STEPS_MAX_BYTES {
            break;
        }
        if step.tail.is_empty() {
            continue;
        }
        let before = size(step);
        step.tail.clear();
        total -= before - size(step);
    }
    while total > STEPS_MAX_BYTES {
        let Some(last) = kept.pop() else { break };
        total -= size(&last) + usize::from(!kept.is_empty());
    }
    serde_json::to_string(&kept).expect("steps serialize")
}

pub(crate) fn from_fields(fields: &HashMap<String, String>) -> Result<Job, QueueError> {
    let get = |k: &str| fields.get(k).map(String::as_str);
    let req =
        |k: &str| get(k).ok_or_else(|| QueueError::Protocol(format!("job record lacks field {k}")));
    let parse_err = |k: &str, e: String| QueueError::Protocol(format!("job field {k}: {e}"));
    let ts = |k: &str| -> Result<Option<DateTime<Utc>>, QueueError> {
        match get(k) {
            None | Some("") => Ok(None),
            Some(v) => {
                let ms: i64 = v.parse().map_err(|_| parse_err(k, v.to_owned()))?;
                Ok(Utc.timestamp_millis_opt(ms).single())
            }
        }
    };
    let opt = |k: &str| get(k).filter(|v| !v.is_empty()).map(str::to_owned);

    let mut spec: NewJob = match get("spec") {
        Some(json) => serde_json::from_str(json).map_err(|e| parse_err("spec", e.to_string()))?,
        None => legacy_spec(fields)?,
    };
    // A job queued without a title (a submission, a schedule) gets its commit's subject from
    // the agent that checked it out (`Queue::record_title`), beside the spec it was queued with.
    if spec.title.is_none() {
        spec.title = opt("title");
    }
    Ok(Job {
        id: req("id")?.to_owned(),
        spec,
        status: req("status")?.parse().map_err(|e| parse_err("status", e))?,
        attempt: req("attempt")?
            .parse()
            .map_err(|_| parse_err("attempt", "not a number".into()))?,
        created_at: ts("created_at")?.unwrap_or_default(),
        started_at: ts("started_at")?,
        finished_at: ts("finished_at")?,
        agent: opt("agent"),
        reason: opt("reason"),
        cancel_requested: get("cancel_requested") == Some("1"),
        steps: match opt("steps") {
            Some(s) => serde_json::from_str(&s).map_err(|e| parse_err("steps", e.to_string()))?,
            None => Vec::new(),
        },
        images: match opt("images") {
            Some(s) => serde_json::from_str(&s).map_err(|e| parse_err("images", e.to_string()))?,
            None => Vec::new(),
        },
        artifacts: opt("artifacts")
            .map(|s| serde_json::from_str(&s).map_err(|e| parse_err("artifacts", e.to_string())))
            .transpose()?,
        tests: opt("tests")
            .map(|s| serde_json::from_str(&s).map_err(|e| parse_err("tests", e.to_string())))
            .transpose()?,
        children: match opt("children") {
            Some(s) => {
                serde_json::from_str(&s).map_err(|e| parse_err("children", e.to_string()))?
            }
            None => Vec::new(),
        },
        log_pruned: get("log_pruned") == Some("1"),
        log_erased: match (opt("log_erased_by"), ts("log_erased_at")?) {
            (Some(by), Some(at)) => Some(LogErased { by, at }),
            _ => None,
        },
        concurrency: opt("concurrency"),
        approved_by: opt("approved_by"),
    })
}

/// The spec of a record written one field per attribute (before `spec` existed).
fn legacy_spec(fields: &HashMap<String, String>) -> Result<NewJob, QueueError> {
    let get = |k: &str| fields.get(k).map(String::as_str);
    let req =
        |k: &str| get(k).ok_or_else(|| QueueError::Protocol(format!("job record lacks field {k}")));
    let parse_err = |k: &str, e: String| QueueError::Protocol(format!("job field {k}: {e}"));
    let opt = |k: &str| get(k).filter(|v| !v.is_empty()).map(str::to_owned);
    Ok(NewJob {
        repo: req("repo")?.to_owned(),
        clone_url: req("clone_url")?.to_owned(),
        git_ref: req("git_ref")?.to_owned(),
        sha: req("sha")?.to_owned(),
        event: req("event")?.parse().map_err(|e| parse_err("event", e))?,
        pool: PoolName::new(req("pool")?).map_err(|e| parse_err("pool", e.to_string()))?,
        forge: match opt("forge") {
            Some(f) => Some(f.parse().map_err(|e| parse_err("forge", e))?),
            None => None,
        },
        pr_number: match opt("pr_number") {
            Some(n) => Some(n.parse().map_err(|_| parse_err("pr_number", n))?),
            None => None,
        },
        from_fork: get("from_fork") == Some("1"),
        sender: opt("sender"),
        delivery_id: opt("delivery_id"),
        env: match opt("env") {
            Some(e) => serde_json::from_str(&e).map_err(|e| parse_err("env", e.to_string()))?,
            None => Default::default(),
        },
        retry_of: opt("retry_of"),
        matrix_parent: None,
        target_branch: None,
        diff_base: None,
        schedule: None,
        needs: None,
        number: None,
        source_branch: None,
        pr_labels: Vec::new(),
        title: None,
        repo_url: None,
    })
}

fn is_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Rejects values that would corrupt keys or logs before anything is written.
pub(crate) fn validate(spec: &NewJob) -> Result<(), QueueError> {
    let bad = |what: &str, why: &str| Err(QueueError::Invalid(format!("{what} {why}")));
    if spec.repo.is_empty() || spec.repo.len() > 200 {
        return bad("repo", "must be 1-200 characters");
    }
    if spec
        .repo
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return bad("repo", "must not contain whitespace or control characters");
    }
    if spec.clone_url.is_empty() {
        return bad("clone_url", "is required");
    }
    if spec.git_ref.is_empty() || spec.git_ref.chars().any(|c| c.is_control()) {
        return bad(
            "git_ref",
            "must be a non-empty ref without control characters",
        );
    }
    if let Some(target) = &spec.target_branch
        && (target.is_empty() || target.len() > 255 || target.chars().any(|c| c.is_control()))
    {
        return bad(
            "target_branch",
            "must be 1-255 characters without control characters",
        );
    }
    if !is_sha(&spec.sha) {
        return bad("sha", "must be 40 or 64 hex digits");
    }
    // The agent gives it to git as an argument: only a full sha of the same object format.
    if let Some(base) = &spec.diff_base
        && !(is_sha(base) && base.len() == spec.sha.len())
    {
        return bad(
            "diff_base",
            "must be a commit sha like `sha`: as many hex digits (40 or 64)",
        );
    }
    // It names a Redis key and reaches steps' environment: the configuration's own rule.
    if let Some(name) = &spec.schedule
        && !is_schedule_name(name)
    {
        return bad(
            "schedule",
            "must be 1-100 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        );
    }
    Ok(())
}

/// `[a-z0-9][a-z0-9._-]*`, at most 100 characters: what `server.schedules` names may be.
fn is_schedule_name(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    name.len() <= 100
        && name.bytes().next().is_some_and(ok)
        && name
            .bytes()
            .all(|b| ok(b) || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use raibid_model::{Event, Forge, JobStatus, NewJob, PoolName};

    use super::{from_fields, spec_json, validate};

    fn spec() -> NewJob {
        NewJob {
            repo: "acme/app".into(),
            clone_url: "https://git.example/acme/app.git".into(),
            git_ref: "refs/pull/7/head".into(),
            sha: "a".repeat(40),
            event: Event::PullRequest,
            pool: PoolName::new("arm64").unwrap(),
            forge: Some(Forge::Gitea),
            pr_number: Some(7),
            from_fork: true,
            sender: Some("mallory".into()),
            delivery_id: Some("d-1".into()),
            env: [("A".to_owned(), "1".to_owned())].into(),
            retry_of: None,
            matrix_parent: None,
            target_branch: None,
            diff_base: None,
            schedule: None,
            needs: None,
            number: None,
            source_branch: None,
            pr_labels: Vec::new(),
            title: None,
            repo_url: None,
        }
    }

    #[test]
    fn a_new_record_reads_back_as_the_job_it_was_written_from() {
        let fields: HashMap<String, String> = [
            ("id", "01JD0000000000000000000000".to_owned()),
            ("spec", spec_json(&spec())),
            ("status", "queued".to_owned()),
            ("attempt", "0".to_owned()),
            ("created_at", "5".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let job = from_fields(&fields).unwrap();
        assert_eq!(job.spec, spec());
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.attempt, 0);
        assert_eq!(job.created_at.timestamp_millis(), 5);
        assert!(!job.cancel_requested);
    }

    /// Specs written before `matrix_parent` existed have no such key; a matrix parent's
    /// `children` field is a JSON array of ids.
    #[test]
    fn matrix_fields_are_optional_and_read_back() {
        let old_spec = spec_json(&spec());
        assert!(!old_spec.contains("matrix_parent"), "{old_spec}");
        let mut child = spec();
        child.matrix_parent = Some("01JD0000000000000000000001".into());
        let fields: HashMap<String, String> = [
            ("id", "01JD0000000000000000000000".to_owned()),
            ("spec", spec_json(&child)),
            ("status", "queued".to_owned()),
            ("attempt", "0".to_owned()),
            ("children", r#"["01JD0000000000000000000002"]"#.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let job = from_fields(&fields).unwrap();
        assert_eq!(job.spec, child);
        assert_eq!(job.children, ["01JD0000000000000000000002"]);
    }

    /// `diff_base` is read back when present, absent from specs written without one, and a
    /// full sha of the job's own object format or nothing: the agent hands it to git.
    #[test]
    fn diff_base_is_optional_and_must_be_a_sha_like_the_job_s() {
        let without = spec_json(&spec());
        assert!(!without.contains("diff_base"), "{without}");
        assert!(validate(&spec()).is_ok());
        let mut with = spec();
        with.diff_base = Some("B".repeat(40));
        let fields: HashMap<String, String> = [
            ("id", "01JD0000000000000000000000".to_owned()),
            ("spec", spec_json(&with)),
            ("status", "queued".to_owned()),
            ("attempt", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(from_fields(&fields).unwrap().spec, with);
        assert!(validate(&with).is_ok());
        for bad in [
            "b".repeat(39),
            "b".repeat(64),
            "-".repeat(40),
            format!("{}g", "b".repeat(39)),
            String::new(),
        ] {
            with.diff_base = Some(bad.clone());
            let err = validate(&with).unwrap_err().to_string();
            assert!(err.contains("diff_base"), "{bad}: {err}");
        }
    }

    #[test]
    fn schedule_is_optional_and_a_schedule_name() {
        assert!(!spec_json(&spec()).contains("schedule"));
        let mut nightly = spec();
        nightly.schedule = Some("nightly-1.x".into());
        assert!(validate(&nightly).is_ok());
        assert!(spec_json(&nightly).contains(r#""schedule":"nightly-1.x""#));
        for bad in ["", "-x", "Nightly", "a b", "a:b", &"a".repeat(101)] {
            nightly.schedule = Some(bad.to_owned());
            let err = validate(&nightly).unwrap_err().to_string();
            assert!(err.contains("schedule"), "{bad}: {err}");
        }
    }

    #[test]
    fn records_written_one_field_per_attribute_are_still_read() {
        let fields: HashMap<String, String> = [
            ("id", "01JD0000000000000000000000"),
            ("repo", "acme/app"),
            ("clone_url", "https://git.example/acme/app.git"),
            ("git_ref", "refs/pull/7/head"),
            ("sha", &"a".repeat(40)),
            ("event", "pull_request"),
            ("pool", "arm64"),
            ("forge", "gitea"),
            ("pr_number", "7"),
            ("from_fork", "1"),
            ("sender", "mallory"),
            ("delivery_id", "d-1"),
            ("env", r#"{"A":"1"}"#),
            ("status", "success"),
            ("attempt", "2"),
            ("created_at", "5"),
            ("cancel_requested", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let job = from_fields(&fields).unwrap();
        assert_eq!(job.spec, spec());
        assert_eq!(job.status, JobStatus::Success);
        assert_eq!(job.attempt, 2);
    }

    #[test]
    fn a_corrupt_spec_is_a_protocol_error_naming_the_field() {
        let fields: HashMap<String, String> = [
            ("id", "01JD0000000000000000000000"),
            ("spec", "{not json"),
            ("status", "queued"),
            ("attempt", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let err = from_fields(&fields).unwrap_err().to_string();
        assert!(err.contains("spec"), "{err}");
    }
}

#[cfg(test)]
mod steps_tests {
    use super::*;
    use raibid_model::StepStatus;

    fn step(name: &str, tail: &str) -> StepResult {
        StepResult {
            name: name.into(),
            status: StepStatus::Success,
            exit_code: Some(0),
            duration_ms: Some(1),
            tail: tail.into(),
        }
    }

    #[test]
    fn small_step_lists_are_kept_whole() {
        let steps = vec![step("a", "out\nmore"), step("b", "")];
        assert_eq!(steps_json(&steps), serde_json::to_string(&steps).unwrap());
    }

    /// Control characters are six bytes each in JSON: 50 steps of 20 KiB tails are ~6 MB.
    #[test]
    fn tails_give_way_oldest_first_to_keep_the_field_bounded() {
        let noisy = "\u{1}".repeat(1000) + "\n";
        let steps: Vec<StepResult> = (0..50)
            .map(|i| step(&format!("s{i}"), &noisy.repeat(20)))
            .collect();
        let json = steps_json(&steps);
        assert!(json.len() <= STEPS_MAX_BYTES, "{}", json.len());
        let back: Vec<StepResult> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 50, "every step is still listed");
        assert!(back[0].tail.is_empty());
        assert_eq!(back[49].tail, steps[49].tail, "the latest tail stays");
        // As much as fits is kept: one more tail would not have.
        let dropped = back.iter().filter(|s| s.tail.is_empty()).count();
        let mut one_more = back.clone();
        one_more[dropped - 1].tail = steps[dropped - 1].tail.clone();
        assert!(serde_json::to_string(&one_more).unwrap().len() > STEPS_MAX_BYTES);
    }

    #[test]
    fn steps_that_do_not_fit_without_tails_are_left_out_from_the_end() {
        let long = "n".repeat(200);
        let steps: Vec<StepResult> = (0..2000).map(|i| step(&format!("{i}{long}"), "")).collect();
        let json = steps_json(&steps);
        assert!(json.len() <= STEPS_MAX_BYTES, "{}", json.len());
        let back: Vec<StepResult> = serde_json::from_str(&json).unwrap();
        assert!(back.len() > 900 && back.len() < 2000, "{}", back.len());
        assert_eq!(back[..], steps[..back.len()]);
    }
}
