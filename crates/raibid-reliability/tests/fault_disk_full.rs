//! A full disk under the agent's workspaces: an 8 MiB tmpfs (mounted by the test, which runs as
//! root in CI). A step that fills it fails with the system's own message in its log, a checkout
//! that does not fit fails as a checkout error, and the same agent process goes on to run the
//! next job, leaving the disk empty again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use raibid_client::{Client, SubmitJob};
use raibid_model::{Job, JobStatus};
use raibid_reliability::{Settings, Stack, exclusive, report, settled};
use raibid_testkit::GitRepo;
use serde_json::json;

/// An 8 MiB tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("raibid-rel-disk-")
            .tempdir()
            .unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root); run this test as root"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn run(client: &Client, url: &str, sha: &str, fill: bool) -> Job {
    let job = client
        .submit(&SubmitJob {
            repo: "acme/disk".into(),
            clone_url: url.into(),
            sha: Some(sha.into()),
            env: [("FILL".to_owned(), u8::from(fill).to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = client.job(&job.id).await.unwrap();
        if job.status.is_final() {
            return job;
        }
        assert!(Instant::now() < deadline, "{} did not finish", job.id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log(client: &Client, id: &str) -> String {
    client.logs(id, None).await.unwrap().text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_workspace_disk_fails_the_job_clearly_and_the_agent_goes_on() {
    let _machine = exclusive();
    let disk = SmallDisk::mount();
    let settings = Settings {
        agent_yaml: format!("  workspace_dir: \"{}\"\n", disk.path().display()),
        ..Settings::default()
    };
    let mut stack = Stack::start(&settings, 1, 1);
    let agent_pid = stack.agents[0].pid();
    let client = stack.client();

    let repo = GitRepo::new();
    let small = repo.commit(
        &[(
            ".raibid.yaml",
            "steps:\n  - name: write\n    run: |\n      \
             if [ \"$FILL\" = 1 ]; then head -c 20000000 /dev/zero > big.bin; fi\n      \
             echo wrote\n",
        )],
        "a pipeline that may fill the disk",
    );
    // Not zeros: git writes runs of zeros as holes, which take no space.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..10 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(repo.path().join("big.bin"), noise).unwrap();
    repo.git(&["add", "big.bin"]);
    let too_big = repo.commit(&[], "a 10 MiB file that does not fit the workspace disk");

    let filled = run(&client, &repo.url(), &small, true).await;
    assert_eq!(filled.status, JobStatus::Failure, "{filled:?}");
    let filled_log = log(&client, &filled.id).await;
    assert!(
        filled_log.contains("No space left on device"),
        "the step's own error is in the log:\n{filled_log}"
    );

    let fine = run(&client, &repo.url(), &small, false).await;
    assert_eq!(fine.status, JobStatus::Success, "{fine:?}");

    let unfit = run(&client, &repo.url(), &too_big, false).await;
    assert_eq!(unfit.status, JobStatus::Error, "{unfit:?}");
    let reason = unfit.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("checkout failed")
            && reason.contains("unable to write file big.bin")
            && reason.contains("diskspace"),
        "the reason says why: {reason}"
    );

    let after = run(&client, &repo.url(), &small, false).await;
    assert_eq!(after.status, JobStatus::Success, "{after:?}");

    assert!(
        stack.agents[0].running(),
        "the agent survived\n{}",
        stack.logs()
    );
    assert_eq!(stack.agents[0].pid(), agent_pid, "the same agent process");
    assert!(
        settled(Duration::from_secs(30), || disk.entries().is_empty()).await,
        "every workspace was removed: {:?}",
        disk.entries()
    );
    report(
        "disk_full",
        json!({
            "disk_mib": 8,
            "step_filling_disk": filled.status,
            "checkout_not_fitting": unfit.status,
            "jobs_after_each": [fine.status, after.status],
            "agent_restarts": 0,
        }),
    );
}
