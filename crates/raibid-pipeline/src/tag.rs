//! Image tag templates like `{registry}/{repo}:{sha}`.

/// The longest tag the OCI distribution spec allows.
const MAX_TAG_LEN: usize = 128;

/// Git's default abbreviation length, so `{short_sha}` matches what people see in `git log`.
const SHORT_SHA_LEN: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Registry,
    Repo,
    Sha,
    ShortSha,
    Branch,
    Tag,
    Matrix,
}

impl Placeholder {
    const ALL: [Placeholder; 7] = [
        Placeholder::Registry,
        Placeholder::Repo,
        Placeholder::Sha,
        Placeholder::ShortSha,
        Placeholder::Branch,
        Placeholder::Tag,
        Placeholder::Matrix,
    ];

    fn name(self) -> &'static str {
        match self {
            Placeholder::Registry => "registry",
            Placeholder::Repo => "repo",
            Placeholder::Sha => "sha",
            Placeholder::ShortSha => "short_sha",
            Placeholder::Branch => "branch",
            Placeholder::Tag => "tag",
            Placeholder::Matrix => "matrix",
        }
    }
}

enum Piece<'a> {
    Literal(&'a str),
    Placeholder(Placeholder),
}

/// What is wrong with a tag template as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{0}}}; use {{registry}}, {{repo}}, {{sha}}, {{short_sha}}, {{branch}}, {{tag}} or {{matrix}}"
    )]
    UnknownPlaceholder(String),
    #[error("a '{{' is never closed")]
    Unclosed,
    #[error("a '}}' has no matching '{{'")]
    Unopened,
    #[error("a tag may not be empty")]
    Empty,
}

/// Splits a template into literal text and placeholders.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    if template.is_empty() {
        return Err(TemplateError::Empty);
    }
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(TemplateError::Unopened);
        }
        if open > 0 {
            pieces.push(Piece::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after.find(['{', '}']).ok_or(TemplateError::Unclosed)?;
        if after.as_bytes()[close] == b'{' {
            return Err(TemplateError::Unclosed);
        }
        let name = &after[..close];
        let placeholder = Placeholder::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_owned()))?;
        pieces.push(Piece::Placeholder(placeholder));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// What `{matrix}` renders to for a variant.
pub(crate) fn matrix_tag(variant: &str) -> Option<String> {
    sanitize_tag(variant)
}

/// Whether a template names the matrix variant: in a matrix pipeline every variant runs the
/// image build, and tags without it would be pushed by each in turn.
pub(crate) fn names_the_variant(template: &str) -> bool {
    pieces(template).is_ok_and(|pieces| {
        pieces
            .iter()
            .any(|p| matches!(p, Piece::Placeholder(Placeholder::Matrix)))
    })
}

/// Checks a template at parse time, so that a typo fails the pipeline before any step runs.
pub(crate) fn check_template(template: &str) -> Result<(), TemplateError> {
    pieces(template).map(drop)
}

/// The values placeholders are filled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagContext {
    /// Where images are pushed, e.g. `registry.local:5000`.
    pub registry: String,
    /// `owner/name`; lowercased when rendered because OCI repository names are lowercase.
    pub repo: String,
    pub sha: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The matrix variant's name (`RUST=1.80,TARGET=x86_64`), made a valid tag by `{matrix}`.
    pub matrix: Option<String>,
}

impl TagContext {
    fn value(&self, placeholder: Placeholder) -> Option<String> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        match placeholder {
            Placeholder::Registry => non_empty(self.registry.trim_end_matches('/')),
            Placeholder::Repo => non_empty(&self.repo.to_lowercase()),
            Placeholder::Sha => non_empty(&self.sha),
            Placeholder::ShortSha => {
                non_empty(&self.sha.chars().take(SHORT_SHA_LEN).collect::<String>())
            }
            Placeholder::Branch => self.branch.as_deref().and_then(sanitize_tag),
            Placeholder::Tag => self.tag.as_deref().and_then(sanitize_tag),
            Placeholder::Matrix => self.matrix.as_deref().and_then(sanitize_tag),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag {template:?}: {error}")]
    Template {
        template: String,
        #[source]
        error: TemplateError,
    },
    #[error(
        "tag {template:?} uses {{{placeholder}}}, but this build has no {placeholder} (is it a {}?); limit the step with `when`",
        hint(placeholder)
    )]
    Missing {
        template: String,
        placeholder: &'static str,
    },
    #[error(
        "tag {template:?} renders to {rendered:?}, outside this repository's images \
         ({registry}/{repo} and names below it): the agent's registry login serves every \
         repository, so a pipeline pushes only its own"
    )]
    Foreign {
        template: String,
        rendered: String,
        registry: String,
        repo: String,
    },
    #[error(
        "tag {template:?} renders to {rendered:?}, which is not a valid image reference: {reason}"
    )]
    Invalid {
        template: String,
        rendered: String,
        reason: &'static str,
    },
}

fn hint(placeholder: &str) -> &'static str {
    match placeholder {
        "branch" => "tag build or a pull request",
        "tag" => "branch build",
        "matrix" => "pipeline without `matrix:`",
        _ => "misconfigured server",
    }
}

/// Renders one template.
pub(crate) fn render(template: &str, ctx: &TagContext) -> Result<String, TagError> {
    let pieces = pieces(template).map_err(|error| TagError::Template {
        template: template.to_owned(),
        error,
    })?;
    let mut rendered = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => rendered.push_str(text),
            Piece::Placeholder(p) => {
                let value = ctx.value(p).ok_or_else(|| TagError::Missing {
                    template: template.to_owned(),
                    placeholder: p.name(),
                })?;
                rendered.push_str(&value);
            }
        }
    }
    check_reference(&rendered).map_err(|reason| TagError::Invalid {
        template: template.to_owned(),
        rendered: rendered.clone(),
        reason,
    })?;
    if !owned(&rendered, ctx) {
        return Err(TagError::Foreign {
            template: template.to_owned(),
            rendered,
            registry: ctx.registry.trim_end_matches('/').to_owned(),
            repo: ctx.repo.to_lowercase(),
        });
    }
    Ok(rendered)
}

/// Whether `reference`, if it names the agent's registry (the one its login is for), is the
/// job repository's image or one below it (`{registry}/{repo}`, `{registry}/{repo}/cache`).
/// References to other registries go out without the login. Both sides are read the way docker
/// and buildah read them: `acme/app` and `index.docker.io/acme/app` are `docker.io/acme/app`.
fn owned(reference: &str, ctx: &TagContext) -> bool {
    let (host, path) = split_reference(reference);
    let registry = ctx.registry.trim_end_matches('/');
    // A registry may be given with a namespace (`ghcr.io/acme`); the login covers the host.
    let (registry_host, namespace) = match registry.split_once('/') {
        Some((host, namespace)) => (host, Some(namespace.to_lowercase())),
        None => (registry, None),
    };
    if registry_host.is_empty() || host != normal_host(registry_host) {
        return true;
    }
    let repo = match namespace {
        Some(namespace) => format!("{namespace}/{}", ctx.repo.to_lowercase()),
        None => ctx.repo.to_lowercase(),
    };
    path == repo
        || path
            .strip_prefix(&repo)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `registry/name:tag` -> `registry/name`: the reference without tag or digest (what a
/// digest is appended to). A port in the registry stays.
pub fn repository(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(colon) => &name[..last + colon],
        None => name,
    }
}

/// The registry host and repository path of an image reference, without tag or digest.
fn split_reference(reference: &str) -> (String, String) {
    let name = repository(reference);
    let (host, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (normal_host(first), rest.to_lowercase())
        }
        _ => ("docker.io".to_owned(), name.to_lowercase()),
    };
    let path = if host == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (host, path)
}

fn normal_host(host: &str) -> String {
    let host = host.to_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Makes a git ref name usable as an OCI tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. `/` and every
/// other character outside that set become `-`, and a leading `.` or `-` becomes `_`.
fn sanitize_tag(name: &str) -> Option<String> {
    let mut tag: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_TAG_LEN)
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.replace_range(..1, "_");
    }
    (!tag.is_empty()).then_some(tag)
}

/// The registry daemon would refuse these anyway, but only after the whole build has run.
fn check_reference(reference: &str) -> Result<(), &'static str> {
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("it contains whitespace");
    }
    let name_end = reference.rfind('/').map_or(0, |i| i + 1);
    let last = &reference[name_end..];
    let Some((repo, tag)) = last.split_once(':') else {
        return Ok(());
    };
    if repo.is_empty() {
        return Err("the repository name before ':' is empty");
    }
    let valid_tag = tag.len() <= MAX_TAG_LEN
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid_tag {
        Ok(())
    } else {
        Err("the tag after ':' must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TagContext {
        TagContext {
            registry: "registry.local:5000".to_owned(),
            repo: "Acme/Widget".to_owned(),
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            branch: Some("feature/Add thing".to_owned()),
            tag: None,
            matrix: None,
        }
    }

    /// With Docker Hub as the agent's registry, names without a host are Docker Hub's too.
    #[test]
    fn docker_hub_names_are_read_as_docker_reads_them() {
        let hub = TagContext {
            registry: "docker.io".to_owned(),
            ..ctx()
        };
        for foreign in [
            "otherorg/app:1",
            "index.docker.io/otherorg/app:1",
            "registry-1.docker.io/otherorg/app:1",
            "Docker.IO/otherorg/app:1",
            "app:1",
        ] {
            let err = render(foreign, &hub).unwrap_err();
            assert!(matches!(err, TagError::Foreign { .. }), "{foreign}: {err}");
        }
        for mine in [
            "acme/widget:1",
            "index.docker.io/acme/widget/cache",
            "{registry}/{repo}:x",
        ] {
            assert!(render(mine, &hub).is_ok(), "{mine}");
        }
        let namespaced = TagContext {
            registry: "ghcr.io/team".to_owned(),
            ..ctx()
        };
        assert!(render("{registry}/{repo}:1", &namespaced).is_ok());
        assert!(matches!(
            render("ghcr.io/other/x:1", &namespaced),
            Err(TagError::Foreign { .. })
        ));
    }

    #[test]
    fn repository_drops_tag_and_digest_but_not_port() {
        assert_eq!(
            repository("127.0.0.1:5000/acme/app:abc"),
            "127.0.0.1:5000/acme/app"
        );
        assert_eq!(
            repository("127.0.0.1:5000/acme/app"),
            "127.0.0.1:5000/acme/app"
        );
        assert_eq!(repository("app:1"), "app");
        assert_eq!(repository("r.io/app@sha256:00"), "r.io/app");
    }

    #[test]
    fn only_the_job_repositorys_images_on_the_agents_registry() {
        let c = ctx();
        for mine in [
            "{registry}/{repo}:{sha}",
            "{registry}/{repo}",
            "{registry}/{repo}/cache",
            "{registry}/{repo}/tools:1",
            "{registry}/ACME/Widget:x",
            "docker.io/acme/anything:1",
        ] {
            assert!(render(mine, &c).is_ok(), "{mine}: {:?}", render(mine, &c));
        }
        for foreign in [
            "{registry}/acme/payments:latest",
            "{registry}/acme/widget-tools:1",
            "{registry}/acme:1",
            "{registry}/other/{repo}:1",
            "{registry}/acme/widgetx/cache",
            "REGISTRY.local:5000/acme/other:1",
        ] {
            let err = render(foreign, &c).unwrap_err();
            assert!(matches!(err, TagError::Foreign { .. }), "{foreign}: {err}");
            assert!(
                err.to_string()
                    .contains("registry.local:5000/acme/widget and names below it"),
                "{err}"
            );
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let c = TagContext {
            tag: Some("v1.0".to_owned()),
            ..ctx()
        };
        assert_eq!(
            render("{registry}/{repo}:{sha}", &c).unwrap(),
            "registry.local:5000/acme/widget:0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            render("{registry}/{repo}:{short_sha}", &c).unwrap(),
            "registry.local:5000/acme/widget:0123456"
        );
        assert_eq!(
            render("{registry}/{repo}:{branch}", &c).unwrap(),
            "registry.local:5000/acme/widget:feature-Add-thing"
        );
        assert_eq!(
            render("{registry}/{repo}:{tag}", &c).unwrap(),
            "registry.local:5000/acme/widget:v1.0"
        );
        assert_eq!(
            render("fixed/name:latest", &c).unwrap(),
            "fixed/name:latest"
        );
    }

    #[test]
    fn missing_values_name_the_placeholder() {
        let err = render("{registry}/{repo}:{tag}", &ctx()).unwrap_err();
        assert_eq!(
            err,
            TagError::Missing {
                template: "{registry}/{repo}:{tag}".to_owned(),
                placeholder: "tag"
            }
        );
        assert!(err.to_string().contains("{tag}"), "{err}");
        let no_registry = TagContext {
            registry: String::new(),
            ..ctx()
        };
        assert!(matches!(
            render("{registry}/x:1", &no_registry),
            Err(TagError::Missing {
                placeholder: "registry",
                ..
            })
        ));
    }

    #[test]
    fn template_syntax() {
        assert!(check_template("{registry}/{repo}:{sha}").is_ok());
        assert_eq!(
            check_template("{registry}/{repo}:{foo}"),
            Err(TemplateError::UnknownPlaceholder("foo".to_owned()))
        );
        assert_eq!(check_template("{repo"), Err(TemplateError::Unclosed));
        assert_eq!(check_template("{repo:{sha}"), Err(TemplateError::Unclosed));
        assert_eq!(check_template("repo}"), Err(TemplateError::Unopened));
        assert_eq!(check_template(""), Err(TemplateError::Empty));
        assert_eq!(
            check_template("{}"),
            Err(TemplateError::UnknownPlaceholder(String::new()))
        );
    }

    #[test]
    fn branch_sanitizing() {
        assert_eq!(sanitize_tag("main").unwrap(), "main");
        assert_eq!(sanitize_tag("release/1.0").unwrap(), "release-1.0");
        assert_eq!(sanitize_tag("ünïcode/β").unwrap(), "_n-code--");
        assert_eq!(sanitize_tag("-x").unwrap(), "_x");
        assert_eq!(sanitize_tag(".hidden").unwrap(), "_hidden");
        assert_eq!(sanitize_tag(&"a/".repeat(200)).unwrap().len(), 128);
        assert_eq!(sanitize_tag(""), None);
    }

    #[test]
    fn long_sanitized_branch_renders() {
        let c = TagContext {
            branch: Some("b".repeat(500)),
            ..ctx()
        };
        let rendered = render("r/x:{branch}", &c).unwrap();
        assert_eq!(rendered.len(), "r/x:".len() + 128);
        let err = render("r/x:pre-{branch}", &c).unwrap_err();
        assert!(matches!(err, TagError::Invalid { .. }), "{err}");
    }

    #[test]
    fn invalid_rendered_references() {
        let c = ctx();
        assert!(matches!(
            render("r/x:.bad", &c),
            Err(TagError::Invalid { .. })
        ));
        assert!(matches!(
            render("r/x:a b", &c),
            Err(TagError::Invalid { .. })
        ));
        assert!(matches!(render(":tag", &c), Err(TagError::Invalid { .. })));
        assert!(matches!(
            render("{nope}", &c),
            Err(TagError::Template { .. })
        ));
    }
}
