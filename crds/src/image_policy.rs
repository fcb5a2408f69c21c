//! `ImagePolicy`: pods whose images the inventory knows to be bad are
//! refused at admission (`Enforce`), or admitted with a warning and an
//! Event (`Audit`). The operator's validating webhook answers from its
//! in-memory index of Assets, so a pod is judged by what the sensors found
//! in its images.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// What a policy does with a pod it would refuse.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema,
)]
pub enum ImagePolicyMode {
    /// Admit the pod with a warning (shown by kubectl) and an Event on the
    /// policy.
    #[default]
    Audit,
    /// Refuse the pod, saying which policy and which findings.
    Enforce,
}

/// A vulnerability severity, as a threshold.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SeverityThreshold {
    /// Low and above.
    Low,
    /// Medium and above.
    Medium,
    /// High and critical.
    High,
    /// Critical only.
    Critical,
}

impl SeverityThreshold {
    /// Whether a finding of `severity` (`critical`, `high`, … as Assets
    /// write them) is at or above the threshold.
    pub fn admits(self, severity: &str) -> bool {
        let rank = match severity.to_ascii_lowercase().as_str() {
            "critical" => 4,
            "high" => 3,
            "medium" => 2,
            "low" => 1,
            _ => 0,
        };
        rank > self as i32
    }
}

/// Pods refused (or warned about) for their images, cluster-wide.
///
/// The API server cannot parse the query language, so the operator checks
/// `spec.deny.query`: `Ready=False` with reason `InvalidQuery` and the
/// error as message, and the policy is not applied until it is fixed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "ImagePolicy",
    shortname = "imgpol",
    category = "sightline",
    status = "ImagePolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicySpec {
    /// `Audit` admits with a warning and an Event; `Enforce` refuses.
    #[serde(default)]
    pub mode: ImagePolicyMode,
    /// Namespaces whose pods the policy judges (by their labels); every
    /// namespace when absent. The webhook never sees the namespaces the
    /// chart excludes (`kube-system` and Sightline's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// What makes an image bad. An image is judged on what its Asset keeps:
    /// the counts by severity and the 20 worst findings.
    pub deny: ImageDeny,
}

/// What makes an image bad; any rule that matches refuses it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.severity) || (has(self.endOfLife) && self.endOfLife) || has(self.unscanned) || has(self.query)").message("spec.deny needs at least one of severity, endOfLife: true, unscanned or query"))]
pub struct ImageDeny {
    /// Vulnerabilities at or above this severity (`critical`, `high`,
    /// `medium`, `low`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<SeverityThreshold>,
    /// With `severity`: count only vulnerabilities with a fixed version
    /// (something the image's owner can do about). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixable_only: Option<bool>,
    /// Images whose operating system is past its end of life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_life: Option<bool>,
    /// Images the inventory does not know, or has not seen for longer than
    /// `maxAge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unscanned: Option<Unscanned>,
    /// Images whose Asset matches this query of the search language, e.g.
    /// `os.lifecycle.stage:EndOfLife OR findings.vulnerabilities.critical>=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,
}

/// Images not (recently) analysed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unscanned {
    /// How long ago a sensor may last have reported the image (`24h`,
    /// `7d`); absent: only images the inventory has never seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub max_age: Option<String>,
}

/// What the operator found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the policy is valid and applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `maxAge` in seconds (`30s`, `15m`, `24h`, `7d`).
pub fn max_age_seconds(s: &str) -> Option<i64> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_ages() {
        assert!(SeverityThreshold::High.admits("critical"));
        assert!(SeverityThreshold::High.admits("HIGH"));
        assert!(!SeverityThreshold::High.admits("medium"));
        assert!(!SeverityThreshold::Low.admits("unknown"));
        assert!(SeverityThreshold::Low.admits("low"));
        assert_eq!(max_age_seconds("24h"), Some(86_400));
        assert_eq!(max_age_seconds("7d"), Some(604_800));
        assert_eq!(max_age_seconds("h"), None);
        assert_eq!(max_age_seconds(""), None);
        assert_eq!(max_age_seconds("9999999999999999999d"), None);
    }
}
