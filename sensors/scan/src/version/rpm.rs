//! RPM versions, as `rpmvercmp` compares them: `[epoch:]version[-release]`.

use std::cmp::Ordering;

use super::VersionError;

/// `rpmvercmp` on one field (version or release).
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        // A tilde sorts before anything, even the end.
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // A caret sorts after the end but before anything else.
        if ca == Some(b'^') || cb == Some(b'^') {
            match (ca, cb) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(x), _) if x != b'^' => return Ordering::Greater,
                (_, Some(y)) if y != b'^' => return Ordering::Less,
                _ => {}
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca.is_none() || cb.is_none() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let (si, sj) = (i, j);
        while i < a.len() && class(&a[i]) {
            i += 1;
        }
        while j < b.len() && class(&b[j]) {
            j += 1;
        }
        let (x, y) = (&a[si..i], &b[sj..j]);
        if y.is_empty() {
            // Segments of different kinds: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let o = if numeric {
            let strip = |s: &'_ [u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
            let (x, y) = (&x[strip(x)..], &y[strip(y)..]);
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    match (i < a.len(), j < b.len()) {
        (false, false) => Ordering::Equal,
        (true, _) => Ordering::Greater,
        (false, true) => Ordering::Less,
    }
}

/// Splits `[epoch:]version[-release]`.
pub fn parse(s: &str) -> Result<(u64, &str, &str), VersionError> {
    let bad = |why: &str| VersionError::new("rpm", s, why);
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("empty version"));
    }
    let (epoch, rest) = match s.split_once(':') {
        Some((e, rest)) => (
            e.parse()
                .map_err(|_| bad("the epoch before ':' must be a number"))?,
            rest,
        ),
        None => (0, s),
    };
    let (version, release) = rest.rsplit_once('-').unwrap_or((rest, ""));
    if version.is_empty() {
        return Err(bad("empty version"));
    }
    Ok((epoch, version, release))
}

/// Compares two `[epoch:]version[-release]` strings. A release missing on
/// either side is not compared (as rpm does when matching `name = version`).
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let ((ea, va, ra), (eb, vb, rb)) = (parse(a)?, parse(b)?);
    let mut o = ea.cmp(&eb).then_with(|| rpmvercmp(va, vb));
    if o == Ordering::Equal && !ra.is_empty() && !rb.is_empty() {
        o = rpmvercmp(ra, rb);
    }
    Ok(o)
}
