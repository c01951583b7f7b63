//! A cheap check on the raw text that bounds the work the YAML parser can be made to do.
//!
//! libyaml (under serde_yaml) re-examines every open flow collection (`[`, `{`) for every token
//! it reads, so parsing costs about *tokens × flow depth*: 400 KB of `{a: {a: ...` takes minutes.
//! Telling a real bracket from one inside a string or a script needs a YAML parser, and any
//! shortcut that trusts closing brackets can be fooled by `"}"`. So this check never looks at
//! closing brackets: it assumes every `[`/`{` that could open a flow collection stays open to the
//! end of the file and caps the sum of what they would enclose. That bounds the parser's work
//! whatever the text does, because every bracket that really opens a collection is counted.

/// The cap on the sum, over candidate brackets, of the bytes after each one. It admits a
/// 400-line inline script with a `[ -f x ]` and a `{ ...; }` on every line, and keeps the worst
/// case for a file of [`MAX_FILE_SIZE`](crate::MAX_FILE_SIZE) near a tenth of a second.
const MAX_FLOW_WEIGHT: u64 = 1 << 24;

/// The 1-based line and column of the bracket at which the cap is exceeded.
pub(crate) fn check(text: &str) -> Result<(), (usize, usize)> {
    let len = text.len() as u64;
    let mut weight: u64 = 0;
    let mut prev = None;
    let (mut line, mut column) = (1, 0);
    for (i, c) in text.char_indices() {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        if matches!(c, '[' | '{') && may_start_token_after(prev) {
            weight += len - i as u64;
            if weight > MAX_FLOW_WEIGHT {
                return Err((line, column));
            }
        }
        prev = Some(c);
    }
    Ok(())
}

/// A flow collection can only open where a token can start: at the start, after a blank or a
/// line break, or right after another flow indicator. Elsewhere (`${VAR}`, `a[0]`) libyaml either
/// reads the bracket as part of a scalar or stops with a syntax error right there, so such
/// brackets cannot make it read further.
fn may_start_token_after(prev: Option<char>) -> bool {
    match prev {
        None => true,
        Some(c) => {
            c.is_whitespace()
                || matches!(
                    c,
                    '\u{feff}' | '[' | '{' | ']' | '}' | ',' | ':' | '?' | '-'
                )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_files_pass() {
        let script: String = (0..400)
            .map(|i| format!("      if [ -f f{i} ]; then {{ echo \"${{X}}\"; }}; fi\n"))
            .collect();
        let text = format!(
            "steps:\n  - name: a\n    when: {{ branch: [main], event: [push] }}\n    run: |\n{script}"
        );
        assert!(text.len() > 19_000);
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn deep_nesting_is_caught() {
        let depth = 20_000;
        let text = format!("{}{}", "{a: ".repeat(depth), "}".repeat(depth));
        let (line, column) = check(&text).unwrap_err();
        assert_eq!(line, 1);
        assert!(column > 1 && column < text.len());
    }

    /// Closing brackets hidden in strings must not let the nesting grow unnoticed.
    #[test]
    fn fake_closing_brackets_do_not_help() {
        let text = "{a: \"}}\", b: ".repeat(20_000);
        assert!(check(&text).is_err());
    }

    #[test]
    fn brackets_inside_words_are_not_counted() {
        let text = "x: ${A}${B}a[0]b{1}\n".repeat(20_000);
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn line_and_column_of_the_bracket() {
        let mut text = String::from("a: 1\nb: 2\n  c: ");
        text.push_str(&"[".repeat(100_000));
        // Bracket k (0-based) weighs 100_000 - k; the sum first passes 2^24 at k = 167.
        assert_eq!(check(&text), Err((3, 6 + 167)));
    }
}
