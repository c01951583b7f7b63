//! The top-level `cache:` key: directories the agent keeps between jobs of a repository, as
//! GitLab CI's `cache:`. On one big machine, rebuilding `target/` or downloading every
//! dependency again is most of what a Rust or Node build costs.

use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::de::{StrCheck, checked_str};
use crate::tag::{self, FillError, TagContext, TemplateError};

/// The key when the file names none: one cache per branch, so a branch's builds start from
/// its own last build.
pub const DEFAULT_CACHE_KEY: &str = "{branch}";

/// A rendered key holds at most this many characters. Keys are hashed into directory names,
/// so the limit is about keeping the job log readable, not about paths.
pub const MAX_CACHE_KEY_LEN: usize = 100;

/// Each path is copied on its own; a cache of more than this many paths is a sign of listing
/// files rather than directories.
pub const MAX_CACHE_PATHS: usize = 20;

/// Longer paths than this are not a cached directory anyone means.
const MAX_PATH_LEN: usize = 1024;

/// Directories of the workspace kept between jobs of the same repository and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// A template like tags' (`{branch}`, `{tag}`, `{sha}`, `{short_sha}`, `{matrix}`,
    /// `{repo}`); see [`Cache::render_key`].
    pub key: String,
    /// Relative to the workspace, `/`-separated, without `.`, `..`, empty components or
    /// `.git`; none inside another. Never empty, at most [`MAX_CACHE_PATHS`].
    pub paths: Vec<String>,
    pub policy: CachePolicy,
}

/// When the cache is read and written, as GitLab's `cache:policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Restored before the steps, saved after them.
    #[default]
    PullPush,
    /// Restored only: jobs that use what others build.
    Pull,
    /// Saved only: a job that builds the cache from scratch.
    Push,
}

impl CachePolicy {
    pub fn pulls(self) -> bool {
        matches!(self, CachePolicy::PullPush | CachePolicy::Pull)
    }

    pub fn pushes(self) -> bool {
        matches!(self, CachePolicy::PullPush | CachePolicy::Push)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CachePolicy::PullPush => "pull-push",
            CachePolicy::Pull => "pull",
            CachePolicy::Push => "push",
        }
    }
}

/// Why a key could not be rendered for a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheKeyError {
    #[error("cache key {template:?}: {error}")]
    Template {
        template: String,
        #[source]
        error: TemplateError,
    },
    #[error(
        "cache key {template:?} uses {{{placeholder}}}, but this job has no {placeholder} (is it \
         a {}?)",
        hint(placeholder)
    )]
    Missing {
        template: String,
        placeholder: &'static str,
    },
}

fn hint(placeholder: &str) -> &'static str {
    match placeholder {
        "branch" => "tag build",
        "tag" => "branch build",
        "matrix" => "pipeline without `matrix:`",
        _ => "misconfigured agent",
    }
}

impl Cache {
    /// The key for one job: the template filled in, every character but `A-Z a-z 0-9 . _ -`
    /// made `-`, cut at [`MAX_CACHE_KEY_LEN`]. `{branch}` is the branch the build is about
    /// (`ctx.branch`: the caller passes a pull request's target branch, so that its first
    /// build starts from the target's cache).
    pub fn render_key(&self, ctx: &TagContext) -> Result<String, CacheKeyError> {
        let filled = tag::fill(&self.key, ctx).map_err(|e| match e {
            FillError::Template(error) => CacheKeyError::Template {
                template: self.key.clone(),
                error,
            },
            FillError::Missing(placeholder) => CacheKeyError::Missing {
                template: self.key.clone(),
                placeholder,
            },
        })?;
        Ok(filled
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_CACHE_KEY_LEN)
            .collect())
    }
}

fn key_template(template: &str) -> Result<String, String> {
    if template.is_empty() {
        return Err("a cache key may not be empty; leave `key` out for \"{branch}\"".to_owned());
    }
    let names =
        tag::placeholder_names(template).map_err(|e| format!("cache key {template:?}: {e}"))?;
    if names.contains(&"registry") {
        return Err(format!(
            "cache key {template:?}: {{registry}} is where images go and says nothing about a \
             build; use {{branch}}, {{tag}}, {{sha}}, {{short_sha}}, {{matrix}} or {{repo}}"
        ));
    }
    if template.chars().count() > MAX_CACHE_KEY_LEN {
        return Err(format!(
            "cache key {template:?} is {} characters; a key holds at most {MAX_CACHE_KEY_LEN}",
            template.chars().count()
        ));
    }
    if template.chars().any(char::is_control) {
        return Err(format!(
            "cache key {template:?} contains a control character"
        ));
    }
    Ok(template.to_owned())
}

checked_str!(
    /// A cache key template.
    KeyTemplate: String, "a cache key like \"{branch}\"", key_template
);

fn policy(p: &str) -> Result<CachePolicy, String> {
    match p {
        "pull-push" => Ok(CachePolicy::PullPush),
        "pull" => Ok(CachePolicy::Pull),
        "push" => Ok(CachePolicy::Push),
        _ => Err(format!(
            "policy {p:?}: use pull-push (the default), pull or push"
        )),
    }
}

checked_str!(Policy: CachePolicy, "pull-push, pull or push", policy);

/// A cached path (`what`: "cache"), or an artifact's ("artifact"). The agent copies it out of
/// the workspace and back as root may be, so it must name something inside the workspace and
/// never the repository itself (`.git`: a restored `.git/config` or hook would run in the next
/// job's git; an artifact of it would publish the checkout's credentials).
///
/// With `globs`, `*`, `?`, `[...]` and `**` are allowed and the path must compile as a glob
/// (see [`crate::artifacts::path_glob`]); the components are checked all the same, so a glob
/// cannot name `..` or `.git`.
fn workspace_path(path: &str, what: &str, globs: bool) -> Result<String, String> {
    if path.is_empty() {
        return Err(format!("a {what} path may not be empty"));
    }
    if path.contains('\0') || path.chars().any(char::is_control) {
        return Err(format!(
            "{path:?}: a path may not contain control characters"
        ));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "the path is {} bytes; a {what} path is at most {MAX_PATH_LEN}",
            path.len()
        ));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; {what} paths are relative to the workspace (`target`, `dist`)"
        ));
    }
    if crate::artifacts::has_glob(path) {
        if !globs {
            return Err(format!(
                "{path:?}: {what} paths are not globs; list the directories themselves"
            ));
        }
        crate::when::Pattern::new(path.strip_suffix('/').unwrap_or(path))
            .map_err(|e| format!("{path:?} is not a valid glob: {e}"))?;
    }
    // `target/` is how people write a directory; one trailing '/' is allowed and dropped.
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for component in trimmed.split('/') {
        match component {
            "" => {
                return Err(format!(
                    "{path:?} has an empty component ('//'); write the path without it"
                ));
            }
            "." => {
                return Err(format!(
                    "{path:?}: '.' is not allowed; name the directory itself (`target`, not \
                     `./target`; the workspace as a whole would include `.git`)"
                ));
            }
            ".." => {
                return Err(format!(
                    "{path:?} leaves the workspace ('..'); {what} paths stay inside it"
                ));
            }
            c if c.eq_ignore_ascii_case(".git") => {
                return Err(format!(
                    "{path:?}: `.git` is the repository the agent checks out; it is never \
                     cached nor an artifact"
                ));
            }
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// Whether one of two normalized paths is the other or lies inside it.
fn nested(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    inside(a, b) || inside(b, a)
}

/// `paths:`: a non-empty list of at most [`MAX_CACHE_PATHS`] paths, none inside another; `what`
/// names them in errors ("cache", "artifact"). Each check runs while its item is read, so an
/// error points at that item.
pub(crate) struct PathsVisitor {
    pub(crate) what: &'static str,
    /// Whether paths may be globs (artifacts' may; a cache's name directories to restore).
    pub(crate) globs: bool,
}

impl<'de> Visitor<'de> for PathsVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of paths relative to the workspace, like [target, .npm]")
    }

    /// One path alone (`junit: report.xml`, as GitLab's reports take it), when the caller
    /// deserializes with `deserialize_any`.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        workspace_path(v, self.what, self.globs)
            .map(|path| vec![path])
            .map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut paths: Vec<String> = Vec::new();
        while let Some(path) = seq.next_element_seed(StrCheck::new(
            "a path relative to the workspace",
            |v: &str| {
                let path = workspace_path(v, self.what, self.globs)?;
                if paths.len() == MAX_CACHE_PATHS {
                    return Err(format!(
                        "at most {MAX_CACHE_PATHS} {} paths; list their common parent \
                         directory instead",
                        self.what
                    ));
                }
                // Whether a glob's matches overlap is known only in the workspace: the agent
                // packs what several paths match once.
                let literal = |p: &str| !crate::artifacts::has_glob(p);
                if let Some(other) = paths
                    .iter()
                    .filter(|p| literal(p) && literal(&path))
                    .find(|p| nested(p, &path))
                {
                    return Err(if *other == path {
                        format!("{v:?} is listed twice; keep one")
                    } else {
                        format!(
                            "{v:?} and {other:?}: one is inside the other; list only the outer one"
                        )
                    });
                }
                Ok(path)
            },
        ))? {
            paths.push(path);
        }
        if paths.is_empty() {
            return Err(de::Error::custom(format!(
                "the list of paths is empty; list the {} paths, like [{}]",
                self.what,
                match self.what {
                    "cache" => "target",
                    "report" => "junit.xml",
                    _ => "dist",
                }
            )));
        }
        Ok(paths)
    }
}

fn paths<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_seq(PathsVisitor {
        what: "cache",
        globs: false,
    })
    .map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    key: Option<KeyTemplate>,
    #[serde(default, deserialize_with = "paths")]
    paths: Option<Vec<String>>,
    policy: Option<Policy>,
}

/// `cache:` as written: a mapping, or a list of paths (`cache: [target]`) for the defaults.
pub(crate) struct CacheDe(pub(crate) Cache);

impl<'de> Deserialize<'de> for CacheDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CacheVisitor).map(CacheDe)
    }
}

struct CacheVisitor;

impl<'de> Visitor<'de> for CacheVisitor {
    type Value = Cache;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a cache: a list of paths, or a mapping with `paths` and optionally `key` and \
             `policy`",
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cache, A::Error> {
        Ok(Cache {
            key: DEFAULT_CACHE_KEY.to_owned(),
            paths: PathsVisitor {
                what: "cache",
                globs: false,
            }
            .visit_seq(seq)?,
            policy: CachePolicy::default(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cache, A::Error> {
        let raw = RawCache::deserialize(MapAccessDeserializer::new(map))?;
        let Some(paths) = raw.paths else {
            return Err(de::Error::custom(
                "the cache needs `paths`: the directories to keep, like [target]",
            ));
        };
        Ok(Cache {
            key: raw
                .key
                .map_or_else(|| DEFAULT_CACHE_KEY.to_owned(), |k| k.0),
            paths,
            policy: raw.policy.map(|p| p.0).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{PipelineError, parse};

    use super::*;

    fn with_cache(cache: &str) -> Result<Option<Cache>, PipelineError> {
        parse(
            ".raibid.yaml",
            &format!("steps:\n  - name: t\n    run: \"true\"\n{cache}"),
        )
        .map(|p| p.cache)
    }

    /// The error of a refused cache: its line and column, and its message.
    fn refused(cache: &str) -> (usize, usize, String) {
        let err = with_cache(cache).unwrap_err();
        (err.line, err.column, err.message)
    }

    fn ctx() -> TagContext {
        TagContext {
            registry: "registry.local".to_owned(),
            repo: "Acme/App".to_owned(),
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            branch: Some("feature/x y".to_owned()),
            tag: None,
            matrix: Some("RUST=1.80,OS=linux".to_owned()),
        }
    }

    #[test]
    fn no_cache_key_means_none() {
        assert_eq!(with_cache("").unwrap(), None);
    }

    #[test]
    fn the_full_form_is_read() {
        let cache = with_cache(
            "cache:\n  key: \"{branch}-{matrix}\"\n  paths: [target/, .npm, vendor/cache]\n  \
             policy: pull\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            cache,
            Cache {
                key: "{branch}-{matrix}".to_owned(),
                paths: vec!["target".into(), ".npm".into(), "vendor/cache".into()],
                policy: CachePolicy::Pull,
            }
        );
        assert!(cache.policy.pulls() && !cache.policy.pushes());
        let push = with_cache("cache:\n  paths: [target]\n  policy: push\n")
            .unwrap()
            .unwrap();
        assert_eq!(push.policy, CachePolicy::Push);
        assert_eq!(push.key, DEFAULT_CACHE_KEY);
    }

    #[test]
    fn a_list_is_paths_with_the_defaults() {
        let cache = with_cache("cache: [target, .npm]\n").unwrap().unwrap();
        assert_eq!(
            cache,
            Cache {
                key: DEFAULT_CACHE_KEY.to_owned(),
                paths: vec!["target".into(), ".npm".into()],
                policy: CachePolicy::PullPush,
            }
        );
        let block = with_cache("cache:\n  - target\n").unwrap().unwrap();
        assert_eq!(block.paths, ["target"]);
    }

    #[test]
    fn keys_render_to_safe_text() {
        let cache = |key: &str| Cache {
            key: key.to_owned(),
            paths: vec!["target".into()],
            policy: CachePolicy::PullPush,
        };
        assert_eq!(cache("{branch}").render_key(&ctx()).unwrap(), "feature-x-y");
        assert_eq!(
            cache("{repo}/{short_sha}:{matrix}")
                .render_key(&ctx())
                .unwrap(),
            "acme-app-0123456-RUST-1.80-OS-linux"
        );
        let long = TagContext {
            branch: Some("b".repeat(300)),
            ..ctx()
        };
        assert_eq!(
            cache("x{branch}").render_key(&long).unwrap().len(),
            MAX_CACHE_KEY_LEN
        );
        let err = cache("{tag}").render_key(&ctx()).unwrap_err();
        assert!(
            matches!(
                err,
                CacheKeyError::Missing {
                    placeholder: "tag",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("branch build"), "{err}");
    }

    #[test]
    fn every_refusal_points_at_what_is_wrong() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("cache:\n  paths: [/root]\n", (5, 11), "is absolute"),
            (
                "cache:\n  paths:\n    - target\n    - ../up\n",
                (7, 7),
                "leaves the workspace",
            ),
            ("cache: [a//b]\n", (4, 9), "empty component"),
            ("cache: [./target]\n", (4, 9), "'.' is not allowed"),
            ("cache: [.]\n", (4, 9), "'.' is not allowed"),
            ("cache: [.git]\n", (4, 9), "never cached"),
            ("cache: [sub/.GIT/x]\n", (4, 9), "never cached"),
            ("cache: [\"\"]\n", (4, 9), "may not be empty"),
            ("cache: [\"**/node_modules\"]\n", (4, 9), "not globs"),
            ("cache: [target, target/]\n", (4, 17), "listed twice"),
            (
                "cache: [target/debug, target]\n",
                (4, 23),
                "inside the other",
            ),
            ("cache: []\n", (4, 8), "the list of paths is empty"),
            ("cache:\n  key: x\n", (5, 3), "needs `paths`"),
            (
                "cache:\n  paths: [a]\n  when: always\n",
                (6, 3),
                "unknown field `when`",
            ),
            (
                "cache:\n  paths: [a]\n  policy: both\n",
                (6, 11),
                "use pull-push",
            ),
            (
                "cache:\n  paths: [a]\n  key: \"{nope}\"\n",
                (6, 8),
                "unknown placeholder",
            ),
            (
                "cache:\n  paths: [a]\n  key: \"{branch\"\n",
                (6, 8),
                "never closed",
            ),
            (
                "cache:\n  paths: [a]\n  key: \"{registry}\"\n",
                (6, 8),
                "{registry}",
            ),
            (
                "cache:\n  paths: [a]\n  key: \"\"\n",
                (6, 8),
                "may not be empty",
            ),
            ("cache: target\n", (4, 8), "a list of paths, or a mapping"),
        ];
        for (yaml, at, message) in cases {
            let (line, column, got) = refused(yaml);
            assert_eq!((line, column), *at, "{yaml:?}: {got}");
            assert!(got.contains(message), "{yaml:?}: {got}");
        }
        let long_key = format!("cache:\n  paths: [a]\n  key: {}\n", "k".repeat(101));
        let (line, column, got) = refused(&long_key);
        assert_eq!((line, column), (6, 8));
        assert!(got.contains("at most 100"), "{got}");
        let many: Vec<String> = (0..=MAX_CACHE_PATHS).map(|i| format!("p{i}")).collect();
        let (line, column, got) = refused(&format!("cache:\n  - {}\n", many.join("\n  - ")));
        assert_eq!((line, column), (5 + MAX_CACHE_PATHS, 5));
        assert!(got.contains("at most 20 cache paths"), "{got}");
    }
}
