//! `Sensor`: a sensor workload the operator renders and runs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::activation_key::Module;
use crate::conditions::Condition;
use crate::net::Cidr;

/// What a sensor looks at.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SensorType {
    /// Images and containers of the Docker and containerd runtimes on each node.
    Container,
    /// Images in an OCI registry, on a schedule.
    Registry,
    /// eBPF runtime events and blocking policies on each node.
    Runtime,
    /// Passive network discovery on each node.
    Passive,
}

impl SensorType {
    /// The camelCase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorType::Container => "container",
            SensorType::Registry => "registry",
            SensorType::Runtime => "runtime",
            SensorType::Passive => "passive",
        }
    }

    /// True for types whose pods hold host privileges (host PID or host
    /// network and kernel capabilities): only keys that allow
    /// `privilegedSensors` run them.
    pub fn is_privileged(self) -> bool {
        matches!(self, SensorType::Runtime | SensorType::Passive)
    }

    /// The key modules of which at least one must be enabled for this type.
    pub fn required_modules(self) -> &'static [Module] {
        match self {
            SensorType::Container | SensorType::Registry => {
                &[Module::ContainerSecurity, Module::Vulnerability]
            }
            SensorType::Runtime => &[Module::RuntimeSecurity],
            SensorType::Passive => &[Module::Passive],
        }
    }
}

/// A sensor: what it looks at, under which activation key, and where it runs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "Sensor",
    namespaced,
    shortname = "sen",
    category = "sightline",
    status = "SensorStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.activationKeyRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredNodes"}"#,
    printcolumn = r#"{"name":"Ready Nodes","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"DB Refused","type":"integer","jsonPath":".status.database.refusing"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.container) == (self.type == 'container')").message("spec.container must be set when spec.type is container, and only then").field_path(".container"))]
#[x_kube(validation = Rule::new("has(self.registry) == (self.type == 'registry')").message("spec.registry must be set when spec.type is registry, and only then").field_path(".registry"))]
#[x_kube(validation = Rule::new("has(self.runtime) == (self.type == 'runtime')").message("spec.runtime must be set when spec.type is runtime, and only then").field_path(".runtime"))]
#[x_kube(validation = Rule::new("has(self.passive) == (self.type == 'passive')").message("spec.passive must be set when spec.type is passive, and only then").field_path(".passive"))]
#[serde(rename_all = "camelCase")]
pub struct SensorSpec {
    /// What the sensor looks at; exactly the block of the same name must be set.
    #[serde(rename = "type")]
    pub type_: SensorType,
    /// The ActivationKey the sensor runs under.
    pub activation_key_ref: KeyRef,
    /// Settings of a `container` sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSensor>,
    /// Settings of a `registry` sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySensor>,
    /// Settings of a `runtime` sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSensor>,
    /// Settings of a `passive` sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveSensor>,
    /// Nodes the sensor's pods may run on (node sensors) or be scheduled to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the sensor's pods. Tolerating control-plane taints
    /// needs a key that allows `controlPlaneNodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Compute resources of the sensor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Sensor image; the operator's default when omitted. Only images from
    /// the repositories the operator allows (`--allowed-sensor-image`, by
    /// default the default image's repository) are run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

/// Reference to a cluster-scoped ActivationKey.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the ActivationKey.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A container runtime a container sensor talks to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RuntimeKind {
    /// Docker Engine, by default at `unix:///var/run/docker.sock`.
    Docker,
    /// containerd (CRI and content store), by default at `unix:///run/containerd/containerd.sock`.
    Containerd,
}

impl RuntimeKind {
    /// The socket path the runtime listens on by default.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "unix:///var/run/docker.sock",
            RuntimeKind::Containerd => "unix:///run/containerd/containerd.sock",
        }
    }
}

/// One runtime of a container sensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeEndpoint {
    /// Which runtime.
    #[serde(rename = "type")]
    pub type_: RuntimeKind,
    /// Its API socket on the node; the runtime's usual socket when omitted.
    /// The operator mounts only sockets on its allowlist (the runtimes'
    /// usual paths, extended by the operator's `--allowed-runtime-socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^unix:///[^\\\\s]+$')").message("endpoint must be a unix socket URL such as unix:///run/containerd/containerd.sock"))]
    #[x_kube(validation = Rule::new("!self.matches('/\\\\.\\\\.?(/|$)') && !self.matches('^unix://.*//')").message("endpoint must be a plain path: no '..', '.' or empty segments"))]
    #[schemars(length(max = 256))]
    pub endpoint: Option<String>,
}

impl RuntimeEndpoint {
    /// The endpoint in use: the configured one or the runtime's default.
    pub fn endpoint(&self) -> &str {
        self.endpoint
            .as_deref()
            .unwrap_or(self.type_.default_endpoint())
    }
}

/// When a container sensor analyses an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScanTrigger {
    /// When a container starts.
    Start,
    /// When an image is pulled.
    Pull,
}

/// Settings of a container sensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSensor {
    /// The runtimes to inventory; Docker and containerd when omitted.
    #[serde(default = "default_runtimes")]
    #[schemars(length(min = 1, max = 2))]
    pub runtimes: Vec<RuntimeEndpoint>,
    /// Events that trigger analysis of an image; both when omitted.
    #[serde(default = "default_scan_on")]
    #[schemars(length(max = 2))]
    pub scan_on: Vec<ScanTrigger>,
    /// How often everything is rescanned, as a Go-style duration (`24h`, `90m`).
    #[serde(default = "default_rescan_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"), length(max = 32))]
    pub rescan_interval: String,
}

impl Default for ContainerSensor {
    fn default() -> Self {
        Self {
            runtimes: default_runtimes(),
            scan_on: default_scan_on(),
            rescan_interval: default_rescan_interval(),
        }
    }
}

fn default_runtimes() -> Vec<RuntimeEndpoint> {
    vec![
        RuntimeEndpoint {
            type_: RuntimeKind::Docker,
            endpoint: None,
        },
        RuntimeEndpoint {
            type_: RuntimeKind::Containerd,
            endpoint: None,
        },
    ]
}

fn default_scan_on() -> Vec<ScanTrigger> {
    vec![ScanTrigger::Start, ScanTrigger::Pull]
}

fn default_rescan_interval() -> String {
    "24h".to_owned()
}

/// Settings of a registry sensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySensor {
    /// Base URL of the registry (`https://registry.example.com`).
    #[x_kube(validation = Rule::new("isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))").message("spec.registry.url must be an http or https URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Secret with credentials: type `kubernetes.io/dockerconfigjson`, or
    /// `kubernetes.io/basic-auth` with `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalSecretRef>,
    /// Which repositories to scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<RepositoryFilter>,
    /// When to scan, in cron syntax (5 fields, or `@hourly`, `@daily`, …).
    #[serde(default = "default_schedule")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How many of the newest tags of each repository to scan.
    #[serde(default = "default_tags_per_repository")]
    #[schemars(range(min = 1, max = 1000))]
    pub tags_per_repository: i32,
    /// Longest one scan may run, as a Go-style duration (`2h`, `45m`): the
    /// scan's Job is stopped then (`activeDeadlineSeconds`), so a scan that
    /// hangs on an image never holds back the next schedule.
    #[serde(default = "default_scan_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"), length(max = 32))]
    pub scan_timeout: String,
    /// Of multi-platform images, the platforms to analyse, as
    /// `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`); every Linux
    /// platform an index lists when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 3, max = 64),
            regex(pattern = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
        )
    )]
    pub platforms: Vec<String>,
}

/// The registry sensor's default `scanTimeout`.
pub const DEFAULT_SCAN_TIMEOUT: &str = "2h";

fn default_scan_timeout() -> String {
    DEFAULT_SCAN_TIMEOUT.to_owned()
}

fn default_schedule() -> String {
    "0 */6 * * *".to_owned()
}

fn default_tags_per_repository() -> i32 {
    5
}

/// Reference to a Secret in the Sensor's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Glob filters on repository names; exclude wins over include.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFilter {
    /// Globs of repositories to scan; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs of repositories to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Whether a runtime sensor blocks or only reports.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Enforcement {
    /// Policies with `action: Block` are enforced.
    #[default]
    Enabled,
    /// Everything is only reported, whatever the policies say.
    AuditOnly,
}

/// A mechanism a runtime sensor can block with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Enforcer {
    /// BPF LSM hooks: the call fails with EPERM.
    Lsm,
    /// fanotify permission events: exec and open fail with EPERM.
    Fanotify,
    /// SIGKILL from eBPF: the offending process is killed.
    Signal,
}

/// Settings of a runtime sensor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSensor {
    /// `Enabled` enforces blocking policies; `AuditOnly` only reports.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Enforcers in order of preference; the first one the node supports is used.
    #[serde(default = "default_enforcers")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub enforcers: Vec<Enforcer>,
    /// Largest program, in MiB, whose contents are hashed for SHA-256
    /// rules (1–4096, default 256). Every marked exec on the node waits
    /// while a program is hashed, so a huge one is not.
    #[serde(rename = "maxHashMiB", default = "default_max_hash_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_hash_mib: u32,
    /// What SHA-256 deny rules decide for a program whose contents are not
    /// known (larger than `maxHashMiB`, or unreadable): `Deny` (the
    /// default) or `Allow`. An allowlist never admits such a program by
    /// its contents.
    #[serde(default)]
    pub unhashed: Unhashed,
}

impl Default for RuntimeSensor {
    fn default() -> Self {
        Self {
            enforcement: Enforcement::default(),
            enforcers: default_enforcers(),
            max_hash_mib: default_max_hash_mib(),
            unhashed: Unhashed::default(),
        }
    }
}

fn default_max_hash_mib() -> u32 {
    256
}

/// What SHA-256 deny rules decide for a program that was not hashed.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Unhashed {
    /// Refused, as if its contents matched (fail closed).
    #[default]
    Deny,
    /// Let through: only its path is judged.
    Allow,
}

fn default_enforcers() -> Vec<Enforcer> {
    vec![Enforcer::Lsm, Enforcer::Fanotify, Enforcer::Signal]
}

/// Settings of a passive network sensor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveSensor {
    /// Network interface to listen on.
    #[schemars(length(min = 1, max = 15))]
    pub interface: String,
    /// How traffic is classified by address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<PassiveNetworks>,
}

/// Networks of a passive sensor, as CIDRs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassiveNetworks {
    /// Networks whose devices are inventoried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub internal: Vec<Cidr>,
    /// Networks seen as outside peers only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub external: Vec<Cidr>,
    /// Networks ignored entirely.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub excluded: Vec<Cidr>,
}

/// Observed state of a sensor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `KeyRejected`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Nodes that should run the sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_nodes: Option<i32>,
    /// Nodes where the sensor is running and ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<i32>,
    /// When the sensor last finished a scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_time: Option<Time>,
    /// How many assets the sensor has reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets_reported: Option<i64>,
    /// The vulnerability databases the sensor's pods match with, as they
    /// report them (written by the operator's ingestion API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<SensorDatabase>,
}

/// What a Sensor's pods say of their vulnerability databases.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensorDatabase {
    /// Pods that said which database they use (since the operator started).
    pub reporting: i64,
    /// Of those, how many refused the last database they were offered and
    /// still match with an older one, or with none.
    pub refusing: i64,
    /// The build time of the oldest database in use among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_built: Option<Time>,
    /// The latest refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refusal: Option<DatabaseRefusal>,
}

/// A database a sensor's pod refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRefusal {
    /// The node of the pod (none for a registry sensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub node: Option<String>,
    /// A short word: `bad_signature`, `unknown_key`, `schema`, `unsigned`, `invalid`, …
    #[schemars(length(max = 64))]
    pub reason: String,
    /// The sensor's message.
    #[schemars(length(max = 4096))]
    pub message: String,
    /// When it was reported.
    pub time: Time,
}
