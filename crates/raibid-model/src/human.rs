//! Short human renderings of durations, shared by the dashboard and the server's web pages so
//! that the same quantity looks the same wherever a person reads it.

/// `42s`, `3m05s`, `2h07m`, `4d03h`: two units at most, because a table cell has no room
/// for more and the second unit is all the precision a glance needs.
pub fn duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    let (m, s) = (secs / 60, secs % 60);
    let (h, m) = (m / 60, m % 60);
    let (days, h) = (h / 24, h % 24);
    if days > 0 {
        format!("{days}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// [`duration`], with tenths of a second below ten seconds, where whole seconds would make
/// every quick step `0s`: for a step's or a job's own time rather than an age.
pub fn precise_duration(d: chrono::Duration) -> String {
    if d.num_seconds() < 10 {
        format!("{:.1}s", d.num_milliseconds().max(0) as f64 / 1000.0)
    } else {
        duration(d)
    }
}

/// Milliseconds as [`duration`] renders them.
pub fn millis(ms: u64) -> String {
    duration(from_millis(ms))
}

/// Milliseconds as [`precise_duration`] renders them.
pub fn precise_millis(ms: u64) -> String {
    precise_duration(from_millis(ms))
}

fn from_millis(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_units_at_most() {
        let secs = chrono::Duration::seconds;
        assert_eq!(duration(secs(0)), "0s");
        assert_eq!(duration(secs(42)), "42s");
        assert_eq!(duration(secs(185)), "3m05s");
        assert_eq!(duration(secs(2 * 3600 + 7 * 60 + 59)), "2h07m");
        assert_eq!(duration(secs(4 * 86400 + 3 * 3600)), "4d03h");
        assert_eq!(duration(secs(-5)), "0s", "clock skew is not negative time");
        assert_eq!(millis(1_500), "1s");
        assert_eq!(precise_millis(1_500), "1.5s");
        assert_eq!(
            precise_duration(chrono::Duration::milliseconds(130)),
            "0.1s"
        );
        assert_eq!(
            precise_duration(chrono::Duration::milliseconds(9_940)),
            "9.9s"
        );
        assert_eq!(precise_duration(secs(-1)), "0.0s");
        assert_eq!(precise_duration(secs(185)), "3m05s");
    }
}
