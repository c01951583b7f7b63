//! `artifacts:`: files of the workspace kept with the job once its steps are done (GitLab CI's
//! `artifacts:`, Gitea Actions' `upload-artifact`): a binary, a package, a test report.

use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::cache::PathsVisitor;
use crate::de::checked_str;
use crate::when::Pattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    /// Relative to the workspace, under the rules of cache paths (no `..`, no `.git`, no two
    /// plain paths inside each other), but globs are allowed: see [`path_glob`].
    pub paths: Vec<String>,
    pub when: ArtifactsWhen,
}

/// After which jobs the artifacts are kept (GitLab's `artifacts:when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArtifactsWhen {
    /// Every step passed.
    #[default]
    OnSuccess,
    /// A step failed: the logs and reports that say why.
    OnFailure,
    Always,
}

impl ArtifactsWhen {
    /// Whether a job that `succeeded` (or failed, when not) keeps its artifacts. Jobs that
    /// were cancelled or could not run never get here.
    pub fn keeps(self, succeeded: bool) -> bool {
        match self {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactsWhen::OnSuccess => "on_success",
            ArtifactsWhen::OnFailure => "on_failure",
            ArtifactsWhen::Always => "always",
        }
    }
}

/// Whether an artifact path is a glob.
pub(crate) fn has_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The matcher of an artifact path that is a glob (`dist/*.tar.gz`, `**/junit.xml`), for
/// paths relative to the workspace; `None` for a plain path. The rules are `when: path`'s
/// ([`Pattern`]), which are GitLab's: `*` and `?` stay within one component, `**` crosses
/// them. Paths were checked when the file was read, so this compiles.
pub fn path_glob(path: &str) -> Option<Pattern> {
    has_glob(path).then(|| Pattern::new(path).expect("checked when the pipeline was parsed"))
}

/// The directory a glob's matches lie under: its leading components without glob characters
/// (`""`, the workspace, for `**/junit.xml`).
pub fn glob_base(path: &str) -> &str {
    let mut end = 0;
    for (i, component) in path.split('/').enumerate() {
        if has_glob(component) {
            break;
        }
        end = if i == 0 {
            component.len()
        } else {
            end + 1 + component.len()
        };
    }
    &path[..end.min(path.len())]
}

fn when(w: &str) -> Result<ArtifactsWhen, String> {
    match w {
        "on_success" => Ok(ArtifactsWhen::OnSuccess),
        "on_failure" => Ok(ArtifactsWhen::OnFailure),
        "always" => Ok(ArtifactsWhen::Always),
        _ => Err(format!(
            "when {w:?}: use on_success (the default), on_failure or always"
        )),
    }
}

checked_str!(When: ArtifactsWhen, "on_success, on_failure or always", when);

fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_seq(PathsVisitor {
        what: "artifact",
        globs: true,
    })
    .map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifacts {
    #[serde(default, deserialize_with = "paths")]
    paths: Option<Vec<String>>,
    when: Option<When>,
}

/// `artifacts:` as written: a mapping, or a list of paths (`artifacts: [dist]`) for the
/// defaults.
pub(crate) struct ArtifactsDe(pub(crate) Artifacts);

impl<'de> Deserialize<'de> for ArtifactsDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArtifactsVisitor).map(ArtifactsDe)
    }
}

struct ArtifactsVisitor;

impl<'de> Visitor<'de> for ArtifactsVisitor {
    type Value = Artifacts;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("artifacts: a list of paths, or a mapping with `paths` and optionally `when`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Artifacts, A::Error> {
        Ok(Artifacts {
            paths: PathsVisitor {
                what: "artifact",
                globs: true,
            }
            .visit_seq(seq)?,
            when: ArtifactsWhen::default(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Artifacts, A::Error> {
        let raw = RawArtifacts::deserialize(MapAccessDeserializer::new(map))?;
        let Some(paths) = raw.paths else {
            return Err(de::Error::custom(
                "artifacts need `paths`: the files and directories to keep, like [dist]",
            ));
        };
        Ok(Artifacts {
            paths,
            when: raw.when.map(|w| w.0).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifacts(yaml: &str) -> Result<Artifacts, serde_yaml::Error> {
        serde_yaml::from_str::<ArtifactsDe>(yaml).map(|a| a.0)
    }

    #[test]
    fn a_list_or_a_mapping() {
        assert_eq!(
            artifacts("[dist/, target/release/app]").unwrap(),
            Artifacts {
                paths: vec!["dist".into(), "target/release/app".into()],
                when: ArtifactsWhen::OnSuccess,
            }
        );
        assert_eq!(
            artifacts("paths: [reports]\nwhen: on_failure\n").unwrap(),
            Artifacts {
                paths: vec!["reports".into()],
                when: ArtifactsWhen::OnFailure,
            }
        );
        assert_eq!(
            artifacts("paths: [x]\nwhen: always\n").unwrap().when,
            ArtifactsWhen::Always
        );
    }

    #[test]
    fn refusals_point_at_what_is_wrong() {
        for (yaml, at, message) in [
            ("[../x]", (1, 2), "artifact paths stay inside it"),
            ("[\"dist/[a\"]", (1, 2), "not a valid glob"),
            ("[\"../*.gz\"]", (1, 2), "artifact paths stay inside it"),
            ("[\"*/.git/*\"]", (1, 2), "nor an artifact"),
            ("[.git]", (1, 2), "nor an artifact"),
            ("[a, a/b]", (1, 5), "one is inside the other"),
            ("[]", (1, 1), "list the artifact paths, like [dist]"),
            ("when: always\n", (1, 1), "need `paths`"),
            ("paths: [a]\nwhen: sometimes\n", (2, 7), "use on_success"),
            (
                "paths: [a]\nexpire_in: 1d\n",
                (2, 1),
                "unknown field `expire_in`",
            ),
            ("dist", (1, 1), "a list of paths, or a mapping"),
        ] {
            let err = artifacts(yaml).unwrap_err();
            let loc = err.location().expect("located");
            assert_eq!((loc.line(), loc.column()), at, "{yaml:?}: {err}");
            assert!(err.to_string().contains(message), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn globs_match_as_gitlab_s_do() {
        let a = artifacts("[\"dist/*.tar.gz\", \"**/junit.xml\", dist/app]").unwrap();
        assert_eq!(a.paths, ["dist/*.tar.gz", "**/junit.xml", "dist/app"]);
        let gz = path_glob("dist/*.tar.gz").unwrap();
        assert!(gz.is_match("dist/a.tar.gz") && !gz.is_match("dist/sub/a.tar.gz"));
        let junit = path_glob("**/junit.xml").unwrap();
        assert!(junit.is_match("junit.xml") && junit.is_match("a/b/junit.xml"));
        assert!(path_glob("dist/app").is_none());
        assert_eq!(glob_base("dist/*.tar.gz"), "dist");
        assert_eq!(glob_base("**/junit.xml"), "");
        assert_eq!(glob_base("a/b/c*/d"), "a/b");
    }

    #[test]
    fn when_decides_by_the_verdict() {
        assert!(ArtifactsWhen::OnSuccess.keeps(true) && !ArtifactsWhen::OnSuccess.keeps(false));
        assert!(!ArtifactsWhen::OnFailure.keeps(true) && ArtifactsWhen::OnFailure.keeps(false));
        assert!(ArtifactsWhen::Always.keeps(true) && ArtifactsWhen::Always.keeps(false));
    }
}
