//! Debian versions, as dpkg compares them (Debian Policy §5.6.12):
//! `[epoch:]upstream_version[-debian_revision]`.

use std::cmp::Ordering;

use super::VersionError;

/// A parsed Debian version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebVersion<'a> {
    /// The epoch (0 when absent).
    pub epoch: u64,
    /// The upstream version.
    pub upstream: &'a str,
    /// The Debian revision ("" when absent).
    pub revision: &'a str,
}

/// Parses `s`, checking the characters policy allows.
pub fn parse(s: &str) -> Result<DebVersion<'_>, VersionError> {
    let bad = |why: &str| VersionError::new("dpkg", s, why);
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("empty version"));
    }
    let (epoch, rest) = match s.split_once(':') {
        Some((e, rest)) => {
            let e: u64 = e
                .parse()
                .map_err(|_| bad("the epoch before ':' must be a number"))?;
            (e, rest)
        }
        None => (0, s),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    if upstream.is_empty() {
        return Err(bad("empty upstream version"));
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad("the upstream version must start with a digit"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':');
    if let Some(c) = upstream.chars().find(|&c| !ok(c)) {
        return Err(bad(&format!("'{c}' is not allowed in an upstream version")));
    }
    if let Some(c) = revision
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~')))
    {
        return Err(bad(&format!("'{c}' is not allowed in a Debian revision")));
    }
    Ok(DebVersion {
        epoch,
        upstream,
        revision,
    })
}

/// dpkg's character order: `~` before everything (even the end), then the
/// end and digits, then letters, then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Compares two Debian versions.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (a, b) = (parse(a)?, parse(b)?);
    Ok(a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision)))
}
