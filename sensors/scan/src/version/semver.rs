//! Semantic Versioning 2.0.0 precedence (crates.io, npm, Go modules):
//! `MAJOR.MINOR.PATCH[-pre][+build]`; build metadata does not count.

use std::cmp::Ordering;

use super::VersionError;

/// A parsed semantic version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemVer<'a> {
    /// Major, minor, patch.
    pub core: [u64; 3],
    /// Pre-release identifiers.
    pub pre: Vec<&'a str>,
}

/// Parses `s`; a leading `v` (Go) or `=` (npm) is accepted.
pub fn parse(s: &str) -> Result<SemVer<'_>, VersionError> {
    let bad = |why: &str| VersionError::new("semver", s, why);
    let t = s.trim().trim_start_matches('=').trim_start_matches('v');
    let t = t.split_once('+').map_or(t, |(v, _)| v);
    let (core, pre) = match t.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (t, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    if nums.len() != 3 {
        return Err(bad("expected MAJOR.MINOR.PATCH"));
    }
    let mut out = [0u64; 3];
    for (slot, n) in out.iter_mut().zip(&nums) {
        if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
            return Err(bad("numbers must be non-empty without leading zeros"));
        }
        *slot = n
            .parse()
            .map_err(|_| bad(&format!("'{n}' is not a number")))?;
    }
    let pre: Vec<&str> = match pre {
        None => Vec::new(),
        Some(p) => p.split('.').collect(),
    };
    for id in &pre {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad(&format!("bad pre-release identifier '{id}'")));
        }
    }
    Ok(SemVer { core: out, pre })
}

fn cmp_ident(a: &str, b: &str) -> Ordering {
    let num = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Compares by SemVer precedence.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (a, b) = (parse(a)?, parse(b)?);
    let o = a.core.cmp(&b.core);
    if o != Ordering::Equal {
        return Ok(o);
    }
    Ok(match (a.pre.is_empty(), b.pre.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a
            .pre
            .iter()
            .zip(&b.pre)
            .map(|(x, y)| cmp_ident(x, y))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or_else(|| a.pre.len().cmp(&b.pre.len())),
    })
}
