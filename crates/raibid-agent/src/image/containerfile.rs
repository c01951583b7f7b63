//! The images a Containerfile uses, for builds whose `RUN` steps get no network: those
//! images are pulled first, with the network, and the build itself then only uses the store,
//! reading a copy of the Containerfile that names each by the ID its pull gave
//! ([`Containerfile::pinned`]), since the names in a shared store can change meanwhile.
//!
//! Three instructions name images: `FROM <image>`, `COPY --from=<image>`, and `RUN` with a
//! bind mount from an image (`RUN --mount=type=bind,from=<image>,target=/src`, `type=bind`
//! being the default). `--from=` and `from=` name a stage instead when they are the name of
//! an earlier stage (compared without case, as BuildKit does; buildah 1.28 compares with it,
//! and fails on a name that differs only in case) or a stage's number. Neither is pulled for
//! what buildah 1.28 refuses anyway: `ADD --from=` (Docker has no such flag either), a
//! `from=` of a `type=cache` mount (buildah takes only a stage there) or a numbered one.
//!
//! This reads what Docker's and buildah's parsers read for these: the `escape` parser
//! directive, line continuations, comment lines, `ARG`s declared before the first `FROM`
//! (their values overridden by build arguments), the automatic platform arguments
//! (`TARGETARCH`, `BUILDPLATFORM` and the like), `$NAME`, `${NAME}`, `${NAME:-word}`,
//! `${NAME:+word}`, and the `--platform=` flag (`FROM --platform=$BUILDPLATFORM golang AS
//! build` runs its stage on the agent's platform in a cross build). In `--from=` and `from=`
//! buildah substitutes the arguments a stage declares (`ARG NAME`, `ARG NAME=default`; a
//! global one only once the stage declares it again, an automatic one too), not its `ENV`
//! variables; BuildKit substitutes nothing there. Flags are read as buildah's parser reads
//! them: `--name=value` words before the arguments, quotes removed, backslash escapes
//! resolved, possibly over continued lines. It skips the bodies of the heredocs of `RUN`,
//! `COPY` and `ADD` (`COPY <<EOF /app/app.py`), as BuildKit's parser does: a line `from
//! redis import Redis` there is a file's contents, not a `FROM`. An image it names wrongly is
//! simply not in the store when the build looks for it, and the build fails. One it failed
//! to see (no such case is known) would keep its name, and the build would use whatever
//! image has that name in the store, if any.

use std::collections::BTreeMap;

/// An image the build uses: a `FROM`'s base, the source of a `COPY --from=`, or that of a
/// bind mount (`RUN --mount=type=bind,from=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseImage {
    pub(crate) image: String,
    /// Its `FROM --platform=` flag, variables substituted (`linux/arm64`); `None` without one
    /// (or when it comes out empty), and for the images of `COPY` and `RUN`: the build's
    /// target platform, as buildah and BuildKit take them.
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

/// A flag of `COPY` or `RUN` that names images: `--from=<image>`, `--mount=...,from=<image>`.
#[derive(Debug)]
struct ImageFlag {
    /// Where its word is written: (line, byte range in the line), one piece per line it
    /// takes.
    pieces: Vec<(usize, std::ops::Range<usize>)>,
    /// The flag as buildah's parser reads it (quotes removed), in parts.
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    /// A `--from=` or `from=` value that names an image.
    Image(BaseImage),
}

/// A Containerfile's text (without a byte order mark, which buildah skips too), its `FROM`
/// instructions, and the flags of its other instructions that name images.
#[derive(Debug)]
pub(crate) struct Containerfile {
    text: String,
    froms: Vec<From>,
    flags: Vec<ImageFlag>,
    /// Every image it uses, in order, with repeats.
    images: Vec<BaseImage>,
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
        let lines: Vec<&str> = text.lines().collect();
        let mut global: BTreeMap<String, String> = automatic.iter().cloned().collect();
        // The arguments the current stage declares, with their values.
        let mut local: BTreeMap<String, String> = BTreeMap::new();
        let mut stages: Vec<String> = Vec::new();
        // How many of `stages` come before the current stage.
        let mut earlier = 0;
        let mut froms: Vec<From> = Vec::new();
        let mut flags: Vec<ImageFlag> = Vec::new();
        let mut images: Vec<BaseImage> = Vec::new();
        let mut seen_from = false;
        for (range, instruction) in instructions(text, escape) {
            let instruction = instruction.trim_start();
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or((instruction, ""));
            if keyword.eq_ignore_ascii_case("ARG") {
                // Those declared before the first FROM are visible to FROM lines; a stage
                // sees those it declares (a global one's value if it gives none).
                for word in rest.split_whitespace() {
                    let (name, default) = match word.split_once('=') {
                        Some((name, default)) => (name, Some(default)),
                        None => (word, None),
                    };
                    let scope = if seen_from { &local } else { &global };
                    let value = build_args
                        .get(name)
                        .cloned()
                        .or_else(|| default.map(|d| substitute(unquote(d), scope, escape)))
                        .or_else(|| seen_from.then(|| global.get(name).cloned()).flatten());
                    if let Some(value) = value {
                        if seen_from {
                            local.insert(name.to_owned(), value);
                        } else {
                            global.insert(name.to_owned(), value);
                        }
                    }
                }
            } else if keyword.eq_ignore_ascii_case("FROM") {
                seen_from = true;
                local.clear();
                earlier = stages.len();
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
                images.extend(base.clone());
                froms.push(From {
                    lines: range,
                    flags,
                    base,
                    rest,
                });
                stages.extend(stage);
            } else if seen_from
                && (keyword.eq_ignore_ascii_case("COPY") || keyword.eq_ignore_ascii_case("RUN"))
            {
                // An image, or `None` for a stage, scratch or nothing.
                let image = |value: &str| -> Option<BaseImage> {
                    let name = substitute(value, &local, escape);
                    let lower = name.to_ascii_lowercase();
                    let stage = stages[..earlier].contains(&lower)
                        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()));
                    (!name.is_empty() && lower != "scratch" && !stage).then_some(BaseImage {
                        image: name,
                        platform: None,
                    })
                };
                let copy = keyword.eq_ignore_ascii_case("COPY");
                for word in flag_words(&lines, range, escape) {
                    let parts = if copy {
                        word.text
                            .strip_prefix("--from=")
                            .and_then(image)
                            .map(|base| vec![Part::Text("--from=".into()), Part::Image(base)])
                    } else {
                        word.text
                            .strip_prefix("--mount=")
                            .and_then(|spec| mount_parts(spec, image))
                    };
                    let Some(parts) = parts else { continue };
                    for part in &parts {
                        if let Part::Image(base) = part {
                            images.push(base.clone());
                        }
                    }
                    flags.push(ImageFlag {
                        pieces: word.pieces,
                        parts,
                    });
                }
            }
        }
        Self {
            text: text.to_owned(),
            froms,
            flags,
            images,
            stages,
        }
    }

    /// The images the build uses, in order and without repeats: those of `FROM` (not
    /// `scratch`, not an earlier stage), of `COPY --from=` and of bind mounts' `from=` (not
    /// a stage either).
    pub(crate) fn base_images(&self) -> Vec<BaseImage> {
        let mut images: Vec<BaseImage> = Vec::new();
        for base in &self.images {
            if !images.contains(base) {
                images.push(base.clone());
            }
        }
        images
    }

    /// The text with every image the build uses named instead by the ID `id_of` gives it
    /// (`<64 hex digits>`, an image ID in the store), as `sha256:<id>`: the build then uses
    /// exactly those images, whatever their names point to by then. A `FROM` that pulls is
    /// written on one line, flags and stage name kept; a flag of `COPY` or `RUN` that names an
    /// image is written again where its word was (on the first line it took), as buildah's
    /// parser read it. Everything else is kept as it is.
    pub(crate) fn pinned(
        &self,
        mut id_of: impl FnMut(&BaseImage) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut reference_of = |base: &BaseImage| -> Result<String, String> {
            let id = id_of(base)?;
            if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{id:?} is not an image ID"));
            }
            let reference = format!("sha256:{}", id.to_ascii_lowercase());
            // buildah would take it for the stage.
            if self.stages.contains(&reference) {
                return Err(format!("a stage is named {reference}"));
            }
            Ok(reference)
        };
        let mut replaced: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        for from in &self.froms {
            let Some(base) = &from.base else { continue };
            let reference = reference_of(base)?;
            let mut words: Vec<&str> = vec!["FROM"];
            words.extend(from.flags.iter().map(String::as_str));
            words.push(&reference);
            words.extend(from.rest.iter().map(String::as_str));
            replaced.insert(*from.lines.start(), (*from.lines.end(), words.join(" ")));
        }
        // For each line, the byte ranges to replace and what with.
        let mut edits: BTreeMap<usize, Vec<(std::ops::Range<usize>, String)>> = BTreeMap::new();
        for flag in &self.flags {
            let mut word = String::new();
            for part in &flag.parts {
                match part {
                    Part::Text(text) => word.push_str(text),
                    Part::Image(base) => word.push_str(&reference_of(base)?),
                }
            }
            let mut with = Some(flag_word(&word));
            for (line, bytes) in &flag.pieces {
                edits
                    .entry(*line)
                    .or_default()
                    .push((bytes.clone(), with.take().unwrap_or_default()));
            }
        }
        let mut out = String::with_capacity(self.text.len());
        let mut skip_to = None;
        for (n, line) in self.text.split_inclusive('\n').enumerate() {
            if skip_to.is_some_and(|last| n <= last) {
                continue;
            }
            skip_to = None;
            if let Some((last, instruction)) = replaced.get(&n) {
                out.push_str(instruction);
                out.push('\n');
                skip_to = Some(*last);
                continue;
            }
            let mut at = 0;
            let mut line_edits = edits.remove(&n).unwrap_or_default();
            line_edits.sort_by_key(|(bytes, _)| bytes.start);
            for (bytes, with) in &line_edits {
                out.push_str(&line[at..bytes.start]);
                out.push_str(with);
                at = bytes.end;
            }
            out.push_str(&line[at..]);
        }
        Ok(out)
    }
}

/// [`Containerfile::base_images`] of `text`. `automatic` are the platform arguments buildah
/// defines for every build.
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

/// A flag of an instruction, as buildah's parser reads it.
#[derive(Debug, PartialEq, Eq)]
struct FlagWord {
    /// Quotes removed, backslash escapes resolved.
    text: String,
    /// Where it is written: (line, byte range in the line), one piece per line it takes.
    pieces: Vec<(usize, std::ops::Range<usize>)>,
}

/// The flags of the instruction on `range` of `lines` (as [`instructions`] finds it), as
/// buildah's parser (Docker's, `extractBuilderFlags`) reads them: the lines joined (the
/// escape character and the line end removed, comment and blank lines dropped), then after
/// the keyword the words that start with `--`, up to the first that does not (or a bare
/// `--`), split at blanks outside quotes, quotes removed and `\` escaping the next character.
fn flag_words(
    lines: &[&str],
    range: std::ops::RangeInclusive<usize>,
    escape: char,
) -> Vec<FlagWord> {
    // The joined instruction, each character with its line and byte range there.
    let mut chars: Vec<(char, usize, std::ops::Range<usize>)> = Vec::new();
    let first = *range.start();
    for n in range {
        let Some(line) = lines.get(n) else { break };
        let trimmed = line.trim();
        if n != first && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let begin = if n == first {
            line.len() - line.trim_start().len()
        } else {
            0
        };
        let end = match line.trim_end().strip_suffix(escape) {
            Some(continued) => continued.len(),
            None => line.trim_end_matches('\r').len(),
        };
        let Some(content) = line.get(begin..end.max(begin)) else {
            continue;
        };
        chars.extend(
            content
                .char_indices()
                .map(|(i, c)| (c, n, begin + i..begin + i + c.len_utf8())),
        );
    }
    let mut words = Vec::new();
    let mut i = chars
        .iter()
        .position(|(c, ..)| !c.is_whitespace())
        .unwrap_or(chars.len());
    // The keyword.
    while i < chars.len() && !chars[i].0.is_whitespace() {
        i += 1;
    }
    loop {
        while i < chars.len() && chars[i].0.is_whitespace() {
            i += 1;
        }
        if !(chars.get(i).map(|c| c.0) == Some('-') && chars.get(i + 1).map(|c| c.0) == Some('-')) {
            break;
        }
        let start = i;
        let mut text = String::new();
        let mut quote = None;
        while i < chars.len() {
            let c = chars[i].0;
            i += 1;
            match (quote, c) {
                (None, c) if c.is_whitespace() => {
                    i -= 1;
                    break;
                }
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => match chars.get(i) {
                    Some((next, ..)) => {
                        text.push(*next);
                        i += 1;
                    }
                    None => quote = None,
                },
                (_, c) => text.push(c),
            }
        }
        if text == "--" {
            break;
        }
        let mut pieces: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (_, line, bytes) in &chars[start..i] {
            match pieces.last_mut() {
                Some((last, range)) if last == line => range.end = bytes.end,
                _ => pieces.push((*line, bytes.clone())),
            }
        }
        words.push(FlagWord { text, pieces });
    }
    words
}

/// The parts of a `--mount=` flag's value (`spec`) that name images, for
/// [`ImageFlag::parts`]: the `from=` options of a bind mount (the default type) whose values
/// `image` takes for images. `None` if it has none.
fn mount_parts(spec: &str, image: impl Fn(&str) -> Option<BaseImage>) -> Option<Vec<Part>> {
    // buildah splits the options at every comma, and compares keys and types as written.
    let options: Vec<&str> = spec.split(',').collect();
    let kind = options
        .iter()
        .filter_map(|o| o.strip_prefix("type="))
        .next_back()
        .unwrap_or("bind");
    if kind != "bind" {
        return None;
    }
    let mut parts = vec![Part::Text("--mount=".into())];
    let mut any = false;
    for (n, option) in options.iter().enumerate() {
        let separator = if n == 0 { "" } else { "," };
        match option.strip_prefix("from=").and_then(&image) {
            Some(base) => {
                parts.push(Part::Text(format!("{separator}from=")));
                parts.push(Part::Image(base));
                any = true;
            }
            None => parts.push(Part::Text(format!("{separator}{option}"))),
        }
    }
    any.then_some(parts)
}

/// `flag` (`--name=value`) written as buildah's parser reads it back: as it is, or with its
/// value in double quotes (`"` and `\` escaped) when that holds blanks, quotes or
/// backslashes. Only the value: a word that does not start with `--` is no flag.
fn flag_word(flag: &str) -> String {
    let special = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\');
    let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
    if !value.chars().any(special) {
        return flag.to_owned();
    }
    let mut out = format!("{name}=\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
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

    /// `COPY --from=` and a bind mount's `from=` name an image unless they name an earlier
    /// stage (by name, in any case, or by number); buildah refuses the other forms.
    #[test]
    fn copy_from_and_bind_mounts_name_images_unless_stages() {
        let text = "\
FROM base:1 AS Build
COPY --from=build /x /x
FROM base:2 AS two
COPY --from=BUILD /a /a
COPY --from=0 /a /a
COPY --chown=1:1 --from=r.example/tools:1 /t /t
COPY --from=later /l /l
COPY --from=scratch /s /s
COPY --from= /e /e
ADD --from=r.example/add:1 /a /a
COPY --FROM=r.example/upper:1 /a /a
ONBUILD COPY --from=r.example/onbuild:1 /a /a
COPY /src --from=r.example/not-a-flag:1 /dst
COPY -- --from=r.example/after-dashes:1 /dst
RUN --mount=type=bind,from=r.example/src:1,target=/m make
RUN --mount=from=r.example/default:1,target=/m --mount=type=cache,from=r.example/cache:1,target=/c \\
  --mount=type=bind,source=/x,from=Build,target=/t --mount=type=bind,from=1,target=/i make
RUN --mount=type=secret,id=a cat /run/secrets/a --mount=type=bind,from=r.example/arg:1
RUN --network=none --mount=type=bind,target=/m,from=r.example/src:1 make
FROM base:1 AS later
";
        assert_eq!(
            with_platforms(text, &[]),
            [
                ("base:1".into(), None),
                ("build".into(), None),
                ("base:2".into(), None),
                ("r.example/tools:1".into(), None),
                ("later".into(), None),
                ("r.example/src:1".into(), None),
                ("r.example/default:1".into(), None),
            ]
        );
    }

    /// buildah substitutes, in `--from=` and `from=`, the arguments the stage declares: a
    /// global one only once declared again, not `ENV` variables.
    #[test]
    fn flags_see_the_arguments_their_stage_declares() {
        let text = "\
ARG TOOLS=r.example/tools:1
ARG OTHER=r.example/other:1
FROM base:1 AS one
COPY --from=$TOOLS /a /a
ARG TOOLS
COPY --from=$TOOLS /a /a
ARG TARGETARCH
ARG OTHER=r.example/mine:${TARGETARCH}
COPY --from=${OTHER} /o /o
ARG GIVEN=r.example/default:1
RUN --mount=from=$GIVEN,target=/g true
ENV FROMENV=r.example/env:1
COPY --from=$FROMENV /e /e
FROM base:2
COPY --from=$OTHER /o /o
COPY --from=${UNSET:-r.example/fallback:1} /f /f
COPY --from=\"r.example/quoted:1\" /q /q
RUN --mount='from=r.example/quoted:2',target=/q true
FROM ${OTHER}
";
        assert_eq!(
            bases(text, &[("GIVEN", "r.example/given:1")]),
            [
                "base:1",
                "r.example/tools:1",
                "r.example/mine:arm64",
                "r.example/given:1",
                "base:2",
                "r.example/fallback:1",
                "r.example/quoted:1",
                "r.example/quoted:2",
                "r.example/other:1",
            ]
        );
        assert_eq!(
            bases(text, &[("TOOLS", "r.example/given-tools:1")])[1],
            "r.example/given-tools:1"
        );
    }

    /// A heredoc's body is no instruction, whatever flags it seems to hold.
    #[test]
    fn flags_in_heredoc_bodies_are_not_read() {
        let text = "\
FROM base:1
RUN <<EOF
COPY --from=r.example/in-heredoc:1 /a /a
RUN --mount=from=r.example/in-heredoc:2 true
EOF
COPY <<EOF /app.txt
COPY --from=r.example/in-heredoc:3 /a /a
EOF
RUN --mount=type=bind,from=r.example/real:1,target=/m <<EOF sh
COPY --from=r.example/in-heredoc:4 /a /a
EOF
";
        assert_eq!(bases(text, &[]), ["base:1", "r.example/real:1"]);
        let file = Containerfile::parse(text, &BTreeMap::new(), &automatic());
        let id = |n: char| n.to_string().repeat(64);
        let pinned = file
            .pinned(|base| match base.image.as_str() {
                "base:1" => Ok(id('a')),
                "r.example/real:1" => Ok(id('b')),
                other => Err(other.to_owned()),
            })
            .unwrap();
        let expected = text
            .replacen("FROM base:1", &format!("FROM sha256:{}", id('a')), 1)
            .replacen(
                "from=r.example/real:1",
                &format!("from=sha256:{}", id('b')),
                1,
            );
        assert_eq!(pinned, expected);
    }

    /// A flag that names an image is written again where it was, as buildah's parser read
    /// it, on the first line it took (its other lines keep the rest); nothing else changes,
    /// and what it writes is read back as it is meant.
    #[test]
    fn pinned_names_the_images_of_flags_by_id_where_they_are_written() {
        let text = "\
FROM base:1 AS build
FROM build
RUN --mount=type=cache,target=/c \\
    # a comment between flags

    --mount=type=bind,\\
from=r.example/src:1,target=/m \\
    make
COPY  --chown=1:1  --from=\"r.example/tools:1\"   /a /a\r
COPY \"--from=r.example/quoted-is-a-source:1\" /a
  copy --from=build --from=r.example/tools:1 /b /b
RUN --mount=\"type=bind,from=r.example/src:1,target=/with space\",ro true
RUN --mount=type=bind,from=r.example/x:1,target=/a\\
 --mount=type=bind,from=r.example/x:1,target=/b\\\"c true
";
        let file = Containerfile::parse(text, &BTreeMap::new(), &automatic());
        let id = |n: char| n.to_string().repeat(64);
        let pinned = file
            .pinned(|base| match base.image.as_str() {
                "base:1" => Ok(id('a')),
                "r.example/src:1" => Ok(id('b')),
                "r.example/tools:1" => Ok(id('c')),
                "r.example/x:1" => Ok(id('d')),
                other => Err(other.to_owned()),
            })
            .unwrap();
        assert_eq!(
            pinned,
            format!(
                "\
FROM sha256:{a} AS build
FROM build
RUN --mount=type=cache,target=/c \\
    # a comment between flags

    --mount=type=bind,from=sha256:{b},target=/m\\
 \\
    make
COPY  --chown=1:1  --from=sha256:{c}   /a /a\r
COPY \"--from=r.example/quoted-is-a-source:1\" /a
  copy --from=build --from=sha256:{c} /b /b
RUN --mount=\"type=bind,from=sha256:{b},target=/with space,ro\" true
RUN --mount=type=bind,from=sha256:{d},target=/a\\
 --mount=\"type=bind,from=sha256:{d},target=/b\\\"c\" true
",
                a = id('a'),
                b = id('b'),
                c = id('c'),
                d = id('d'),
            )
        );
        let again = Containerfile::parse(&pinned, &BTreeMap::new(), &automatic());
        let reread: Vec<String> = again.images.iter().map(|b| b.image.clone()).collect();
        let sha = |n: char| format!("sha256:{}", id(n));
        assert_eq!(
            reread,
            [
                sha('a'),
                sha('b'),
                sha('c'),
                sha('c'),
                sha('b'),
                sha('d'),
                sha('d')
            ]
        );
        let flags = |file: &Containerfile| -> Vec<String> {
            let lines: Vec<&str> = file.text.lines().collect();
            instructions(&file.text, '\\')
                .into_iter()
                .flat_map(|(range, _)| flag_words(&lines, range, '\\'))
                .map(|w| w.text)
                .collect()
        };
        assert_eq!(
            flags(&again),
            flags(&file)
                .into_iter()
                .map(|f| f
                    .replace("r.example/src:1", &sha('b'))
                    .replace("r.example/tools:1", &sha('c'))
                    .replace("r.example/x:1", &sha('d')))
                .collect::<Vec<_>>()
        );
        // With the backtick as the escape character.
        let text =
            "# escape=`\nFROM base:1\nRUN --mount=type=bind,`\nfrom=r.example/src:1 `\n  dir\n";
        let file = Containerfile::parse(text, &BTreeMap::new(), &automatic());
        assert_eq!(
            file.pinned(|_| Ok(id('e'))).unwrap(),
            format!(
                "# escape=`\nFROM sha256:{e}\nRUN --mount=type=bind,from=sha256:{e}`\n `\n  dir\n",
                e = id('e')
            )
        );
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM `\n  mcr.example/windows:1\nRUN echo \\\nFROM two\n";
        assert_eq!(bases(text, &[]), ["mcr.example/windows:1", "two"]);
        assert_eq!(bases("FROM \\$X\n", &[]), ["$X"]);
    }
}
