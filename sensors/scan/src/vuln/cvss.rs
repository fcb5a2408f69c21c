//! CVSS base scores from vectors (v3.0/v3.1 and v2), and the qualitative
//! levels they map to. Formulas from the FIRST specifications; v3.0 vectors
//! use v3.1's Roundup, which differs from v3.0's only in floating-point
//! corner cases.

use serde::{Deserialize, Serialize};

/// A qualitative severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No score, or one this program cannot compute (CVSS v4).
    Unknown,
    /// 0.0 (v3).
    None,
    /// 0.1–3.9.
    Low,
    /// 4.0–6.9.
    Medium,
    /// 7.0–8.9 (v2: 7.0–10.0).
    High,
    /// 9.0–10.0 (v3 only).
    Critical,
}

impl Level {
    /// The v3 level of a score.
    pub fn of_v3(score: f64) -> Level {
        match score {
            s if s >= 9.0 => Level::Critical,
            s if s >= 7.0 => Level::High,
            s if s >= 4.0 => Level::Medium,
            s if s > 0.0 => Level::Low,
            _ => Level::None,
        }
    }

    /// The v2 level of a score (v2 has no Critical).
    pub fn of_v2(score: f64) -> Level {
        match score {
            s if s >= 7.0 => Level::High,
            s if s >= 4.0 => Level::Medium,
            _ => Level::Low,
        }
    }

    /// Parses a word as advisories spell it (`HIGH`, `Moderate`, `important`).
    pub fn from_word(word: &str) -> Option<Level> {
        Some(match word.to_ascii_lowercase().as_str() {
            "critical" => Level::Critical,
            "high" | "important" => Level::High,
            "medium" | "moderate" => Level::Medium,
            "low" | "negligible" | "unimportant" => Level::Low,
            "none" => Level::None,
            _ => return None,
        })
    }

    /// Lowercase name (`high`), as the Asset API spells severities.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unknown => "unknown",
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// Why a vector could not be scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorError(pub String);

impl std::fmt::Display for VectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The metrics of a vector (`AV:N/AC:L/...`), each required exactly once.
fn metrics<'a>(
    body: &'a str,
    names: &[&'static str],
    vector: &str,
) -> Result<Vec<&'a str>, VectorError> {
    let mut values: Vec<Option<&str>> = vec![None; names.len()];
    for part in body.split('/') {
        let (k, v) = part
            .split_once(':')
            .ok_or_else(|| VectorError(format!("'{vector}': '{part}' is not METRIC:VALUE")))?;
        if let Some(i) = names.iter().position(|n| *n == k)
            && values[i].replace(v).is_some()
        {
            return Err(VectorError(format!("'{vector}': {k} appears twice")));
        }
        // Temporal and environmental metrics do not change the base score.
    }
    values
        .into_iter()
        .zip(names)
        .map(|(v, n)| {
            v.ok_or_else(|| VectorError(format!("'{vector}': base metric {n} is missing")))
        })
        .collect()
}

fn bad(vector: &str, metric: &str, value: &str) -> VectorError {
    VectorError(format!("'{vector}': {metric}:{value} is not a valid value"))
}

/// The CVSS v3.x base score of a vector (`CVSS:3.1/AV:N/...`).
pub fn v3_score(vector: &str) -> Result<f64, VectorError> {
    let body = vector
        .strip_prefix("CVSS:3.1/")
        .or_else(|| vector.strip_prefix("CVSS:3.0/"))
        .ok_or_else(|| {
            VectorError(format!(
                "'{vector}' does not start with CVSS:3.0/ or CVSS:3.1/"
            ))
        })?;
    let m = metrics(body, &["AV", "AC", "PR", "UI", "S", "C", "I", "A"], vector)?;
    let changed = match m[4] {
        "U" => false,
        "C" => true,
        v => return Err(bad(vector, "S", v)),
    };
    let av = match m[0] {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        v => return Err(bad(vector, "AV", v)),
    };
    let ac = match m[1] {
        "L" => 0.77,
        "H" => 0.44,
        v => return Err(bad(vector, "AC", v)),
    };
    let pr = match (m[2], changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        (v, _) => return Err(bad(vector, "PR", v)),
    };
    let ui = match m[3] {
        "N" => 0.85,
        "R" => 0.62,
        v => return Err(bad(vector, "UI", v)),
    };
    let cia = |name: &str, v: &str| -> Result<f64, VectorError> {
        match v {
            "H" => Ok(0.56),
            "L" => Ok(0.22),
            "N" => Ok(0.0),
            v => Err(bad(vector, name, v)),
        }
    };
    let (c, i, a) = (cia("C", m[5])?, cia("I", m[6])?, cia("A", m[7])?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02f64).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Ok(0.0);
    }
    let raw = if changed {
        1.08 * (impact + exploitability)
    } else {
        impact + exploitability
    };
    Ok(roundup(raw.min(10.0)))
}

/// CVSS v3.1's Roundup: the smallest one-decimal number not below `x`,
/// computed on integers to avoid floating-point surprises.
fn roundup(x: f64) -> f64 {
    let int = (x * 100_000.0).round() as i64;
    if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        ((int / 10_000) + 1) as f64 / 10.0
    }
}

/// The CVSS v2 base score of a vector (`AV:N/AC:L/Au:N/C:P/I:P/A:P`).
pub fn v2_score(vector: &str) -> Result<f64, VectorError> {
    let body = vector
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(vector);
    let m = metrics(body, &["AV", "AC", "Au", "C", "I", "A"], vector)?;
    let av = match m[0] {
        "L" => 0.395,
        "A" => 0.646,
        "N" => 1.0,
        v => return Err(bad(vector, "AV", v)),
    };
    let ac = match m[1] {
        "H" => 0.35,
        "M" => 0.61,
        "L" => 0.71,
        v => return Err(bad(vector, "AC", v)),
    };
    let au = match m[2] {
        "M" => 0.45,
        "S" => 0.56,
        "N" => 0.704,
        v => return Err(bad(vector, "Au", v)),
    };
    let cia = |name: &str, v: &str| -> Result<f64, VectorError> {
        match v {
            "N" => Ok(0.0),
            "P" => Ok(0.275),
            "C" => Ok(0.660),
            v => Err(bad(vector, name, v)),
        }
    };
    let (c, i, a) = (cia("C", m[3])?, cia("I", m[4])?, cia("A", m[5])?);
    let impact = 10.41 * (1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a));
    let exploitability = 20.0 * av * ac * au;
    let f = if impact == 0.0 { 0.0 } else { 1.176 };
    let score = ((0.6 * impact) + (0.4 * exploitability) - 1.5) * f;
    Ok((score * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_scores_from_the_specification_examples() {
        for (vector, score) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H/E:P/RL:O", 7.5),
        ] {
            assert_eq!(v3_score(vector), Ok(score), "{vector}");
        }
        assert_eq!(Level::of_v3(9.8), Level::Critical);
        assert_eq!(Level::of_v3(6.1), Level::Medium);
        assert_eq!(Level::of_v3(0.0), Level::None);
    }

    #[test]
    fn v2_scores() {
        assert_eq!(v2_score("AV:N/AC:L/Au:N/C:P/I:P/A:P"), Ok(7.5));
        assert_eq!(v2_score("AV:N/AC:M/Au:N/C:N/I:P/A:N"), Ok(4.3));
        assert_eq!(v2_score("AV:N/AC:L/Au:N/C:C/I:C/A:C"), Ok(10.0));
        assert_eq!(Level::of_v2(10.0), Level::High);
    }

    #[test]
    fn bad_vectors_say_what_is_wrong() {
        let e = v3_score("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap_err();
        assert_eq!(
            e.0,
            "'CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H': AV:X is not a valid value"
        );
        let e = v3_score("CVSS:3.1/AV:N/AC:L").unwrap_err();
        assert!(e.0.contains("base metric PR is missing"), "{e}");
        assert!(v3_score("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").is_err());
        assert!(v2_score("AV:N/AC:L/Au:N/C:P/I:P/A:P/AV:N").is_err());
    }
}
