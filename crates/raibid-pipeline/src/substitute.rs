//! Woodpecker's variable substitution: before a Woodpecker file is read, `${NAME}` anywhere in
//! its text becomes the value of `NAME` among the pipeline's variables (`CI_COMMIT_SHA`,
//! `CI_COMMIT_TAG`, a matrix variant's, ...), with the bash-like operations of drone/envsubst,
//! which Woodpecker uses, and `$$` becomes `$`. Woodpecker files rely on both: an image tag of
//! `${CI_COMMIT_SHA:0:8}`, a plugin setting of `${CI_COMMIT_TAG##v}`, and `$${HOME}` for the
//! step's shell to expand (`$$` left alone would be the shell's process id).
//!
//! As in Woodpecker 3, a variable the pipeline does not have is an error naming it (an empty
//! value would run something else than was written), unless the expression gives a default.
//! `$NAME` without braces is left for the shell. Unlike drone/envsubst, backslashes outside a
//! replacement's pattern are left as written.

use std::collections::BTreeSet;

/// The text with every substitution made, and the variables it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub text: String,
    /// Names looked up, in order of first use, whether or not they had a value.
    pub used: Vec<String>,
    /// Names without a value and without a default, with the byte offset of the first `${`
    /// that needed each.
    pub missing: Vec<(String, usize)>,
}

/// A substitution that cannot be read, at a byte offset of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    pub offset: usize,
    pub message: String,
}

/// Substitutes `text` with `lookup` (see the module's notes). A value holding a line break is
/// put in double quotes with its line breaks escaped, as Woodpecker quotes it, so that it
/// cannot change the file's structure.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstError> {
    let mut parser = Parser {
        src: text,
        pos: 0,
        lookup,
        used: BTreeSet::new(),
        order: Vec::new(),
        missing: Vec::new(),
    };
    let mut out = String::with_capacity(text.len());
    while let Some(c) = parser.peek() {
        if parser.rest().starts_with("$$") {
            out.push('$');
            parser.pos += 2;
        } else if parser.rest().starts_with("${") {
            let value = parser.expression()?;
            out.push_str(&quote_multiline(&value));
        } else {
            out.push(c);
            parser.pos += c.len_utf8();
        }
    }
    Ok(Substituted {
        text: out,
        used: parser.order,
        missing: parser.missing,
    })
}

/// Go's `%q` of a value with line breaks, which Woodpecker substitutes in their place; JSON's
/// quoting says the same for the characters such values hold.
fn quote_multiline(value: &str) -> String {
    if value.contains('\n') {
        serde_json::to_string(value).expect("a string serializes")
    } else {
        value.to_owned()
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    used: BTreeSet<String>,
    order: Vec<String>,
    missing: Vec<(String, usize)>,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn bad(&self, start: usize, why: &str) -> SubstError {
        SubstError {
            offset: start,
            message: format!(
                "bad substitution {:?}: {why} (write $$ for a $ that is no substitution)",
                excerpt(&self.src[start..])
            ),
        }
    }

    /// `${...}` at the current position, which starts with `${`.
    fn expression(&mut self) -> Result<String, SubstError> {
        let start = self.pos;
        self.pos += 2;
        if self.eat("#") {
            let name = self.name(start)?;
            let value = self.value(&name, start, false);
            self.close(start)?;
            return Ok(value.len().to_string());
        }
        let name = self.name(start)?;
        let Some(op) = self.peek() else {
            return Err(self.bad(start, "no closing }"));
        };
        match op {
            '}' => {
                self.pos += 1;
                Ok(self.value(&name, start, false))
            }
            ':' if matches!(self.rest().chars().nth(1), Some('=' | '-')) => {
                self.pos += 2;
                self.default(&name, start)
            }
            ':' if matches!(self.rest().chars().nth(1), Some('?' | '+')) => {
                Err(self.bad(start, "`:?` and `:+` are not supported"))
            }
            '=' => {
                self.pos += 1;
                self.default(&name, start)
            }
            ':' => {
                self.pos += 1;
                let value = self.value(&name, start, false);
                let offset = self.param(start, &[':', '}'], false)?;
                let length = if self.eat(":") {
                    Some(self.param(start, &['}'], false)?)
                } else {
                    None
                };
                self.close(start)?;
                Ok(substring(&value, &offset, length.as_deref()))
            }
            '^' | ',' => {
                let upper = op == '^';
                self.pos += 1;
                let all = self.eat(if upper { "^" } else { "," });
                let value = self.value(&name, start, false);
                self.close(start)?;
                Ok(case(&value, upper, all))
            }
            '#' | '%' => {
                self.pos += 1;
                let longest = self.eat(if op == '#' { "#" } else { "%" });
                let value = self.value(&name, start, false);
                let pattern = self.param(start, &['}'], false)?;
                self.close(start)?;
                // drone/envsubst's own matcher: `*` crosses `/`, as in bash's `${path##*/}`.
                let glob = globset::GlobBuilder::new(&pattern)
                    .build()
                    .map_err(|e| self.bad(start, &e.to_string()))?
                    .compile_matcher();
                Ok(trim(&value, &glob, op == '#', longest))
            }
            '/' => {
                self.pos += 1;
                let how = match self.peek() {
                    Some('/') => Replace::All,
                    Some('#') => Replace::Prefix,
                    Some('%') => Replace::Suffix,
                    _ => Replace::First,
                };
                if how != Replace::First {
                    self.pos += 1;
                }
                let value = self.value(&name, start, false);
                let pattern = self.param(start, &['/', '}'], true)?;
                let replacement = if self.eat("/") {
                    self.param(start, &['}'], true)?
                } else {
                    String::new()
                };
                self.close(start)?;
                Ok(replace(&value, &pattern, &replacement, how))
            }
            _ => Err(self.bad(start, "not a variable name followed by an operation")),
        }
    }

    /// `${NAME=word}`, `${NAME:=word}`, `${NAME:-word}`: the value, or `word` (itself
    /// substituted) when it is empty or unset.
    fn default(&mut self, name: &str, start: usize) -> Result<String, SubstError> {
        let fallback = self.param(start, &['}'], false)?;
        self.close(start)?;
        let value = self.value(name, start, true);
        Ok(if value.is_empty() { fallback } else { value })
    }

    /// A variable name as drone/envsubst reads one: letters, digits, `_` and `-`.
    fn name(&mut self, start: usize) -> Result<String, SubstError> {
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.bad(start, "no variable name"));
        }
        let name = self.rest()[..len].to_owned();
        self.pos += len;
        Ok(name)
    }

    fn value(&mut self, name: &str, start: usize, has_default: bool) -> String {
        if self.used.insert(name.to_owned()) {
            self.order.push(name.to_owned());
        }
        match (self.lookup)(name) {
            Some(value) => value,
            None => {
                if !has_default && !self.missing.iter().any(|(m, _)| m == name) {
                    self.missing.push((name.to_owned(), start));
                }
                String::new()
            }
        }
    }

    /// Text up to one of `stops` (not consumed), with `${...}` inside substituted; with
    /// `escapes` (a replacement's pattern and text), `\/` and `\\` stand for `/` and `\`.
    fn param(&mut self, start: usize, stops: &[char], escapes: bool) -> Result<String, SubstError> {
        let mut out = String::new();
        loop {
            if escapes && self.eat("\\/") {
                out.push('/');
                continue;
            }
            if escapes && self.eat("\\\\") {
                out.push('\\');
                continue;
            }
            match self.peek() {
                None => return Err(self.bad(start, "no closing }")),
                Some(c) if stops.contains(&c) => return Ok(out),
                Some(_) if self.rest().starts_with("${") => out.push_str(&self.expression()?),
                Some(c) => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    fn close(&mut self, start: usize) -> Result<(), SubstError> {
        if self.eat("}") {
            Ok(())
        } else {
            Err(self.bad(start, "no closing } where one belongs"))
        }
    }
}

/// The start of a bad expression, for the error: up to its closing brace, the end of its line
/// or 40 characters.
fn excerpt(s: &str) -> String {
    let line = s.split('\n').next().unwrap_or(s);
    let end = line.find('}').map_or(line.len(), |i| i + 1);
    line[..end].chars().take(40).collect()
}

/// `${NAME:offset}` and `${NAME:offset:length}`, on bytes as Go slices strings (a character
/// cut in two is dropped rather than split); a negative offset counts from the end, an offset
/// or length that is no number gives the value unchanged, as in bash.
fn substring(value: &str, offset: &str, length: Option<&str>) -> String {
    let Ok(mut pos) = offset.trim().parse::<i64>() else {
        return value.to_owned();
    };
    let len = value.len() as i64;
    if pos < 0 {
        pos = len.saturating_add(pos).max(0);
    }
    if pos >= len {
        return String::new();
    }
    let end = match length {
        None => len,
        Some(length) => match length.trim().parse::<i64>() {
            Ok(n) => pos.saturating_add(n.max(0)).min(len),
            Err(_) => return value.to_owned(),
        },
    };
    String::from_utf8_lossy(&value.as_bytes()[pos as usize..end as usize])
        .trim_matches('\u{FFFD}')
        .to_owned()
}

fn case(value: &str, upper: bool, all: bool) -> String {
    let convert = |s: &str| {
        if upper {
            s.to_uppercase()
        } else {
            s.to_lowercase()
        }
    };
    if all {
        return convert(value);
    }
    let mut chars = value.chars();
    match chars.next() {
        Some(first) => convert(&first.to_string()) + chars.as_str(),
        None => String::new(),
    }
}

/// `#`/`##` (a prefix matching the glob, shortest or longest) and `%`/`%%` (a suffix).
fn trim(value: &str, glob: &globset::GlobMatcher, prefix: bool, longest: bool) -> String {
    let cuts: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(value.len()))
        .collect();
    let matching = cuts.iter().copied().filter(|&cut| {
        let part = if prefix { &value[..cut] } else { &value[cut..] };
        !part.is_empty() && glob.is_match(part)
    });
    let cut = if prefix == longest {
        matching.max()
    } else {
        matching.min()
    };
    match (cut, prefix) {
        (Some(cut), true) => value[cut..].to_owned(),
        (Some(cut), false) => value[..cut].to_owned(),
        (None, _) => value.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    First,
    All,
    Prefix,
    Suffix,
}

/// `/`, `//`, `/#`, `/%`: the pattern is plain text here, as in drone/envsubst.
fn replace(value: &str, pattern: &str, replacement: &str, how: Replace) -> String {
    if pattern.is_empty() {
        return value.to_owned();
    }
    match how {
        Replace::First => value.replacen(pattern, replacement, 1),
        Replace::All => value.replace(pattern, replacement),
        Replace::Prefix => match value.strip_prefix(pattern) {
            Some(rest) => format!("{replacement}{rest}"),
            None => value.to_owned(),
        },
        Replace::Suffix => match value.strip_suffix(pattern) {
            Some(rest) => format!("{rest}{replacement}"),
            None => value.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn with(vars: &[(&str, &str)], text: &str) -> Result<Substituted, SubstError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        substitute(text, &|name| vars.get(name).cloned())
    }

    fn sub(vars: &[(&str, &str)], text: &str) -> String {
        let done = with(vars, text).unwrap();
        assert!(done.missing.is_empty(), "{text}: {:?}", done.missing);
        done.text
    }

    /// drone/envsubst's own cases (after tldp.org's parameter substitution page).
    #[test]
    fn drone_envsubst_s_cases() {
        let v = [("var01", "abcdEFGH28ij")];
        assert_eq!(sub(&[], "abcdEFGH28ij"), "abcdEFGH28ij");
        assert_eq!(sub(&v, "${#var01}"), "12");
        assert_eq!(sub(&v, "${var01^}"), "AbcdEFGH28ij");
        assert_eq!(sub(&v, "${var01^^}"), "ABCDEFGH28IJ");
        let v2 = [("var01", "ABCDEFGH28IJ")];
        assert_eq!(sub(&v2, "${var01,}"), "aBCDEFGH28IJ");
        assert_eq!(sub(&v2, "${var01,,}"), "abcdefgh28ij");
        let p = [("path_name", "/home/bozo/ideas/thoughts.for.today")];
        assert_eq!(sub(&p, "${path_name:11}"), "ideas/thoughts.for.today");
        assert_eq!(sub(&p, "${path_name:11:5}"), "ideas");
        assert_eq!(sub(&[("var", "abc")], "${var=abc}"), "abc");
        assert_eq!(sub(&[], "${var=xyz}"), "xyz");
        let d = [("default_var", "foo")];
        assert_eq!(sub(&d, "something ${var=${default_var}}"), "something foo");
        let d1 = [("default_var", "foo1")];
        assert_eq!(
            sub(&d1, "foo: ${var=${default_var}-suffix}"),
            "foo: foo1-suffix"
        );
        assert_eq!(
            sub(&d1, "foo: ${var=prefix${default_var}-suffix}"),
            "foo: prefixfoo1-suffix"
        );
        assert_eq!(sub(&[], "${var:=xyz}"), "xyz");
        let z = [("stringZ", "abcABC123ABCabc")];
        assert_eq!(sub(&z, "${stringZ/%abc/XYZ}"), "abcABC123ABCXYZ");
        assert_eq!(sub(&z, "${stringZ/#abc/XYZ}"), "XYZABC123ABCabc");
        assert_eq!(sub(&z, "${stringZ//abc/xyz}"), "xyzABC123ABCxyz");
        assert_eq!(sub(&z, "${stringZ/abc/xyz}"), "xyzABC123ABCabc");
        let f = [("filename", "bash.string.txt")];
        assert_eq!(sub(&f, "${filename#*.}"), "string.txt");
        assert_eq!(sub(&f, "${filename##*.}"), "txt");
        assert_eq!(sub(&f, "${filename%.*}"), "bash.string");
        assert_eq!(sub(&f, "${filename%%.*}"), "bash");
        assert_eq!(
            sub(&[("filename", "path/to/file")], "${filename#*/}"),
            "to/file"
        );
        assert_eq!(
            sub(&[("filename", "/path/to/file")], "${filename#*/}"),
            "path/to/file"
        );
        assert_eq!(
            sub(&[("filename", "path/to/file")], "${filename##*/}"),
            "file"
        );
        assert_eq!(sub(&v, "${var=${var01^^}}"), "ABCDEFGH28IJ");
        assert_eq!(sub(&v, "$${var01}"), "${var01}");
        assert_eq!(
            sub(&v, "some text ${var01}$${var$${var01}$var01${var01}"),
            "some text abcdEFGH28ij${var${var01}$var01abcdEFGH28ij"
        );
        assert_eq!(
            sub(&d, "something $${var=${default_var}}"),
            "something ${var=foo}"
        );
        assert_eq!(
            sub(&[("stringZ", "foo/bar")], r"${stringZ/\//-}"),
            "foo-bar"
        );
        assert_eq!(
            sub(&[("stringZ", "foo/bar/baz")], r"${stringZ//\//-}"),
            "foo-bar-baz"
        );
        assert_eq!(sub(&[("stringZ", "foo.bar")], "${stringZ/./}"), "foobar");
    }

    /// What Woodpecker files write.
    #[test]
    fn woodpecker_s_uses() {
        let ci = [
            ("CI_COMMIT_SHA", "4a1f6b8c0d2e"),
            ("CI_COMMIT_TAG", "v1.2.3"),
            ("CI_COMMIT_BRANCH", "feature/Login"),
        ];
        assert_eq!(
            sub(&ci, "image: registry/app:${CI_COMMIT_SHA:0:8}"),
            "image: registry/app:4a1f6b8c"
        );
        assert_eq!(sub(&ci, "tags: ${CI_COMMIT_TAG##v}"), "tags: 1.2.3");
        assert_eq!(
            sub(&ci, "tag: ${CI_COMMIT_BRANCH//\\//-}"),
            "tag: feature-Login"
        );
        assert_eq!(
            sub(&ci, "- export PATH=$${PATH}:/go"),
            "- export PATH=${PATH}:/go"
        );
        assert_eq!(sub(&ci, "- echo $$ $HOME $1"), "- echo $ $HOME $1");
        assert_eq!(
            sub(&ci, "- echo ${CI_COMMIT_BRANCH,,}"),
            "- echo feature/login"
        );
        // A multi-line value cannot open new YAML keys.
        assert_eq!(
            sub(
                &[("CI_COMMIT_MESSAGE", "fix\nsteps: []")],
                "msg: ${CI_COMMIT_MESSAGE}"
            ),
            r#"msg: "fix\nsteps: []""#
        );
        assert_eq!(sub(&[("N", "héllo")], "${N:1:2}"), "é");
        assert_eq!(sub(&[("N", "abc")], "${N:-9223372036854775808}"), "abc");
        assert_eq!(sub(&[("N", "abc")], "${N: -2}"), "bc");
        assert_eq!(sub(&[("N", "abc")], "${N:1:9223372036854775807}"), "bc");
        assert_eq!(sub(&[("N", "abc")], "${N:5}"), "");
    }

    #[test]
    fn missing_variables_are_named_and_defaults_are_not_missing() {
        let done = with(
            &[("CI_REPO", "acme/app")],
            "a: ${HOME}\nb: ${CI_REPO}\nc: ${HOME}${NOPE}\nd: ${UNSET:-fine}",
        )
        .unwrap();
        assert_eq!(
            done.missing,
            vec![("HOME".to_owned(), 3), ("NOPE".to_owned(), 35)]
        );
        assert_eq!(done.used, ["HOME", "CI_REPO", "NOPE", "UNSET"]);
    }

    #[test]
    fn bad_substitutions_are_refused_where_they_start() {
        for (text, offset, says) in [
            ("a: ${", 3, "no variable name"),
            ("a: ${}", 3, "no variable name"),
            ("a: ${X", 3, "no closing }"),
            ("a: ${X:?oops}", 3, "not supported"),
            ("a: ${X!}", 3, "not a variable name"),
            ("a: ${X^^x}", 3, "no closing }"),
            ("a: ${X#[}", 3, "bad substitution"),
        ] {
            let e = with(&[("X", "x")], text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e:?}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
            assert!(e.message.contains("$$"), "{}", e.message);
        }
    }
}
