//! The search language: QQL-like queries over Assets.
//!
//! [`parse`] turns text into a [`Query`]; [`compile`](crate::eval::compile)
//! checks it against the [fields](crate::fields) and prepares it for
//! evaluation. Every error carries the [`Span`] of the offending text and
//! renders as `<message> at column <n>`.

mod syntax;

use std::fmt;

pub use syntax::{CmpOp, MAX_DEPTH, Predicate, Query, Quoting, Term, Value, parse};

/// A byte range of the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// A query that does not parse or does not fit the fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct Error {
    /// What is wrong.
    pub message: String,
    /// Where, in bytes of the query.
    pub span: Span,
    /// Where, as a 1-based column in characters (filled by [`Error::locate`]).
    pub column: usize,
}

impl Error {
    /// An error at `span`; its column is computed when the text is known.
    pub fn new(message: impl Into<String>, span: Span) -> Error {
        Error {
            message: message.into(),
            span,
            column: 0,
        }
    }

    /// Resolve the column against the query text.
    pub fn locate(mut self, query: &str) -> Error {
        let start = self.span.start.min(query.len());
        self.column = query.char_indices().take_while(|(i, _)| *i < start).count() + 1;
        self
    }

    /// The query with a caret line under the offending text, for terminals.
    pub fn render(&self, query: &str) -> String {
        let start = self.span.start.min(query.len());
        let end = self.span.end.clamp(start, query.len());
        let pad = query[..start].chars().count();
        let width = query[start..end].chars().count().max(1);
        format!("{query}\n{}{}\n{self}", " ".repeat(pad), "^".repeat(width))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// Parse `text` and resolve error columns against it.
pub fn parse_query(text: &str) -> Result<Query, Error> {
    parse(text).map_err(|e| e.locate(text))
}
