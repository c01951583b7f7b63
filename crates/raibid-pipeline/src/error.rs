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
        _ => message.to_owned(),
    }
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
