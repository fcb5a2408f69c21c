//! Checking a parsed query against the fields, and evaluating it.
//!
//! [`compile`] resolves every field, checks every operator against the
//! field's type and parses every value (numbers, dates, versions) once, so
//! evaluation never fails and never parses. Predicates on interned text
//! (vendors, products, versions, stages, tags) are decided once per distinct
//! string at compile time and become bit sets: evaluating such a term on an
//! Asset is one bit test.

use std::cmp::Ordering;

use crate::doc::{AssetDoc, Interner, OptSym, ProductDoc, Sym, VulnDoc};
use crate::fields::{self, Field, FieldType, ProductField, Scope, VulnField};
use crate::query::{CmpOp, Error, Predicate, Query, Quoting, Span, Value};

/// A compiled query, valid for the interner it was compiled against.
#[derive(Debug)]
pub struct Compiled {
    root: Node,
}

#[derive(Debug)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// A test on interned values: which symbols satisfy it.
    Syms(Field, SymSet),
    /// A text test on values that are not interned (name, identity).
    Text(Field, TextPattern),
    /// `tags.<key>`: the tag keys that name it, and the values that match.
    Tag(SymSet, SymSet),
    /// `observed.<key>`: the fact keys that name it, and the pattern.
    Observed(SymSet, TextPattern),
    /// A number or date in `[low, high]` (both inclusive, in seconds for dates).
    Interval(Field, i64, i64),
    Bool(Field, bool),
    Nested(Field, Box<Node>),
}

#[derive(Debug, Default)]
struct SymSet(Vec<u64>);

impl SymSet {
    fn of(interner: &Interner, mut pred: impl FnMut(&str) -> bool) -> SymSet {
        let mut bits = vec![0u64; interner.len().div_ceil(64)];
        for (sym, s) in interner.iter() {
            if pred(s) {
                bits[sym as usize / 64] |= 1 << (sym % 64);
            }
        }
        SymSet(bits)
    }

    fn has(&self, sym: Sym) -> bool {
        self.0
            .get(sym as usize / 64)
            .is_some_and(|w| w & (1 << (sym % 64)) != 0)
    }
}

/// How a text value matches.
#[derive(Debug, Clone)]
enum TextPattern {
    /// Backticks: exact, case-sensitive.
    Exact(String),
    /// Case-insensitive equality.
    Folded(String),
    /// Case-insensitive glob with `*` and `?`.
    Glob(Vec<char>),
}

impl TextPattern {
    fn new(v: &Value) -> TextPattern {
        match v.quoting {
            Quoting::Exact => TextPattern::Exact(v.text.clone()),
            _ if v.text.contains(['*', '?']) => {
                TextPattern::Glob(v.text.chars().map(fold).collect())
            }
            _ => TextPattern::Folded(v.text.chars().map(fold).collect()),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            TextPattern::Exact(p) => p == s,
            TextPattern::Folded(p) => s.chars().map(fold).eq(p.chars()),
            TextPattern::Glob(p) => glob(p, s),
        }
    }
}

fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Glob match with `*` (any run) and `?` (one character), case-insensitive;
/// linear backtracking on the last `*`, so no pattern is exponential.
fn glob(p: &[char], s: &str) -> bool {
    if s.is_ascii() {
        // Object names, versions and most values: no allocation.
        return glob_in(p, s.as_bytes(), |b| char::from(b.to_ascii_lowercase()));
    }
    let s: Vec<char> = s.chars().map(fold).collect();
    glob_in(p, &s, |c| c)
}

fn glob_in<T: Copy>(p: &[char], s: &[T], fold: impl Fn(T) -> char) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == fold(s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Compare versions part by part: numeric parts numerically, others as
/// text, a missing part sorting first (`1.2 < 1.2.1`). Ecosystem-exact
/// comparison (dpkg epochs, PEP 440…) belongs to the scanner; this is the
/// generic order search needs for `os.version >= 12`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<String> {
        let s = s.trim_start_matches(['v', 'V']);
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut digit = None;
        for c in s.chars() {
            if !c.is_alphanumeric() {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                digit = None;
                continue;
            }
            let d = c.is_ascii_digit();
            if digit.is_some_and(|x| x != d) && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            digit = Some(d);
            cur.extend(c.to_lowercase());
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (numeric(x), numeric(y)) {
            (true, true) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            // A number sorts after text (1.0 > 1.0rc, 1.0.1 > 1.0.beta).
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn numeric(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// `12` matches `12`, `12.5` and `12-rc1` but not `120`.
fn version_prefix(prefix: &str, v: &str) -> bool {
    let v = v.trim_start_matches(['v', 'V']);
    let prefix = prefix.trim_start_matches(['v', 'V']);
    match v.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => v[prefix.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric()),
        _ => false,
    }
}

const DAY: i64 = 86_400;

/// A parsed date value: an instant, or a whole day.
enum DateValue {
    Instant(i64),
    Day(i64),
}

fn parse_date(v: &Value, now: i64) -> Result<DateValue, Error> {
    let text = v.text.trim();
    let bad = || {
        Error::new(
            format!(
                "'{}' is not a date: use YYYY-MM-DD, an RFC 3339 time in quotes, now, or now-7d (units s, m, h, d, w)",
                v.text
            ),
            v.span,
        )
    };
    if let Some(rest) = text
        .strip_prefix("now")
        .or_else(|| text.strip_prefix("NOW"))
    {
        if rest.is_empty() {
            return Ok(DateValue::Instant(now));
        }
        let (sign, rest) = if let Some(r) = rest.strip_prefix('-') {
            (-1, r)
        } else if let Some(r) = rest.strip_prefix('+') {
            (1, r)
        } else {
            return Err(bad());
        };
        let unit_at = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = rest.split_at(unit_at);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => DAY,
            "w" => 7 * DAY,
            _ => return Err(bad()),
        };
        let delta = n.checked_mul(unit).ok_or_else(bad)?;
        return Ok(DateValue::Instant(now.saturating_add(sign * delta)));
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        let z = d.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| bad())?;
        return Ok(DateValue::Day(z.timestamp().as_second()));
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| DateValue::Instant(t.as_second()))
        .map_err(|_| bad())
}

/// What an operator on a number or a date means as an inclusive interval.
fn interval(op: CmpOp, low: i64, high: i64) -> (i64, i64) {
    match op {
        CmpOp::Lt => (i64::MIN, low.saturating_sub(1)),
        CmpOp::Le => (i64::MIN, high),
        CmpOp::Gt => (high.saturating_add(1), i64::MAX),
        CmpOp::Ge => (low, i64::MAX),
        CmpOp::Eq => (low, high),
    }
}

fn no_wildcards(v: &Value, what: &str) -> Result<(), Error> {
    if v.quoting != Quoting::Exact && v.text.contains(['*', '?']) {
        return Err(Error::new(
            format!("wildcards are not allowed {what}"),
            v.span,
        ));
    }
    Ok(())
}

struct Compiler<'a> {
    interner: &'a Interner,
    now: i64,
}

impl Compiler<'_> {
    fn query(&self, q: &Query, scope: Scope) -> Result<Node, Error> {
        Ok(match q {
            Query::And(parts) => Node::And(
                parts
                    .iter()
                    .map(|p| self.query(p, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Query::Or(parts) => Node::Or(
                parts
                    .iter()
                    .map(|p| self.query(p, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Query::Not(inner) => Node::Not(Box::new(self.query(inner, scope)?)),
            Query::Term(t) => {
                let resolved =
                    fields::resolve(&t.field, scope).map_err(|m| Error::new(m, t.span))?;
                let node =
                    self.term(&t.field, t.span, &resolved.field, resolved.ty, &t.predicate)?;
                match resolved.through {
                    Some(list) => Node::Nested(list, Box::new(node)),
                    None => node,
                }
            }
        })
    }

    fn term(
        &self,
        name: &str,
        span: Span,
        field: &Field,
        ty: FieldType,
        pred: &Predicate,
    ) -> Result<Node, Error> {
        let field = field.clone();
        match (ty, pred) {
            (FieldType::List, Predicate::Nested(inner)) => {
                let scope = if field == Field::Software {
                    Scope::Software
                } else {
                    Scope::Vulnerability
                };
                Ok(Node::Nested(field, Box::new(self.query(inner, scope)?)))
            }
            (FieldType::List, _) => Err(Error::new(
                format!("'{name}' is a list: search its elements with {name}:(…)"),
                span,
            )),
            (_, Predicate::Nested(_)) => Err(Error::new(
                format!(
                    "'{name}' is not a list: nested queries work on software and findings.vulnerabilities.top"
                ),
                span,
            )),
            (FieldType::Text, Predicate::Match(v)) => {
                let pat = TextPattern::new(v);
                Ok(self.text(field, pat))
            }
            (FieldType::Text | FieldType::Bool, Predicate::Compare(op, ospan, _))
                if *op != CmpOp::Eq =>
            {
                Err(Error::new(
                    format!(
                        "'{}' needs a number, date or version field; '{name}' is {ty}",
                        op.as_str()
                    ),
                    *ospan,
                ))
            }
            (FieldType::Text, Predicate::Compare(_, _, v)) => {
                Ok(self.text(field, TextPattern::new(v)))
            }
            (FieldType::Text | FieldType::Bool, Predicate::Range(low, _)) => Err(Error::new(
                format!("ranges need a number, date or version field; '{name}' is {ty}"),
                low.span,
            )),
            (FieldType::Bool, Predicate::Match(v) | Predicate::Compare(_, _, v)) => {
                let b = match v.text.to_ascii_lowercase().as_str() {
                    "true" | "yes" => true,
                    "false" | "no" => false,
                    _ => {
                        return Err(Error::new(
                            format!("'{}' is not true or false", v.text),
                            v.span,
                        ));
                    }
                };
                Ok(Node::Bool(field, b))
            }
            (FieldType::Number, _) => {
                let num = |v: &Value| -> Result<i64, Error> {
                    v.text.trim().parse().map_err(|_| {
                        Error::new(
                            format!("'{}' is not a whole number ('{name}' is a number)", v.text),
                            v.span,
                        )
                    })
                };
                let (lo, hi) = match pred {
                    Predicate::Match(v) => (num(v)?, num(v)?),
                    Predicate::Compare(op, _, v) => {
                        let n = num(v)?;
                        interval(*op, n, n)
                    }
                    Predicate::Range(a, b) => (num(a)?, num(b)?),
                    Predicate::Nested(_) => unreachable_nested(span)?,
                };
                Ok(Node::Interval(field, lo, hi))
            }
            (FieldType::Date, _) => {
                let bounds = |v: &Value| -> Result<(i64, i64), Error> {
                    Ok(match parse_date(v, self.now)? {
                        DateValue::Instant(t) => (t, t),
                        DateValue::Day(t) => (t, t + DAY - 1),
                    })
                };
                let (lo, hi) = match pred {
                    Predicate::Match(v) => {
                        if !matches!(parse_date(v, self.now)?, DateValue::Day(_)) {
                            return Err(Error::new(
                                format!(
                                    "'{name}:' takes a day (YYYY-MM-DD); use a comparison or a range for times"
                                ),
                                v.span,
                            ));
                        }
                        bounds(v)?
                    }
                    Predicate::Compare(op, _, v) => {
                        let (lo, hi) = bounds(v)?;
                        interval(*op, lo, hi)
                    }
                    Predicate::Range(a, b) => (bounds(a)?.0, bounds(b)?.1),
                    Predicate::Nested(_) => unreachable_nested(span)?,
                };
                Ok(Node::Interval(field, lo, hi))
            }
            (FieldType::Version, Predicate::Match(v)) => {
                let set = match v.quoting {
                    Quoting::Exact => SymSet::of(self.interner, |s| s == v.text),
                    _ if v.text.contains(['*', '?']) => {
                        let p = TextPattern::new(v);
                        SymSet::of(self.interner, |s| p.matches(s))
                    }
                    _ => SymSet::of(self.interner, |s| version_prefix(&v.text, s)),
                };
                Ok(Node::Syms(field, set))
            }
            (FieldType::Version, Predicate::Compare(op, _, v)) => {
                no_wildcards(v, "in comparisons")?;
                let op = *op;
                let set = SymSet::of(self.interner, |s| {
                    let o = compare_versions(s, &v.text);
                    match op {
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Le => o != Ordering::Greater,
                        CmpOp::Gt => o == Ordering::Greater,
                        CmpOp::Ge => o != Ordering::Less,
                        CmpOp::Eq => o == Ordering::Equal,
                    }
                });
                Ok(Node::Syms(field, set))
            }
            (FieldType::Version, Predicate::Range(a, b)) => {
                no_wildcards(a, "in ranges")?;
                no_wildcards(b, "in ranges")?;
                let set = SymSet::of(self.interner, |s| {
                    compare_versions(s, &a.text) != Ordering::Less
                        && compare_versions(s, &b.text) != Ordering::Greater
                });
                Ok(Node::Syms(field, set))
            }
        }
    }

    fn text(&self, field: Field, pat: TextPattern) -> Node {
        let keys = |key: &str| SymSet::of(self.interner, |s| s.eq_ignore_ascii_case(key));
        match &field {
            Field::Tag(key) => {
                return Node::Tag(keys(key), SymSet::of(self.interner, |s| pat.matches(s)));
            }
            Field::Observed(key) => return Node::Observed(keys(key), pat),
            Field::Name | Field::Identity | Field::DisplayName => {
                return Node::Text(field, pat);
            }
            _ => {}
        }
        // `category` also matches the `Category / Subcategory` path, which
        // is just another interned string.
        Node::Syms(field, SymSet::of(self.interner, |s| pat.matches(s)))
    }
}

fn unreachable_nested<T>(span: Span) -> Result<T, Error> {
    Err(Error::new("a nested query is not allowed here", span))
}

/// Check `query` against the fields and prepare it for evaluation against
/// the documents of `interner`. `now` (Unix seconds) anchors `now-7d`.
pub fn compile(query: &Query, interner: &Interner, now: i64) -> Result<Compiled, Error> {
    let c = Compiler { interner, now };
    Ok(Compiled {
        root: c.query(query, Scope::Asset)?,
    })
}

/// Parse and compile query text; errors carry their column in `text`.
pub fn compile_text(text: &str, interner: &Interner, now: i64) -> Result<Compiled, Error> {
    let parsed = crate::query::parse_query(text)?;
    compile(&parsed, interner, now).map_err(|e| e.locate(text))
}

/// Whether one Asset matches `query`, for callers that judge Assets one at
/// a time (dynamic tags) rather than search an index.
pub fn matches_asset(
    query: &Query,
    asset: &sightline_crds::Asset,
    now: i64,
) -> Result<bool, Error> {
    let mut interner = Interner::default();
    let doc = AssetDoc::from_asset(asset, &mut interner);
    Ok(compile(query, &interner, now)?.matches(&doc))
}

impl Compiled {
    /// Whether `doc` matches.
    pub fn matches(&self, doc: &AssetDoc) -> bool {
        eval(&self.root, &Ctx::Asset(doc))
    }
}

enum Ctx<'a> {
    Asset(&'a AssetDoc),
    Software(&'a ProductDoc),
    Vuln(&'a VulnDoc),
}

fn product_sym(p: &ProductDoc, f: ProductField, set: &SymSet) -> bool {
    let one = |s: OptSym| s.get().is_some_and(|s| set.has(s));
    match f {
        ProductField::Vendor => one(p.vendor),
        ProductField::Product => one(p.product),
        ProductField::Version => one(p.version),
        ProductField::Category => one(p.category) || one(p.category_path),
        ProductField::Subcategory => one(p.subcategory),
        ProductField::Stage => one(p.stage),
        _ => false,
    }
}

fn product_date(p: &ProductDoc, f: ProductField) -> Option<i64> {
    match f {
        ProductField::GaDate => p.dates[0].get(),
        ProductField::EosDate => p.dates[1].get(),
        ProductField::EolDate => p.dates[2].get(),
        ProductField::EoServiceDate => p.dates[3].get(),
        _ => None,
    }
}

fn eval(node: &Node, ctx: &Ctx<'_>) -> bool {
    match node {
        Node::And(parts) => parts.iter().all(|p| eval(p, ctx)),
        Node::Or(parts) => parts.iter().any(|p| eval(p, ctx)),
        Node::Not(inner) => !eval(inner, ctx),
        Node::Syms(field, set) => syms(field, set, ctx),
        Node::Text(field, pat) => match (field, ctx) {
            (Field::Name, Ctx::Asset(d)) => pat.matches(&d.name),
            (Field::Identity, Ctx::Asset(d)) => {
                d.identity.as_deref().is_some_and(|s| pat.matches(s))
            }
            (Field::DisplayName, Ctx::Asset(d)) => {
                d.display_name.as_deref().is_some_and(|s| pat.matches(s))
            }
            _ => false,
        },
        Node::Tag(keys, values) => match ctx {
            Ctx::Asset(d) => d.tags.iter().any(|&(k, v)| keys.has(k) && values.has(v)),
            _ => false,
        },
        Node::Observed(keys, pat) => match ctx {
            Ctx::Asset(d) => d
                .observed
                .iter()
                .any(|(k, v)| keys.has(*k) && pat.matches(v)),
            _ => false,
        },
        Node::Interval(field, lo, hi) => {
            let within = |v: Option<i64>| v.is_some_and(|v| *lo <= v && v <= *hi);
            match (field, ctx) {
                (Field::VulnCount(n), Ctx::Asset(d)) => within(d.vuln_counts[*n].get()),
                (Field::Misconfigurations, Ctx::Asset(d)) => within(d.other_findings[0].get()),
                (Field::RuntimeViolations, Ctx::Asset(d)) => within(d.other_findings[1].get()),
                (Field::CertificateProblems, Ctx::Asset(d)) => within(d.other_findings[2].get()),
                (Field::FirstSeen, Ctx::Asset(d)) => within(d.first_seen.get()),
                (Field::LastSeen, Ctx::Asset(d)) => within(d.last_seen.get()),
                (Field::Product(w, f), Ctx::Asset(d)) => {
                    within(product_of(d, *w).and_then(|p| product_date(p, *f)))
                }
                (Field::SoftwareField(f), Ctx::Software(p)) => within(product_date(p, *f)),
                _ => false,
            }
        }
        Node::Bool(field, b) => match (field, ctx) {
            (Field::Managed, Ctx::Asset(d)) => d.managed == Some(*b),
            _ => false,
        },
        Node::Nested(list, inner) => match (list, ctx) {
            (Field::Software, Ctx::Asset(d)) => {
                d.software.iter().any(|p| eval(inner, &Ctx::Software(p)))
            }
            (Field::Vulnerabilities, Ctx::Asset(d)) => {
                d.vulns.iter().any(|v| eval(inner, &Ctx::Vuln(v)))
            }
            _ => false,
        },
    }
}

fn product_of(d: &AssetDoc, w: fields::Which) -> Option<&ProductDoc> {
    match w {
        fields::Which::Hardware => d.hardware.as_ref(),
        fields::Which::Os => d.os.as_ref(),
    }
}

fn syms(field: &Field, set: &SymSet, ctx: &Ctx<'_>) -> bool {
    let one = |s: OptSym| s.get().is_some_and(|s| set.has(s));
    let any = |v: &[Sym]| v.iter().any(|&s| set.has(s));
    match (field, ctx) {
        (Field::Kind, Ctx::Asset(d)) => one(d.kind),
        (Field::MaxSeverity, Ctx::Asset(d)) => one(d.max_severity),
        (Field::Lifecycle, Ctx::Asset(d)) => one(d.lifecycle),
        (Field::SourceSensor, Ctx::Asset(d)) => any(&d.sources),
        (Field::SourceType, Ctx::Asset(d)) => any(&d.source_types),
        (Field::Product(w, f), Ctx::Asset(d)) => {
            product_of(d, *w).is_some_and(|p| product_sym(p, *f, set))
        }
        (Field::SoftwareField(f), Ctx::Software(p)) => product_sym(p, *f, set),
        (Field::VulnField(f), Ctx::Vuln(v)) => one(match f {
            VulnField::Id => v.id,
            VulnField::Package => v.package,
            VulnField::Installed => v.installed,
            VulnField::Fixed => v.fixed,
            VulnField::Severity => v.severity,
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_part_by_part() {
        use Ordering::*;
        let cases = [
            ("12", "12", Equal),
            ("12.5", "12", Greater),
            ("3.0.11", "3.0", Greater),
            ("1.1.1w", "3.0", Less),
            ("1.10", "1.9", Greater),
            ("v1.34.4", "1.34.4", Equal),
            ("1.0rc1", "1.0", Greater),
            ("1.0.rc1", "1.0.1", Less),
            ("2023.5.20240805", "2023", Greater),
            ("007", "7", Equal),
            ("", "0", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn version_prefixes_stop_at_part_boundaries() {
        assert!(version_prefix("12", "12"));
        assert!(version_prefix("12", "12.5"));
        assert!(version_prefix("12", "12-rc1"));
        assert!(version_prefix("1.34", "v1.34.4"));
        assert!(!version_prefix("12", "120"));
        assert!(!version_prefix("1.3", "1.34"));
    }

    #[test]
    fn globs_are_linear_and_case_insensitive() {
        let g = |p: &str, s: &str| glob(&p.chars().map(fold).collect::<Vec<_>>(), s);
        assert!(g("openssl*", "OpenSSL"));
        assert!(g("openssl*", "openssl-libs"));
        assert!(g("*ssl*", "libssl3"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "ac"));
        assert!(g("*", ""));
        assert!(!g("a*b", "a"));
        // Would be exponential with naive backtracking.
        let s = "a".repeat(5_000);
        assert!(!g(&format!("{}b", "a*".repeat(50)), &s));
    }
}
