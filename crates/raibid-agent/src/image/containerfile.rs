//! The base images a Containerfile names, for builds whose `RUN` steps get no network: those
//! images are pulled first, with the network, and the build itself then only uses the store,
//! reading a copy of the Containerfile that names each by the ID its pull gave
//! ([`Containerfile::pinned`]), since the names in a shared store can change meanwhile.
//!
//! This reads what Docker's and buildah's parsers read for `FROM`: the `escape` parser
//! directive, line continuations, comment lines, `ARG`s declared before the first `FROM`
//! (their values overridden by build arguments), the automatic platform arguments
//! (`TARGETARCH`, `BUILDPLATFORM` and the like), `$NAME`, `${NAME}`, `${NAME:-word}`,
//! `${NAME:+word}`, and the `--platform=` flag (`FROM --platform=$BUILDPLATFORM golang AS
//! build` runs its stage on the agent's platform in a cross build). It skips the bodies of
//! the heredocs of `RUN`, `COPY` and `ADD` (`COPY <<EOF /app/app.py`), as BuildKit's parser
//! does: a line `from redis import Redis` there is a file's contents, not a `FROM`. An
//! image it names wrongly is simply not in the store when the build looks for it, and the
//! build fails. A `FROM` it failed to see (no such case is known) would keep its name, and
//! the build would use whatever image has that name in the store, if any.

use std::collections::BTreeMap;

/// An image a `FROM` instruction pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseImage {
    pub(crate) image: String,
    /// Its `--platform=` flag, variables substituted (`linux/arm64`); `None` without one (or
    /// when it comes out empty): the build's target platform.
    pub(crate) platform: Option<String>,
}

/// One `FROM` instruction.
#[derive(Debug)]
struct From {
    /// The lines it takes in the text, continuation and comment lines included.
    lines: std::ops::RangeInclusive<usize>,
    /// Its flags, as written.
    flags: Vec<String>,
    /// What it pulls: `None` for `scratch`, an earlier stage, or no image at all.
    base: Option<BaseImage>,
    /// The words after the image (`AS <name>`), as written.
    rest: Vec<String>,
}

/// A Containerfile's text (without a byte order mark, which buildah skips too) and its `FROM`
/// instructions.
#[derive(Debug)]
pub(crate) struct Containerfile {
    text: String,
    froms: Vec<From>,
    /// The names of its stages, lowercased.
    stages: Vec<String>,
}

impl Containerfile {
    /// `automatic` are the platform arguments buildah defines for every build.
    pub(crate) fn parse(
        text: &str,
        build_args: &BTreeMap<String, String>,
        automatic: &[(String, String)],
    ) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let escape = escape_char(text);
        let mut global: BTreeMap<String, String> = automatic.iter().cloned().collect();
        let mut stages: Vec<String> = Vec::new();
        let mut froms: Vec<From> = Vec::new();
        let mut seen_from = false;
        for (lines, instruction) in instructions(text, escape) {
            let instruction = instruction.trim_start();
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or((instruction, ""));
            if keyword.eq_ignore_ascii_case("ARG") && !seen_from {
                // Only arguments declared before the first FROM are visible to FROM lines.
                for word in rest.split_whitespace() {
                    let (name, default) = match word.split_once('=') {
                        Some((name, default)) => (name, Some(default)),
                        None => (word, None),
                    };
                    let value = build_args
                        .get(name)
                        .cloned()
                        .or_else(|| default.map(|d| substitute(unquote(d), &global, escape)));
                    if let Some(value) = value {
                        global.insert(name.to_owned(), value);
                    }
                }
            } else if keyword.eq_ignore_ascii_case("FROM") {
                seen_from = true;
                // Docker takes flags only as `--name=value`.
                let flags: Vec<String> = rest
                    .split_whitespace()
                    .take_while(|w| w.starts_with("--"))
                    .map(str::to_owned)
                    .collect();
                let platform = flags
                    .iter()
                    .filter_map(|w| w.strip_prefix("--platform="))
                    .next_back()
                    .map(|p| substitute(unquote(p), &global, escape))
                    .filter(|p| !p.is_empty());
                let mut words = rest.split_whitespace().skip(flags.len());
                let Some(image) = words.next() else { continue };
                let image = substitute(image, &global, escape);
                let rest: Vec<String> = words.map(str::to_owned).collect();
                let stage = match rest.as_slice() {
                    [as_, name, ..] if as_.eq_ignore_ascii_case("as") => {
                        Some(name.to_ascii_lowercase())
                    }
                    _ => None,
                };
                let lower = image.to_ascii_lowercase();
                let base = (!image.is_empty() && lower != "scratch" && !stages.contains(&lower))
                    .then_some(BaseImage { image, platform });
                froms.push(From {
                    lines,
                    flags,
                    base,
                    rest,
                });
                stages.extend(stage);
            }
        }
        Self {
            text: text.to_owned(),
            froms,
            stages,
        }
    }

    /// The images `FROM` instructions pull, in order and without repeats: not `scratch`, not
    /// an earlier stage.
    pub(crate) fn base_images(&self) -> Vec<BaseImage> {
        let mut images: Vec<BaseImage> = Vec::new();
        for base in self.froms.iter().filter_map(|f| f.base.as_ref()) {
            if !images.contains(base) {
                images.push(base.clone());
            }
        }
        images
    }

    /// The text with every `FROM` that pulls an image naming instead the image `id_of` gives
    /// it (`<64 hex digits>`, an image ID in the store), as `sha256:<id>`, flags and stage
    /// name kept: the build then uses exactly those images, whatever their names point to
    /// by then. Such an instruction is written on one line; every other line is kept as it is.
    pub(crate) fn pinned(
        &self,
        mut id_of: impl FnMut(&BaseImage) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut replaced: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        for from in &self.froms {
            let Some(base) = &from.base else { continue };
            let id = id_of(base)?;
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{id:?} is not an image ID"));
            }
            let reference = format!("sha256:{}", id.to_ascii_lowercase());
            // buildah would take it for the stage.
            if self.stages.contains(&reference) {
                return Err(format!("a stage is named {reference}"));
            }
            let mut words: Vec<&str> = vec!["FROM"];
            words.extend(from.flags.iter().map(String::as_str));
            words.push(&reference);
            words.extend(from.rest.iter().map(String::as_str));
            replaced.insert(*from.lines.start(), (*from.lines.end(), words.join(" ")));
        }
        let mut out = String::with_capacity(self.text.len());
        let mut skip_to = None;
        for (n, line) in self.text.split_inclusive('\n').enumerate() {
            if skip_to.is_some_and(|last| n <= last) {
                continue;
            }
            skip_to = None;
            match replaced.get(&n) {
                Some((last, instruction)) => {
                    out.push_str(instruction);
                    out.push('\n');
                    skip_to = Some(*last);
                }
                None => out.push_str(line),
            }
        }
        Ok(out)
    }
}

/// The images `FROM` instructions pull, in order and without repeats: not `scratch`, not an
/// earlier stage. `automatic` are the platform arguments buildah defines for every build.
#[cfg(test)]
pub(crate) fn base_images(
    text: &str,
    build_args: &BTreeMap<String, String>,
    automatic: &[(String, String)],
) -> Vec<BaseImage> {
    Containerfile::parse(text, build_args, automatic).base_images()
}

/// The `# escape=` parser directive: `\` unless it says `` ` ``. Directives are the comment
/// lines of the form `# key=value` at the very top.
fn escape_char(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") {
            return if value.trim() == "`" { '`' } else { '\\' };
        }
    }
    '\\'
}

/// Logical instructions, each with the lines it takes (their indices in `text.lines()`):
/// continuation lines joined, comment and blank lines dropped (also inside a continued
/// instruction, as Docker does), and the bodies of heredocs skipped: those lines are the
/// contents of a file or script (`from redis import Redis`), not instructions.
fn instructions(text: &str, escape: char) -> Vec<(std::ops::RangeInclusive<usize>, String)> {
    let mut all = Vec::new();
    let mut current = String::new();
    // The instruction as BuildKit's parser joins it, which is what it reads heredocs from.
    let mut joined = String::new();
    let mut first = None;
    let mut last = 0;
    // The heredocs whose bodies come next, in order.
    let mut bodies: std::collections::VecDeque<Heredoc> = std::collections::VecDeque::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(heredoc) = bodies.front() {
            if heredoc.ends_at(line) {
                bodies.pop_front();
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let start = *first.get_or_insert(n);
        last = n;
        let raw = if start == n { line.trim_start() } else { line };
        match trimmed.strip_suffix(escape) {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
                let raw = raw.trim_end();
                joined.push_str(raw.strip_suffix(escape).unwrap_or(raw));
            }
            None => {
                current.push_str(trimmed);
                joined.push_str(raw.trim_end_matches('\r'));
                bodies.extend(heredocs(&joined));
                joined.clear();
                all.push((start..=n, std::mem::take(&mut current)));
                first = None;
            }
        }
    }
    if let Some(start) = first
        && !current.trim().is_empty()
    {
        all.push((start..=last, current));
    }
    all
}

/// A heredoc (`<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`) of a `RUN`, `COPY` or `ADD`: its
/// body is the lines that follow the instruction up to the line that is its word.
#[derive(Debug, PartialEq, Eq)]
struct Heredoc {
    word: String,
    /// `<<-`: leading tabs are stripped, the terminating line's too.
    chomp: bool,
}

impl Heredoc {
    /// Whether `line` (without its line ending) ends the body.
    fn ends_at(&self, line: &str) -> bool {
        let line = line.trim_end_matches(['\r', '\n']);
        let line = if self.chomp {
            line.trim_start_matches('\t')
        } else {
            line
        };
        line == self.word
    }
}

/// The heredocs of an instruction, in order, as BuildKit's parser (which buildah's follows)
/// finds them: only `RUN`, `COPY` and `ADD` (also after `ONBUILD`) in shell form have them,
/// each a shell word `[n]<<[-]WORD` of the instruction, `WORD` possibly quoted.
fn heredocs(instruction: &str) -> Vec<Heredoc> {
    if !instruction.contains("<<") {
        return Vec::new();
    }
    let split = |text: &str| -> (String, String) {
        let text = text.trim_start();
        let (keyword, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        (keyword.to_ascii_uppercase(), rest.to_owned())
    };
    let (mut keyword, mut rest) = split(instruction);
    if keyword == "ONBUILD" {
        (keyword, rest) = split(&rest);
    }
    if !matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
        return Vec::new();
    }
    // The JSON (exec) form has no heredocs.
    let mut args = rest.trim_start();
    while args.starts_with("--") {
        args = args
            .split_once(char::is_whitespace)
            .map_or("", |(_, after)| after.trim_start());
    }
    if args.starts_with('[') && serde_json::from_str::<Vec<String>>(args).is_ok() {
        return Vec::new();
    }
    raw_words(instruction)
        .iter()
        .filter_map(|word| {
            let after = word.trim_start_matches(|c: char| c.is_ascii_digit());
            let after = after.strip_prefix("<<")?;
            let (chomp, quoted) = match after.strip_prefix('-') {
                Some(quoted) => (true, quoted),
                None => (false, after),
            };
            if quoted.contains('<') {
                return None;
            }
            let word = unquoted(quoted);
            (!word.is_empty()).then_some(Heredoc { word, chomp })
        })
        .collect()
}

/// The shell words of `text`, split at unquoted blanks, quotes and backslashes kept.
fn raw_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            '\\' => {
                word.push(c);
                word.extend(chars.next());
            }
            '\'' => {
                word.push(c);
                for c in chars.by_ref() {
                    word.push(c);
                    if c == '\'' {
                        break;
                    }
                }
            }
            '"' => {
                word.push(c);
                while let Some(c) = chars.next() {
                    word.push(c);
                    match c {
                        '\\' => word.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A shell word with its quotes removed and its backslash escapes resolved.
fn unquoted(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$')) => {
                            out.extend(chars.next());
                        }
                        c => out.push(c),
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Variable references replaced by their values; unknown names are empty, as in buildah.
fn substitute(word: &str, vars: &BTreeMap<String, String>, escape: char) -> String {
    let lookup = |name: &str| vars.get(name).map_or("", String::as_str);
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if c == escape && chars.peek() == Some(&'$') {
            out.push('$');
            chars.next();
            continue;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            let mut inner = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '}' {
                    closed = true;
                    break;
                }
                inner.push(c);
            }
            if !closed {
                out.push_str("${");
                out.push_str(&inner);
                continue;
            }
            let (name, modifier) = match inner.split_once(':') {
                Some((name, modifier)) => (name, Some(modifier)),
                None => (inner.as_str(), None),
            };
            let set = !lookup(name).is_empty();
            match modifier.map(|m| m.split_at(m.len().min(1))) {
                Some(("-", default)) => out.push_str(if set { lookup(name) } else { default }),
                Some(("+", alternative)) => out.push_str(if set { alternative } else { "" }),
                _ => out.push_str(lookup(name)),
            }
        } else {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(lookup(&name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn automatic() -> [(String, String); 4] {
        [
            ("TARGETARCH".to_owned(), "arm64".to_owned()),
            ("TARGETPLATFORM".to_owned(), "linux/arm64".to_owned()),
            ("TARGETOS".to_owned(), "linux".to_owned()),
            ("BUILDPLATFORM".to_owned(), "linux/amd64".to_owned()),
        ]
    }

    fn with_platforms(text: &str, args: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        let args = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        base_images(text, &args, &automatic())
            .into_iter()
            .map(|b| (b.image, b.platform))
            .collect()
    }

    fn bases(text: &str, args: &[(&str, &str)]) -> Vec<String> {
        with_platforms(text, args)
            .into_iter()
            .map(|(image, _)| image)
            .collect()
    }

    #[test]
    fn each_base_image_comes_with_its_platform_flag() {
        let text = "\
ARG TOOLS=linux/s390x
FROM --platform=$BUILDPLATFORM golang:1.22 AS build
FROM --platform=${TARGETOS}/${TARGETARCH} debian:12 AS runtime
FROM --platform=\"$TARGETPLATFORM\" --other=x alpine:3
FROM --platform=$TOOLS busybox:1
FROM --platform=$UNSET golang:1.22
FROM golang:1.22
FROM --platform=linux/amd64 golang:1.22
FROM --platform=linux/arm/v7 build
";
        let some = |p: &str| Some(p.to_owned());
        assert_eq!(
            with_platforms(text, &[]),
            [
                ("golang:1.22".into(), some("linux/amd64")),
                ("debian:12".into(), some("linux/arm64")),
                ("alpine:3".into(), some("linux/arm64")),
                ("busybox:1".into(), some("linux/s390x")),
                ("golang:1.22".into(), None),
            ]
        );
        assert_eq!(
            with_platforms(text, &[("TOOLS", "linux/ppc64le")])[3],
            ("busybox:1".into(), some("linux/ppc64le"))
        );
    }

    #[test]
    fn stages_and_scratch_are_not_pulled() {
        let text = "\
# syntax=docker/dockerfile:1
FROM --platform=$BUILDPLATFORM golang:1.22 AS Build
RUN go build
from build as test
FROM scratch
COPY --from=build /app /app
FROM debian:12
FROM --platform=linux/amd64 golang:1.22
";
        assert_eq!(bases(text, &[]), ["golang:1.22", "debian:12"]);
    }

    #[test]
    fn global_arguments_build_arguments_and_platform_arguments() {
        let text = "\
ARG REGISTRY=docker.io
ARG BASE=\"${REGISTRY}/library/debian\" \\
    VERSION=12
# a comment in the middle

FROM $BASE:${VERSION}-slim
ARG LATE=nope
FROM ${LATE:-alpine}:3 AS two
FROM ${NOPE:+x}busybox:${TARGETARCH}
FROM r.example/app:${UNSET}x
";
        assert_eq!(
            bases(text, &[]),
            [
                "docker.io/library/debian:12-slim",
                "alpine:3",
                "busybox:arm64",
                "r.example/app:x"
            ]
        );
        assert_eq!(
            bases(text, &[("VERSION", "13"), ("LATE", "ignored")])[..2],
            ["docker.io/library/debian:13-slim", "alpine:3"]
        );
    }

    /// Every FROM that pulls names its image by ID, on one line; nothing else changes.
    #[test]
    fn pinned_names_each_pulled_base_by_id() {
        let text = "\u{feff}# escape=`
ARG BASE=debian
# a comment
FROM --platform=$BUILDPLATFORM `
  # inside
  golang:1.22 AS build
RUN echo FROM x `
  && true
FROM $BASE:12\r
COPY --from=build /app /app
from build as test
FROM scratch
FROM debian:12";
        let file = Containerfile::parse(text, &BTreeMap::new(), &automatic());
        let id = |n: char| n.to_string().repeat(64);
        let pinned = file
            .pinned(
                |base| match (base.image.as_str(), base.platform.as_deref()) {
                    ("golang:1.22", Some("linux/amd64")) => Ok(id('a')),
                    ("debian:12", None) => Ok(id('b')),
                    other => Err(format!("{other:?}")),
                },
            )
            .unwrap();
        assert_eq!(
            pinned,
            format!(
                "# escape=`
ARG BASE=debian
# a comment
FROM --platform=$BUILDPLATFORM sha256:{a} AS build
RUN echo FROM x `
  && true
FROM sha256:{b}
COPY --from=build /app /app
from build as test
FROM scratch
FROM sha256:{b}
",
                a = id('a'),
                b = id('b')
            )
        );
        // What it writes is read back as it is meant.
        let again = Containerfile::parse(&pinned, &BTreeMap::new(), &automatic());
        assert_eq!(
            again.base_images(),
            [
                BaseImage {
                    image: format!("sha256:{}", id('a')),
                    platform: Some("linux/amd64".into())
                },
                BaseImage {
                    image: format!("sha256:{}", id('b')),
                    platform: None
                },
            ]
        );
        // Not an ID, no ID, or a stage that would be taken for it.
        assert!(file.pinned(|_| Ok("debian:12".into())).is_err());
        assert!(file.pinned(|_| Err("not pulled".into())).is_err());
        let stage = format!("FROM debian:12 AS sha256:{}\n", id('c'));
        let file = Containerfile::parse(&stage, &BTreeMap::new(), &automatic());
        assert!(file.pinned(|_| Ok(id('c'))).is_err());
    }

    /// Heredoc bodies are file contents and scripts: a `from` line in one is no `FROM`, and
    /// the pinned copy keeps them byte for byte.
    #[test]
    fn heredoc_bodies_are_not_instructions() {
        let text = "\
FROM python:3 AS app
COPY <<EOF /app/app.py
from redis import Redis
FROM x
EOF
RUN <<EOF python3
from redis import Redis
FROM x AS y
EOF
RUN <<-'END' cat > /a; cat <<\"TWO\" > /b \\
  && 2<<-THREE true
\tfrom tabbed import x
\tEND
FROM not-the-end
TWO
from second import y
\t\tTHREE
ADD --chmod=644 <<one <<two /dir/
FROM one
 one
FROM still-one
one
FROM two
two
ONBUILD RUN <<EOF
FROM onbuild
EOF
RUN [\"sh\", \"-c\", \"cat <<EOF\"]
from debian:12
RUN echo <<EOF<x && echo << EOF && echo a<<EOF
FROM alpine:3
RUN cat <<EOF
from never-ended
";
        assert_eq!(bases(text, &[]), ["python:3", "debian:12", "alpine:3"]);
        let file = Containerfile::parse(text, &BTreeMap::new(), &automatic());
        let id = |n: char| n.to_string().repeat(64);
        let pinned = file
            .pinned(|base| match base.image.as_str() {
                "python:3" => Ok(id('a')),
                "debian:12" => Ok(id('b')),
                "alpine:3" => Ok(id('c')),
                other => Err(other.to_owned()),
            })
            .unwrap();
        let expected = text
            .replacen(
                "FROM python:3 AS",
                &format!("FROM sha256:{} AS", id('a')),
                1,
            )
            .replacen("from debian:12", &format!("FROM sha256:{}", id('b')), 1)
            .replacen("FROM alpine:3", &format!("FROM sha256:{}", id('c')), 1);
        assert_eq!(pinned, expected);
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM `\n  mcr.example/windows:1\nRUN echo \\\nFROM two\n";
        assert_eq!(bases(text, &[]), ["mcr.example/windows:1", "two"]);
        assert_eq!(bases("FROM \\$X\n", &[]), ["$X"]);
    }
}
