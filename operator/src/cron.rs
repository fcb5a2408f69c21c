//! Validation of cron schedules before they reach a CronJob, so a typo gets a
//! clear condition instead of an apply error retried forever.

/// Checks a 5-field cron expression (or a `@hourly`-style macro) the way the
/// CronJob controller accepts it; the error names the offending field.
pub fn validate(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    if let Some(m) = s.strip_prefix('@') {
        return match m {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => Err(format!("unknown schedule macro '@{m}'")),
        };
    }
    let s = s
        .strip_prefix("CRON_TZ=")
        .or_else(|| s.strip_prefix("TZ="))
        .map_or(s, |rest| rest.split_once(' ').map_or("", |(_, r)| r));
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    const NAMES: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    for (field, (name, lo, hi)) in fields.iter().zip(NAMES) {
        for part in field.split(',') {
            check_part(part, lo, hi, name).map_err(|e| format!("{name} field '{field}': {e}"))?;
        }
    }
    Ok(())
}

fn check_part(part: &str, lo: u32, hi: u32, name: &str) -> Result<(), String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (part, None),
    };
    if let Some(step) = step {
        let n: u32 = step
            .parse()
            .map_err(|_| format!("step '{step}' is not a number"))?;
        if n == 0 {
            return Err("step must be at least 1".into());
        }
    }
    if range == "*" || range == "?" {
        return Ok(());
    }
    let value = |v: &str| -> Result<u32, String> {
        if let Some(n) = named(v, name) {
            return Ok(n);
        }
        let n: u32 = v.parse().map_err(|_| format!("'{v}' is not a number"))?;
        if n < lo || n > hi {
            return Err(format!("{n} is outside {lo}-{hi}"));
        }
        Ok(n)
    };
    match range.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
        }
        None => {
            value(range)?;
        }
    }
    Ok(())
}

fn named(v: &str, field: &str) -> Option<u32> {
    let v = v.to_ascii_lowercase();
    let list: &[&str] = match field {
        "month" => &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        "day-of-week" => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        _ => return None,
    };
    let offset = u32::from(field == "month");
    list.iter().position(|n| *n == v).map(|i| i as u32 + offset)
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_what_cronjobs_accept() {
        for ok in [
            "0 */6 * * *",
            "*/5 * * * *",
            "0 0 1 jan,jul *",
            "30 2 * * mon-fri",
            "@daily",
            "15 3 1-15/2 * 0,6",
            "CRON_TZ=UTC 0 0 * * *",
        ] {
            assert!(validate(ok).is_ok(), "{ok}: {:?}", validate(ok));
        }
    }

    #[test]
    fn rejects_with_the_field_named() {
        assert!(validate("0 25 * * *").unwrap_err().contains("hour"));
        assert!(
            validate("* * * *")
                .unwrap_err()
                .contains("expected 5 fields")
        );
        assert!(validate("*/0 * * * *").unwrap_err().contains("minute"));
        assert!(validate("0 0 * foo *").unwrap_err().contains("month"));
        assert!(validate("@sometimes").unwrap_err().contains("@sometimes"));
        assert!(validate("0 0 10-2 * *").unwrap_err().contains("backwards"));
    }
}
