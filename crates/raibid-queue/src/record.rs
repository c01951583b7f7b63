//! A job as Redis hash fields.
//!
//! Flat fields (rather than one JSON blob) let the Lua scripts change `status`, `entry` and
//! `attempt` without a JSON codec, and keep each state change a single atomic script.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use raibid_model::{Job, JobStatus, NewJob, PoolName};

use crate::QueueError;

pub(crate) fn new_fields(id: &str, spec: &NewJob, now_ms: i64) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("id", id.to_owned()),
        ("repo", spec.repo.clone()),
        ("clone_url", spec.clone_url.clone()),
        ("git_ref", spec.git_ref.clone()),
        ("sha", spec.sha.clone()),
        ("event", spec.event.as_str().to_owned()),
        ("pool", spec.pool.to_string()),
        ("from_fork", bool_str(spec.from_fork).to_owned()),
        ("status", JobStatus::Queued.as_str().to_owned()),
        ("attempt", "0".to_owned()),
        ("created_at", now_ms.to_string()),
        ("cancel_requested", "0".to_owned()),
        ("log_bytes", "0".to_owned()),
    ];
    if let Some(forge) = spec.forge {
        f.push(("forge", forge.as_str().to_owned()));
    }
    if let Some(n) = spec.pr_number {
        f.push(("pr_number", n.to_string()));
    }
    if let Some(s) = &spec.sender {
        f.push(("sender", s.clone()));
    }
    if let Some(d) = &spec.delivery_id {
        f.push(("delivery_id", d.clone()));
    }
    if !spec.env.is_empty() {
        f.push((
            "env",
            serde_json::to_string(&spec.env).expect("map serializes"),
        ));
    }
    if let Some(r) = &spec.retry_of {
        f.push(("retry_of", r.clone()));
    }
    f
}

fn bool_str(b: bool) -> &'static str {
    if b { "1" } else { "0" }
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

    let spec = NewJob {
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
    };
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
    })
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
    let sha_ok =
        matches!(spec.sha.len(), 40 | 64) && spec.sha.bytes().all(|b| b.is_ascii_hexdigit());
    if !sha_ok {
        return bad("sha", "must be 40 or 64 hex digits");
    }
    Ok(())
}
