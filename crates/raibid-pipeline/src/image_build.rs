//! The `image-build:` step kind.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer};

use crate::de::{CheckedMap, EnvMap, UniqueList, checked_str};
use crate::tag::{self, TagContext, TagError};

/// Builds a container image from the workspace and (usually) pushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    /// Build context, relative to the workspace root.
    pub context: String,
    /// Containerfile path relative to the workspace root. `None` leaves the choice to the
    /// caller, which can see the workspace: `Containerfile` if present, else `Dockerfile`.
    pub file: Option<String>,
    /// Tag templates; see [`ImageBuild::render_tags`]. Never empty.
    pub tags: Vec<String>,
    /// Target platforms like `linux/arm64`; empty means the agent's own platform.
    pub platforms: Vec<String>,
    pub push: bool,
    pub build_args: BTreeMap<String, String>,
    /// Template of a registry repository for the layer cache (`--cache-from/--cache-to`),
    /// e.g. `{registry}/{repo}/cache`. For a single-platform build (the agent's own platform
    /// when `platforms` is empty) the agent appends `/<arch>` (below the cache repository, so
    /// still inside the job's own namespace on the registry), so arm64 and amd64 builds never
    /// overwrite each other's cache; a multi-platform build uses the repository as rendered.
    pub cache: Option<String>,
}

impl ImageBuild {
    /// Fills in the cache template, if any, like the tags.
    pub fn render_cache(&self, ctx: &TagContext) -> Result<Option<String>, TagError> {
        self.cache
            .as_deref()
            .map(|t| tag::render(t, ctx))
            .transpose()
    }

    /// Fills in the tag templates. Fails on the first template that needs a value this build
    /// does not have (`{tag}` on a branch push), rather than pushing a partial set of tags.
    pub fn render_tags(&self, ctx: &TagContext) -> Result<Vec<String>, TagError> {
        self.tags.iter().map(|t| tag::render(t, ctx)).collect()
    }
}

/// The build runs with the workspace as its root; a path leaving it could read the agent's own
/// files into an image that is then pushed.
fn workspace_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("the path is empty; use \".\" for the repository root".to_owned());
    }
    if path.contains('\0') {
        return Err("a path may not contain a NUL character".to_owned());
    }
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{path:?} is absolute; give a path relative to the repository root"
                ));
            }
            Component::ParentDir => {
                return Err(format!(
                    "{path:?} leaves the repository ('..'); paths must stay inside it"
                ));
            }
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(path.to_owned())
}

checked_str!(
    /// A path inside the workspace: also a step's `directory`.
    WorkspacePath: String, "a path relative to the repository root", workspace_path
);

fn platform(p: &str) -> Result<(), String> {
    let parts: Vec<&str> = p.split('/').collect();
    let well_formed = (2..=3).contains(&parts.len())
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a platform; use os/arch[/variant] like linux/amd64 or linux/arm/v7"
        ))
    }
}

fn tag_template(template: &str) -> Result<(), String> {
    tag::check_template(template).map_err(|e| format!("tag {template:?}: {e}"))
}

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    UniqueList::new(
        "tag templates",
        Some("an image build needs at least one tag, e.g. \"{registry}/{repo}:{sha}\""),
        tag_template,
    )
    .deserialize(d)
}

fn platforms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    UniqueList::new("platforms", None, platform).deserialize(d)
}

fn default_context() -> WorkspacePath {
    WorkspacePath(".".to_owned())
}

fn default_push() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawImageBuild {
    #[serde(default = "default_context")]
    context: WorkspacePath,
    file: Option<WorkspacePath>,
    #[serde(default, deserialize_with = "tags")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "platforms")]
    platforms: Vec<String>,
    #[serde(default = "default_push")]
    push: bool,
    #[serde(default)]
    build_args: Option<EnvMap>,
    cache: Option<CacheTemplate>,
}

fn cache_template(template: &str) -> Result<String, String> {
    if template
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
    {
        return Err(format!(
            "cache {template:?}: give a repository without a tag, e.g. \"{{registry}}/{{repo}}/cache\""
        ));
    }
    tag::check_template(template)
        .map(|()| template.to_owned())
        .map_err(|e| format!("cache {template:?}: {e}"))
}

checked_str!(
    /// A template of the layer cache's repository.
    CacheTemplate: String, "a repository template like \"{registry}/{repo}/cache\"", cache_template
);

/// `image-build:` as written in YAML; checks that at least one tag is given.
pub(crate) struct ImageBuildDe(pub(crate) ImageBuild);

impl<'de> Deserialize<'de> for ImageBuildDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CheckedMap::new(
            "an image build: a mapping with `tags` and optionally `context`, `file`, `platforms`, `push`, `build-args`, `cache`",
            |raw: RawImageBuild| {
                if raw.tags.is_empty() {
                    return Err(
                        "an image build needs `tags`, e.g. tags: [\"{registry}/{repo}:{sha}\"]"
                            .to_owned(),
                    );
                }
                Ok(ImageBuildDe(ImageBuild {
                    context: raw.context.0,
                    file: raw.file.map(|f| f.0),
                    tags: raw.tags,
                    platforms: raw.platforms,
                    push: raw.push,
                    build_args: raw.build_args.map(|m| m.0).unwrap_or_default(),
                    cache: raw.cache.map(|c| c.0),
                }))
            },
        )
        .deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ImageBuild, serde_yaml::Error> {
        serde_yaml::from_str::<ImageBuildDe>(yaml).map(|b| b.0)
    }

    #[test]
    fn a_cache_repository_is_a_template_without_a_tag() {
        let b = parse("tags: [\"{registry}/{repo}:{sha}\"]\ncache: \"{registry}/{repo}/cache\"")
            .unwrap();
        assert_eq!(b.cache.as_deref(), Some("{registry}/{repo}/cache"));
        let ctx = TagContext {
            registry: "r.example:5000".into(),
            repo: "Acme/App".into(),
            sha: "a".repeat(40),
            branch: Some("main".into()),
            tag: None,
            matrix: None,
        };
        assert_eq!(
            b.render_cache(&ctx).unwrap().as_deref(),
            Some("r.example:5000/acme/app/cache")
        );
        for bad in [
            "\"{registry}/{repo}/cache:latest\"",
            "\"{nope}/cache\"",
            "[a]",
        ] {
            let yaml = format!("tags: [\"{{registry}}/{{repo}}:{{sha}}\"]\ncache: {bad}");
            assert!(parse(&yaml).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn defaults() {
        let b = parse("tags: [\"{registry}/{repo}:{sha}\"]").unwrap();
        assert_eq!(b.context, ".");
        assert_eq!(b.file, None);
        assert!(b.push);
        assert!(b.platforms.is_empty());
        assert!(b.build_args.is_empty());
    }

    #[test]
    fn full() {
        let b = parse(
            "context: docker/app\nfile: docker/app/Containerfile\ntags: [\"r/x:{sha}\", \"r/x:{branch}\"]\nplatforms: [linux/amd64, linux/arm/v7]\npush: false\nbuild-args: { A: b, N: 1 }\n",
        )
        .unwrap();
        assert_eq!(b.context, "docker/app");
        assert_eq!(b.file.as_deref(), Some("docker/app/Containerfile"));
        assert_eq!(b.tags.len(), 2);
        assert_eq!(b.platforms, ["linux/amd64", "linux/arm/v7"]);
        assert!(!b.push);
        assert_eq!(b.build_args["N"], "1");
    }

    #[test]
    fn paths_stay_in_the_workspace() {
        for ok in [".", "./sub", "a/b/c", "sub/./x", "with space"] {
            assert!(workspace_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc", "..", "../x", "a/../../b", "a/..", "x\0y"] {
            assert!(workspace_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms_are_checked() {
        for ok in [
            "linux/amd64",
            "linux/arm64",
            "linux/arm/v7",
            "windows/amd64",
        ] {
            assert!(platform(ok).is_ok(), "{ok}");
        }
        for bad in [
            "amd64",
            "linux/",
            "Linux/AMD64",
            "linux/arm/v7/x",
            "linux amd64",
        ] {
            assert!(platform(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_image_builds() {
        for (yaml, needle) in [
            ("context: .", "needs `tags`"),
            ("tags: []", "at least one tag"),
            (
                "tags: [\"{registry}/{repo}:{foo}\"]",
                "unknown placeholder {foo}",
            ),
            ("tags: [a, a]", "listed twice"),
            ("tags: [a]\ncontext: ../up", "leaves the repository"),
            ("tags: [a]\nfile: /abs/Dockerfile", "is absolute"),
            ("tags: [a]\npush: yes", "expected a boolean"),
            ("tags: [a]\nbuild_args: {}", "unknown field `build_args`"),
            (
                "tags: [a]\nbuild-args: { 1A: x }",
                "not a valid variable name",
            ),
            ("tags: [a]\nplatforms: linux/amd64", "a list of platforms"),
            ("tags: a", "a list of tag templates"),
        ] {
            let err = parse(yaml).err().unwrap();
            assert!(err.to_string().contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn render_tags_renders_all_or_fails() {
        let b = parse("tags: [\"{registry}/{repo}:{sha}\", \"{registry}/{repo}:{tag}\"]").unwrap();
        let mut ctx = TagContext {
            registry: "reg".to_owned(),
            repo: "o/r".to_owned(),
            sha: "abc".to_owned(),
            branch: None,
            tag: Some("v1".to_owned()),
            matrix: None,
        };
        assert_eq!(b.render_tags(&ctx).unwrap(), ["reg/o/r:abc", "reg/o/r:v1"]);
        ctx.tag = None;
        assert!(matches!(
            b.render_tags(&ctx),
            Err(TagError::Missing {
                placeholder: "tag",
                ..
            })
        ));
    }
}
