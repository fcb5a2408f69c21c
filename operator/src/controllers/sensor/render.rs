//! Builds the workload of a Sensor: pure functions from the Sensor, its key
//! and the operator's defaults to the DaemonSet or CronJob to apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HostPathVolumeSource, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use sightline_crds::{ActivationKey, Sensor, SensorType};

use super::names;

/// Operator-wide settings that shape workloads.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Sensor image when a Sensor names none.
    pub image: String,
    /// The sensor image the signed bundle in use pins (by digest), which
    /// replaces `image` while it does.
    pub pinned_image: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// The operator's API as sensors reach it (`http://10.96.0.12:8080`):
    /// they send reports to its `/api/v1/observations`.
    pub api_url: Option<String>,
    /// Where container sensors fetch the vulnerability database (the
    /// operator's `/api/v1/vulndb` behind its Service), if it serves one.
    pub vuln_db_url: Option<String>,
    /// The keys a database bundle must be signed by, as sensors read them
    /// (`SIGHTLINE_BUNDLE_KEYS`, comma-separated); empty: none pinned.
    pub bundle_keys: String,
    /// The CA (PEM) the API's certificate is issued by, which sensors
    /// trust for it and nothing else (`SIGHTLINE_API_CA`).
    pub api_ca: Option<String>,
    /// How often node sensors list everything again and refresh `lastSeen`
    /// (`SIGHTLINE_REFRESH_SECONDS`); the sensor's own default when `None`.
    pub refresh_seconds: Option<u64>,
    /// What a Sensor's spec may ask of the nodes.
    pub policy: super::policy::SensorPolicy,
    /// NetworkPolicies for sensors and the operator (`--network-policies`).
    pub network: Option<super::netpol::NetworkDefaults>,
}

impl Defaults {
    /// The image of a Sensor that names none: the one the signed bundle in
    /// use pins, else [`Defaults::image`].
    pub fn sensor_image(&self) -> String {
        self.pinned_image
            .as_ref()
            .and_then(|rx| rx.borrow().clone())
            .unwrap_or_else(|| self.image.clone())
    }
}

/// The workload a Sensor runs as.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// One pod per node: container, runtime and passive sensors.
    DaemonSet(Box<DaemonSet>),
    /// Scheduled scans: registry sensors.
    CronJob(Box<CronJob>),
}

/// Builds the workload for `sensor` running under `key`.
pub fn workload(
    sensor: &Sensor,
    key: &ActivationKey,
    defaults: &Defaults,
    meta: ObjectMeta,
) -> Workload {
    let pod = pod_template(sensor, key, defaults);
    match sensor.spec.type_ {
        SensorType::Registry => Workload::CronJob(Box::new(cron_job(sensor, pod, meta))),
        _ => Workload::DaemonSet(Box::new(DaemonSet {
            metadata: meta,
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(names::selector(sensor)),
                    ..LabelSelector::default()
                },
                template: pod,
                ..DaemonSetSpec::default()
            }),
            status: None,
        })),
    }
}

fn cron_job(sensor: &Sensor, mut pod: PodTemplateSpec, meta: ObjectMeta) -> CronJob {
    let registry = sensor.spec.registry.as_ref();
    let schedule = registry.map(|r| r.schedule.clone()).unwrap_or_default();
    // `check_spec` refuses a timeout that does not parse before anything
    // is rendered; the default covers a Sensor read without the field.
    let deadline = registry
        .and_then(|r| sightline_crds::duration::parse(&r.scan_timeout))
        .or_else(|| sightline_crds::duration::parse(sightline_crds::sensor::DEFAULT_SCAN_TIMEOUT))
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if let Some(spec) = pod.spec.as_mut() {
        spec.restart_policy = Some("OnFailure".into());
    }
    CronJob {
        metadata: meta,
        spec: Some(CronJobSpec {
            schedule,
            // A scan still running when the next one is due is left to finish.
            // A scan still running when the next one is due is left to
            // finish, and the Job's deadline bounds how long that can be.
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    active_deadline_seconds: deadline,
                    template: pod,
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Host access per sensor type: volumes, mounts, and the container's privileges.
struct HostAccess {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    capabilities: Vec<&'static str>,
    run_as_root: bool,
    host_pid: bool,
    host_network: bool,
}

impl HostAccess {
    /// Mounts host path `path` at the same path in the container.
    fn host(&mut self, name: &str, path: &str, type_: &str, read_only: bool) {
        self.host_at(name, path, path, type_, read_only);
    }

    /// Mounts host path `path` at `at` in the container.
    fn host_at(&mut self, name: &str, path: &str, at: &str, type_: &str, read_only: bool) {
        self.volumes.push(host_path(name, path, type_));
        self.mounts.push(mount(name, at, read_only));
    }
}

/// The volume holding the sensor's token for the operator's API.
const TOKEN_VOLUME: &str = "sightline-token";
/// Where it is mounted.
const TOKEN_DIR: &str = "/var/run/secrets/sightline.dev";
/// How long a token lives before the kubelet replaces it.
const TOKEN_SECONDS: i64 = 3600;

/// A ServiceAccount token for the operator's API alone (audience
/// `sightline`, an hour long, bound to the pod and so to its node): it
/// cannot be replayed against the API server, and the kubelet rotates it.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(sightline_report::AUDIENCE.into()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: "token".into(),
                }),
                ..VolumeProjection::default()
            }]),
            default_mode: Some(0o440),
        }),
        ..Volume::default()
    }
}

fn host_access(sensor: &Sensor) -> HostAccess {
    let mut a = HostAccess {
        volumes: vec![
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("1Gi".into())),
                    ..Default::default()
                }),
                ..Volume::default()
            },
            token_volume(),
        ],
        mounts: vec![
            mount("tmp", "/tmp", false),
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
        ],
        capabilities: vec![],
        run_as_root: false,
        host_pid: false,
        host_network: false,
    };
    match sensor.spec.type_ {
        SensorType::Container => {
            // Runtime sockets are root-owned, so the sensor runs as root, but
            // with every capability dropped and a read-only root filesystem.
            a.run_as_root = true;
            let runtimes = sensor
                .spec
                .container
                .as_ref()
                .map(|c| c.runtimes.clone())
                .unwrap_or_default();
            // The sockets are all it needs of the runtimes: containerd's
            // content store is read through containerd's own API.
            for (i, rt) in runtimes.iter().enumerate() {
                let socket = rt.endpoint().trim_start_matches("unix://");
                let (path, type_) = socket_mount_path(socket);
                a.host(&format!("runtime-{i}"), path, type_, true);
            }
            node_facts(&mut a);
        }
        SensorType::Runtime => {
            // Host PID: containers' processes, their /proc/<pid>/root (the
            // fanotify marks) and /proc/<tid>/syscall (how a file is being
            // opened). BPF and PERFMON load and attach the programs,
            // SYS_ADMIN runs the fanotify group (and mounts tracefs and
            // securityfs in the pod when the host has not), SYS_PTRACE reads
            // other processes' /proc entries. Not SYS_RESOURCE: kernels from
            // 5.11 do not charge BPF maps to RLIMIT_MEMLOCK. Nothing is
            // pinned, so no bpffs; container ids come from the pods' status,
            // so no runtime socket.
            a.run_as_root = true;
            a.host_pid = true;
            a.capabilities = vec!["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"];
            for (name, path, ro, t) in [
                ("btf", "/sys/kernel/btf", true, "Directory"),
                ("tracefs", "/sys/kernel/tracing", true, "Directory"),
                ("cgroup", "/sys/fs/cgroup", true, "Directory"),
            ] {
                a.host(name, path, t, ro);
            }
        }
        SensorType::Passive => {
            a.run_as_root = true;
            a.host_network = true;
            a.capabilities = vec!["NET_RAW", "NET_ADMIN"];
        }
        SensorType::Registry => {
            if let Some(secret) = sensor
                .spec
                .registry
                .as_ref()
                .and_then(|r| r.credentials_secret_ref.as_ref())
            {
                a.volumes.push(Volume {
                    name: "registry-credentials".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.name.clone()),
                        ..Default::default()
                    }),
                    ..Volume::default()
                });
                a.mounts.push(mount(
                    "registry-credentials",
                    "/var/run/sightline/registry-credentials",
                    true,
                ));
            }
        }
    }
    a
}

/// Where to mount a runtime socket from: its directory when the runtime owns
/// one (so the mount survives the runtime recreating its socket on restart),
/// the socket itself when it sits in a shared directory such as `/var/run`.
fn socket_mount_path(socket: &str) -> (&str, &'static str) {
    match socket.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() && !matches!(dir, "/run" | "/var/run" | "/tmp") => {
            (dir, "Directory")
        }
        _ => (socket, "Socket"),
    }
}

/// The node's OS release and DMI strings, for its `Node` asset.
fn node_facts(a: &mut HostAccess) {
    a.host_at(
        "host-os-release",
        "/etc/os-release",
        "/host/etc/os-release",
        "FileOrCreate",
        true,
    );
    // All of sysfs, read-only: DMI (`class/dmi/id`) is absent on some
    // machines (Firecracker VMs have none), and a hostPath that must be
    // created inside sysfs would keep the pod from starting.
    a.host_at("host-sys", "/sys", "/host/sys", "Directory", true);
}

fn pod_template(sensor: &Sensor, key: &ActivationKey, defaults: &Defaults) -> PodTemplateSpec {
    let spec = &sensor.spec;
    let access = host_access(sensor);
    let mut modules: Vec<&str> = key.spec.modules.iter().map(|m| m.as_str()).collect();
    modules.sort_unstable();
    let config = match spec.type_ {
        SensorType::Container => serde_json::to_string(&spec.container),
        SensorType::Registry => serde_json::to_string(&spec.registry),
        SensorType::Runtime => serde_json::to_string(&spec.runtime),
        SensorType::Passive => serde_json::to_string(&spec.passive),
    }
    .unwrap_or_default();
    let node_name = EnvVar {
        name: "NODE_NAME".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "spec.nodeName".into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    };
    let sensor_id = format!(
        "{}/{}",
        sensor.namespace().unwrap_or_default(),
        sensor.name_any()
    );
    let container = Container {
        name: "sensor".into(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| defaults.sensor_image()),
        ),
        args: Some(vec![spec.type_.as_str().into()]),
        env: Some(
            vec![
                node_name,
                env("SIGHTLINE_SENSOR", sensor_id),
                env("SIGHTLINE_ACTIVATION_KEY", key.name_any()),
                // The sensor runs only what its key enables; a key change changes
                // this value and so rolls the pods.
                env("SIGHTLINE_MODULES", modules.join(",")),
                env("SIGHTLINE_CONFIG", config),
                env("SIGHTLINE_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
            ]
            .into_iter()
            .chain(
                defaults
                    .api_url
                    .as_ref()
                    .map(|url| env("SIGHTLINE_API_URL", url.clone())),
            )
            .chain(
                defaults
                    .api_ca
                    .as_ref()
                    .map(|pem| env("SIGHTLINE_API_CA", pem.clone())),
            )
            .chain(
                defaults
                    .vuln_db_url
                    .as_ref()
                    .filter(|_| matches!(spec.type_, SensorType::Container | SensorType::Registry))
                    .map(|url| env("SIGHTLINE_VULN_DB_URL", url.clone())),
            )
            .chain(
                Some(&defaults.bundle_keys)
                    .filter(|k| !k.is_empty())
                    .filter(|_| matches!(spec.type_, SensorType::Container | SensorType::Registry))
                    .map(|keys| env(sightline_scan::bundle::KEYS_ENV, keys.clone())),
            )
            .chain(
                defaults
                    .refresh_seconds
                    .map(|s| env("SIGHTLINE_REFRESH_SECONDS", s.to_string())),
            )
            .collect(),
        ),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            run_as_non_root: Some(!access.run_as_root),
            run_as_user: Some(if access.run_as_root { 0 } else { 65532 }),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: (!access.capabilities.is_empty()).then(|| {
                    access
                        .capabilities
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect()
                }),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(access.mounts),
        ..Container::default()
    };
    let mut node_selector = spec.node_selector.clone();
    let mut affinity = None;
    if let Some(sel) = key
        .spec
        .scope
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
    {
        node_selector.extend(sel.match_labels.clone().unwrap_or_default());
        affinity = node_affinity(sel);
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(names::labels(sensor)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::workload(sensor)),
            automount_service_account_token: Some(true),
            containers: vec![container],
            volumes: Some(access.volumes),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            affinity,
            tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
            host_pid: access.host_pid.then_some(true),
            host_network: access.host_network.then_some(true),
            dns_policy: access
                .host_network
                .then(|| "ClusterFirstWithHostNet".into()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        }),
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("50m".into())),
            ("memory".into(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("512Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn node_affinity(sel: &LabelSelector) -> Option<Affinity> {
    let exprs: Vec<NodeSelectorRequirement> = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| NodeSelectorRequirement {
            key: e.key.clone(),
            operator: e.operator.clone(),
            values: e.values.clone(),
        })
        .collect();
    (!exprs.is_empty()).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(exprs),
                    match_fields: None,
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::sensor::{ContainerSensor, KeyRef, RegistrySensor, RuntimeSensor};
    use sightline_crds::{ActivationKeySpec, Module, SensorSpec};

    fn sensor(type_: SensorType) -> Sensor {
        let mut s = Sensor::new(
            "nodes",
            SensorSpec {
                type_,
                activation_key_ref: KeyRef { name: "lab".into() },
                container: (type_ == SensorType::Container).then(ContainerSensor::default),
                registry: (type_ == SensorType::Registry).then(|| RegistrySensor {
                    url: "https://r.example".into(),
                    credentials_secret_ref: Some(sightline_crds::sensor::LocalSecretRef {
                        name: "creds".into(),
                    }),
                    repositories: None,
                    schedule: "0 * * * *".into(),
                    tags_per_repository: 3,
                    scan_timeout: "45m".into(),
                    platforms: vec!["linux/arm64".into()],
                }),
                runtime: (type_ == SensorType::Runtime).then(RuntimeSensor::default),
                passive: None,
                node_selector: BTreeMap::from([("role".into(), "worker".into())]),
                tolerations: vec![],
                resources: None,
                image: None,
            },
        );
        s.metadata.namespace = Some("team".into());
        s
    }

    fn key() -> ActivationKey {
        ActivationKey::new(
            "lab",
            ActivationKeySpec {
                modules: vec![Module::Vulnerability, Module::Inventory],
                ..Default::default()
            },
        )
    }

    fn pod(w: &Workload) -> PodSpec {
        match w {
            Workload::DaemonSet(d) => d.spec.clone().unwrap().template.spec.unwrap(),
            Workload::CronJob(c) => c
                .spec
                .clone()
                .unwrap()
                .job_template
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            image: "sightline/sensor:test".into(),
            pinned_image: None,
            api_url: Some("https://10.96.0.12:443".into()),
            vuln_db_url: Some("https://10.96.0.12:443/api/v1/vulndb".into()),
            bundle_keys: String::new(),
            api_ca: Some("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into()),
            refresh_seconds: Some(60),
            policy: super::super::policy::SensorPolicy::new(&[], &[], "sightline/sensor:test")
                .unwrap(),
            network: None,
        }
    }

    #[test]
    fn a_pinned_image_replaces_the_default_but_not_a_sensors_own() {
        let digest = format!("sightline/sensor@sha256:{}", "a".repeat(64));
        let (tx, rx) = tokio::sync::watch::channel(None);
        let mut d = defaults();
        d.pinned_image = Some(rx);
        assert_eq!(d.sensor_image(), "sightline/sensor:test");
        tx.send_replace(Some(digest.clone()));
        assert_eq!(d.sensor_image(), digest);
    }

    #[test]
    fn container_sensor_mounts_runtime_sockets_read_only_and_drops_capabilities() {
        let w = workload(
            &sensor(SensorType::Container),
            &key(),
            &defaults(),
            ObjectMeta::default(),
        );
        assert!(matches!(w, Workload::DaemonSet(_)));
        let p = pod(&w);
        let c = &p.containers[0];
        let mounts: Vec<_> = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| (m.mount_path, m.read_only))
            .collect();
        assert!(mounts.contains(&("/var/run/docker.sock".into(), Some(true))));
        assert!(mounts.contains(&("/run/containerd".into(), Some(true))));
        assert!(
            !mounts.iter().any(|(p, _)| p.starts_with("/var/lib")),
            "no runtime state directory is mounted: {mounts:?}"
        );
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".into()]));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            p.service_account_name.as_deref(),
            Some("sightline-sensor-nodes")
        );
        assert_eq!(p.node_selector.unwrap()["role"], "worker");
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(
            env["SIGHTLINE_MODULES"],
            Some("inventory,vulnerability".into())
        );
        assert_eq!(
            env["SIGHTLINE_VULN_DB_URL"].as_deref(),
            Some("https://10.96.0.12:443/api/v1/vulndb")
        );
        assert_eq!(env["SIGHTLINE_REFRESH_SECONDS"].as_deref(), Some("60"));
        assert_eq!(c.image.as_deref(), Some("sightline/sensor:test"));
        assert_eq!(
            env["SIGHTLINE_API_URL"].as_deref(),
            Some("https://10.96.0.12:443")
        );
        assert!(
            env["SIGHTLINE_API_CA"]
                .as_deref()
                .is_some_and(|ca| ca.starts_with("-----BEGIN CERTIFICATE-----"))
        );
        assert_eq!(
            env["SIGHTLINE_TOKEN_FILE"].as_deref(),
            Some("/var/run/secrets/sightline.dev/token")
        );
    }

    #[test]
    fn every_sensor_gets_a_short_lived_token_for_the_operator_only() {
        for t in [
            SensorType::Container,
            SensorType::Registry,
            SensorType::Runtime,
        ] {
            let p = pod(&workload(
                &sensor(t),
                &key(),
                &defaults(),
                ObjectMeta::default(),
            ));
            let volumes = p.volumes.clone().unwrap_or_default();
            let token = volumes
                .iter()
                .find(|v| v.name == TOKEN_VOLUME)
                .and_then(|v| v.projected.as_ref())
                .and_then(|p| p.sources.as_ref())
                .and_then(|s| s.first())
                .and_then(|s| s.service_account_token.clone())
                .expect("a projected token");
            assert_eq!(token.audience.as_deref(), Some("sightline"));
            assert_eq!(token.expiration_seconds, Some(3600));
            let mounts = p.containers[0].volume_mounts.clone().unwrap_or_default();
            assert!(
                mounts
                    .iter()
                    .any(|m| m.name == TOKEN_VOLUME && m.read_only == Some(true)),
                "{t:?}: {mounts:?}"
            );
        }
    }

    #[test]
    fn runtime_sensor_gets_host_pid_and_bpf_capabilities_but_is_not_privileged() {
        let p = pod(&workload(
            &sensor(SensorType::Runtime),
            &key(),
            &defaults(),
            ObjectMeta::default(),
        ));
        assert_eq!(p.host_pid, Some(true));
        let sc = p.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(
            sc.capabilities.unwrap().add.unwrap(),
            ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"].map(String::from)
        );
        let mounts: Vec<String> = p.containers[0]
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        for path in ["/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup"] {
            assert!(mounts.contains(&path.to_string()), "{mounts:?}");
        }
        assert!(
            !mounts.iter().any(|m| m.starts_with("/sys/fs/bpf")),
            "nothing is pinned: {mounts:?}"
        );
    }

    #[test]
    fn registry_sensor_is_a_non_root_cronjob_with_its_credentials_mounted() {
        let w = workload(
            &sensor(SensorType::Registry),
            &key(),
            &defaults(),
            ObjectMeta::default(),
        );
        let Workload::CronJob(cj) = &w else {
            panic!("expected a CronJob")
        };
        assert_eq!(cj.spec.as_ref().unwrap().schedule, "0 * * * *");
        let job = cj
            .spec
            .as_ref()
            .unwrap()
            .job_template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(
            job.active_deadline_seconds,
            Some(45 * 60),
            "a hung scan is stopped at its timeout"
        );
        let p = pod(&w);
        assert_eq!(p.restart_policy.as_deref(), Some("OnFailure"));
        let sc = p.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert!(
            p.volumes.unwrap().iter().any(|v| v
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
                == Some("creds"))
        );
    }

    #[test]
    fn sockets_in_shared_directories_are_mounted_alone() {
        assert_eq!(
            socket_mount_path("/var/run/docker.sock"),
            ("/var/run/docker.sock", "Socket")
        );
        assert_eq!(
            socket_mount_path("/run/containerd/containerd.sock"),
            ("/run/containerd", "Directory")
        );
    }
}
