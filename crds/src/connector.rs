//! `Connector`: cloud inventory and misconfiguration through a provider's API.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::sensor::LocalSecretRef;

/// A cloud provider.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

/// A cloud connector: which account to inventory and how often.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "Connector",
    namespaced,
    shortname = "conn",
    category = "sightline",
    status = "ConnectorStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSync"}"#,
    printcolumn = r#"{"name":"Assets","type":"integer","jsonPath":".status.assetsDiscovered"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.provider == 'aws' || !has(self.regions) || size(self.regions) == 0").message("spec.regions applies to provider aws only").field_path(".regions"))]
#[x_kube(validation = Rule::new("self.provider == 'gcp' || !has(self.projects) || size(self.projects) == 0").message("spec.projects applies to provider gcp only").field_path(".projects"))]
#[x_kube(validation = Rule::new("self.provider == 'azure' || !has(self.subscriptions) || size(self.subscriptions) == 0").message("spec.subscriptions applies to provider azure only").field_path(".subscriptions"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSpec {
    /// The cloud provider.
    pub provider: Provider,
    /// Secret with the provider's credentials.
    pub credentials_secret_ref: LocalSecretRef,
    /// AWS regions to inventory; all enabled regions when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub regions: Vec<String>,
    /// GCP projects to inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub projects: Vec<String>,
    /// Azure subscriptions to inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub subscriptions: Vec<String>,
    /// When to sync, in cron syntax.
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// API endpoint override, e.g. a local emulator of the provider's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self)").message("spec.endpoint must be a URL"))]
    pub endpoint: Option<String>,
}

fn default_schedule() -> String {
    "0 */4 * * *".to_owned()
}

/// Findings counted by severity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeverityCounts {
    /// Critical findings.
    #[serde(default)]
    pub critical: i64,
    /// High findings.
    #[serde(default)]
    pub high: i64,
    /// Medium findings.
    #[serde(default)]
    pub medium: i64,
    /// Low findings.
    #[serde(default)]
    pub low: i64,
    /// Findings without a known severity.
    #[serde(default)]
    pub unknown: i64,
}

/// Observed state of a connector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions of the connector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the last sync finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Time>,
    /// Assets found by the last sync.
    #[serde(default)]
    pub assets_discovered: i64,
    /// Misconfiguration findings by severity.
    #[serde(default)]
    pub findings: SeverityCounts,
}
