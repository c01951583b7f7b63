//! One step's lines out of a job's log, as it arrives in pieces (`raibid job logs --step NAME`)
//! or line by line (a job's page, `?step=NAME`).
//!
//! The agent writes a job's log as one stream. Steps that run one after the other each have a
//! section from their header (`▶ step NAME <time>`) to their result line (`✔ NAME (..)` or
//! `✘ NAME: ..`); steps of a `depends_on` graph run side by side, and each of their lines starts
//! with `[NAME] `, which is taken off here.

/// The line without the colour sequences the agent puts around its own lines.
fn plain(line: &str) -> String {
    anstream::adapter::strip_str(line).to_string()
}

pub struct StepFilter {
    name: String,
    prefix: String,
    partial: String,
    /// In this step's section of a log of steps one after the other.
    inside: bool,
}

impl StepFilter {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            prefix: format!("[{name}] "),
            partial: String::new(),
            inside: false,
        }
    }

    /// The step's whole lines in `text` (with what came before it); an unfinished line waits.
    pub fn push(&mut self, text: &str) -> String {
        self.partial.push_str(text);
        let Some(end) = self.partial.rfind('\n') else {
            return String::new();
        };
        let rest = self.partial.split_off(end + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        let mut out = String::new();
        for line in whole.lines() {
            if let Some(kept) = self.keep(line) {
                out.push_str(kept);
                out.push('\n');
            }
        }
        out
    }

    /// The unfinished line at the end of the log, if it is the step's.
    pub fn finish(&mut self) -> String {
        let last = std::mem::take(&mut self.partial);
        if last.is_empty() {
            return last;
        }
        self.keep(&last).map(str::to_owned).unwrap_or_default()
    }

    /// Whether the lines handed over so far end inside the step's section (of steps one after
    /// the other): a follower of the log goes on from there.
    pub fn inside(&self) -> bool {
        self.inside
    }

    /// The line as the step's log shows it, if it is the step's: the lines of a log are
    /// handed over in order, without their line breaks.
    pub fn keep<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        if let Some(rest) = line.strip_prefix(&self.prefix) {
            return Some(rest);
        }
        // Taking the colours off costs an allocation: a line without any of the marks a header
        // or a result line starts with is neither, whatever its colours (a log's lines are
        // nearly all such).
        if !line.contains(['▶', '✔', '✘']) {
            return self.inside.then_some(line);
        }
        let text = plain(line);
        if let Some(header) = text.strip_prefix("▶ step ") {
            // `NAME <time>`: the time has no space, a name may.
            let name = header.rsplit_once(' ').map_or(header, |(name, _)| name);
            self.inside = name == self.name;
            return self.inside.then_some(line);
        }
        if !self.inside {
            return None;
        }
        let ends = text
            .strip_prefix("✔ ")
            .or_else(|| text.strip_prefix("✘ "))
            .is_some_and(|result| {
                result
                    .strip_prefix(self.name.as_str())
                    .is_some_and(|r| r.starts_with(" (") || r.starts_with(": "))
            });
        if ends {
            self.inside = false;
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(name: &str, pieces: &[&str]) -> String {
        let mut f = StepFilter::new(name);
        let mut out: String = pieces.iter().map(|p| f.push(p)).collect();
        out.push_str(&f.finish());
        out
    }

    const IN_ORDER: &str = "checkout abc\n\
        \n\u{1b}[1;36m▶ step build it\u{1b}[0m \u{1b}[2m2026-12-05T00:00:00.000Z\u{1b}[0m\n\
        compiling\n\
        \u{1b}[32m✔ build it (1.00s)\u{1b}[0m\n\
        \n\u{1b}[1;36m▶ step test\u{1b}[0m \u{1b}[2m2026-12-05T00:00:01.000Z\u{1b}[0m\n\
        ok 1\n\
        \u{1b}[31m✘ test: exit code 1 (0.50s)\u{1b}[0m\n\
        service db: ready\n";

    #[test]
    fn a_section_of_steps_one_after_the_other() {
        let build = filtered("build it", &[IN_ORDER]);
        assert_eq!(
            plain(&build),
            "▶ step build it 2026-12-05T00:00:00.000Z\ncompiling\n✔ build it (1.00s)\n"
        );
        let cut = IN_ORDER.find("ok 1").unwrap() + 2;
        let test = filtered("test", &[&IN_ORDER[..cut], &IN_ORDER[cut..]]);
        assert_eq!(
            plain(&test),
            "▶ step test 2026-12-05T00:00:01.000Z\nok 1\n✘ test: exit code 1 (0.50s)\n",
            "the same however the log is cut, and nothing after the result"
        );
        assert_eq!(filtered("deploy", &[IN_ORDER]), "");
    }

    #[test]
    fn a_step_of_a_graph_without_its_prefix() {
        let log = "[a] one\n[b] two\n[ab] three\n[a] four";
        assert_eq!(filtered("a", &[log]), "one\nfour");
        assert_eq!(filtered("b", &["[b", "] two\n"]), "two\n");
    }
}
