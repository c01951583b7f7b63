//! `artifacts:`: files of the workspace kept with the job once its steps are done (GitLab CI's
//! `artifacts:`, Gitea Actions' `upload-artifact`): a binary, a package, a test report.

use std::fmt;
use std::time::Duration;

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
    /// GitLab's `expire_in`; `None`: the agent's `agent.artifacts_expire_days`.
    pub expire_in: Option<ArtifactsExpiry>,
    /// JUnit XML reports (`reports: junit:`, as GitLab's), paths or globs under the rules of
    /// `paths`: read after the steps whatever `when` says, and summed up on the job; kept
    /// only when `paths` names them too. Empty: none.
    pub junit: Vec<String>,
}

/// How long a job's artifacts stay in the registry, as the pipeline asks (`expire_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactsExpiry {
    After(Duration),
    /// `never`: kept until deleted by hand (unless the agent caps lifetimes,
    /// `agent.artifacts_max_expire_days`).
    Never,
}

impl fmt::Display for ArtifactsExpiry {
    /// In the largest units that divide it exactly, as `expire_in` could spell it:
    /// `23 days`, `2 hours 20 mins`, `never`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ArtifactsExpiry::After(after) = self else {
            return f.write_str("never");
        };
        let mut left = after.as_secs();
        let mut parts = Vec::new();
        for (unit, secs) in [("day", 86_400), ("hour", 3_600), ("min", 60), ("sec", 1)] {
            if left >= secs {
                let n = left / secs;
                left %= secs;
                parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// Longer than anyone means: `expire_in: 1000 years` is a typo or `never`, and a date that far
/// out does not fit every clock the job's record passes through.
pub const MAX_EXPIRE_IN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Reads `expire_in` as GitLab does (its ChronicDuration spellings): `never`, a number of
/// seconds (`"3600"`), or numbers with units, largest or smallest first, optionally joined by
/// commas or `and` (`30 mins`, `2h20min`, `1 week`, `3 weeks and 2 days`, `6 mos 1 day`). A
/// month is 30 days and a year 365, as there.
pub fn parse_expire_in(text: &str) -> Result<ArtifactsExpiry, String> {
    let syntax = || {
        format!(
            "expire_in {text:?}: use `never`, a number of seconds, or numbers with units \
             (30 mins, 2 hours, 1 week, 3 weeks and 2 days, 6 months)"
        )
    };
    let s = text.trim().to_ascii_lowercase();
    if s == "never" {
        return Ok(ArtifactsExpiry::Never);
    }
    let mut total: u64 = 0;
    let mut rest = s.as_str();
    let mut parts = 0;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix("and ") {
            if parts == 0 {
                return Err(syntax());
            }
            rest = after.trim_start();
        }
        if rest.is_empty() {
            break;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(syntax());
        }
        let number: u64 = rest[..digits].parse().unwrap_or(u64::MAX);
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let scale = if letters == 0 {
            // A bare number is seconds, and only when it stands alone.
            if parts > 0 || !rest.is_empty() {
                return Err(syntax());
            }
            1
        } else {
            unit_seconds(&rest[..letters]).ok_or_else(syntax)?
        };
        rest = &rest[letters..];
        total = total.saturating_add(number.saturating_mul(scale));
        parts += 1;
    }
    if parts == 0 {
        return Err(syntax());
    }
    let after = Duration::from_secs(total);
    if after.is_zero() {
        Err(format!(
            "expire_in {text:?} would delete the artifacts as they are kept; to keep none, \
             remove `artifacts:`"
        ))
    } else if after > MAX_EXPIRE_IN {
        Err(format!(
            "expire_in {text:?} is longer than 100 years; use `never`"
        ))
    } else {
        Ok(ArtifactsExpiry::After(after))
    }
}

fn unit_seconds(unit: &str) -> Option<u64> {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "wk" | "wks" | "week" | "weeks" => 7 * DAY,
        "mo" | "mos" | "month" | "months" => 30 * DAY,
        "y" | "yr" | "yrs" | "year" | "years" => 365 * DAY,
        _ => return None,
    })
}

checked_str!(ExpireIn: ArtifactsExpiry, "a lifetime such as 1 week, 30 days or never", parse_expire_in);

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
    expire_in: Option<ExpireIn>,
    reports: Option<RawReports>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    #[serde(default, deserialize_with = "report_paths")]
    junit: Vec<String>,
}

fn report_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(PathsVisitor {
        what: "report",
        globs: true,
    })
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
        f.write_str(
            "artifacts: a list of paths, or a mapping with `paths` and optionally `when` and \
             `expire_in`",
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Artifacts, A::Error> {
        Ok(Artifacts {
            paths: PathsVisitor {
                what: "artifact",
                globs: true,
            }
            .visit_seq(seq)?,
            when: ArtifactsWhen::default(),
            expire_in: None,
            junit: Vec::new(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Artifacts, A::Error> {
        let raw = RawArtifacts::deserialize(MapAccessDeserializer::new(map))?;
        let junit = raw.reports.map(|r| r.junit).unwrap_or_default();
        let paths = match raw.paths {
            Some(paths) => paths,
            None if !junit.is_empty() => Vec::new(),
            None => {
                return Err(de::Error::custom(
                    "artifacts need `paths`: the files and directories to keep, like [dist] \
                     (or `reports: {junit: ...}` alone)",
                ));
            }
        };
        Ok(Artifacts {
            paths,
            when: raw.when.map(|w| w.0).unwrap_or_default(),
            expire_in: raw.expire_in.map(|e| e.0),
            junit,
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
                expire_in: None,
                junit: vec![],
            }
        );
        assert_eq!(
            artifacts("paths: [reports]\nwhen: on_failure\n").unwrap(),
            Artifacts {
                paths: vec!["reports".into()],
                when: ArtifactsWhen::OnFailure,
                expire_in: None,
                junit: vec![],
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
                "paths: [a]\nexpire_in: soon\n",
                (2, 12),
                "use `never`, a number of seconds",
            ),
            (
                "paths: [a]\nexpire_in: 0 days\n",
                (2, 12),
                "remove `artifacts:`",
            ),
            ("paths: [a]\nexpire_in: 101 years\n", (2, 12), "use `never`"),
            ("paths: [a]\nexpire_in: [1d]\n", (2, 12), "such as 1 week"),
            (
                "paths: [a]\nexpires: 1d\n",
                (2, 1),
                "unknown field `expires`",
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
    fn expire_in_reads_gitlab_s_spellings() {
        let after = |text: &str| match parse_expire_in(text) {
            Ok(ArtifactsExpiry::After(d)) => d.as_secs(),
            other => panic!("{text:?}: {other:?}"),
        };
        const DAY: u64 = 86_400;
        // The examples of GitLab's documentation of `artifacts:expire_in`.
        assert_eq!(after("42"), 42);
        assert_eq!(after("42 seconds"), 42);
        assert_eq!(after("3 mins 4 sec"), 184);
        assert_eq!(after("2 hrs 20 min"), 8_400);
        assert_eq!(after("2h20min"), 8_400);
        assert_eq!(after("6 mos 1 day"), 181 * DAY);
        assert_eq!(after("47 yrs 6 mos and 4d"), (47 * 365 + 6 * 30 + 4) * DAY);
        assert_eq!(after("3 weeks and 2 days"), 23 * DAY);
        assert_eq!(after("1 Week"), 7 * DAY);
        assert_eq!(after("1d, 12h"), DAY + 12 * 3600);
        assert_eq!(parse_expire_in(" never "), Ok(ArtifactsExpiry::Never));
        for (text, shown) in [
            ("3 weeks and 2 days", "23 days"),
            ("2h20min", "2 hours 20 mins"),
            ("1d 61s", "1 day 1 min 1 sec"),
            ("never", "never"),
        ] {
            assert_eq!(parse_expire_in(text).unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "and 1d",
            "1 fortnight",
            "1d 2",
            "1.5 days",
            "-1d",
            "d",
            "1d and",
            "never 1d",
        ] {
            let err = parse_expire_in(bad).unwrap_err();
            assert!(
                err.contains("number of seconds") || err.contains("remove"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            artifacts("paths: [x]\nexpire_in: 1 week\n")
                .unwrap()
                .expire_in,
            Some(ArtifactsExpiry::After(std::time::Duration::from_secs(
                7 * DAY
            )))
        );
        assert_eq!(
            artifacts("paths: [x]\nexpire_in: 3600\n")
                .unwrap()
                .expire_in,
            Some(ArtifactsExpiry::After(std::time::Duration::from_secs(3600)))
        );
    }

    #[test]
    fn junit_reports_as_gitlab_writes_them() {
        let a = artifacts("paths: [dist]\nreports:\n  junit: [\"**/junit.xml\", report.xml]\n")
            .unwrap();
        assert_eq!(a.junit, ["**/junit.xml", "report.xml"]);
        assert_eq!(a.paths, ["dist"]);
        // One path alone, and reports without paths to keep.
        let a = artifacts("reports:\n  junit: target/nextest/ci/junit.xml\n").unwrap();
        assert_eq!(a.junit, ["target/nextest/ci/junit.xml"]);
        assert!(a.paths.is_empty());
        for (yaml, at, message) in [
            ("reports:\n  junit: ../x.xml\n", (2, 10), "stay inside it"),
            ("reports:\n  junit: []\n", (2, 10), "list the report paths"),
            (
                "reports:\n  cobertura: c.xml\n",
                (2, 3),
                "unknown field `cobertura`",
            ),
            ("reports: {}\n", (1, 1), "need `paths`"),
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
