//! `raibid repo list`: the repositories with jobs and their newest builds; `raibid repo show
//! <owner/name>`: a repository's branches, pull requests and tags, each with its newest build.
//! What `GET /api/v1/repos` and `GET /api/v1/repos/{owner}/{name}` say, as tables or JSON.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use raibid_client::{Build, RefBuild, RepoEntry, RepoOverview};
use raibid_config::Config;

use crate::cli::{Output, RepoArgs, RepoCommand};
use crate::output::{ago, table};

pub async fn run(config: &Config, args: RepoArgs) -> anyhow::Result<ExitCode> {
    let client = super::api_client(config, &args.api)?;
    let json = args.api.output == Output::Json;
    match args.command {
        RepoCommand::List => {
            let repos = client.repos().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&repos)?);
            } else if repos.is_empty() {
                println!("no repository has jobs");
            } else {
                print!("{}", repos_table(&repos, Utc::now()));
            }
        }
        RepoCommand::Show { repo } => {
            let overview = client.repo(&repo).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&overview)?);
            } else {
                print!("{}", overview_text(&overview, Utc::now()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `#12`, or the job id of a job without a pipeline number.
fn build_name(build: &Build) -> String {
    build
        .job
        .spec
        .number
        .map_or_else(|| build.job.id.clone(), |n| format!("#{n}"))
}

/// The status, with a combined status's words.
fn status(build: &Build) -> String {
    match &build.description {
        Some(words) => format!("{} ({words})", build.status),
        None => build.status.to_string(),
    }
}

fn repos_table(repos: &[RepoEntry], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = repos
        .iter()
        .map(|r| match &r.latest {
            Some(b) => vec![
                r.repo.clone(),
                status(b),
                build_name(b),
                b.job.spec.git_ref.trim_start_matches("refs/").to_owned(),
                b.job.id.clone(),
                ago(b.job.created_at, now),
            ],
            None => vec![
                r.repo.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                ago(r.last_queued_at, now),
            ],
        })
        .collect();
    table(&["REPO", "STATUS", "BUILD", "REF", "JOB", "QUEUED"], &rows)
}

/// A table's heading, its refs, and how each ref's name is written.
type Section<'a> = (&'static str, &'a [RefBuild], fn(&RefBuild) -> String);

fn overview_text(overview: &RepoOverview, now: DateTime<Utc>) -> String {
    let mut text = String::new();
    let sections: [Section; 3] = [
        ("BRANCH", &overview.branches, |r| r.name.clone()),
        ("PULL REQUEST", &overview.pull_requests, |r| {
            let spec = &r.build.job.spec;
            match (&spec.source_branch, &spec.target_branch) {
                (Some(from), Some(to)) => format!("#{} {from} -> {to}", r.name),
                (None, Some(to)) => format!("#{} -> {to}", r.name),
                _ => format!("#{}", r.name),
            }
        }),
        ("TAG", &overview.tags, |r| r.name.clone()),
    ];
    for (heading, refs, name) in sections {
        if refs.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push('\n');
        }
        let rows: Vec<Vec<String>> = refs
            .iter()
            .map(|r| {
                vec![
                    name(r),
                    status(&r.build),
                    build_name(&r.build),
                    r.build.job.spec.sha.chars().take(10).collect(),
                    r.build.job.id.clone(),
                    ago(r.build.job.created_at, now),
                ]
            })
            .collect();
        text.push_str(&table(
            &[heading, "STATUS", "BUILD", "SHA", "JOB", "QUEUED"],
            &rows,
        ));
    }
    if !overview.complete {
        text.push_str(&format!(
            "\nread the {} newest jobs of {}; refs built only before them are not listed \
             (raibid job list --repo {} has them)\n",
            overview.scanned, overview.repo, overview.repo
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use raibid_model::{Event, Job, JobStatus, NewJob};

    use super::*;

    fn build(git_ref: &str, status: JobStatus, description: Option<&str>) -> Build {
        let mut spec = NewJob::new(
            "acme/app",
            "https://git.example/acme/app.git",
            git_ref,
            "a".repeat(40),
            Event::Push,
        );
        spec.number = Some(12);
        let now = Utc::now();
        Build {
            status,
            description: description.map(Into::into),
            job: Job::queued("01JOB", spec, now - chrono::Duration::minutes(3)),
        }
    }

    #[test]
    fn a_section_per_kind_of_ref_with_what_a_combined_status_says() {
        let mut pr = build("refs/pull/7/head", JobStatus::Running, None);
        pr.job.spec.source_branch = Some("fix".into());
        pr.job.spec.target_branch = Some("main".into());
        let overview = RepoOverview {
            repo: "acme/app".into(),
            branches: vec![RefBuild {
                name: "main".into(),
                build: build(
                    "refs/heads/main",
                    JobStatus::Failure,
                    Some("1 of 2 variants failed: A=2"),
                ),
            }],
            pull_requests: vec![RefBuild {
                name: "7".into(),
                build: pr,
            }],
            tags: Vec::new(),
            scanned: 1000,
            complete: false,
        };
        let text = overview_text(&overview, Utc::now());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("BRANCH"), "{text}");
        assert!(
            lines[1].starts_with("main")
                && lines[1].contains("failure (1 of 2 variants failed: A=2)")
                && lines[1].contains("#12")
                && lines[1].contains("aaaaaaaaaa ")
                && lines[1].ends_with("3m00s ago"),
            "{text}"
        );
        assert!(lines[3].starts_with("PULL REQUEST"), "{text}");
        assert!(lines[4].starts_with("#7 fix -> main"), "{text}");
        assert!(!text.contains("TAG"), "{text}");
        assert!(
            text.contains("read the 1000 newest jobs of acme/app"),
            "{text}"
        );
    }
}
