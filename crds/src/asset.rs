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
    /// What this source found. The Asset's own `findings` combine every
    /// source's (written by the operator); each source's stay here, so
    /// none can hide what another found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Findings>,
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

impl Findings {
    /// Every source's findings as one, as the operator writes them on the
    /// Asset: each count is the largest any source reports, and the worst
    /// vulnerabilities are those of all sources, without repeats. Sources
    /// scanning the same image differ only in their database's age, so the
    /// largest count is the newest answer, and no source can lower or hide
    /// what another found. `None` when no source reported findings.
    pub fn combine<'a>(all: impl IntoIterator<Item = &'a Findings>) -> Option<Findings> {
        let mut out: Option<Findings> = None;
        let max = |a: Option<i64>, b: Option<i64>| a.max(b);
        for f in all {
            let o = out.get_or_insert_with(Findings::default);
            o.misconfigurations = max(o.misconfigurations, f.misconfigurations);
            o.runtime = max(o.runtime, f.runtime);
            o.certificates = max(o.certificates, f.certificates);
            if let Some(v) = &f.vulnerabilities {
                let c = o.vulnerabilities.get_or_insert_with(Default::default);
                c.critical = c.critical.max(v.critical);
                c.high = c.high.max(v.high);
                c.medium = c.medium.max(v.medium);
                c.low = c.low.max(v.low);
                c.unknown = c.unknown.max(v.unknown);
                for r in &v.top {
                    let same = |x: &&mut VulnerabilityRef| {
                        x.id == r.id && x.package == r.package && x.installed == r.installed
                    };
                    match c.top.iter_mut().find(same) {
                        Some(x) if severity_rank(&r.severity) < severity_rank(&x.severity) => {
                            *x = r.clone();
                        }
                        Some(_) => {}
                        None => c.top.push(r.clone()),
                    }
                }
            }
        }
        if let Some(v) = out.as_mut().and_then(|o| o.vulnerabilities.as_mut()) {
            // Stable: within a severity, the sources' own order stands.
            v.top.sort_by_key(|r| severity_rank(&r.severity));
            v.top.truncate(TOP_VULNERABILITIES);
        }
        out
    }
}

/// Worst first: critical 0 … unknown 5.
fn severity_rank(level: &str) -> u8 {
    match level {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        "none" => 4,
        _ => 5,
    }
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

    fn vuln(id: &str, severity: &str) -> VulnerabilityRef {
        VulnerabilityRef {
            id: id.into(),
            package: "p".into(),
            installed: "1".into(),
            fixed: None,
            severity: severity.into(),
        }
    }

    fn found(critical: i64, high: i64, top: Vec<VulnerabilityRef>) -> Findings {
        Findings {
            vulnerabilities: Some(VulnerabilityFindings {
                critical,
                high,
                top,
                ..VulnerabilityFindings::default()
            }),
            ..Findings::default()
        }
    }

    #[test]
    fn combined_findings_keep_the_most_any_source_found() {
        assert_eq!(Findings::combine([]), None);
        let sensor = found(0, 2, vec![vuln("H1", "high"), vuln("H2", "high")]);
        // A CI report from a newer database: one more, a critical; and one
        // claiming nothing at all, which hides nothing.
        let ci = found(1, 2, vec![vuln("C1", "critical"), vuln("H1", "high")]);
        let empty = found(0, 0, vec![]);
        let c = Findings::combine([&sensor, &ci, &empty]).and_then(|f| f.vulnerabilities);
        let c = c.unwrap_or_default();
        assert_eq!((c.critical, c.high), (1, 2));
        let ids: Vec<&str> = c.top.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["C1", "H1", "H2"]);
        // The same finding rated worse by one source is listed once, worse.
        let worse = found(1, 0, vec![vuln("H2", "critical")]);
        let c = Findings::combine([&sensor, &worse])
            .and_then(|f| f.vulnerabilities)
            .unwrap_or_default();
        assert_eq!(c.top.len(), 2);
        assert_eq!(c.top[0].id, "H2");
        assert_eq!(c.top[0].severity, "critical");
        // Bounded however many sources list however many.
        let many: Vec<Findings> = (0..10)
            .map(|s| {
                found(
                    0,
                    0,
                    (0..20).map(|i| vuln(&format!("{s}-{i}"), "low")).collect(),
                )
            })
            .collect();
        let c = Findings::combine(&many)
            .and_then(|f| f.vulnerabilities)
            .unwrap_or_default();
        assert_eq!(c.top.len(), TOP_VULNERABILITIES);
        // Other counts: the largest reported.
        let r = |n| Findings {
            runtime: Some(n),
            ..Findings::default()
        };
        assert_eq!(
            Findings::combine([&r(3), &r(7), &r(1)]).and_then(|f| f.runtime),
            Some(7)
        );
    }
}
