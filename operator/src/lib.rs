//! Sightline's operator: reconciles ActivationKeys and Sensors into sensor
//! workloads with least-privilege RBAC, behind a leader lease.

pub mod context;
pub mod controllers;
pub mod cron;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod selector;
pub mod telemetry;

pub use error::{Error, Result};

use kube::api::{Api, Patch, PatchParams};

/// Applies the ClusterRole of each sensor type (see `controllers::sensor::rbac`).
pub async fn apply_sensor_cluster_roles(client: &kube::Client) -> Result<()> {
    let api: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    for mut role in controllers::sensor::rbac::cluster_roles() {
        let name = role.metadata.name.clone().unwrap_or_default();
        role.metadata.managed_fields = None;
        let mut value = serde_json::to_value(&role).map_err(|e| Error::Apply {
            kind: "ClusterRole",
            name: name.clone(),
            source: kube::Error::SerdeError(e),
        })?;
        if let Some(m) = value.as_object_mut() {
            m.insert("apiVersion".into(), "rbac.authorization.k8s.io/v1".into());
            m.insert("kind".into(), "ClusterRole".into());
        }
        api.patch(
            &name,
            &PatchParams::apply("sightline-operator").force(),
            &Patch::Apply(&value),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: "ClusterRole",
            name,
            source,
        })?;
    }
    Ok(())
}
