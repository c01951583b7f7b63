//! Short human renderings of times and statuses, shared by every screen so that the same
//! quantity always looks the same.

use chrono::{DateTime, Utc};
use raibid_model::{JobStatus, StepStatus};
use ratatui::style::{Color, Modifier, Style};

pub(crate) use raibid_model::human::{duration, millis};

/// How long ago `at` was, seen from `now`.
pub(crate) fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", duration(now - at))
}

/// Colour by outcome, so a wall of jobs can be read at a glance: green passed, red failed,
/// yellow waiting (bold: waiting for a person), cyan busy, grey stopped on purpose.
pub(crate) fn status_style(status: JobStatus) -> Style {
    match status {
        JobStatus::Blocked => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        JobStatus::Queued => Style::new().fg(Color::Yellow),
        JobStatus::Running => Style::new().fg(Color::Cyan),
        JobStatus::Success => Style::new().fg(Color::Green),
        JobStatus::Failure => Style::new().fg(Color::Red),
        JobStatus::Error => Style::new().fg(Color::Magenta),
        JobStatus::Cancelled | JobStatus::Skipped => Style::new().fg(Color::DarkGray),
        JobStatus::Dead => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

pub(crate) fn step_status(status: StepStatus) -> (&'static str, Style) {
    match status {
        StepStatus::Pending => ("pending", Style::new().fg(Color::DarkGray)),
        StepStatus::Running => ("running", Style::new().fg(Color::Cyan)),
        StepStatus::Success => ("success", Style::new().fg(Color::Green)),
        StepStatus::Failure => ("failure", Style::new().fg(Color::Red)),
        StepStatus::Skipped => ("skipped", Style::new().fg(Color::DarkGray)),
        StepStatus::Cancelled => ("cancelled", Style::new().fg(Color::DarkGray)),
    }
}

/// The readable part of a git ref: the branch or tag name, else the ref as given.
pub(crate) fn short_ref(git_ref: &str) -> &str {
    git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref)
}

/// The last `n` characters of a ULID: its random part, which tells neighbouring jobs apart
/// where the timestamp prefix would be identical.
pub(crate) fn short_id(id: &str, n: usize) -> &str {
    let start = id.len().saturating_sub(n);
    id.get(start..).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_ids_shorten() {
        assert_eq!(short_ref("refs/heads/main"), "main");
        assert_eq!(short_ref("refs/tags/v1"), "v1");
        assert_eq!(short_ref("refs/pull/3/head"), "refs/pull/3/head");
        assert_eq!(short_id("01HZXABCDEFGH", 4), "EFGH");
        assert_eq!(short_id("ab", 4), "ab");
    }
}
