//! `RuntimePolicy`: what processes, files and connections are denied to the
//! pods it selects, and whether to block or only report.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::net::Cidr;
use crate::sensor::Enforcer;

/// What happens on a violation.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema,
)]
pub enum PolicyAction {
    /// Report only.
    #[default]
    Audit,
    /// Prevent the action and report it.
    Block,
}

/// A runtime policy for pods in its namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "RuntimePolicy",
    namespaced,
    shortname = "rtp",
    category = "sightline",
    status = "RuntimePolicyStatus",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Violations","type":"integer","jsonPath":".status.violations"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.process) || has(self.file) || has(self.network)").message("a RuntimePolicy needs at least one of spec.process, spec.file or spec.network"))]
#[serde(rename_all = "camelCase")]
pub struct RuntimePolicySpec {
    /// Pods in the policy's namespace it applies to; all of them when empty.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Narrows the policy to containers whose image the inventory matches:
    /// a query of the search language over `ContainerImage` Assets
    /// (`findings.vulnerabilities.critical>0`, `os.lifecycle.stage:EndOfLife`).
    /// A container whose image the inventory does not know is not
    /// selected. The operator lists the matching images in
    /// `status.images`, which the runtime sensors read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub image_query: Option<String>,
    /// `Audit` reports violations; `Block` also prevents them.
    #[serde(default)]
    pub action: PolicyAction,
    /// Rules on executed programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRules>,
    /// Rules on file access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRules>,
    /// Rules on outgoing connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRules>,
}

/// Rules on executed programs: a denylist, or an allowlist (everything else denied).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.allow) && has(self.deny))").message("spec.process.allow and spec.process.deny are mutually exclusive: allow is an allowlist, deny a denylist"))]
pub struct ProcessRules {
    /// Programs that may not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub deny: Option<Vec<ProcessMatch>>,
    /// The only programs that may run; everything else is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub allow: Option<Vec<ProcessMatch>>,
}

/// A program, by absolute path or by the SHA-256 of its contents.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) != has(self.sha256)").message("each process entry needs exactly one of path or sha256"))]
pub struct ProcessMatch {
    /// Absolute path of the executable inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// SHA-256 of the executable, 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

/// Rules on file access, as absolute path prefixes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileRules {
    /// Path prefixes that may not be opened for writing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 4096), regex(pattern = r"^/"))
    )]
    pub deny_write: Vec<String>,
    /// Path prefixes that may not be opened for reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 4096), regex(pattern = r"^/"))
    )]
    pub deny_read: Vec<String>,
}

/// Rules on outgoing connections.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRules {
    /// Destinations that may not be connected to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub deny_connect: Vec<ConnectMatch>,
}

/// A destination network and, optionally, ports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectMatch {
    /// Destination network (`10.0.0.0/8`, `2001:db8::/32`).
    pub cidr: Cidr,
    /// Destination ports; all ports when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

/// How one node enforces the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeEnforcement {
    /// Node name.
    pub node: String,
    /// Enforcer in use on the node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcer: Option<Enforcer>,
    /// Whether the node enforces the policy now.
    pub ready: bool,
    /// Why the preferred enforcers are unavailable, or why the node is not ready.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Observed state of a runtime policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimePolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions of the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per node: the enforcer used and why others are unavailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<NodeEnforcement>,
    /// Violations seen so far.
    #[serde(default)]
    pub violations: i64,
    /// When the last violation happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_violation: Option<Time>,
    /// The images `spec.imageQuery` matches, by every name they were seen
    /// with (`repo:tag`, `repo@digest`, the digest, the image ID), sorted;
    /// at most 4,096 names (`Ready=False` with `TooManyImages` beyond).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub images: Vec<String>,
}

/// Most image names a policy's `status.images` lists.
pub const MAX_POLICY_IMAGES: usize = 4096;

impl RuntimePolicy {
    /// Whether the policy selects a container known by `names` (its
    /// image's references, normalized as the inventory keys them): always
    /// without `spec.imageQuery`, else when one of them is in
    /// `status.images`.
    pub fn selects_image<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        if self.spec.image_query.is_none() {
            return true;
        }
        let listed = self.status.as_ref().map_or(&[][..], |s| &s.images[..]);
        names.any(|n| listed.iter().any(|l| l == n))
    }
}
