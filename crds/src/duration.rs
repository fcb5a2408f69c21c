//! Durations as Sensors spell them, Go-style: `90m`, `24h`, `1h30m`, `45s`.

use std::time::Duration;

/// The regular expression the CRD schema checks such a field against.
pub const PATTERN: &str = r"^([0-9]+(h|m|s))+$";

/// Parses a duration; `None` for anything else, for zero, and for one too
/// long to count in seconds.
pub fn parse(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    let mut secs: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest[digits..].chars().next()? {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        secs = secs.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations() {
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse("0s"), None);
        assert_eq!(parse("5"), None);
        assert_eq!(parse("1d"), None);
        assert_eq!(parse("99999999999999999999h"), None);
    }
}
