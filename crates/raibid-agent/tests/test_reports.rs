//! `artifacts: reports: junit:` end to end: a real agent loop on a real queue runs a job whose
//! step writes a JUnit report (as cargo-nextest or pytest would) and fails; the report's
//! summary lands on the job's record and in its log, without any registry.

use raibid_model::JobStatus;
use raibid_testkit::GitRepo;

mod support;
use support::Harness;

const PIPELINE: &str = r#"
artifacts:
  reports:
    junit: "**/junit*.xml"
steps:
  - name: test
    run: |
      mkdir -p target/nextest/ci
      cat > target/nextest/ci/junit.xml <<'XML'
      <testsuites>
        <testsuite name="app">
          <testcase classname="app" name="adds" time="0.5"/>
          <testcase classname="app" name="divides" time="0.25">
            <failure message="attempt to divide by zero">panicked at src/lib.rs:9:5</failure>
          </testcase>
          <testcase classname="app" name="slow"><skipped/></testcase>
        </testsuite>
      </testsuites>
      XML
      echo '<testsuite name="py"><testcase name="t" classname="m"/></testsuite>' > junit-py.xml
      echo 'not xml' > junit-broken.xml
      exit 1
"#;

#[tokio::test]
async fn a_failing_job_records_what_its_junit_reports_say() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let sha = repo.commit(&[(".raibid.yaml", PIPELINE)], "tests");
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Failure, "{log}");
    let tests = job.tests.expect("the report's summary is on the job");
    assert_eq!(
        (
            tests.files,
            tests.tests,
            tests.failed,
            tests.skipped,
            tests.passed()
        ),
        (2, 4, 1, 1, 2),
        "{log}"
    );
    assert!((tests.seconds - 0.75).abs() < 1e-9);
    assert_eq!(tests.failures.len(), 1);
    assert_eq!(tests.failures[0].name, "divides");
    assert_eq!(tests.failures[0].message, "attempt to divide by zero");
    for line in [
        "tests: junit-broken.xml left out: not well-formed XML",
        "tests: 4 tests: 2 passed, 1 failed, 1 skipped (2 reports, 0.8s)",
        "tests: failed: app divides: attempt to divide by zero",
    ] {
        assert!(log.contains(line), "{line:?} in\n{log}");
    }
}

#[tokio::test]
async fn without_a_readable_report_the_job_records_none() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline =
        "artifacts:\n  reports:\n    junit: [missing.xml]\nsteps:\n  - name: t\n    run: 'true'\n";
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "no report");
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert_eq!(job.tests, None);
    assert!(log.contains("tests: no report could be read"), "{log}");
}

#[tokio::test]
async fn a_pipeline_that_ran_nothing_reads_no_report() {
    let h = Harness::new();
    let repo = GitRepo::new();
    let pipeline = "when: { branch: release }\nartifacts:\n  reports:\n    junit: [report.xml]\nsteps:\n  - name: t\n    run: 'true'\n";
    let sha = repo.commit(&[(".raibid.yaml", pipeline)], "skipped");
    let (job, log) = h.run(&repo.url(), &sha).await;
    assert_eq!(job.status, JobStatus::Success, "{log}");
    assert_eq!(job.tests, None);
    assert!(!log.contains("tests:"), "{log}");
}
