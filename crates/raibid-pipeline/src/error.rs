//! Parse errors that say where: `file:line:column: message`.

/// An error in a pipeline file. Line and column are 1-based and always set: an error that YAML
/// cannot place (an alias bomb, several documents) points at 1:1 or at the best known spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PipelineError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl PipelineError {
    pub(crate) fn new(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(crate) fn from_yaml(file: &str, text: &str, err: &serde_yaml::Error) -> Self {
        let (line, column) = match err.location() {
            Some(loc) => (loc.line(), loc.column()),
            None => second_document(text).unwrap_or((1, 1)),
        };
        let mut message = explain(&without_positions(&err.to_string()));
        if char_at(text, line, column) == Some('\t') {
            message.push_str(" (a tab: YAML indentation must use spaces)");
        }
        Self::new(file, line, column, message)
    }
}

/// serde_yaml's own wording for its limits names the mechanism, not what the user did.
fn explain(message: &str) -> String {
    match message {
        "repetition limit exceeded" => {
            "YAML aliases (*name) expand to far too much data; write the values out instead"
                .to_owned()
        }
        "deserializing from YAML containing more than one document is not supported" => {
            "the file holds more than one YAML document (`---`); a pipeline is a single document"
                .to_owned()
        }
        _ => foreign_key(message)
            .or_else(|| raibid_model::suggest::misspelt(message))
            .unwrap_or_else(|| message.to_owned()),
    }
}

/// Where in the file an unknown key was found, from the path in front of serde's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    Step,
    Service,
    When,
    Elsewhere,
}

impl Place {
    /// `""`, `steps[0]`, `steps.build`, `services[1]`, `when[0]`, `steps[0].when`, ...
    fn of(path: &str) -> Self {
        if path.is_empty() {
            return Self::Top;
        }
        // `steps[0]` is two segments, as `steps.build` is: `steps`, then the step.
        let segments: Vec<&str> = path
            .split('.')
            .flat_map(|s| match s.find('[') {
                Some(at) if at > 0 => vec![&s[..at], &s[at..]],
                _ => vec![s],
            })
            .collect();
        let is_index = |s: &str| s.starts_with('[');
        match segments.as_slice() {
            [.., "when"] => Self::When,
            [.., "when", i] if is_index(i) => Self::When,
            ["steps", _] => Self::Step,
            ["services", _] => Self::Service,
            _ => Self::Elsewhere,
        }
    }
}

/// Keys of Woodpecker, GitHub Actions and GitLab CI files that raibid does not read, with what
/// to write instead or why there is nothing: serde's "unknown field, expected one of ..." leaves
/// a user who brought a file from there guessing whether the key is misspelt or missing.
const FOREIGN_KEYS: &[(Place, &str, &str)] = &[
    (
        Place::Top,
        "pipeline",
        "is `steps` here (Woodpecker before 1.0 called them `pipeline`)",
    ),
    (
        Place::Top,
        "workspace",
        "(Woodpecker's) is not read: the agent chooses where the repository is checked out, \
         and steps find it in `$CI_WORKSPACE` (their working directory)",
    ),
    (
        Place::Top,
        "platform",
        "(Woodpecker's) is not read: agents are chosen by `pool` (`pool: arm64`)",
    ),
    (
        Place::Top,
        "jobs",
        "belongs to a GitHub Actions workflow, which raibid does not run; a pipeline is a list of \
         `steps` (docs/pipelines.md)",
    ),
    (
        Place::Top,
        "stages",
        "(GitLab's) is not read: steps run in the order written, side by side with `depends_on`",
    ),
    (
        Place::Step,
        "detach",
        "(Woodpecker's background steps) is not run: a container beside the steps, reachable \
         by its name, is a `services:` entry",
    ),
    (
        Place::Step,
        "privileged",
        "is not run: no step gets a privileged container, which could take over the agent's \
         machine; images are built with `image-build`, which needs none",
    ),
    (
        Place::Service,
        "privileged",
        "is not run: no service gets a privileged container, which could take over the \
         agent's machine",
    ),
    (
        Place::Step,
        "volumes",
        "are not mounted: no step reaches the agent's own files; keep files between jobs with \
         `cache:` and hand them on with `artifacts:`",
    ),
    (
        Place::Service,
        "volumes",
        "are not mounted: no service reaches the agent's own files",
    ),
    (
        Place::Step,
        "network_mode",
        "is not run: a job's steps and services share a network of their own",
    ),
    (
        Place::Service,
        "network_mode",
        "is not run: a job's steps and services share a network of their own",
    ),
    (
        Place::Step,
        "entrypoint",
        "is not read for steps: a step with `run` runs its commands with the image's shell, and \
         a step with an `image` and no `run` runs the image's own entrypoint (a plugin); a \
         service may set `entrypoint`",
    ),
    (
        Place::Step,
        "ports",
        "belong to `services:`; a step reaches every port of a service by the service's name",
    ),
    (
        Place::Step,
        "group",
        "(Woodpecker's old parallel groups) is not read: steps run side by side with \
         `depends_on`",
    ),
    (
        Place::Step,
        "uses",
        "(a GitHub Action) is not run: write its commands under `run`, or use a Woodpecker \
         plugin: a step with an `image` and `settings`",
    ),
    (
        Place::Step,
        "working-directory",
        "(GitHub's) is `directory` here",
    ),
    (
        Place::Step,
        "continue-on-error",
        "(GitHub's) is `failure: ignore` here",
    ),
    (
        Place::Step,
        "allow_failure",
        "(GitLab's) is `failure: ignore` here",
    ),
    (
        Place::Step,
        "timeout-minutes",
        "(GitHub's) is `timeout` here (`timeout: 30m`)",
    ),
    (Place::Step, "if", "(GitHub's) is `when` here"),
    (
        Place::Step,
        "backend_options",
        "(Woodpecker's per-backend settings) is not read: the agent's configuration gives \
         steps their limits and devices (`agent.step_limits`, `agent.devices`, `agent.gpus`)",
    ),
    (Place::Step, "needs", "(GitLab's) is `depends_on` here"),
    (
        Place::When,
        "environment",
        "(Woodpecker's deployment environments) cannot match: raibid runs no deployment events",
    ),
    (
        Place::When,
        "instance",
        "(the Woodpecker server's host name) is not read: one server reads this file; remove it",
    ),
];

/// serde's "unknown field" for a key in `FOREIGN_KEYS`, said the way that table says it.
fn foreign_key(message: &str) -> Option<String> {
    let (prefix, path, rest) = match message.split_once(": unknown field `") {
        Some((path, rest)) => (format!("{path}: "), path, rest),
        None => (String::new(), "", message.strip_prefix("unknown field `")?),
    };
    let key = &rest[..rest.find('`')?];
    let place = Place::of(path);
    let (_, _, hint) = FOREIGN_KEYS
        .iter()
        .find(|(p, k, _)| *p == place && *k == key)?;
    Some(format!("{prefix}`{key}` {hint}"))
}

/// Removes the ` at line L column C` (or ` at position N`) that serde_yaml and libyaml append,
/// since the position is already in front of the message.
fn without_positions(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at ".len()..];
        match skip_position(after) {
            Some(tail) => rest = tail,
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `s` starts with `line L column C` or `position N`, returns what follows.
fn skip_position(s: &str) -> Option<&str> {
    fn number(s: &str) -> Option<&str> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0).then(|| &s[digits..])
    }
    if let Some(s) = s.strip_prefix("line ") {
        number(number(s)?.strip_prefix(" column ")?)
    } else {
        number(s.strip_prefix("position ")?)
    }
}

/// serde_yaml gives no position for a second document; the first `---` after some content is
/// where it starts.
fn second_document(text: &str) -> Option<(usize, usize)> {
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if seen_content {
                return Some((i + 1, 1));
            }
            seen_content = true;
        } else if !line.trim().is_empty() && !line.trim_start().starts_with(['#', '%']) {
            seen_content = true;
        }
    }
    None
}

fn char_at(text: &str, line: usize, column: usize) -> Option<char> {
    text.lines()
        .nth(line.checked_sub(1)?)?
        .chars()
        .nth(column.checked_sub(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_file_line_column_message() {
        let e = PipelineError::new(".raibid.yaml", 3, 7, "bad");
        assert_eq!(e.to_string(), ".raibid.yaml:3:7: bad");
    }

    #[test]
    fn positions_are_stripped_from_messages() {
        assert_eq!(
            without_positions("steps[0]: unknown field `x` at line 3 column 5"),
            "steps[0]: unknown field `x`"
        );
        assert_eq!(
            without_positions(
                "did not find expected key at line 2 column 1, while parsing a block mapping at line 1 column 1"
            ),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(without_positions("x at position 0"), "x");
        assert_eq!(
            without_positions("look at line up at the top"),
            "look at line up at the top"
        );
    }

    #[test]
    fn keys_of_other_ci_files_say_what_to_write_instead() {
        let cases = [
            (
                "steps.build: unknown field `detach`, expected one of `name`, `run`",
                "steps.build: `detach` (Woodpecker's background steps) is not run: a container \
                 beside the steps, reachable by its name, is a `services:` entry",
            ),
            (
                "unknown field `pipeline`, expected one of `image`, `steps`",
                "`pipeline` is `steps` here (Woodpecker before 1.0 called them `pipeline`)",
            ),
            (
                "steps[0].when[1]: unknown field `environment`, expected one of `branch`",
                "steps[0].when[1]: `environment` (Woodpecker's deployment environments) cannot \
                 match: raibid runs no deployment events",
            ),
            (
                "when: unknown field `instance`, expected one of `branch`",
                "when: `instance` (the Woodpecker server's host name) is not read: one server \
                 reads this file; remove it",
            ),
            (
                "steps.build: unknown field `backend_options`, expected one of `name`",
                "steps.build: `backend_options` (Woodpecker's per-backend settings) is not read: \
                 the agent's configuration gives steps their limits and devices \
                 (`agent.step_limits`, `agent.devices`, `agent.gpus`)",
            ),
            (
                "services[0]: unknown field `privileged`, expected one of `name`",
                "services[0]: `privileged` is not run: no service gets a privileged container, \
                 which could take over the agent's machine",
            ),
        ];
        for (serde, ours) in cases {
            assert_eq!(explain(serde), ours);
        }
        // The same key somewhere it means something else, or a key nobody uses: serde's words.
        for untouched in [
            "steps[0].when: unknown field `detach`, expected one of `branch`",
            "clone.git: unknown field `privileged`, expected one of `name`",
            "services[0]: unknown field `ports2`, expected one of `name`",
            "steps[0]: unknown field `imagee`, expected one of `name`",
            "steps[0]: invalid type: string \"x\", expected a boolean",
        ] {
            assert_eq!(explain(untouched), untouched);
        }
    }

    #[test]
    fn places_are_read_from_serde_paths() {
        for (path, place) in [
            ("", Place::Top),
            ("steps[3]", Place::Step),
            ("steps.build", Place::Step),
            ("services.db", Place::Service),
            ("when", Place::When),
            ("when[2]", Place::When),
            ("steps.build.when[0]", Place::When),
            ("clone.git", Place::Elsewhere),
            ("steps[0].settings", Place::Elsewhere),
            ("steps.build.settings", Place::Elsewhere),
            ("steps[0].when.path", Place::Elsewhere),
        ] {
            assert_eq!(Place::of(path), place, "{path}");
        }
    }

    #[test]
    fn second_document_is_found() {
        assert_eq!(second_document("a: 1\n---\nb: 2\n"), Some((2, 1)));
        assert_eq!(
            second_document("# c\n---\na: 1\n--- \nb: 2\n"),
            Some((4, 1))
        );
        assert_eq!(second_document("a: 1\n"), None);
    }

    #[test]
    fn char_at_counts_characters() {
        assert_eq!(char_at("é\tx\n", 1, 2), Some('\t'));
        assert_eq!(char_at("a", 0, 1), None);
        assert_eq!(char_at("a", 2, 1), None);
    }
}
