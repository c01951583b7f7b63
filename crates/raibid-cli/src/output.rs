//! Human tables by default, JSON with `--output json`.

use chrono::{DateTime, Utc};

/// Left-aligned columns sized to their content.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Compact durations for tables: `0.4s`, `15s`, `2m05s`, `1h02m`, `2d03h`.
pub use raibid_model::human::precise_duration as duration;

pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", duration(now - t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["ID", "STATUS"], &[vec!["a".into(), "success".into()]]);
        assert_eq!(t, "ID  STATUS\na   success\n");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(duration(chrono::Duration::milliseconds(420)), "0.4s");
        assert_eq!(duration(chrono::Duration::seconds(15)), "15s");
        assert_eq!(duration(chrono::Duration::seconds(125)), "2m05s");
        assert_eq!(duration(chrono::Duration::seconds(3720)), "1h02m");
    }
}
