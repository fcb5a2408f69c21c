//! `Asset`: one object per thing found, the inventory.
//!
//! Every sensor that sees the same thing writes the same object (its name is
//! derived from the thing's identity) and only its own entry of `sources`,
//! with server-side apply under its own field manager.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Label holding an asset's kind, for cheap selection.
pub const LABEL_KIND: &str = "sightline.dev/kind";
/// Label holding an asset's lifecycle stage.
pub const LABEL_LIFECYCLE: &str = "sightline.dev/lifecycle";
/// Label holding the highest severity among an asset's findings.
pub const LABEL_MAX_SEVERITY: &str = "sightline.dev/max-severity";
/// Most vulnerabilities listed in `findings.vulnerabilities.top`.
pub const TOP_VULNERABILITIES: usize = 20;

/// What kind of thing an asset is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AssetKind {
    /// A Kubernetes node.
    Node,
    /// A container image, identified by digest.
    ContainerImage,
    /// A container, identified by its runtime ID.
    Container,
    /// A host outside the cluster.
    Host,
    /// A network device seen on the wire.
    NetworkDevice,
    /// A resource in a cloud account.
    CloudResource,
    /// A TLS certificate.
    Certificate,
}

impl AssetKind {
    /// The kind's name as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Node => "Node",
            AssetKind::ContainerImage => "ContainerImage",
            AssetKind::Container => "Container",
            AssetKind::Host => "Host",
            AssetKind::NetworkDevice => "NetworkDevice",
            AssetKind::CloudResource => "CloudResource",
            AssetKind::Certificate => "Certificate",
        }
    }
}

/// The object name of the asset of `kind` identified by `identity`:
/// `<kind>-<first 20 hex digits of sha256(identity)>`, lowercase, so every
/// sensor that sees the same thing names it the same way.
pub fn asset_name(kind: AssetKind, identity: &str) -> String {
    let digest = Sha256::digest(identity.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", kind.as_str().to_ascii_lowercase())
}

/// An asset has no desired state: everything about it is observed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "Asset",
    shortname = "ast",
    category = "sightline",
    status = "AssetStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".status.kind"}"#,
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".status.displayName"}"#,
    printcolumn = r#"{"name":"Identity","type":"string","jsonPath":".status.identity","priority":1}"#,
    printcolumn = r#"{"name":"Category","type":"string","jsonPath":".status.normalized.hardware.category"}"#,
    printcolumn = r#"{"name":"OS","type":"string","jsonPath":".status.normalized.os.product"}"#,
    printcolumn = r#"{"name":"Lifecycle","type":"string","jsonPath":".metadata.labels.sightline\\.dev/lifecycle"}"#,
    printcolumn = r#"{"name":"Max Severity","type":"string","jsonPath":".metadata.labels.sightline\\.dev/max-severity"}"#,
    printcolumn = r#"{"name":"Last Seen","type":"date","jsonPath":".status.lastSeen"}"#
)]
pub struct AssetSpec {}

/// One sensor's sighting of an asset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetSource {
    /// The sensor, as `<namespace>/<name>` (or a CI or connector identity).
    #[schemars(length(min = 1, max = 512))]
    pub sensor: String,
    /// The sensor's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub r#type: Option<String>,
    /// The activation key the sensor runs under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub activation_key: Option<String>,
    /// When the sensor last saw the asset.
    pub last_seen: Time,
    /// For node sensors: on how many of the Sensor's nodes the asset is,
    /// and the latest few. The operator keeps the full list; this stays
    /// the same size however many nodes there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeSightings>,
    /// For CI reports: the image reference the pipeline scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reference: Option<String>,
}

/// Most nodes named in a source's [`NodeSightings::recent`].
pub const RECENT_NODES: usize = 8;

/// The nodes of one Sensor on which an asset is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSightings {
    /// How many nodes.
    pub count: i64,
    /// The nodes that reported it most recently, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub recent: Vec<NodeSighting>,
}

/// One node's sighting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSighting {
    /// The node.
    #[schemars(length(max = 253))]
    pub node: String,
    /// The runtime holding the asset there (`containerd`, `docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub runtime: Option<String>,
}

/// A normalized hardware, OS or software product.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Canonical vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Canonical product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Category (first level of the taxonomy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Subcategory (second level of the taxonomy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subcategory: Option<String>,
    /// Lifecycle of this product and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// Where a product is in its vendor's lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum LifecycleStage {
    /// Generally available and supported.
    GeneralAvailability,
    /// No longer sold, still supported.
    EndOfSale,
    /// No new features, still maintained.
    EndOfLife,
    /// No longer patched.
    EndOfService,
    /// Too little data to tell what the product is.
    Unidentified,
    /// Identified, but not in the catalog.
    Unknown,
}

/// Lifecycle stage and dates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// The stage today.
    pub stage: LifecycleStage,
    /// General availability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ga_date: Option<String>,
    /// End of sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_date: Option<String>,
    /// End of life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eol_date: Option<String>,
    /// End of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eo_service_date: Option<String>,
    /// Which of the dates above are the catalog's estimates rather than the
    /// vendor's announced dates (`gaDate`, `eosDate`, `eolDate`, `eoServiceDate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub estimated: Vec<String>,
}

/// Normalized facts, written by the operator's inventory controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Normalized {
    /// The hardware (or virtual hardware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Product>,
    /// The operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Product>,
    /// Notable installed software.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub software: Vec<Product>,
}

/// One vulnerability in the short list kept on the asset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityRef {
    /// Advisory ID (CVE, GHSA, DSA…).
    pub id: String,
    /// Affected package.
    pub package: String,
    /// Installed version.
    pub installed: String,
    /// First fixed version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// Severity level.
    pub severity: String,
}

/// Vulnerability counts and the worst few.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityFindings {
    /// Critical.
    #[serde(default)]
    pub critical: i64,
    /// High.
    #[serde(default)]
    pub high: i64,
    /// Medium.
    #[serde(default)]
    pub medium: i64,
    /// Low.
    #[serde(default)]
    pub low: i64,
    /// Unknown severity.
    #[serde(default)]
    pub unknown: i64,
    /// The worst vulnerabilities, at most 20; the operator's API serves the full list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub top: Vec<VulnerabilityRef>,
}

/// Findings on an asset, bounded; full lists are served by the operator's API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Findings {
    /// Vulnerabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<VulnerabilityFindings>,
    /// Misconfigurations found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misconfigurations: Option<i64>,
    /// Runtime policy violations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<i64>,
    /// Certificate problems (expired, weak, self-signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<i64>,
}

/// Everything known about an asset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetStatus {
    /// What kind of thing this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AssetKind>,
    /// What identifies it: node UID, image digest, container ID, MAC, cloud
    /// resource ID or certificate fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub identity: Option<String>,
    /// A name a person reads (written by the operator): a container's
    /// `<namespace>/<pod>/<container>`, an image's first tag, a node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub display_name: Option<String>,
    /// The sensors that saw it, one entry each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["sensor".into()]))]
    pub sources: Vec<AssetSource>,
    /// Raw facts as sensors reported them (OS release, manufacturer, ports…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "free_form_object")]
    pub observed: BTreeMap<String, serde_json::Value>,
    /// Normalized, categorized and lifecycle-enriched facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized: Option<Normalized>,
    /// Findings, counted and bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Findings>,
    /// Tags: static ones from activation keys, and dynamic ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// When any sensor first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Time>,
    /// When any sensor last saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// False for devices seen only by passive sensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_lowercase_and_valid_object_names() {
        let a = asset_name(AssetKind::ContainerImage, "sha256:abc");
        assert_eq!(a, asset_name(AssetKind::ContainerImage, "sha256:abc"));
        assert!(a.starts_with("containerimage-"));
        assert_eq!(a.len(), "containerimage-".len() + 20);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(a, asset_name(AssetKind::ContainerImage, "sha256:abd"));
        assert_ne!(a, asset_name(AssetKind::Container, "sha256:abc"));
    }
}
