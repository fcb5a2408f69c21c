//! What sensors observe about each kind of asset, typed: the operator
//! writes these into an Asset's `status.observed` under the names given
//! here, and the inventory controller reads them back from there.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A container image's facts, wherever it was found (a node's runtime, a
/// registry, a CI pipeline).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageFacts {
    /// The image ID (its config digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Tags (`repo:tag`), at most [`crate::MAX_LIST`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// Package counts.
    #[serde(default)]
    pub packages: PackageCounts,
    /// Layer diff IDs, the first ones if there are many.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// How many layers the image has.
    #[serde(default)]
    pub layer_count: u64,
    /// Uncompressed size of the layers, in bytes.
    #[serde(default)]
    pub size: u64,
    /// The image's `/etc/os-release`, key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<BTreeMap<String, String>>,
    /// CPU architecture (`amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Operating system family (`linux`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// When the image was built (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What the analysis could not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_warnings: Vec<String>,
    /// Where a registry sensor found the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryFacts>,
    /// The image could not be analysed: why, and when it is tried again.
    /// The facts above are then only those known without analysis (tags,
    /// digests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_failure: Option<AnalysisFailure>,
}

/// Why an image could not be analysed, kept so a restarted sensor does
/// not try it again before its time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisFailure {
    /// What went wrong (a limit, the deadline, an unreadable layer).
    pub reason: String,
    /// When it last failed (RFC 3339).
    pub at: String,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Not tried again before (RFC 3339), unless the sensor's version changes.
    pub retry_after: String,
    /// The version of the sensor that tried.
    pub sensor_version: String,
}

/// Packages found in an image: the total and a count per package type
/// (`deb`, `apk`, `npm`, … — purl types).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PackageCounts {
    /// Every package.
    #[serde(default)]
    pub total: u64,
    /// By purl type.
    #[serde(flatten)]
    pub by_type: BTreeMap<String, u64>,
}

/// Where in a registry an image is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryFacts {
    /// The registry's host (`registry.example.com:5000`).
    pub host: String,
    /// Each repository holding the image.
    #[serde(default)]
    pub repositories: Vec<RepositoryEntry>,
    /// The platform chosen from a multi-platform index (`linux/amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One repository holding an image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryEntry {
    /// The repository (`team/app`).
    pub repository: String,
    /// Its tags pointing at the image.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The image's own (platform) manifest.
    pub manifest_digest: String,
    /// The index the tags point at, for a multi-platform image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
}

/// A container's facts, as its node's runtime reports them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerFacts {
    /// The runtime's container ID.
    pub container_id: String,
    /// The runtime's name for it.
    #[serde(default)]
    pub name: String,
    /// The image as the container was started with it.
    #[serde(default)]
    pub image: String,
    /// The image's ID (config digest).
    #[serde(default)]
    pub image_id: String,
    /// The image's Asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_asset: Option<String>,
    /// State (`running`).
    #[serde(default)]
    pub state: String,
    /// The node it runs on. The operator writes the reporting sensor's
    /// node here, whatever the report says.
    #[serde(default)]
    pub node: String,
    /// The runtime (`containerd`, `docker`).
    #[serde(default)]
    pub runtime: String,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Its pod, when the kubelet started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Its pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A node's facts: the host (as a cloud agent sees it) and its Node object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFacts {
    /// The host's `/etc/os-release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_release: Option<BTreeMap<String, String>>,
    /// The kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// CPU architecture (`amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The processors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// DMI strings (`sysVendor`, `productName`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dmi: BTreeMap<String, String>,
    /// Whether a hypervisor is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualized: Option<bool>,
    /// The hypervisor, in the catalog's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// A hypervisor signature the sensor did not recognise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor_signature: Option<String>,
    /// The Node object's name. The operator writes the reporting
    /// sensor's node here, whatever the report says.
    #[serde(default)]
    pub node_name: String,
    /// The kubelet's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<String>,
    /// The OS image the kubelet reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    /// Container runtimes and their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_runtimes: Vec<NameVersion>,
    /// Notable software (the kubelet, the runtimes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub software: Vec<NameVersion>,
    /// The cloud the Node's `providerID` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_provider: Option<String>,
    /// The Node's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
}

/// Processors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cpu {
    /// How many.
    pub count: u64,
    /// Their model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A piece of software and its version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameVersion {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// A node address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Address {
    /// `InternalIP`, `Hostname`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub address: String,
}

/// The last runtime policy violation in a container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Violation {
    /// When (RFC 3339).
    pub time: String,
    /// The policy (`<namespace>/<name>`).
    pub policy: String,
    /// What happened, in words.
    pub message: String,
}
