//! Several pipelines in one repository: the files of `.raibid/`, one workflow each, as
//! Woodpecker runs the files of `.woodpecker/` and Gitea Actions those of `.gitea/workflows/`.
//!
//! Only names are decided here (which entries are workflows, what each is called); reading
//! the files is the caller's, since the agent reads a checkout without following its links.

use std::collections::BTreeMap;

/// The directory whose `*.yaml` and `*.yml` files are one workflow each, at the repository
/// root. Used when there is no [`crate::PIPELINE_FILE`].
pub const PIPELINE_DIR: &str = ".raibid";

/// Woodpecker's directory of workflows, read when a repository has neither
/// [`crate::PIPELINE_FILE`] nor [`PIPELINE_DIR`], so that a repository moving from Woodpecker
/// runs as it is. Woodpecker's order: this directory first, then [`WOODPECKER_FILES`].
pub const WOODPECKER_DIR: &str = ".woodpecker";

/// Woodpecker's single pipeline files, in the order Woodpecker looks for them.
pub const WOODPECKER_FILES: [&str; 2] = [".woodpecker.yaml", ".woodpecker.yml"];

/// The most workflow files a repository may have: each becomes a job (or a matrix of them)
/// for every push, so the bound keeps one push from flooding the queue, like
/// [`crate::MAX_VARIANTS`] does for one matrix.
pub const MAX_WORKFLOWS: usize = 64;

/// The longest workflow name: it is part of commit-status contexts, which forges cap at 255
/// characters, beside a matrix variant's name.
pub const MAX_WORKFLOW_NAME_LEN: usize = 64;

/// One workflow file of [`PIPELINE_DIR`] (or [`WOODPECKER_DIR`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFile {
    /// The file's name without `.yaml`/`.yml`: the job's `RAIBID_WORKFLOW` and
    /// `CI_WORKFLOW_NAME`, and the last part of its commit-status context.
    pub name: String,
    /// `.raibid/<file>`, relative to the repository root: what errors name.
    pub path: String,
}

impl WorkflowFile {
    /// The directory it is in: [`PIPELINE_DIR`] or [`WOODPECKER_DIR`].
    pub fn dir(&self) -> &str {
        self.path.split_once('/').map_or("", |(dir, _)| dir)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error(
        "{dir}/{file}: {name:?} is not a valid workflow name: use at most \
         {MAX_WORKFLOW_NAME_LEN} letters, digits, '.', '_' and '-', starting with a letter or digit"
    )]
    BadName {
        dir: &'static str,
        file: String,
        name: String,
    },
    #[error("{dir}/{first} and {dir}/{second} are both workflow {name:?}; keep one")]
    SameName {
        dir: &'static str,
        name: String,
        first: String,
        second: String,
    },
    #[error("{dir}/ has {count} workflow files; at most {MAX_WORKFLOWS} are allowed")]
    TooMany { dir: &'static str, count: usize },
}

/// The workflows among `entries`, the names of the regular files directly in
/// [`PIPELINE_DIR`], sorted by name. Files that are not `*.yaml` or `*.yml` (a README, a
/// script the steps call) are not workflows. Empty when there is none.
pub fn workflow_files<I, S>(entries: I) -> Result<Vec<WorkflowFile>, WorkflowError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    workflow_files_in(PIPELINE_DIR, entries)
}

/// [`workflow_files`] of `dir`: [`PIPELINE_DIR`] or [`WOODPECKER_DIR`].
pub fn workflow_files_in<I, S>(
    dir: &'static str,
    entries: I,
) -> Result<Vec<WorkflowFile>, WorkflowError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut files: Vec<String> = entries.into_iter().map(|e| e.as_ref().to_owned()).collect();
    // `a.yaml` before `a.yml` whatever order the directory lists them in, so the error below
    // names them the same way every time.
    files.sort();
    for file in files {
        let Some(name) = file
            .strip_suffix(".yaml")
            .or_else(|| file.strip_suffix(".yml"))
        else {
            continue;
        };
        if !valid_name(name) {
            return Err(WorkflowError::BadName {
                dir,
                file: file.clone(),
                name: name.to_owned(),
            });
        }
        if let Some(first) = found.get(name) {
            return Err(WorkflowError::SameName {
                dir,
                name: name.to_owned(),
                first: first.clone(),
                second: file,
            });
        }
        found.insert(name.to_owned(), file);
    }
    if found.len() > MAX_WORKFLOWS {
        return Err(WorkflowError::TooMany {
            dir,
            count: found.len(),
        });
    }
    Ok(found
        .into_iter()
        .map(|(name, file)| WorkflowFile {
            path: format!("{dir}/{file}"),
            name,
        })
        .collect())
}

/// Checks the workflows' `depends_on` (`deps[i]` is what workflow `names[i]` names): every
/// name must be another workflow, and no workflow may wait for itself through others. The
/// workflows' indexes in an order where each comes after those it depends on (the order
/// their jobs are queued in, as a waiting job names the ids of those it waits for).
pub fn workflow_order(names: &[&str], deps: &[&[String]]) -> Result<Vec<usize>, String> {
    let index = |name: &str| names.iter().position(|n| *n == name);
    for (i, list) in deps.iter().enumerate() {
        for dep in list.iter() {
            match index(dep) {
                Some(j) if j == i => {
                    return Err(format!(
                        "workflow {:?} depends on itself; remove it from its `depends_on`",
                        names[i]
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(format!(
                        "workflow {:?} depends on {dep:?}, which is not one of the \
                         workflows ({})",
                        names[i],
                        names.join(", ")
                    ));
                }
            }
        }
    }
    let mut order = Vec::with_capacity(names.len());
    let mut placed = vec![false; names.len()];
    while order.len() < names.len() {
        let ready: Vec<usize> = (0..names.len())
            .filter(|&i| !placed[i])
            .filter(|&i| deps[i].iter().all(|d| index(d).is_some_and(|j| placed[j])))
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = (0..names.len())
                .filter(|&i| !placed[i])
                .map(|i| names[i])
                .collect();
            return Err(format!(
                "the workflows {} wait for each other through `depends_on`, so none of them \
                 could ever start",
                cycle.join(", ")
            ));
        }
        for i in ready {
            placed[i] = true;
            order.push(i);
        }
    }
    Ok(order)
}

/// Whether `name` may name a workflow: it ends up in a commit-status context, a delivery id
/// and an environment value, where `/`, `,`, spaces or control characters would be ambiguous.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_WORKFLOW_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[WorkflowFile]) -> Vec<(&str, &str)> {
        files
            .iter()
            .map(|f| (f.name.as_str(), f.path.as_str()))
            .collect()
    }

    #[test]
    fn yaml_files_are_workflows_sorted_by_name() {
        let files = workflow_files([
            "test.yml",
            "README.md",
            "build.yaml",
            "deploy.sh",
            "a.b-c_d.yaml",
        ])
        .unwrap();
        assert_eq!(
            names(&files),
            [
                ("a.b-c_d", ".raibid/a.b-c_d.yaml"),
                ("build", ".raibid/build.yaml"),
                ("test", ".raibid/test.yml"),
            ]
        );
        assert!(workflow_files(["notes.txt"]).unwrap().is_empty());
        assert!(workflow_files(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn names_that_would_be_ambiguous_are_refused() {
        for bad in [
            ".hidden.yaml",
            ".yaml",
            "with space.yaml",
            "comma,.yaml",
            "-dash.yaml",
            "ünï.yaml",
        ] {
            let err = workflow_files([bad]).unwrap_err();
            assert!(
                matches!(err, WorkflowError::BadName { ref file, .. } if file == bad),
                "{bad}: {err}"
            );
        }
        let long = format!("{}.yaml", "a".repeat(MAX_WORKFLOW_NAME_LEN + 1));
        assert!(workflow_files([long]).is_err());
        let longest = format!("{}.yaml", "a".repeat(MAX_WORKFLOW_NAME_LEN));
        assert!(workflow_files([longest]).is_ok());
    }

    #[test]
    fn two_files_of_one_name_are_refused() {
        let err = workflow_files(["build.yml", "build.yaml"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            ".raibid/build.yaml and .raibid/build.yml are both workflow \"build\"; keep one"
        );
    }

    #[test]
    fn workflows_come_after_those_they_depend_on() {
        let deps = |lists: &[&[&str]]| -> Vec<Vec<String>> {
            lists
                .iter()
                .map(|l| l.iter().map(|s| (*s).to_owned()).collect())
                .collect()
        };
        let order = |names: &[&str], lists: &[&[&str]]| {
            let lists = deps(lists);
            let refs: Vec<&[String]> = lists.iter().map(Vec::as_slice).collect();
            workflow_order(names, &refs)
        };
        assert_eq!(
            order(
                &["build", "deploy", "test"],
                &[&[], &["build", "test"], &["build"]]
            ),
            Ok(vec![0, 2, 1])
        );
        assert_eq!(order(&["a", "b"], &[&[], &[]]), Ok(vec![0, 1]));
        assert_eq!(
            order(&["a", "b"], &[&["b"], &["bee"]]).unwrap_err(),
            "workflow \"b\" depends on \"bee\", which is not one of the workflows (a, b)"
        );
        assert!(
            order(&["a"], &[&["a"]])
                .unwrap_err()
                .contains("depends on itself")
        );
        assert_eq!(
            order(&["a", "b", "c", "d"], &[&[], &["c"], &["d", "a"], &["b"]]).unwrap_err(),
            "the workflows b, c, d wait for each other through `depends_on`, so none of them \
             could ever start"
        );
    }

    #[test]
    fn at_most_so_many_workflows() {
        let files = |n: usize| (0..n).map(|i| format!("w{i}.yaml")).collect::<Vec<_>>();
        assert_eq!(
            workflow_files(files(MAX_WORKFLOWS)).unwrap().len(),
            MAX_WORKFLOWS
        );
        // Woodpecker's directory, named in paths and errors.
        let woodpecker = workflow_files_in(WOODPECKER_DIR, ["test.yml", "README.md"]).unwrap();
        assert_eq!(woodpecker[0].path, ".woodpecker/test.yml");
        assert_eq!(woodpecker[0].dir(), WOODPECKER_DIR);
        assert!(
            workflow_files_in(WOODPECKER_DIR, ["a.yaml", "a.yml"])
                .unwrap_err()
                .to_string()
                .starts_with(".woodpecker/a.yaml and .woodpecker/a.yml")
        );
        assert_eq!(
            workflow_files(files(MAX_WORKFLOWS + 1)).unwrap_err(),
            WorkflowError::TooMany {
                dir: PIPELINE_DIR,
                count: MAX_WORKFLOWS + 1
            }
        );
    }
}
