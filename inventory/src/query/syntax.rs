//! The query language's syntax: tokens, the tree, the parser and the printer.
//!
//! ```text
//! query     := or
//! or        := and ( OR and )*
//! and       := unary ( AND unary )*
//! unary     := NOT unary | '(' query ')' | term
//! term      := FIELD ':' value
//!            | FIELD ':' '[' value '..' value ']'
//!            | FIELD ':' '(' query ')'
//!            | FIELD ( '<' | '<=' | '>' | '>=' | '=' ) value
//! value     := WORD | "quoted" | `exact`
//! ```
//!
//! `AND`, `OR` and `NOT` are case-insensitive; `AND` binds tighter than `OR`.
//! Operators are explicit: two terms side by side are an error, not an
//! implicit `AND`, so a forgotten operator never silently changes a result.

use std::fmt;

use super::{Error, Span};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
}

impl CmpOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "=",
        }
    }
}

/// How a value was written, which decides how it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// `openssl*`: case-insensitive, `*` and `?` are wildcards.
    Bare,
    /// `"Network Device"`: case-insensitive, `*` and `?` are wildcards.
    Quoted,
    /// `` `Debian` ``: exact and case-sensitive, no wildcards.
    Exact,
}

/// A value as written in a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The text, without quotes.
    pub text: String,
    /// How it was quoted.
    pub quoting: Quoting,
    /// Where it is in the query.
    pub span: Span,
}

/// What a term asks of its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// `field:value`
    Match(Value),
    /// `field>=value` and the other comparisons.
    Compare(CmpOp, Span, Value),
    /// `field:[low..high]`, both ends included.
    Range(Value, Value),
    /// `field:(query)` over the elements of a list field.
    Nested(Box<Query>),
}

/// One `field…` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// The field name as written.
    pub field: String,
    /// Where the field name is.
    pub span: Span,
    /// What the field must satisfy.
    pub predicate: Predicate,
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// All must hold.
    And(Vec<Query>),
    /// One must hold.
    Or(Vec<Query>),
    /// Must not hold.
    Not(Box<Query>),
    /// A condition on a field.
    Term(Term),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    DotDot,
    Colon,
    Cmp(CmpOp),
    Word(String),
    Quoted(String),
    Exact(String),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::DotDot => "'..'".into(),
            Tok::Colon => "':'".into(),
            Tok::Cmp(op) => format!("'{}'", op.as_str()),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Quoted(w) => format!("\"{w}\""),
            Tok::Exact(w) => format!("`{w}`"),
            Tok::End => "the end of the query".into(),
        }
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Characters that end a bare word.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ':' | '<' | '>' | '=' | '"' | '`')
}

fn lex(input: &str) -> Result<Vec<(Tok, Span)>, Error> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ':' => Some(Tok::Colon),
            '=' => Some(Tok::Cmp(CmpOp::Eq)),
            _ => None,
        };
        if let Some(tok) = single {
            chars.next();
            out.push((tok, Span::new(start, start + 1)));
            continue;
        }
        match c {
            '<' | '>' => {
                chars.next();
                let (op, len) = match (c, chars.peek().map(|&(_, n)| n)) {
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('<', _) => (CmpOp::Lt, 1),
                    _ => (CmpOp::Gt, 1),
                };
                if len == 2 {
                    chars.next();
                }
                out.push((Tok::Cmp(op), Span::new(start, start + len)));
            }
            '"' | '`' => {
                chars.next();
                let mut text = String::new();
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    if ch == c {
                        end = Some(i + 1);
                        break;
                    }
                    // A backslash escapes the quote character and itself.
                    if ch == '\\'
                        && let Some(&(_, next)) = chars.peek()
                        && (next == c || next == '\\')
                    {
                        text.push(next);
                        chars.next();
                        continue;
                    }
                    text.push(ch);
                }
                let Some(end) = end else {
                    let what = if c == '"' {
                        "quoted value"
                    } else {
                        "exact value"
                    };
                    return Err(Error::new(
                        format!("unterminated {what}: add the closing {c}"),
                        Span::new(start, input.len()),
                    ));
                };
                let tok = if c == '"' {
                    Tok::Quoted(text)
                } else {
                    Tok::Exact(text)
                };
                out.push((tok, Span::new(start, end)));
            }
            _ => {
                // A bare word runs to the next delimiter or `..`.
                let mut end = start;
                while let Some(&(i, ch)) = chars.peek() {
                    if is_delimiter(ch) || input[i..].starts_with("..") {
                        break;
                    }
                    end = i + ch.len_utf8();
                    chars.next();
                }
                if end == start {
                    // `..` at the start of a word.
                    chars.next();
                    chars.next();
                    out.push((Tok::DotDot, Span::new(start, start + 2)));
                } else {
                    out.push((
                        Tok::Word(input[start..end].to_string()),
                        Span::new(start, end),
                    ));
                }
            }
        }
    }
    out.push((Tok::End, Span::new(input.len(), input.len())));
    Ok(out)
}

/// Deepest nesting of parentheses accepted, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &(Tok, Span) {
        // `lex` always ends with `End`, and `advance` never moves past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn advance(&mut self) -> (Tok, Span) {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn enter(&mut self, at: Span) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::new(
                format!("query nests deeper than {MAX_DEPTH} levels"),
                at,
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Query, Error> {
        let mut parts = vec![self.and()?];
        while self.peek().0.keyword("OR") {
            self.advance();
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Query, Error> {
        let mut parts = vec![self.unary()?];
        while self.peek().0.keyword("AND") {
            self.advance();
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Query, Error> {
        let (tok, span) = self.peek().clone();
        if tok.keyword("NOT") {
            self.advance();
            self.enter(span)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Query::Not(Box::new(inner)));
        }
        match tok {
            Tok::LParen => {
                self.advance();
                let inner = self.group(span)?;
                Ok(inner)
            }
            Tok::Word(field) => {
                if field.eq_ignore_ascii_case("AND") || field.eq_ignore_ascii_case("OR") {
                    return Err(Error::new(
                        format!("expected a condition before '{field}'"),
                        span,
                    ));
                }
                self.advance();
                self.term(field, span)
            }
            Tok::End => Err(Error::new(
                "expected a condition, found the end of the query",
                span,
            )),
            other => Err(Error::new(
                format!("expected a field name, found {}", other.describe()),
                span,
            )),
        }
    }

    /// After an opening parenthesis at `open`: a query and its `)`.
    fn group(&mut self, open: Span) -> Result<Query, Error> {
        self.enter(open)?;
        if self.peek().0 == Tok::RParen {
            return Err(Error::new("empty parentheses", self.peek().1));
        }
        let inner = self.or()?;
        let (tok, span) = self.advance();
        match tok {
            Tok::RParen => {
                self.depth -= 1;
                Ok(inner)
            }
            Tok::End => Err(Error::new("this '(' is never closed", open)),
            other => Err(Error::new(
                format!("expected AND, OR or ')', found {}", other.describe()),
                span,
            )),
        }
    }

    fn term(&mut self, field: String, fspan: Span) -> Result<Query, Error> {
        let (tok, span) = self.advance();
        let predicate = match tok {
            Tok::Colon => {
                let (next, nspan) = self.peek().clone();
                match next {
                    Tok::LParen => {
                        self.advance();
                        Predicate::Nested(Box::new(self.group(nspan)?))
                    }
                    Tok::LBracket => {
                        self.advance();
                        let low = self.value(&format!("'{field}:['"))?;
                        let (dots, dspan) = self.advance();
                        if dots != Tok::DotDot {
                            return Err(Error::new(
                                format!("expected '..' in the range, found {}", dots.describe()),
                                dspan,
                            ));
                        }
                        let high = self.value(&format!("'..' in the range of '{field}'"))?;
                        let (close, cspan) = self.advance();
                        if close != Tok::RBracket {
                            return Err(Error::new(
                                format!(
                                    "expected ']' to close the range, found {}",
                                    close.describe()
                                ),
                                cspan,
                            ));
                        }
                        Predicate::Range(low, high)
                    }
                    _ => Predicate::Match(self.value(&format!("'{field}:'"))?),
                }
            }
            Tok::Cmp(op) => {
                Predicate::Compare(op, span, self.value(&format!("'{field}{}'", op.as_str()))?)
            }
            other => {
                return Err(Error::new(
                    format!(
                        "expected ':' or a comparison after '{field}', found {}",
                        other.describe()
                    ),
                    span,
                ));
            }
        };
        Ok(Query::Term(Term {
            field,
            span: fspan,
            predicate,
        }))
    }

    fn value(&mut self, after: &str) -> Result<Value, Error> {
        let (tok, span) = self.peek().clone();
        let (text, quoting) = match tok {
            Tok::Word(w)
                if ["AND", "OR", "NOT"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                return Err(Error::new(
                    format!(
                        "expected a value after {after}, found {w} (quote it to search for the word)"
                    ),
                    span,
                ));
            }
            Tok::Word(w) => (w, Quoting::Bare),
            Tok::Quoted(w) => (w, Quoting::Quoted),
            Tok::Exact(w) => (w, Quoting::Exact),
            _ => return Err(Error::new(format!("expected a value after {after}"), span)),
        };
        self.advance();
        Ok(Value {
            text,
            quoting,
            span,
        })
    }
}

/// Parse a query. Errors carry the span of the offending text.
pub fn parse(input: &str) -> Result<Query, Error> {
    let toks = lex(input)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    if p.peek().0 == Tok::End {
        return Err(Error::new("the query is empty", p.peek().1));
    }
    let q = p.or()?;
    let (tok, span) = p.advance();
    match tok {
        Tok::End => Ok(q),
        Tok::RParen => Err(Error::new("')' has no matching '('", span)),
        other => Err(Error::new(
            format!(
                "expected AND, OR or the end of the query, found {}",
                other.describe()
            ),
            span,
        )),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = |f: &mut fmt::Formatter<'_>, q: char| {
            write!(f, "{q}")?;
            for c in self.text.chars() {
                if c == q || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "{q}")
        };
        match self.quoting {
            Quoting::Exact => quote(f, '`'),
            Quoting::Quoted => quote(f, '"'),
            Quoting::Bare if needs_quotes(&self.text) => quote(f, '"'),
            Quoting::Bare => f.write_str(&self.text),
        }
    }
}

/// Whether a bare value would not lex back as the same single word.
fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text.chars().any(is_delimiter)
        || text.contains("..")
        // `[a...b]` would lex as `a`, `..`, `.b`.
        || text.starts_with('.')
        || text.ends_with('.')
        || ["AND", "OR", "NOT"]
            .iter()
            .any(|k| text.eq_ignore_ascii_case(k))
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Children that are themselves AND or OR are parenthesized, so the
        // printed query parses back to the same tree.
        fn join(f: &mut fmt::Formatter<'_>, parts: &[Query], sep: &str) -> fmt::Result {
            for (i, q) in parts.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                if matches!(q, Query::And(_) | Query::Or(_)) {
                    write!(f, "({q})")?;
                } else {
                    write!(f, "{q}")?;
                }
            }
            Ok(())
        }
        match self {
            Query::And(parts) => join(f, parts, "AND"),
            Query::Or(parts) => join(f, parts, "OR"),
            Query::Not(inner) => match **inner {
                Query::Term(_) | Query::Not(_) => write!(f, "NOT {inner}"),
                _ => write!(f, "NOT ({inner})"),
            },
            Query::Term(t) => {
                write!(f, "{}", t.field)?;
                match &t.predicate {
                    Predicate::Match(v) => write!(f, ":{v}"),
                    Predicate::Compare(op, _, v) => write!(f, "{}{v}", op.as_str()),
                    Predicate::Range(a, b) => write!(f, ":[{a}..{b}]"),
                    Predicate::Nested(q) => write!(f, ":({q})"),
                }
            }
        }
    }
}
