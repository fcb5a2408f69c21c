//! Typed status conditions and the one rule for merging them.
//!
//! A condition's `lastTransitionTime` moves only when its `status` changes, so
//! `kubectl wait` and humans can tell how long something has been broken.

use jiff::Timestamp;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition status `True`.
pub const TRUE: &str = "True";
/// Condition status `False`.
pub const FALSE: &str = "False";

/// Builds a condition observed at `now` for `generation`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { TRUE } else { FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: generation,
    }
}

/// Merges freshly computed conditions into the previous ones.
///
/// The result holds exactly the types in `fresh`, in that order; a type whose
/// status did not change keeps its previous `lastTransitionTime`.
pub fn merge(previous: &[Condition], fresh: Vec<Condition>) -> Vec<Condition> {
    fresh
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` exists with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let old = vec![condition("Ready", true, "Ok", "fine", Some(1), at(100))];
        let fresh = vec![condition(
            "Ready",
            true,
            "Ok",
            "still fine",
            Some(2),
            at(200),
        )];
        let merged = merge(&old, fresh);
        assert_eq!(merged[0].last_transition_time, Time(at(100)));
        assert_eq!(merged[0].message, "still fine");
        assert_eq!(merged[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let old = vec![condition("Ready", true, "Ok", "fine", Some(1), at(100))];
        let fresh = vec![condition("Ready", false, "Broken", "no", Some(1), at(200))];
        let merged = merge(&old, fresh);
        assert_eq!(merged[0].last_transition_time, Time(at(200)));
        assert!(!is_true(&merged, "Ready"));
    }

    #[test]
    fn dropped_types_disappear_and_new_ones_start_now() {
        let old = vec![condition("Expired", true, "Past", "", None, at(1))];
        let fresh = vec![condition("Ready", true, "Ok", "", None, at(5))];
        let merged = merge(&old, fresh);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].type_, "Ready");
        assert_eq!(merged[0].last_transition_time, Time(at(5)));
    }
}
