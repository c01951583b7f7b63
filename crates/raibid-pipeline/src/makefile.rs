//! Just enough Makefile reading to tell whether a target has a rule.
//!
//! This is not make: variables are not expanded and includes are not followed. It only has to
//! avoid the common false positives (`.PHONY: test`, `test := x`, recipe lines) and negatives
//! (`test :`, `test: deps`, `lint test: x`, `test::`).

/// Whether `makefile` has a rule line naming `target`.
pub(crate) fn has_target(makefile: &str, target: &str) -> bool {
    logical_lines(makefile)
        .any(|line| rule_targets(&line).is_some_and(|mut t| t.any(|t| t == target)))
}

/// Lines with `\`-continuations joined, recipe lines and `define` bodies dropped.
fn logical_lines(makefile: &str) -> impl Iterator<Item = String> + '_ {
    let mut in_define = false;
    let mut pending: Option<String> = None;
    makefile.lines().filter_map(move |raw| {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let mut line = match pending.take() {
            Some(mut joined) => {
                joined.push(' ');
                joined.push_str(raw);
                joined
            }
            None if raw.starts_with('\t') => return None,
            None => raw.to_owned(),
        };
        if line.ends_with('\\') {
            line.pop();
            pending = Some(line);
            return None;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if in_define {
            in_define = first != "endef";
            return None;
        }
        let starts_define = first == "define"
            || (matches!(first, "override" | "export" | "private")
                && words.next() == Some("define"));
        if starts_define {
            in_define = true;
            return None;
        }
        Some(line)
    })
}

/// The targets of a rule line, or `None` if the line is not a rule (an assignment, a directive,
/// a target-specific variable, or a special target such as `.PHONY`).
fn rule_targets(line: &str) -> Option<impl Iterator<Item = &str>> {
    let line = line.split('#').next().unwrap_or("");
    let colon = line.find(':')?;
    let (before, after) = (&line[..colon], &line[colon + 1..]);
    if before.contains('=') {
        return None;
    }
    let prerequisites = after.strip_prefix(':').unwrap_or(after);
    let prerequisites = prerequisites.split(';').next().unwrap_or("");
    if prerequisites.contains('=') {
        return None;
    }
    let mut targets = before.split_whitespace().peekable();
    if targets.peek().is_none_or(|t| t.starts_with('.')) {
        return None;
    }
    Some(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_test(makefile: &str) -> bool {
        has_target(makefile, "test")
    }

    #[test]
    fn rule_forms_that_count() {
        assert!(has_test("test:\n\tcargo test\n"));
        assert!(has_test("test :\n\tgo test ./...\n"));
        assert!(has_test("test: build lint\n\t./run\n"));
        assert!(has_test("lint test: deps\n"));
        assert!(has_test("test:: one\ntest:: two\n"));
        assert!(has_test("all: build\n\ntest: all # runs everything\n"));
        assert!(has_test("test: \\\n  a \\\n  b\n"));
        assert!(has_test("test:\r\n\tmake check\r\n"));
        assert!(has_test("test: ; @echo inline recipe\n"));
        assert!(has_test("test: ; FOO=1 ./run\n"));
    }

    #[test]
    fn lines_that_do_not_count() {
        assert!(!has_test(".PHONY: test\n"));
        assert!(!has_test("test := value\n"));
        assert!(!has_test("test ::= value\n"));
        assert!(!has_test("test = x: y\n"));
        assert!(!has_test("test: CFLAGS += -g\n"));
        assert!(!has_test("build:\n\ttest: not a rule, a recipe\n"));
        assert!(!has_test("testing: x\n"));
        assert!(!has_test("unit-test: x\n"));
        assert!(!has_test("# test: commented\n"));
        assert!(!has_test("define RECIPE\ntest: inside define\nendef\n"));
        assert!(!has_test("override define RECIPE\ntest: x\nendef\n"));
        assert!(!has_test("export define RECIPE\ntest: x\nendef\n"));
        assert!(!has_test(""));
    }

    #[test]
    fn rules_after_a_define_still_count() {
        assert!(has_test("define X\nfoo\nendef\ntest:\n\t$(X)\n"));
    }
}
