//! Least-privilege RBAC of sensors.
//!
//! Each sensor type has one ClusterRole (`sightline-sensor-<type>`) holding
//! exactly the cluster-wide access it needs; each Sensor gets its own
//! ServiceAccount, a ClusterRoleBinding to its type's role, and a Role in its
//! namespace that lets it read only its own Sensor and write only its status.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use sightline_crds::Sensor;

use super::names;
pub use sightline_crds::rbac::{cluster_role_name, cluster_roles, cluster_rules, rule};

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
