//! Names the operator gives what it creates, shared with the CLI (which
//! finds a Sensor's ServiceAccount by them).

use sha2::{Digest, Sha256};

/// `prefix` + `name`, shortened to `max` characters with a hash suffix when
/// too long, so distinct long names never collide.
pub fn bounded(prefix: &str, name: &str, max: usize) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= max {
        return full;
    }
    let hash: String = Sha256::digest(full.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = max.saturating_sub(hash.len() + 1);
    let mut head: String = full.chars().take(keep).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{hash}")
}

/// Name of a Sensor's workload and ServiceAccount (CronJob names may have
/// 52 characters).
pub fn sensor_workload(sensor_name: &str) -> String {
    bounded("sightline-sensor-", sensor_name, 52)
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn long_names_are_shortened_uniquely() {
        assert_eq!(bounded("p-", "short", 52), "p-short");
        let a = bounded("sightline-sensor-", &"a".repeat(80), 52);
        let b = bounded("sightline-sensor-", &format!("{}b", "a".repeat(79)), 52);
        assert_eq!(a.len(), 52);
        assert_ne!(a, b);
    }
}
