//! Sightline's operator: reconciles ActivationKeys and Sensors into sensor
//! workloads with least-privilege RBAC, behind a leader lease.

pub mod admission;
pub mod apply;
pub mod context;
pub mod controllers;
pub mod cron;
pub mod details;
pub mod error;
pub mod http;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod search;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod vulndb;

pub use error::{Error, Result};

use kube::api::Api;

/// Field manager of what the operator applies outside a controller.
pub const MANAGER: &str = "sightline-operator";

/// Applies the ClusterRole of each sensor type (see `controllers::sensor::rbac`).
pub async fn apply_sensor_cluster_roles(client: &kube::Client) -> Result<()> {
    let api: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    for role in controllers::sensor::rbac::cluster_roles() {
        apply::object(&api, &role, MANAGER, "ClusterRole").await?;
    }
    Ok(())
}
