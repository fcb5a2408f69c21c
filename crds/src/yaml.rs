//! YAML as Sightline reads it: YAML 1.2's core schema, so `y`, `no`, `on`
//! and `off` stay strings (as `tags: {x: y}` means) and only `true` and
//! `false` are booleans, under serde-saphyr's parse budgets. Everything
//! that reads YAML (the catalog, policy files, manifests in tests) goes
//! through here.

use serde::Deserialize;

pub use serde_saphyr::Error;

fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options
}

/// One document.
pub fn from_str<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Every document of a stream (empty ones are skipped).
pub fn from_multiple<'de, T: Deserialize<'de>>(text: &'de str) -> Result<Vec<T>, Error> {
    serde_saphyr::from_multiple_with_options(text, options())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn only_true_and_false_are_booleans() {
        let v: Value = from_str("{a: y, b: no, c: on, d: true, e: False}").unwrap_or_default();
        assert_eq!(
            v,
            json!({"a": "y", "b": "no", "c": "on", "d": true, "e": false})
        );
    }

    #[test]
    fn strings_that_read_as_something_else_are_written_quoted() {
        // kubectl and helm read YAML 1.1: `y`, `no`, `on` would be booleans.
        let v = json!({"a": "y", "b": "no", "c": "on", "d": "1.0", "e": "", "f": "null"});
        let text = serde_saphyr::to_string(&v).unwrap_or_default();
        for plain in ["a: y", "b: no", "c: on", "d: 1.0", "f: null"] {
            assert!(
                !text.contains(&format!("{plain}\n")),
                "{plain} unquoted in:\n{text}"
            );
        }
        let back: Value = from_str(&text).unwrap_or_default();
        assert_eq!(back, v);
    }

    #[test]
    fn streams_skip_empty_documents() {
        let docs: Vec<Value> = from_multiple("---\na: 1\n---\n---\nb: x\n").unwrap_or_default();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": "x"})]);
    }
}
