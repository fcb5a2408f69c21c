//! The query language: every construct, every error message, printing and
//! parsing again, and evaluation over a small inventory.

use proptest::prelude::*;
use sightline_inventory::query::{
    CmpOp, Predicate, Query, Quoting, Span, Term, Value, parse_query,
};

/// The error `query` gives, as users see it.
fn err(query: &str) -> String {
    match parse_query(query) {
        Ok(q) => panic!("{query:?} parsed as {q:?}"),
        Err(e) => e.to_string(),
    }
}

/// The query printed back.
fn canon(query: &str) -> String {
    match parse_query(query) {
        Ok(q) => q.to_string(),
        Err(e) => panic!("{query:?}: {e}"),
    }
}

#[test]
fn every_construct_parses_and_prints_canonically() {
    let cases = [
        ("kind:Node", "kind:Node"),
        ("kind : Node", "kind:Node"),
        (
            r#"hardware.category:"Network Device""#,
            r#"hardware.category:"Network Device""#,
        ),
        ("os.product:`Debian Linux`", "os.product:`Debian Linux`"),
        ("software.product:openssl*", "software.product:openssl*"),
        (
            "findings.vulnerabilities.critical>=3",
            "findings.vulnerabilities.critical>=3",
        ),
        (
            "x<1 OR x<=2 OR x>3 OR x>=4 OR x=5",
            "x<1 OR x<=2 OR x>3 OR x>=4 OR x=5",
        ),
        (
            "findings.vulnerabilities.high:[1..10]",
            "findings.vulnerabilities.high:[1..10]",
        ),
        ("lastSeen:[2026-01-01 .. now]", "lastSeen:[2026-01-01..now]"),
        ("lastSeen < now-7d", "lastSeen<now-7d"),
        ("os.version >= 12", "os.version>=12"),
        (
            "software:(name:openssl AND version<3.0)",
            "software:(name:openssl AND version<3.0)",
        ),
        ("tags.site:east", "tags.site:east"),
        ("a:1 and b:2 or c:3", "(a:1 AND b:2) OR c:3"),
        ("a:1 AND (b:2 OR c:3)", "a:1 AND (b:2 OR c:3)"),
        ("not a:1", "NOT a:1"),
        ("NOT (a:1 OR b:2)", "NOT (a:1 OR b:2)"),
        ("NOT NOT a:1", "NOT NOT a:1"),
        ("((a:1))", "a:1"),
        (r#"name:"say \"hi\"""#, r#"name:"say \"hi\"""#),
        ("name:\"AND\"", "name:\"AND\""),
        ("kind:\"not\"", "kind:\"not\""),
        ("name:caf\u{e9}", "name:caf\u{e9}"),
    ];
    for (input, want) in cases {
        assert_eq!(canon(input), want, "{input}");
    }
}

#[test]
fn and_binds_tighter_than_or_and_trees_have_the_right_shape() {
    let q = parse_query("a:1 OR b:2 AND c:3").unwrap();
    let Query::Or(parts) = q else { panic!("{q:?}") };
    assert!(matches!(parts[0], Query::Term(_)));
    assert!(matches!(&parts[1], Query::And(v) if v.len() == 2));

    let Query::Term(Term {
        field,
        span,
        predicate: Predicate::Compare(CmpOp::Ge, op, v),
    }) = parse_query("os.version >= 12").unwrap()
    else {
        panic!()
    };
    assert_eq!(field, "os.version");
    assert_eq!(span, Span::new(0, 10));
    assert_eq!(op, Span::new(11, 13));
    assert_eq!(
        v,
        Value {
            text: "12".into(),
            quoting: Quoting::Bare,
            span: Span::new(14, 16)
        }
    );
}

#[test]
fn errors_name_the_problem_and_point_at_it() {
    let cases = [
        ("", "the query is empty at column 1"),
        ("   ", "the query is empty at column 4"),
        (
            "os.lifecycle.stage:",
            "expected a value after 'os.lifecycle.stage:' at column 20",
        ),
        (
            "kind:Node AND os.lifecycle.stage: AND x:1",
            "expected a value after 'os.lifecycle.stage:', found AND (quote it to search for the word) at column 35",
        ),
        (
            "kind Node",
            "expected ':' or a comparison after 'kind', found 'Node' at column 6",
        ),
        (
            "kind",
            "expected ':' or a comparison after 'kind', found the end of the query at column 5",
        ),
        (
            "kind:Node os:x",
            "expected AND, OR or the end of the query, found 'os' at column 11",
        ),
        (
            "kind:Node AND",
            "expected a condition, found the end of the query at column 14",
        ),
        (
            "AND kind:Node",
            "expected a condition before 'AND' at column 1",
        ),
        ("(kind:Node", "this '(' is never closed at column 1"),
        ("kind:Node)", "')' has no matching '(' at column 10"),
        ("()", "empty parentheses at column 2"),
        (
            "(kind:Node x:1)",
            "expected AND, OR or ')', found 'x' at column 12",
        ),
        (
            "name:\"abc",
            "unterminated quoted value: add the closing \" at column 6",
        ),
        (
            "name:`abc",
            "unterminated exact value: add the closing ` at column 6",
        ),
        (
            "x:[1 5]",
            "expected '..' in the range, found '5' at column 6",
        ),
        (
            "x:[1..5",
            "expected ']' to close the range, found the end of the query at column 8",
        ),
        ("x:[..5]", "expected a value after 'x:[' at column 4"),
        (
            "x:[1..]",
            "expected a value after '..' in the range of 'x' at column 7",
        ),
        ("x>=", "expected a value after 'x>=' at column 4"),
        (":x", "expected a field name, found ':' at column 1"),
        (
            "é:(",
            "expected a condition, found the end of the query at column 4",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(err(input), want, "{input:?}");
    }
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}a:1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(err(&deep).starts_with("query nests deeper than 64 levels"));
    let nots = format!("{}a:1", "NOT ".repeat(10_000));
    assert!(err(&nots).starts_with("query nests deeper than 64 levels"));
}

#[test]
fn carets_underline_the_offending_text() {
    let q = "kind:Node AND os.version>>3";
    let e = parse_query(q).unwrap_err();
    assert_eq!(
        e.render(q),
        "kind:Node AND os.version>>3\n                         ^\nexpected a value after 'os.version>' at column 26"
    );
}

fn value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        "[a-zA-Z0-9*.-]{1,8}",
        "[ -~]{0,8}",
        Just("AND".to_string()),
        Just("a..b".to_string()),
        "\\PC{0,4}",
    ];
    let quoting = prop_oneof![
        Just(Quoting::Bare),
        Just(Quoting::Quoted),
        Just(Quoting::Exact)
    ];
    (text, quoting).prop_map(|(text, quoting)| Value {
        text,
        quoting,
        span: Span::default(),
    })
}

fn term() -> impl Strategy<Value = Query> {
    let field = "[a-z][a-zA-Z]{0,5}(\\.[a-zA-Z]{1,5}){0,2}".prop_filter("not a keyword", |f| {
        !["and", "or", "not"].contains(&f.to_ascii_lowercase().as_str())
    });
    let op = prop_oneof![
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
        Just(CmpOp::Eq)
    ];
    let predicate = prop_oneof![
        value().prop_map(Predicate::Match),
        (op, value()).prop_map(|(o, v)| Predicate::Compare(o, Span::default(), v)),
        (value(), value()).prop_map(|(a, b)| Predicate::Range(a, b)),
    ];
    (field, predicate).prop_map(|(field, predicate)| {
        Query::Term(Term {
            field,
            span: Span::default(),
            predicate,
        })
    })
}

fn query() -> impl Strategy<Value = Query> {
    term().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Query::Or),
            inner.clone().prop_map(|q| Query::Not(Box::new(q))),
            ("[a-z]{1,6}", inner).prop_map(|(field, q)| Query::Term(Term {
                field,
                span: Span::default(),
                predicate: Predicate::Nested(Box::new(q)),
            })),
        ]
    })
}

/// The tree with spans cleared and bare values that needed quotes marked
/// as quoted (printing quotes them; they mean the same).
fn normal(q: &Query) -> Query {
    let v = |v: &Value| Value {
        text: v.text.clone(),
        quoting: match v.quoting {
            Quoting::Exact => Quoting::Exact,
            _ => Quoting::Quoted,
        },
        span: Span::default(),
    };
    match q {
        Query::And(p) => Query::And(p.iter().map(normal).collect()),
        Query::Or(p) => Query::Or(p.iter().map(normal).collect()),
        Query::Not(i) => Query::Not(Box::new(normal(i))),
        Query::Term(t) => Query::Term(Term {
            field: t.field.clone(),
            span: Span::default(),
            predicate: match &t.predicate {
                Predicate::Match(x) => Predicate::Match(v(x)),
                Predicate::Compare(o, _, x) => Predicate::Compare(*o, Span::default(), v(x)),
                Predicate::Range(a, b) => Predicate::Range(v(a), v(b)),
                Predicate::Nested(i) => Predicate::Nested(Box::new(normal(i))),
            },
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn printing_and_parsing_again_gives_the_same_query(q in query()) {
        let printed = q.to_string();
        let parsed = parse_query(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
        prop_assert_eq!(normal(&parsed), normal(&q), "{}", printed);
        prop_assert_eq!(parsed.to_string(), printed);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
        let _ = parse_query(&s);
    }
}
