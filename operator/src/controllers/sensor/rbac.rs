//! Least-privilege RBAC of sensors.
//!
//! Each sensor type has one ClusterRole (`sightline-sensor-<type>`) holding
//! exactly the cluster-wide access it needs; each Sensor gets its own
//! ServiceAccount, a ClusterRoleBinding to its type's role, and a Role in its
//! namespace that lets it read only its own Sensor and write only its status.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use sightline_crds::{Sensor, SensorType};

use super::names;

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
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
    // Every sensor reports into Assets with server-side apply.
    let mut rules = vec![
        rule(
            &["sightline.dev"],
            &["assets"],
            &["get", "list", "watch", "create", "patch"],
        ),
        rule(&["sightline.dev"], &["assets/status"], &["get", "patch"]),
    ];
    match t {
        SensorType::Container => {
            // Its node (Node asset) and the pods on it (container attribution).
            rules.push(rule(&[""], &["nodes"], &["get"]));
            rules.push(rule(&[""], &["pods"], &["get", "list", "watch"]));
        }
        SensorType::Runtime => {
            rules.push(rule(&[""], &["nodes"], &["get"]));
            rules.push(rule(&[""], &["pods"], &["get", "list", "watch"]));
            rules.push(rule(
                &["sightline.dev"],
                &["runtimepolicies"],
                &["get", "list", "watch"],
            ));
            rules.push(rule(
                &["sightline.dev"],
                &["runtimepolicies/status"],
                &["get", "patch"],
            ));
            rules.push(rule(
                &["", "events.k8s.io"],
                &["events"],
                &["create", "patch"],
            ));
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
                    names::MANAGED_BY.to_owned(),
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

fn subject(sensor: &Sensor) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: names::workload(sensor),
        namespace: sensor.namespace(),
        ..Subject::default()
    }
}

/// The Sensor's ServiceAccount.
pub fn service_account(meta: ObjectMeta) -> ServiceAccount {
    ServiceAccount {
        metadata: meta,
        ..ServiceAccount::default()
    }
}

/// The Role letting the sensor read its own Sensor and write its status.
pub fn role(sensor: &Sensor, meta: ObjectMeta) -> Role {
    let name = sensor.name_any();
    Role {
        metadata: meta,
        rules: Some(vec![
            PolicyRule {
                resource_names: Some(vec![name.clone()]),
                ..rule(&["sightline.dev"], &["sensors"], &["get", "watch"])
            },
            PolicyRule {
                resource_names: Some(vec![name]),
                ..rule(&["sightline.dev"], &["sensors/status"], &["get", "patch"])
            },
        ]),
    }
}

/// Binds the Role to the ServiceAccount.
pub fn role_binding(sensor: &Sensor, meta: ObjectMeta) -> RoleBinding {
    RoleBinding {
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: names::workload(sensor),
        },
        subjects: Some(vec![subject(sensor)]),
        metadata: meta,
    }
}

/// Binds the type's ClusterRole to the ServiceAccount.
pub fn cluster_role_binding(sensor: &Sensor, meta: ObjectMeta) -> ClusterRoleBinding {
    ClusterRoleBinding {
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role_name(sensor.spec.type_),
        },
        subjects: Some(vec![subject(sensor)]),
        metadata: meta,
    }
}
