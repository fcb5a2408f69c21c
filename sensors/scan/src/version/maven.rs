//! Maven's version order, as the POM reference's "Version Order
//! Specification" defines it (and OSV's Maven ecosystem uses): the version
//! is split into tokens at `.`, `-` and digit/letter transitions (a
//! transition counts as `-`), empty tokens become `0`, trailing "null"
//! tokens (`0`, `""`, `final`, `ga`, `release`) are trimmed at the end and
//! before each hyphen, and the prefixed tokens compare lexicographically,
//! the shorter version padded with nulls: `0` after `.`, `""` after `-`.

use std::cmp::Ordering;

use super::VersionError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// Digits, without leading zeros (`""` is zero).
    Number(String),
    /// A qualifier, lowercase, aliases resolved (`cr` → `rc`, `ga` → ``).
    Qualifier(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Item {
    /// `true` when the token follows a `-` (or a digit/letter transition).
    hyphen: bool,
    token: Token,
}

impl Item {
    fn is_null(&self) -> bool {
        match &self.token {
            Token::Number(n) => n.is_empty(),
            Token::Qualifier(q) => q.is_empty(),
        }
    }

    /// The null item padding the other version when it has `other` here.
    fn null_like(other: &Item) -> Item {
        Item {
            hyphen: other.hyphen,
            token: if other.hyphen {
                Token::Qualifier(String::new())
            } else {
                Token::Number(String::new())
            },
        }
    }
}

fn qualifier(raw: &str, followed_by_digit: bool) -> Token {
    let q = match raw {
        "a" if followed_by_digit => "alpha",
        "b" if followed_by_digit => "beta",
        "m" if followed_by_digit => "milestone",
        "cr" => "rc",
        "ga" | "final" | "release" => "",
        other => other,
    };
    Token::Qualifier(q.to_owned())
}

fn number(raw: &str) -> Token {
    Token::Number(raw.trim_start_matches('0').to_owned())
}

/// Splits and trims a version into prefixed tokens.
fn parse(version: &str) -> Vec<Item> {
    let v = version.to_lowercase();
    let chars: Vec<char> = v.chars().collect();
    let mut items: Vec<Item> = Vec::new();
    let mut hyphen = false;
    let mut start = 0;
    let push =
        |items: &mut Vec<Item>, hyphen: bool, text: &str, digits: bool, next_is_digit: bool| {
            let token = if text.is_empty() {
                Token::Number(String::new())
            } else if digits {
                number(text)
            } else {
                qualifier(text, next_is_digit)
            };
            items.push(Item { hyphen, token });
        };
    let mut i = 0;
    while i <= chars.len() {
        let c = chars.get(i).copied();
        match c {
            None | Some('.') | Some('-') => {
                let text: String = chars[start..i].iter().collect();
                let digits = text.chars().all(|c| c.is_ascii_digit());
                push(&mut items, hyphen, &text, digits, false);
                hyphen = c == Some('-');
                start = i + 1;
            }
            Some(ch) if i > start => {
                let prev = chars[i - 1];
                if prev.is_ascii_digit() != ch.is_ascii_digit() {
                    // A digit/letter transition separates like a hyphen.
                    let text: String = chars[start..i].iter().collect();
                    let digits = prev.is_ascii_digit();
                    push(&mut items, hyphen, &text, digits, ch.is_ascii_digit());
                    hyphen = true;
                    start = i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // Trim trailing nulls at the end and before each hyphen, end to start.
    let mut groups: Vec<Vec<Item>> = Vec::new();
    for item in items {
        if item.hyphen || groups.is_empty() {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push(item);
        }
    }
    let mut out = Vec::new();
    for mut g in groups {
        while g.last().is_some_and(Item::is_null) {
            g.pop();
        }
        out.extend(g);
    }
    out
}

fn qualifier_rank(q: &str) -> (u8, &str) {
    match q {
        "alpha" => (0, ""),
        "beta" => (1, ""),
        "milestone" => (2, ""),
        "rc" => (3, ""),
        "snapshot" => (4, ""),
        "" => (5, ""),
        "sp" => (6, ""),
        other => (7, other),
    }
}

fn compare_items(a: &Item, b: &Item) -> Ordering {
    // ".qualifier" = "-qualifier" < "-number" < ".number"
    let kind = |i: &Item| match (&i.token, i.hyphen) {
        (Token::Qualifier(_), _) => 0,
        (Token::Number(_), true) => 1,
        (Token::Number(_), false) => 2,
    };
    match (&a.token, &b.token) {
        (Token::Number(x), Token::Number(y)) if a.hyphen == b.hyphen => {
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (Token::Qualifier(x), Token::Qualifier(y)) => qualifier_rank(x).cmp(&qualifier_rank(y)),
        _ => kind(a).cmp(&kind(b)),
    }
}

/// Compares two Maven versions. Every string is a Maven version, so this
/// never fails.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (x, y) = (parse(a), parse(b));
    for i in 0..x.len().max(y.len()) {
        let ord = match (x.get(i), y.get(i)) {
            (Some(l), Some(r)) => compare_items(l, r),
            (Some(l), None) => compare_items(l, &Item::null_like(l)),
            (None, Some(r)) => compare_items(&Item::null_like(r), r),
            (None, None) => Ordering::Equal,
        };
        if ord != Ordering::Equal {
            return Ok(ord);
        }
    }
    Ok(Ordering::Equal)
}
