//! Names and labels of what a Sensor owns.

use std::collections::BTreeMap;

use kube::ResourceExt;
use sightline_crds::Sensor;

/// Label carrying the owning Sensor (label-safe form of its name).
pub const LABEL_SENSOR: &str = "sightline.dev/sensor";
/// Label carrying the owning Sensor's namespace (on cluster-scoped objects).
pub const LABEL_SENSOR_NAMESPACE: &str = "sightline.dev/sensor-namespace";
/// `app.kubernetes.io/managed-by` value.
pub use sightline_crds::rbac::MANAGED_BY;

pub use sightline_crds::names::bounded;

/// Name of the workload and ServiceAccount (CronJob names may have 52 characters).
pub fn workload(sensor: &Sensor) -> String {
    sightline_crds::names::sensor_workload(&sensor.name_any())
}

/// Name of the per-sensor ClusterRoleBinding: cluster-wide, so it carries
/// the namespace, and the type, because a binding's roleRef cannot change
/// (a type change makes a new binding and deletes the old one).
pub fn cluster_binding(sensor: &Sensor) -> String {
    let ns = sensor.namespace().unwrap_or_default();
    let t = sensor.spec.type_.as_str();
    bounded(
        "sightline-sensor-",
        &format!("{t}-{ns}-{}", sensor.name_any()),
        253,
    )
}

/// The label value identifying a sensor.
pub fn label_value(name: &str) -> String {
    bounded("", name, 63)
}

/// Labels on everything a sensor owns.
pub fn labels(sensor: &Sensor) -> BTreeMap<String, String> {
    let name = label_value(&sensor.name_any());
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "sightline-sensor".into()),
        ("app.kubernetes.io/instance".into(), name.clone()),
        (
            "app.kubernetes.io/component".into(),
            sensor.spec.type_.as_str().into(),
        ),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        // What the chart's NetworkPolicy lets reach the operator.
        ("app.kubernetes.io/part-of".into(), "sightline".into()),
        (LABEL_SENSOR.into(), name),
    ])
}

/// The pod selector of a sensor's workload (stable across type changes).
pub fn selector(sensor: &Sensor) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "sightline-sensor".into()),
        (LABEL_SENSOR.into(), label_value(&sensor.name_any())),
    ])
}
