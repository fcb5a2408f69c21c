//! Alpine versions, as apk-tools compares them:
//! `number{.number}[letter]{_suffix[number]}[-r number]`, where the
//! suffixes `_alpha`, `_beta`, `_pre`, `_rc` come before the release and
//! `_cvs`, `_svn`, `_git`, `_hg`, `_p` after it.

use std::cmp::Ordering;

use super::VersionError;

const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];
/// Rank of "no suffix": after the pre-release suffixes, before the others.
const RELEASE: i32 = 0;

/// A parsed apk version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkVersion {
    /// The dotted numbers, as text so any length compares exactly.
    pub numbers: Vec<String>,
    /// The letter after the numbers.
    pub letter: Option<u8>,
    /// Suffixes: rank (negative before the release) and number.
    pub suffixes: Vec<(i32, u64)>,
    /// The package revision (`-rN`).
    pub revision: u64,
}

fn suffix_rank(name: &str) -> Option<i32> {
    if let Some(i) = PRE.iter().position(|p| *p == name) {
        return Some(i as i32 - PRE.len() as i32);
    }
    POST.iter().position(|p| *p == name).map(|i| i as i32 + 1)
}

/// Parses `s`.
pub fn parse(s: &str) -> Result<ApkVersion, VersionError> {
    let bad = |why: &str| VersionError::new("apk", s, why);
    let t = s.trim();
    let (body, revision) = match t.rsplit_once("-r") {
        Some((body, r)) => (
            body,
            r.parse()
                .map_err(|_| bad("the revision after '-r' must be a number"))?,
        ),
        None => (t, 0),
    };
    let mut parts = body.split('_');
    let head = parts.next().unwrap_or_default();
    if head.is_empty() {
        return Err(bad("empty version"));
    }
    let (nums, letter) = match head.as_bytes().last() {
        Some(c) if c.is_ascii_lowercase() => (&head[..head.len() - 1], Some(*c)),
        _ => (head, None),
    };
    let numbers: Vec<String> = nums.split('.').map(str::to_owned).collect();
    if numbers
        .iter()
        .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(
            "expected dot-separated numbers, then an optional letter",
        ));
    }
    let mut suffixes = Vec::new();
    for p in parts {
        let split = p.find(|c: char| c.is_ascii_digit()).unwrap_or(p.len());
        let (name, num) = p.split_at(split);
        let rank = suffix_rank(name).ok_or_else(|| bad(&format!("unknown suffix '_{name}'")))?;
        let num = if num.is_empty() {
            0
        } else {
            num.parse()
                .map_err(|_| bad(&format!("bad number in '_{p}'")))?
        };
        suffixes.push((rank, num));
    }
    Ok(ApkVersion {
        numbers,
        letter,
        suffixes,
        revision,
    })
}

fn cmp_numeric(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Compares two apk versions.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (a, b) = (parse(a)?, parse(b)?);
    for (x, y) in a.numbers.iter().zip(&b.numbers) {
        let o = cmp_numeric(x, y);
        if o != Ordering::Equal {
            return Ok(o);
        }
    }
    let o = a
        .numbers
        .len()
        .cmp(&b.numbers.len())
        .then_with(|| a.letter.cmp(&b.letter));
    if o != Ordering::Equal {
        return Ok(o);
    }
    let n = a.suffixes.len().max(b.suffixes.len());
    for k in 0..n {
        let x = a.suffixes.get(k).copied().unwrap_or((RELEASE, 0));
        let y = b.suffixes.get(k).copied().unwrap_or((RELEASE, 0));
        let o = x.cmp(&y);
        if o != Ordering::Equal {
            return Ok(o);
        }
    }
    Ok(a.revision.cmp(&b.revision))
}
