//! `artifacts: reports: junit:`: the JUnit XML files a job's steps wrote (cargo-nextest,
//! pytest, jest-junit, Maven's surefire, go-junit-report), read after the steps and summed up
//! on the job, as GitLab's test report summary is: how many test cases passed, failed and
//! were skipped, and which failed.
//!
//! The files are a step's output, so they are read as artifacts are packed: found without
//! following links, opened without following one, only regular files owned by the
//! workspace's owner, each at most [`MAX_REPORT_BYTES`]; and parsed without a DTD, so no
//! entity of a report expands into anything.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use raibid_model::{TestFailure, TestReport};
use tokio_util::sync::CancellationToken;

use crate::artifacts::{ArtifactsError, CHANGED, Packed, not_the_owners, open_as_seen, roots};

/// A report larger than this is left out: JUnit files of even large suites are a few MiB.
pub const MAX_REPORT_BYTES: u64 = 32 << 20;

/// At most this many files are read; the rest are left out (and counted in the notes).
pub const MAX_REPORTS: usize = 200;

/// What [`collect`] found: the summed report, if any file could be read, and what the log
/// should say about the others.
#[derive(Debug, Default)]
pub struct Collected {
    pub report: Option<TestReport>,
    pub notes: Vec<String>,
}

/// Reads the reports `paths` (plain paths or globs, as artifact paths) name in `workspace`.
/// Blocking; `stop` ends it between files.
pub fn collect(
    workspace: &Path,
    paths: &[String],
    stop: &CancellationToken,
) -> Result<Collected, ArtifactsError> {
    let owner = std::fs::symlink_metadata(workspace)
        .map_err(|source| ArtifactsError::Io {
            what: "reading",
            path: workspace.to_path_buf(),
            source,
        })?
        .uid();
    let mut found = Packed::default();
    let files = roots(workspace, paths, &mut found, stop)?;
    let mut collected = Collected::default();
    for (path, why) in found.skipped {
        collected.notes.push(format!("{path}: {why}"));
    }
    let mut report = TestReport::default();
    for (index, (name, on_disk)) in files.iter().enumerate() {
        if stop.is_cancelled() {
            return Err(ArtifactsError::Stopped);
        }
        if index == MAX_REPORTS {
            collected.notes.push(format!(
                "{} more reports left out: at most {MAX_REPORTS} are read",
                files.len() - MAX_REPORTS
            ));
            break;
        }
        let name = name.display();
        match read(on_disk, owner).and_then(|xml| add(&xml, &mut report)) {
            Ok(()) => report.files += 1,
            Err(why) => collected.notes.push(format!("{name} left out: {why}")),
        }
    }
    if report.files > 0 {
        collected.report = Some(report);
    }
    Ok(collected)
}

/// The text of a report file, if it is one a step of this workspace wrote.
fn read(path: &Path, owner: u32) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("a directory: name the XML files, or a glob such as dir/*.xml".into());
    }
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != owner {
        return Err(not_the_owners(&meta));
    }
    let (file, opened) = open_as_seen(path, &meta)
        .map_err(|e| e.to_string())?
        .ok_or(CHANGED)?;
    if opened.len() > MAX_REPORT_BYTES {
        return Err(format!("larger than {} MiB", MAX_REPORT_BYTES >> 20));
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// Adds the test cases of one JUnit XML document to `report`. Counts come from the test cases
/// themselves, not from the suites' `tests`/`failures` attributes, which tools fill in
/// unevenly. A case with `<failure>` or `<error>` failed; one with `<skipped>` was skipped.
pub fn add(xml: &str, report: &mut TestReport) -> Result<(), String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, options)
        .map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        return Err(format!(
            "not a JUnit report: its root is <{}>, not <testsuites> or <testsuite>",
            root.tag_name().name()
        ));
    }
    for case in root.descendants().filter(|n| n.has_tag_name("testcase")) {
        report.tests += 1;
        if let Some(seconds) = case
            .attribute("time")
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t >= 0.0)
        {
            report.seconds += seconds;
        }
        let failure = case
            .children()
            .find(|c| c.has_tag_name("failure") || c.has_tag_name("error"));
        if let Some(failure) = failure {
            report.failed += 1;
            if report.failures.len() < TestReport::MAX_FAILURES {
                let suite = case
                    .attribute("classname")
                    .filter(|c| !c.is_empty())
                    .or_else(|| {
                        case.ancestors()
                            .find(|a| a.has_tag_name("testsuite"))
                            .and_then(|s| s.attribute("name"))
                    })
                    .unwrap_or_default();
                let message = failure
                    .attribute("message")
                    .filter(|m| !m.trim().is_empty())
                    .or_else(|| failure.text())
                    .unwrap_or_default();
                report.failures.push(TestFailure {
                    suite: shorten(suite, 200),
                    name: shorten(case.attribute("name").unwrap_or("(unnamed)"), 300),
                    message: shorten(
                        message
                            .lines()
                            .map(str::trim)
                            .find(|l| !l.is_empty())
                            .unwrap_or_default(),
                        300,
                    ),
                });
            }
        } else if case.children().any(|c| c.has_tag_name("skipped")) {
            report.skipped += 1;
        }
    }
    Ok(())
}

/// At most `max` characters, an ellipsis marking a cut, without control characters: names
/// and messages are a step's output shown in terminals (`raibid job show`, the dashboard),
/// where an escape sequence could rewrite the screen or the clipboard.
fn shorten(text: &str, max: usize) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo-nextest's JUnit output (`[profile.ci.junit]`), shortened.
    const NEXTEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="4" failures="1" errors="0" uuid="x" timestamp="2026-12-05T12:00:00Z" time="1.5">
  <testsuite name="app" tests="4" disabled="1" errors="0" failures="1">
    <testcase name="parses::a_list" classname="app" timestamp="2026-12-05T12:00:00Z" time="0.25"/>
    <testcase name="parses::a_map" classname="app" timestamp="2026-12-05T12:00:00Z" time="0.5">
      <failure type="test failure">thread 'parses::a_map' panicked at src/lib.rs:10:5:
assertion `left == right` failed</failure>
      <system-out>running 1 test</system-out>
    </testcase>
    <testcase name="slow" classname="app" time="0"><skipped/></testcase>
    <testcase name="flaky" classname="app" time="0.75">
      <flakyFailure message="first try" type="test failure"/>
    </testcase>
  </testsuite>
</testsuites>"#;

    /// pytest's `--junitxml` output: a lone `<testsuite>` root, `<error>` for a fixture that
    /// broke, messages in attributes.
    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuite name="pytest" errors="1" failures="0" skipped="0" tests="2" time="0.1">
  <testcase classname="tests.test_db" name="test_connect" time="0.05">
    <error message="failed on setup with &quot;ConnectionRefusedError&quot;">trace</error>
  </testcase>
  <testcase classname="tests.test_db" name="test_query" time="0.05"/>
</testsuite>"#;

    #[test]
    fn cases_are_counted_from_common_tools_reports() {
        let mut report = TestReport::default();
        add(NEXTEST, &mut report).unwrap();
        add(PYTEST, &mut report).unwrap();
        assert_eq!(
            (report.tests, report.failed, report.skipped, report.passed()),
            (6, 2, 1, 3)
        );
        assert!((report.seconds - 1.6).abs() < 1e-9, "{}", report.seconds);
        assert_eq!(
            report.failures,
            [
                TestFailure {
                    suite: "app".into(),
                    name: "parses::a_map".into(),
                    message: "thread 'parses::a_map' panicked at src/lib.rs:10:5:".into(),
                },
                TestFailure {
                    suite: "tests.test_db".into(),
                    name: "test_connect".into(),
                    message: "failed on setup with \"ConnectionRefusedError\"".into(),
                },
            ]
        );
        assert_eq!(report.summary(), "6 tests: 3 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn what_is_not_a_report_is_refused_and_entities_do_not_expand() {
        let mut report = TestReport::default();
        for (xml, says) in [
            ("<html><body/></html>", "not a JUnit report"),
            ("<testsuite>", "not well-formed"),
            (
                "<!DOCTYPE t [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><testsuite name=\"&b;\"/>",
                "not well-formed",
            ),
        ] {
            let err = add(xml, &mut report).unwrap_err();
            assert!(err.contains(says), "{xml}: {err}");
        }
        assert_eq!(report, TestReport::default());
        // Only the first failures are named; every one is counted.
        let many: String = (0..30)
            .map(|i| format!("<testcase name=\"t{i}\"><failure message=\"m\"/></testcase>"))
            .collect();
        add(
            &format!("<testsuite name=\"s\">{many}</testsuite>"),
            &mut report,
        )
        .unwrap();
        assert_eq!(report.failed, 30);
        assert_eq!(report.failures.len(), TestReport::MAX_FAILURES);
        assert_eq!(report.failures[0].suite, "s");
        // A terminal's control sequence (C1's CSI, which XML allows) reaches no terminal.
        let mut report = TestReport::default();
        add(
            "<testsuite><testcase name=\"a&#155;31mb&#10;c\"><failure/></testcase></testsuite>",
            &mut report,
        )
        .unwrap();
        assert_eq!(report.failures[0].name, "a 31mb c");
    }

    #[test]
    fn files_are_found_read_and_left_out_as_artifacts_are() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path();
        std::fs::create_dir_all(dir.join("target/nextest/ci")).unwrap();
        std::fs::create_dir_all(dir.join("py")).unwrap();
        std::fs::write(dir.join("target/nextest/ci/junit.xml"), NEXTEST).unwrap();
        std::fs::write(dir.join("py/junit.xml"), PYTEST).unwrap();
        std::fs::write(dir.join("py/notes.txt"), "x").unwrap();
        std::fs::write(dir.join("broken.xml"), "<testsuite").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("linked.xml")).unwrap();
        let stop = CancellationToken::new();
        let paths = [
            "**/junit.xml".to_owned(),
            "broken.xml".to_owned(),
            "linked.xml".to_owned(),
            "missing.xml".to_owned(),
        ];
        let collected = collect(dir, &paths, &stop).unwrap();
        let report = collected.report.expect("two reports read");
        assert_eq!((report.files, report.tests, report.failed), (2, 6, 2));
        let notes = collected.notes.join("\n");
        for says in [
            "broken.xml left out: not well-formed XML",
            "linked.xml: ",
            "missing.xml: ",
        ] {
            assert!(notes.contains(says), "{says:?} in\n{notes}");
        }
        let directory = collect(dir, &["py".to_owned()], &stop).unwrap();
        assert!(directory.report.is_none());
        assert_eq!(
            directory.notes,
            ["py left out: a directory: name the XML files, or a glob such as dir/*.xml"]
        );
        // Nothing readable: no report at all.
        let none = collect(dir, &["missing.xml".to_owned()], &stop).unwrap();
        assert!(none.report.is_none());
    }
}
