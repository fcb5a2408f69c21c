//! What each sensor type may do in the cluster: one ClusterRole per type
//! (`sightline-sensor-<type>`), holding exactly the cluster-wide access the
//! type needs. The chart installs them (`cargo xtask crdgen` writes its
//! template from here) and the operator binds each Sensor's
//! ServiceAccount to its type's role; it can also apply them itself when
//! run without the chart.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;

use crate::SensorType;

/// `app.kubernetes.io/managed-by` of what the operator creates.
pub const MANAGED_BY: &str = "sightline-operator";

/// A rule over `resources` of `groups` with `verbs`.
pub fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Name of the ClusterRole of a sensor type.
pub fn cluster_role_name(t: SensorType) -> String {
    format!("sightline-sensor-{}", t.as_str())
}

/// The cluster-wide rules a sensor type needs.
pub fn cluster_rules(t: SensorType) -> Vec<PolicyRule> {
    // Sensors report through the operator's ingestion API, which writes
    // the Assets: no sensor may touch an Asset itself.
    let mut rules = vec![];
    match t {
        SensorType::Container => {
            // Its node (Node asset) and the pods on it (container attribution).
            rules.push(rule(&[""], &["nodes"], &["get"]));
            rules.push(rule(&[""], &["pods"], &["get", "list", "watch"]));
        }
        SensorType::Runtime => {
            // The pods of its node (container attribution and policy
            // selection), the policies (their status is the operator's,
            // from the sensor's reports), and Events on pods.
            rules.push(rule(&[""], &["pods"], &["get", "list", "watch"]));
            rules.push(rule(
                &["sightline.dev"],
                &["runtimepolicies"],
                &["get", "list", "watch"],
            ));
            rules.push(rule(&["events.k8s.io"], &["events"], &["create", "patch"]));
        }
        SensorType::Passive => {
            rules.push(rule(&[""], &["nodes"], &["get"]));
        }
        SensorType::Registry => {}
    }
    rules
}

/// The ClusterRoles of every sensor type, applied by the operator at start-up.
pub fn cluster_roles() -> Vec<ClusterRole> {
    [
        SensorType::Container,
        SensorType::Registry,
        SensorType::Runtime,
        SensorType::Passive,
    ]
    .into_iter()
    .map(|t| ClusterRole {
        metadata: ObjectMeta {
            name: Some(cluster_role_name(t)),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        rules: Some(cluster_rules(t)),
        ..ClusterRole::default()
    })
    .collect()
}
