//! `when: evaluate`: Woodpecker's expression filter, `CI_COMMIT_MESSAGE contains "[deploy]"`,
//! over the variables a step gets.
//!
//! Woodpecker hands these to the expr-lang library; this reads the part of that language its
//! documented filters use: text in double or single quotes, numbers, `true`, `false`, `nil`,
//! variables, lists (`["push", "tag"]`), `==`, `!=`, `<`, `<=`, `>`, `>=`, `contains`,
//! `startsWith`, `endsWith`, `matches` (a regular expression), `in`, `not in`, `!`/`not`,
//! `&&`/`and`, `||`/`or` and parentheses. It is checked when the file is read: an expression
//! that is not a condition (`CI_COMMIT_BRANCH` alone), compares a list, or is cut short is
//! refused there, with its column. Variables are text: a number or boolean compares with its
//! text, two numbers by value; a variable no step gets is `nil`, equal only to `nil`, so
//! `SKIP != "true"` holds when `SKIP` is not set.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// The longest expression: filters are one line, and one line is plenty.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// Parenthesis and `not` nesting: deeper is no filter anyone writes, and would be deep
/// recursion.
const MAX_DEPTH: usize = 64;

/// A checked `evaluate` expression.
#[derive(Clone)]
pub struct Expression {
    source: String,
    root: Node,
}

impl Expression {
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("`evaluate` is empty; give a condition such as \
                        CI_COMMIT_BRANCH == \"main\""
                .to_owned());
        }
        if source.len() > MAX_EXPRESSION_LEN {
            return Err(format!(
                "`evaluate` is {} bytes; at most {MAX_EXPRESSION_LEN}",
                source.len()
            ));
        }
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
            end: source.len(),
            depth: 0,
        };
        let root = parser.or()?;
        if let Some(token) = parser.peek() {
            return Err(at(
                token.start,
                &format!("unexpected {}; join conditions with && or ||", token.kind),
            ));
        }
        if root.kind() != Kind::Bool {
            return Err(format!(
                "`{source}` is not a condition: compare it, as in {} == \"value\"",
                source.trim()
            ));
        }
        Ok(Self {
            source: source.to_owned(),
            root,
        })
    }

    /// Whether the condition holds with these variables.
    pub fn holds(&self, env: &BTreeMap<String, String>) -> bool {
        matches!(self.root.eval(env), Value::Bool(true))
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

/// The same text is the same expression.
impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Expression {}

fn at(offset: usize, message: &str) -> String {
    format!("`evaluate`, column {}: {message}", offset + 1)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Number(f64),
    Ident(String),
    /// `==`, `(`, `&&`, ... and the word operators (`and`, `contains`, `in`, ...).
    Op(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Text(t) => write!(f, "text {t:?}"),
            Tok::Number(n) => write!(f, "number {n}"),
            Tok::Ident(name) => write!(f, "variable {name}"),
            Tok::Op(op) => write!(f, "`{op}`"),
        }
    }
}

struct Token {
    kind: Tok,
    start: usize,
}

const WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "true",
    "false",
    "nil",
];

const SYMBOLS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",",
];

fn lex(source: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'"' || c == b'\'' {
            let (text, next) = text(source, i)?;
            tokens.push(Token {
                kind: Tok::Text(text),
                start,
            });
            i = next;
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let number = source[start..i]
                .parse::<f64>()
                .map_err(|_| at(start, &format!("{:?} is not a number", &source[start..i])))?;
            tokens.push(Token {
                kind: Tok::Number(number),
                start,
            });
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &source[start..i];
            let kind = match WORDS.iter().find(|w| **w == word) {
                Some(w) => Tok::Op(w),
                None => Tok::Ident(word.to_owned()),
            };
            tokens.push(Token { kind, start });
        } else if let Some(symbol) = SYMBOLS.iter().find(|s| source[i..].starts_with(**s)) {
            tokens.push(Token {
                kind: Tok::Op(symbol),
                start,
            });
            i += symbol.len();
        } else {
            let ch = source[i..].chars().next().unwrap_or('?');
            return Err(at(start, &format!("{ch:?} is not part of a condition")));
        }
    }
    Ok(tokens)
}

/// A quoted text from `start` (its quote); the text and the offset after its closing quote.
fn text(source: &str, start: usize) -> Result<(String, usize), String> {
    let quote = source.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = source[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('\\' | '"' | '\''))) => out.push(c),
                Some((j, other)) => {
                    return Err(at(
                        start + 1 + j,
                        &format!("unknown escape \\{other}; use \\\\, \\\", \\', \\n or \\t"),
                    ));
                }
                None => break,
            },
            c if c == quote => return Ok((out, start + 1 + i + 1)),
            c => out.push(c),
        }
    }
    Err(at(start, "this text has no closing quote"))
}

/// What an expression gives, known when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// A variable, text, `nil` or a number.
    Scalar,
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
    EndsWith,
    In,
    NotIn,
}

/// The operators that compare the values on their two sides, as written. (`not in` and
/// `matches`, which take more than a value, are read apart.)
const COMPARISONS: &[(&str, Cmp)] = &[
    ("==", Cmp::Eq),
    ("!=", Cmp::Ne),
    ("<=", Cmp::Le),
    (">=", Cmp::Ge),
    ("<", Cmp::Lt),
    (">", Cmp::Gt),
    ("contains", Cmp::Contains),
    ("startsWith", Cmp::StartsWith),
    ("endsWith", Cmp::EndsWith),
    ("in", Cmp::In),
];

#[derive(Clone)]
enum Node {
    Text(String),
    Number(f64),
    Bool(bool),
    Nil,
    Var(String),
    List(Vec<Node>),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Compare(Cmp, Box<Node>, Box<Node>),
    Matches(Box<Node>, Regex),
}

impl Node {
    /// A value to compare: not a condition (but `true` and `false`) nor a list.
    fn is_value(&self) -> bool {
        matches!(
            self,
            Node::Text(_) | Node::Number(_) | Node::Bool(_) | Node::Nil | Node::Var(_)
        )
    }

    fn kind(&self) -> Kind {
        match self {
            Node::Bool(_)
            | Node::Not(_)
            | Node::And(..)
            | Node::Or(..)
            | Node::Compare(..)
            | Node::Matches(..) => Kind::Bool,
            Node::List(_) => Kind::List,
            Node::Text(_) | Node::Number(_) | Node::Nil | Node::Var(_) => Kind::Scalar,
        }
    }

    fn eval(&self, env: &BTreeMap<String, String>) -> Value {
        match self {
            Node::Text(t) => Value::Text(t.clone()),
            Node::Number(n) => Value::Number(*n),
            Node::Bool(b) => Value::Bool(*b),
            Node::Nil => Value::Nil,
            Node::Var(name) => env.get(name).map_or(Value::Nil, |v| Value::Text(v.clone())),
            Node::List(items) => Value::List(items.iter().map(|n| n.eval(env)).collect()),
            Node::Not(inner) => Value::Bool(!inner.eval(env).truth()),
            Node::And(a, b) => Value::Bool(a.eval(env).truth() && b.eval(env).truth()),
            Node::Or(a, b) => Value::Bool(a.eval(env).truth() || b.eval(env).truth()),
            Node::Matches(subject, regex) => {
                Value::Bool(subject.eval(env).text().is_some_and(|t| regex.is_match(&t)))
            }
            Node::Compare(cmp, a, b) => Value::Bool(compare(*cmp, &a.eval(env), &b.eval(env))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Number(f64),
    Bool(bool),
    Nil,
    List(Vec<Value>),
}

impl Value {
    fn truth(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// The text a scalar compares as; `nil` and lists have none.
    fn text(&self) -> Option<String> {
        match self {
            Value::Text(t) => Some(t.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Nil | Value::List(_) => None,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Text(t) => t.trim().parse().ok(),
            _ => None,
        }
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Nil, _) | (_, Value::Nil) => false,
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            matches!((a.number(), b.number()), (Some(x), Some(y)) if x == y)
        }
        _ => a.text() == b.text(),
    }
}

fn compare(cmp: Cmp, a: &Value, b: &Value) -> bool {
    let order = || match (a.number(), b.number()) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => Some(a.text()?.cmp(&b.text()?)),
    };
    let texts = || a.text().zip(b.text());
    match cmp {
        Cmp::Eq => equal(a, b),
        Cmp::Ne => !equal(a, b),
        Cmp::Lt => order().is_some_and(|o| o.is_lt()),
        Cmp::Le => order().is_some_and(|o| o.is_le()),
        Cmp::Gt => order().is_some_and(|o| o.is_gt()),
        Cmp::Ge => order().is_some_and(|o| o.is_ge()),
        Cmp::Contains => texts().is_some_and(|(a, b)| a.contains(&b)),
        Cmp::StartsWith => texts().is_some_and(|(a, b)| a.starts_with(&b)),
        Cmp::EndsWith => texts().is_some_and(|(a, b)| a.ends_with(&b)),
        Cmp::In | Cmp::NotIn => {
            let found = matches!(b, Value::List(items) if items.iter().any(|i| equal(a, i)));
            found == (cmp == Cmp::In)
        }
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    /// Where the source ends, for "cut short" errors.
    end: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token { kind: Tok::Op(o), .. }) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// The offset of the next token, or the end.
    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.start)
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(at(self.here(), "nested too deeply"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node, String> {
        self.joined(["||", "or"], Self::and, Node::Or)
    }

    fn and(&mut self) -> Result<Node, String> {
        self.joined(["&&", "and"], Self::not, Node::And)
    }

    /// `next (op next)*`, left to right: conditions joined by one operator, spelt either way.
    fn joined(
        &mut self,
        op: [&str; 2],
        next: fn(&mut Self) -> Result<Node, String>,
        join: fn(Box<Node>, Box<Node>) -> Node,
    ) -> Result<Node, String> {
        let mut left = next(self)?;
        loop {
            let start = self.here();
            if !(self.eat(op[0]) || self.eat(op[1])) {
                return Ok(left);
            }
            let right = next(self)?;
            both_conditions(&left, &right, start, op[0])?;
            left = join(Box::new(left), Box::new(right));
        }
    }

    fn not(&mut self) -> Result<Node, String> {
        let start = self.here();
        if self.eat("!") || self.eat("not") {
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            if inner.kind() != Kind::Bool {
                return Err(at(start, "`!` negates a condition, not a value"));
            }
            return Ok(Node::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, String> {
        let left = self.primary()?;
        let start = self.here();
        let cmp = if let Some(&(_, cmp)) = COMPARISONS.iter().find(|(op, _)| self.eat(op)) {
            cmp
        } else if self.eat("not") {
            if !self.eat("in") {
                return Err(at(start, "`not` here must be `not in`"));
            }
            Cmp::NotIn
        } else if self.eat("matches") {
            let pattern_at = self.here();
            let Some(Token {
                kind: Tok::Text(pattern),
                ..
            }) = self.peek()
            else {
                return Err(at(
                    pattern_at,
                    "`matches` takes a regular expression in quotes",
                ));
            };
            let regex = Regex::new(pattern)
                .map_err(|e| at(pattern_at, &format!("not a regular expression: {e}")))?;
            self.at += 1;
            if !left.is_value() {
                return Err(at(start, "`matches` applies to text"));
            }
            return Ok(Node::Matches(Box::new(left), regex));
        } else {
            return Ok(left);
        };
        let right = self.primary()?;
        let lists = matches!(cmp, Cmp::In | Cmp::NotIn);
        if !left.is_value() {
            return Err(at(
                start,
                "compare a variable or a value, not a condition or list",
            ));
        }
        if lists && right.kind() != Kind::List {
            return Err(at(start, "`in` takes a list, like [\"push\", \"tag\"]"));
        }
        if !lists && !right.is_value() {
            return Err(at(
                start,
                "compare with a variable or a value, not a condition or list",
            ));
        }
        Ok(Node::Compare(cmp, Box::new(left), Box::new(right)))
    }

    fn primary(&mut self) -> Result<Node, String> {
        let start = self.here();
        let Some(token) = self.peek() else {
            return Err(at(start, "the condition is cut short"));
        };
        let node = match &token.kind {
            Tok::Text(t) => Node::Text(t.clone()),
            Tok::Number(n) => Node::Number(*n),
            Tok::Ident(name) => Node::Var(name.clone()),
            Tok::Op("true") => Node::Bool(true),
            Tok::Op("false") => Node::Bool(false),
            Tok::Op("nil") => Node::Nil,
            Tok::Op("(") => {
                self.at += 1;
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                if !self.eat(")") {
                    return Err(at(self.here(), "a `(` is not closed"));
                }
                return Ok(inner);
            }
            Tok::Op("[") => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        let item = self.primary()?;
                        if !item.is_value() {
                            return Err(at(start, "a list holds values"));
                        }
                        items.push(item);
                        if self.eat("]") {
                            break;
                        }
                        if !self.eat(",") {
                            return Err(at(self.here(), "expected `,` or `]` in the list"));
                        }
                    }
                }
                return Ok(Node::List(items));
            }
            other => return Err(at(start, &format!("unexpected {other}"))),
        };
        self.at += 1;
        Ok(node)
    }
}

fn both_conditions(left: &Node, right: &Node, at_op: usize, op: &str) -> Result<(), String> {
    if left.kind() == Kind::Bool && right.kind() == Kind::Bool {
        Ok(())
    } else {
        Err(at(
            at_op,
            &format!("`{op}` joins conditions; compare the values on each side"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("CI_COMMIT_AUTHOR".into(), "admin".into()),
            ("CI_PIPELINE_EVENT".into(), "push".into()),
            (
                "CI_COMMIT_MESSAGE".into(),
                "fix: it\n\nplease deploy".into(),
            ),
            ("CI_COMMIT_BRANCH".into(), "release/1.2".into()),
            ("CI_PIPELINE_NUMBER".into(), "42".into()),
            ("DEPLOY".into(), "true".into()),
        ])
    }

    fn holds(source: &str) -> bool {
        Expression::parse(source)
            .unwrap_or_else(|e| panic!("{source}: {e}"))
            .holds(&env())
    }

    /// The examples of Woodpecker's documentation, and the rest of the language read here.
    #[test]
    fn conditions_hold_as_expr_lang_says() {
        for (source, expected) in [
            (r#"CI_COMMIT_AUTHOR == "admin""#, true),
            (r#"SKIP != "true""#, true),
            (r#"CI_COMMIT_MESSAGE contains "please deploy""#, true),
            (
                r#"(CI_COMMIT_AUTHOR == "admin" || CI_COMMIT_AUTHOR == "maintainer") && CI_PIPELINE_EVENT == "push""#,
                true,
            ),
            (r#"CI_PIPELINE_EVENT in ["push", "tag"]"#, true),
            (r#"CI_PIPELINE_EVENT not in ["push", "tag"]"#, false),
            (r#"CI_COMMIT_BRANCH startsWith 'release/'"#, true),
            (r#"CI_COMMIT_BRANCH endsWith "1.2""#, true),
            (r#"CI_COMMIT_BRANCH matches "^release/[0-9.]+$""#, true),
            (r#"CI_COMMIT_BRANCH matches "^main$""#, false),
            ("CI_PIPELINE_NUMBER > 40 and CI_PIPELINE_NUMBER <= 42", true),
            ("CI_PIPELINE_NUMBER == 42.0", true),
            ("CI_PIPELINE_NUMBER < 5", false),
            ("DEPLOY == true", true),
            ("not (DEPLOY == false)", true),
            ("!(DEPLOY == \"true\")", false),
            ("UNSET == nil && UNSET != \"\"", true),
            ("UNSET contains \"\"", false),
            ("UNSET < 3 || UNSET >= 3", false),
            (r#""a\"b" == 'a"b'"#, true),
            ("true", true),
            ("false || true && false", false),
        ] {
            assert_eq!(holds(source), expected, "{source}");
        }
    }

    #[test]
    fn what_is_no_condition_is_refused_with_its_column() {
        for (source, says) in [
            ("", "`evaluate` is empty"),
            ("CI_COMMIT_BRANCH", "is not a condition"),
            ("\"main\"", "is not a condition"),
            ("CI_A == ", "column 9: the condition is cut short"),
            ("CI_A == \"x", "column 9: this text has no closing quote"),
            ("CI_A = \"x\"", "column 6: '=' is not part of a condition"),
            ("CI_A == \"x\" CI_B", "column 13: unexpected variable CI_B"),
            ("(CI_A == \"x\"", "column 13: a `(` is not closed"),
            ("CI_A && CI_B == \"x\"", "column 6: `&&` joins conditions"),
            ("!CI_A", "column 1: `!` negates a condition"),
            ("CI_A in \"x\"", "column 6: `in` takes a list"),
            (
                "CI_A == [\"x\"]",
                "column 6: compare with a variable or a value",
            ),
            ("CI_A matches \"[\"", "column 14: not a regular expression"),
            (
                "CI_A matches CI_B",
                "column 14: `matches` takes a regular expression",
            ),
            ("CI_A not \"x\"", "column 6: `not` here must be `not in`"),
            ("CI_A == \"\\q\"", "unknown escape \\q"),
            (
                "[CI_A == \"x\"]",
                "column 7: expected `,` or `]` in the list",
            ),
            ("CI_A in [(CI_B == \"x\")]", "a list holds values"),
        ] {
            let err = Expression::parse(source)
                .err()
                .unwrap_or_else(|| panic!("{source}"));
            assert!(err.contains(says), "{source:?}: {err}");
        }
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(
            Expression::parse(&deep)
                .unwrap_err()
                .contains("nested too deeply")
        );
        let long = format!("A == \"{}\"", "x".repeat(MAX_EXPRESSION_LEN));
        assert!(Expression::parse(&long).unwrap_err().contains("at most"));
    }
}
