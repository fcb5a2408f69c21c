//! `ActivationKey`: which modules sensors may run, the tags they stamp and
//! where the key applies.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::net::Cidr;

/// A module a key can enable. Sensors run only the modules of their key.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Module {
    /// Asset inventory: what exists (nodes, images, containers, hosts).
    Inventory,
    /// Vulnerability assessment of images and hosts.
    Vulnerability,
    /// Container security: image and container posture.
    ContainerSecurity,
    /// Runtime security: process, file and network events and blocking.
    RuntimeSecurity,
    /// Software composition analysis of language packages.
    Sca,
    /// Policy compliance: configuration benchmarks.
    PolicyCompliance,
    /// Passive network discovery.
    Passive,
    /// Certificate inventory.
    Certificates,
    /// Cloud inventory through connectors.
    Cloud,
}

impl Module {
    /// The camelCase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Module::Inventory => "inventory",
            Module::Vulnerability => "vulnerability",
            Module::ContainerSecurity => "containerSecurity",
            Module::RuntimeSecurity => "runtimeSecurity",
            Module::Sca => "sca",
            Module::PolicyCompliance => "policyCompliance",
            Module::Passive => "passive",
            Module::Certificates => "certificates",
            Module::Cloud => "cloud",
        }
    }
}

/// An activation key: the modules its sensors may run, the tags they stamp on
/// what they find, and where it applies.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "ActivationKey",
    shortname = "akey",
    category = "sightline",
    status = "ActivationKeyStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Sensors","type":"integer","jsonPath":".status.sensors"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.limits.expires"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ActivationKeySpec {
    /// Modules that sensors under this key may run. Must not be empty; each
    /// module at most once.
    #[schemars(length(min = 1, max = 9))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub modules: Vec<Module>,

    /// Static tags (key → value) stamped on every asset found under this key.
    /// Best practice: one key per subnet or logical group.
    /// Keys are checked by the operator (condition `Ready=False`, reason
    /// `InvalidTags`): the API server cannot afford a per-key rule on a map.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub tags: BTreeMap<String, String>,

    /// Where the key applies. Without `scope.namespaceSelector` the key
    /// serves only Sensors in the operator's own namespace; set
    /// `namespaceSelector: {}` to let Sensors of every namespace use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<KeyScope>,

    /// Powers a Sensor may use only when its key grants them; none by default.
    #[serde(default, skip_serializing_if = "KeyAllow::is_empty")]
    pub allow: KeyAllow,

    /// Limits on the key's use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,

    /// A disabled key keeps its token but no sensor may run under it.
    #[serde(default)]
    pub disabled: bool,
}

/// Where a key applies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyScope {
    /// Nodes on which sensors under this key may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Namespaces in which Sensors may use this key: `{}` for every
    /// namespace; only the operator's own namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Networks (CIDRs) this key's passive and network sensors may cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub networks: Vec<Cidr>,
}

/// Powers a key grants its Sensors. Whoever may create a Sensor in a
/// namespace the key serves gets them, so each is off unless set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyAllow {
    /// Sensors that run with host privileges on every node they select:
    /// `runtime` (host PID, BPF, SYS_ADMIN) and `passive` (host network,
    /// NET_RAW, NET_ADMIN).
    #[serde(default)]
    pub privileged_sensors: bool,
    /// Tolerations that let a Sensor's pods onto control-plane nodes (the
    /// `node-role.kubernetes.io/control-plane` or `master` taints, or a
    /// toleration of every taint).
    #[serde(default)]
    pub control_plane_nodes: bool,
}

impl KeyAllow {
    /// True when the key grants nothing (the default).
    pub fn is_empty(&self) -> bool {
        *self == KeyAllow::default()
    }
}

/// Limits on a key's use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyLimits {
    /// How many Sensors may use the key; the oldest ones win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_sensors: Option<i32>,
    /// How many Assets each source reporting under the key (a Sensor, or
    /// the key's CI reports) may create; reports of further new Assets are
    /// refused (`AssetLimit`). Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_assets: Option<i64>,
    /// When the key stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
}

/// Reference to the Secret holding a key's token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// Observed state of an activation key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationKeyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `ModulesConflict`, `Expired`, `LimitReached`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many Sensors reference this key.
    #[serde(default)]
    pub sensors: i32,
    /// The Secret holding the key's token, for agents and CI outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

impl ActivationKeySpec {
    /// True when the key enables `module`.
    pub fn enables(&self, module: Module) -> bool {
        self.modules.contains(&module)
    }

    /// True when `policyCompliance` and `sca` share the key: both assess the
    /// same settings and would report them twice.
    pub fn modules_conflict(&self) -> bool {
        self.enables(Module::PolicyCompliance) && self.enables(Module::Sca)
    }

    /// True when the key has an expiry at or before `now`.
    pub fn expired_at(&self, now: jiff::Timestamp) -> bool {
        self.limits
            .as_ref()
            .and_then(|l| l.expires.as_ref())
            .is_some_and(|e| e.0 <= now)
    }
}

/// Annotation asking the operator for a new token: each new value (the
/// CLI writes the time of the request) rotates the token once.
pub const ROTATE_TOKEN: &str = "sightline.dev/rotate-token";
/// Annotation: seconds the replaced token stays valid after a rotation
/// (`0`, the default, revokes it at once).
pub const ROTATE_TOKEN_GRACE: &str = "sightline.dev/rotate-token-grace-seconds";

/// The merge patch asking for a new token, the old one valid for `grace`
/// more (what `sightline keys rotate` sends).
pub fn rotation_request(now: jiff::Timestamp, grace: std::time::Duration) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {
            ROTATE_TOKEN: now.to_string(),
            ROTATE_TOKEN_GRACE: grace.as_secs().to_string(),
        }}
    })
}
