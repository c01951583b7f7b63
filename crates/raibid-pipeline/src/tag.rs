//! Image tag templates like `{registry}/{repo}:{sha}`.

use std::cell::Cell;

/// The longest tag the OCI distribution spec allows.
const MAX_TAG_LEN: usize = 128;

/// Git's default abbreviation length, so `{short_sha}` matches what people see in `git log`.
const SHORT_SHA_LEN: usize = 7;

/// The longest `{sha}`: 64 hex digits, in a SHA-256 repository.
const MAX_SHA_LEN: usize = 64;

thread_local! {
    /// The longest `{matrix}` of the pipeline being parsed, while [`with_matrix_tag_len`] runs.
    static MATRIX_TAG_LEN: Cell<Option<usize>> = const { Cell::new(None) };
}

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
    /// Text no rendering can make a valid image reference of.
    #[error("{0}")]
    Invalid(String),
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

/// The placeholders of a template that is not an image reference (a cache key), in order:
/// cache keys take the same braces and names as tags, so there is one syntax to learn.
pub(crate) fn placeholder_names(template: &str) -> Result<Vec<&'static str>, TemplateError> {
    Ok(pieces(template)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Placeholder(p) => Some(p.name()),
            Piece::Literal(_) => None,
        })
        .collect())
}

/// Why [`fill`] could not fill in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FillError {
    Template(TemplateError),
    /// The name of the first placeholder the context has no value for.
    Missing(&'static str),
}

/// Fills in a template as plain text, without the image-reference rules of [`render`]: for
/// cache keys, which are hashed into a directory name and need no more than their values.
pub(crate) fn fill(template: &str, ctx: &TagContext) -> Result<String, FillError> {
    let mut filled = String::new();
    for piece in pieces(template).map_err(FillError::Template)? {
        match piece {
            Piece::Literal(text) => filled.push_str(text),
            Piece::Placeholder(p) => {
                filled.push_str(&ctx.value(p).ok_or(FillError::Missing(p.name()))?)
            }
        }
    }
    Ok(filled)
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

/// Checks a template at parse time, so that a typo fails the pipeline before any step runs:
/// its placeholders, and that its text can render to a valid image reference. A `{matrix}` in
/// the tag counts as its longest value while [`with_matrix_tag_len`] runs, else as one character.
pub(crate) fn check_template(template: &str) -> Result<(), TemplateError> {
    check_template_with(template, MATRIX_TAG_LEN.get())
}

/// [`check_template`] with the longest `{matrix}` of the pipeline, if known.
pub(crate) fn check_template_with(
    template: &str,
    matrix_len: Option<usize>,
) -> Result<(), TemplateError> {
    let pieces = pieces(template)?;
    let mut tokens = Vec::new();
    for piece in &pieces {
        match *piece {
            Piece::Literal(text) => tokens.extend(text.chars().map(Token::Char)),
            Piece::Placeholder(p) => tokens.push(Token::Placeholder(p)),
        }
    }
    check_shape(&tokens, matrix_len).map_err(TemplateError::Invalid)
}

/// Runs `f` (a parse) with the pipeline's longest `{matrix}` known to [`check_template`].
pub(crate) fn with_matrix_tag_len<T>(len: usize, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            MATRIX_TAG_LEN.set(self.0);
        }
    }
    let _restore = Restore(MATRIX_TAG_LEN.replace(Some(len)));
    f()
}

/// A template character by character, placeholders whole.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    Placeholder(Placeholder),
}

fn text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| match t {
            Token::Char(c) => c.to_string(),
            Token::Placeholder(p) => format!("{{{}}}", p.name()),
        })
        .collect()
}

/// `[registry/]path[:tag]`, read the way docker reads a reference. `{registry}` is a whole host
/// (maybe with a namespace), `{repo}` is `owner/name` lowercased, `{sha}`/`{short_sha}` are
/// lowercase hex; `{branch}`, `{tag}` and `{matrix}` are made valid tags (letters of either case,
/// digits, `_.-`), which only the tag can hold.
fn check_shape(tokens: &[Token], matrix_len: Option<usize>) -> Result<(), String> {
    if let Some(Token::Char(c)) = tokens
        .iter()
        .find(|t| matches!(t, Token::Char(c) if c.is_whitespace() || c.is_control()))
    {
        return Err(format!(
            "it contains {c:?}; an image reference has no whitespace or control characters"
        ));
    }
    if tokens.contains(&Token::Char('@')) {
        return Err(
            "'@' starts a digest, which the registry gives an image; a tag template names a tag"
                .to_owned(),
        );
    }
    // The tag is what follows a ':' after the last '/' (a ':' before it is a registry's port).
    let last_slash = tokens.iter().rposition(|t| {
        matches!(
            t,
            Token::Char('/')
                | Token::Placeholder(Placeholder::Registry)
                | Token::Placeholder(Placeholder::Repo)
        )
    });
    let start = last_slash.map_or(0, |i| i + 1);
    let (name, tag) = match tokens[start..].iter().position(|t| *t == Token::Char(':')) {
        Some(colon) => (&tokens[..start + colon], Some(&tokens[start + colon + 1..])),
        None => (tokens, None),
    };
    check_name(name)?;
    if let Some(tag) = tag {
        check_tag(tag, matrix_len)?;
    }
    Ok(())
}

fn check_name(name: &[Token]) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name before ':' is empty".to_owned());
    }
    let registry = Token::Placeholder(Placeholder::Registry);
    if name[1..].contains(&registry) {
        return Err(
            "{registry} is the registry's host, so it comes first, like {registry}/{repo}:{sha}"
                .to_owned(),
        );
    }
    let path = if name[0] == registry {
        match name.get(1) {
            Some(Token::Char('/')) => &name[2..],
            _ => {
                return Err(
                    "{registry} is followed by '/' and a repository name, like {registry}/{repo}"
                        .to_owned(),
                );
            }
        }
    } else {
        match name.iter().position(|t| *t == Token::Char('/')) {
            Some(slash) if is_host(&name[..slash]) => {
                check_host(&text(&name[..slash]))?;
                &name[slash + 1..]
            }
            _ => name,
        }
    };
    for component in path.split(|t| *t == Token::Char('/')) {
        check_path_component(component)?;
    }
    Ok(())
}

/// Whether docker reads the first part of a name as a registry host: `localhost`, or text with
/// a '.' or a ':' (`registry.local:5000`).
fn is_host(first: &[Token]) -> bool {
    let Some(chars) = first
        .iter()
        .map(|t| match t {
            Token::Char(c) => Some(*c),
            Token::Placeholder(_) => None,
        })
        .collect::<Option<String>>()
    else {
        return false;
    };
    chars == "localhost" || chars.contains(['.', ':'])
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let valid_name = if let Some(ip) = name.strip_prefix('[') {
        ip.strip_suffix(']').is_some_and(|ip| {
            !ip.is_empty() && ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
        })
    } else {
        name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    let valid_port =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()));
    if valid_name && valid_port {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a registry host; give one like registry.example.com:5000, or \
             {{registry}} for the agent's"
        ))
    }
}

/// One '/'-separated part of a repository path, as the OCI distribution spec has it:
/// `[a-z0-9]+` runs joined by '.', '_', '__' or any number of '-'.
fn check_path_component(component: &[Token]) -> Result<(), String> {
    if component.is_empty() {
        return Err(
            "the repository path has an empty part ('//', or a '/' at its start or end)".to_owned(),
        );
    }
    let shown = text(component);
    if component.contains(&Token::Char(':')) {
        return Err(format!(
            "{shown:?}: a ':' in the repository path; the tag comes last, after a ':' that \
             follows the last '/' (and {{registry}} or {{repo}}, which hold '/')"
        ));
    }
    let mut sample = String::new();
    for token in component {
        match token {
            Token::Char(c) => sample.push(*c),
            // Stand-ins that start and end the way the rendered values do.
            Token::Placeholder(Placeholder::Repo) => sample.push_str("o/r"),
            Token::Placeholder(Placeholder::Sha | Placeholder::ShortSha) => sample.push('0'),
            Token::Placeholder(
                p @ (Placeholder::Branch | Placeholder::Tag | Placeholder::Matrix),
            ) => {
                return Err(format!(
                    "{{{0}}} is in the repository path ({shown:?}), but it can render to \
                     uppercase letters and other characters a repository name cannot hold; use \
                     it in the tag, after ':' (like {{registry}}/{{repo}}:{{sha}}-{{{0}}})",
                    p.name()
                ));
            }
            Token::Placeholder(Placeholder::Registry) => {
                unreachable!("{{registry}} is only first, checked by the caller")
            }
        }
    }
    if sample.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{shown:?}: repository names are lowercase; write it in lowercase"
        ));
    }
    if !sample.split('/').all(valid_path_component) {
        return Err(format!(
            "{shown:?} is not a valid repository name: use lowercase letters and digits, joined \
             by '.', '_', '__' or '-'"
        ));
    }
    Ok(())
}

fn valid_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut rest = part;
    loop {
        let run = rest.find(|c: char| !alnum(c)).unwrap_or(rest.len());
        if run == 0 {
            return false;
        }
        rest = &rest[run..];
        if rest.is_empty() {
            return true;
        }
        let sep = rest.find(alnum).unwrap_or(rest.len());
        let valid_sep =
            matches!(&rest[..sep], "." | "_" | "__") || rest[..sep].bytes().all(|b| b == b'-');
        if !valid_sep {
            return false;
        }
        rest = &rest[sep..];
    }
}

fn check_tag(tag: &[Token], matrix_len: Option<usize>) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty; remove the ':' or give a tag".to_owned());
    }
    let shown = text(tag);
    let mut len = 0;
    let mut notes = Vec::new();
    for token in tag {
        len += match token {
            Token::Char(c) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => 1,
            Token::Char(c) => {
                return Err(format!(
                    "the tag {shown:?} contains {c:?}; a tag holds letters, digits, '_', '.' and '-'"
                ));
            }
            Token::Placeholder(p @ (Placeholder::Registry | Placeholder::Repo)) => {
                return Err(format!(
                    "{{{}}} renders with '/', which a tag (after ':') cannot hold; use it before \
                     the ':'",
                    p.name()
                ));
            }
            Token::Placeholder(Placeholder::Sha) => {
                notes.push(format!("{{sha}} is up to {MAX_SHA_LEN}"));
                MAX_SHA_LEN
            }
            Token::Placeholder(Placeholder::ShortSha) => SHORT_SHA_LEN,
            Token::Placeholder(p @ (Placeholder::Branch | Placeholder::Tag)) => {
                notes.push(format!("{{{}}} counted as 1", p.name()));
                1
            }
            Token::Placeholder(Placeholder::Matrix) => match matrix_len {
                Some(n) => {
                    notes.push(format!("{{matrix}} is up to {n} in this matrix"));
                    n
                }
                None => 1,
            },
        };
    }
    if let Token::Char(c @ ('.' | '-')) = tag[0] {
        return Err(format!(
            "the tag {shown:?} starts with {c:?}; a tag starts with a letter, a digit or '_'"
        ));
    }
    if len > MAX_TAG_LEN {
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        return Err(format!(
            "the tag {shown:?} can render to {len} characters{notes}; a tag holds at most \
             {MAX_TAG_LEN}"
        ));
    }
    Ok(())
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

    fn invalid(template: &str) -> String {
        match check_template(template) {
            Err(TemplateError::Invalid(message)) => message,
            other => panic!("{template}: {other:?}"),
        }
    }

    #[test]
    fn templates_that_render_to_valid_references() {
        for ok in [
            "{registry}/{repo}:{sha}",
            "{registry}/{repo}",
            "{registry}/{repo}/cache",
            "{registry}/{repo}/tools-{short_sha}:v1.2_3-{branch}",
            "{registry}/{repo}:{sha}-{matrix}",
            "{registry}/{repo}:_{tag}",
            "{repo}:{sha}",
            "a",
            "t",
            "r/x:{branch}",
            "fixed/name:latest",
            "localhost/app:1",
            "localhost:5000/app",
            "registry.local:5000/team/app:1",
            "Registry.Example.com/team/a.b_c__d---e:X",
            "[::1]:5000/app:1",
            "ghcr.io/acme/{repo}-{sha}:x",
        ] {
            assert!(check_template(ok).is_ok(), "{ok}: {:?}", check_template(ok));
        }
    }

    #[test]
    fn literal_text_no_rendering_can_make_valid() {
        for (template, needle) in [
            ("{registry}/{repo}:v1+build", "contains '+'"),
            ("{registry}/{repo}:.hidden", "starts with '.'"),
            ("{registry}/{repo}:-x", "starts with '-'"),
            ("{registry}/{repo}:", "tag after ':' is empty"),
            ("{registry}/{repo}:a:b", "contains ':'"),
            ("{registry}/{repo}:{repo}", "a ':' in the repository path"),
            ("r/x:{registry}", "comes first"),
            (
                "{registry}/Acme/App:1",
                "\"Acme\": repository names are lowercase",
            ),
            ("{registry}/{repo}/-cache", "not a valid repository name"),
            ("{registry}/{repo}/a..b", "not a valid repository name"),
            ("{registry}/{repo}/a___b", "not a valid repository name"),
            ("{registry}/{repo}/a+b", "not a valid repository name"),
            ("{registry}/{repo}//x", "empty part"),
            ("{registry}/{repo}/", "empty part"),
            ("/x:1", "empty part"),
            (
                "{registry}/{repo}/{matrix}:{sha}",
                "{matrix} is in the repository path",
            ),
            (
                "{registry}/{repo}-{branch}:1",
                "{branch} is in the repository path",
            ),
            ("{registry}/{tag}", "{tag} is in the repository path"),
            ("{registry}", "followed by '/'"),
            ("{registry}{repo}", "followed by '/'"),
            ("x/{registry}/{repo}", "comes first"),
            (":tag", "repository name before ':' is empty"),
            ("r/x@sha256:00", "'@' starts a digest"),
            ("r/x:a\tb", "whitespace"),
            ("bad_host.io/x:1", "is not a registry host"),
            ("host.io:port/x:1", "is not a registry host"),
        ] {
            let message = invalid(template);
            assert!(message.contains(needle), "{template}: {message}");
        }
    }

    /// OCI tags are at most 128 characters: `{sha}` counts as the 64 of a SHA-256 repository,
    /// `{matrix}` as the pipeline's longest variant while it is known.
    #[test]
    fn tags_too_long_for_any_rendering() {
        let fixed = "x".repeat(128 - 64);
        assert!(check_template(&format!("r/x:{{sha}}{fixed}")).is_ok());
        let message = invalid(&format!("r/x:{{sha}}{fixed}y"));
        assert!(
            message.contains("can render to 129 characters ({sha} is up to 64)"),
            "{message}"
        );
        assert!(invalid(&format!("r/x:{}", "v".repeat(129))).contains("at most 128"));
        assert!(check_template("r/x:{sha}-{matrix}").is_ok());
        assert!(check_template_with("r/x:{sha}-{matrix}", Some(63)).is_ok());
        let message = match check_template_with("r/x:{sha}-{matrix}", Some(64)) {
            Err(TemplateError::Invalid(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            message.contains(
                "129 characters ({sha} is up to 64, {matrix} is up to 64 in this matrix)"
            ),
            "{message}"
        );
        assert!(with_matrix_tag_len(64, || check_template("r/x:{sha}-{matrix}")).is_err());
        assert!(check_template("r/x:{sha}-{matrix}").is_ok(), "restored");
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
