//! What every report shares: the machine line, latency percentiles, targets and plain tables.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The machine a figure was taken on, and how busy it was: a number without them cannot be
/// compared with anything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    pub arch: String,
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// 1, 5 and 15 minute load averages when the benchmark started; on a shared machine a
    /// load near the core count means the figures are pessimistic.
    pub load_average: [f64; 3],
}

impl Machine {
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| cpu_model(&c))
            .unwrap_or_else(|| "unknown cpu".into());
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| parse_loadavg(&l))
            .unwrap_or_default();
        Self {
            arch: std::env::consts::ARCH.to_owned(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            load_average,
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [one, five, fifteen] = self.load_average;
        write!(
            f,
            "{}, {} cores, {}; load average at start {one:.2} {five:.2} {fifteen:.2}",
            self.arch, self.cores, self.cpu
        )
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// Nearest-rank percentiles (the same definition as `raibid bench queue`), so that a p99
    /// is a latency that was actually observed.
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let ms = |p: f64| percentile(&sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        Self {
            samples: sorted.len(),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
        }
    }
}

/// The nearest-rank `p` percentile (0 < p <= 1) of `sorted`, which must be sorted.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of a few runs (nearest rank: the lower middle for an even count).
pub(crate) fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    percentile(&sorted, 0.5).unwrap_or_default()
}

/// One target from the issues, next to what was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl TargetCheck {
    pub(crate) fn at_least(name: &str, unit: &str, target: f64, measured: f64) -> Self {
        Self {
            name: name.to_owned(),
            target: format!(">= {} {unit}", fmt_num(target)),
            measured: format!("{} {unit}", fmt_num(measured)),
            met: measured >= target,
        }
    }

    pub(crate) fn below(name: &str, unit: &str, target: f64, measured: f64) -> Self {
        Self {
            name: name.to_owned(),
            target: format!("< {} {unit}", fmt_num(target)),
            measured: format!("{} {unit}", fmt_num(measured)),
            met: measured < target,
        }
    }
}

/// Three significant digits are all a benchmark on a shared machine can claim.
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) fn targets_table(targets: &[TargetCheck]) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.target.clone(),
                t.measured.clone(),
                if t.met { "met" } else { "NOT MET" }.to_owned(),
            ]
        })
        .collect();
    table(&["TARGET", "WANTED", "MEASURED", "VERDICT"], &rows)
}

pub(crate) fn latency_row(name: &str, l: &LatencySummary) -> Vec<String> {
    vec![
        name.to_owned(),
        l.samples.to_string(),
        format!("{:.1}", l.p50_ms),
        format!("{:.1}", l.p99_ms),
        format!("{:.1}", l.max_ms),
    ]
}

pub(crate) const LATENCY_HEADERS: [&str; 5] = ["LATENCY", "SAMPLES", "P50 MS", "P99 MS", "MAX MS"];

/// A left-aligned plain-text table, columns two spaces apart, ending in a newline.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Bytes as mebibytes, for memory figures.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_are_observed_values() {
        let samples = ms(&(1..=100).rev().collect::<Vec<_>>());
        let s = LatencySummary::of(&samples);
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
    }

    #[test]
    fn small_sets_and_empty_sets() {
        let s = LatencySummary::of(&ms(&[7]));
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (7.0, 7.0, 7.0));
        let s = LatencySummary::of(&[]);
        assert_eq!((s.samples, s.p50_ms), (0, 0.0));
        // p99 of 10 samples is the largest: there is no finer rank.
        assert_eq!(
            LatencySummary::of(&ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).p99_ms,
            10.0
        );
    }

    #[test]
    fn median_takes_the_lower_middle() {
        assert_eq!(median(&ms(&[30, 10, 20])), Duration::from_millis(20));
        assert_eq!(median(&ms(&[4, 1, 3, 2])), Duration::from_millis(2));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn targets_compare_in_the_right_direction() {
        assert!(TargetCheck::at_least("rate", "/s", 5000.0, 5000.0).met);
        assert!(!TargetCheck::at_least("rate", "/s", 5000.0, 4999.0).met);
        assert!(TargetCheck::below("p99", "ms", 20.0, 19.9).met);
        assert!(!TargetCheck::below("p99", "ms", 20.0, 20.0).met);
        assert_eq!(
            TargetCheck::below("p99", "ms", 20.0, 1.23456).measured,
            "1.23 ms"
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONG HEADER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A          LONG HEADER\nwide cell  x\ny          z\n");
    }

    #[test]
    fn machine_line_parses_proc_files() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags: x\n").as_deref(),
            Some("Intel(R) Xeon(R)")
        );
        assert_eq!(
            parse_loadavg("2.19 1.72 2.14 3/400 1234\n"),
            Some([2.19, 1.72, 2.14])
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }
}
