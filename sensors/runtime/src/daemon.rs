//! `sightline-sensor runtime`: watches the RuntimePolicies of the cluster
//! and the pods on this node, keeps the enforcement state equal to them,
//! and reports every violation (a JSON line in OCSF shape on stdout, a
//! Kubernetes Event on the pod, the policy's status and the container's
//! Asset).

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use sightline_crds::runtime_policy::RuntimePolicy;
use sightline_crds::sensor::{Enforcement, Enforcer, RuntimeSensor, Unhashed};

use crate::attribution::{Attributor, Origin};
use crate::guard::{Guard, Guards};
use crate::metrics::{KindLabel, Metrics, OutcomeLabel, kind_name};
use crate::ocsf::{self, Owner, enforcer_name};
use crate::rules::PolicyRef;
use crate::sensor::{Applied, Options, Report, Sensor, Violation, WorkloadSpec};
use crate::webhook::Webhook;
use sightline_report::{PolicyNode, PolicyReport, PolicyViolations};

/// The runtime sensor's settings (the environment the operator's DaemonSet
/// sets: `NODE_NAME`, `SIGHTLINE_SENSOR`, `SIGHTLINE_CONFIG` holding the
/// Sensor's `spec.runtime`).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub node: String,
    /// `<namespace>/<name>` of the Sensor.
    pub sensor: String,
    /// The Sensor's `spec.runtime`.
    pub runtime: RuntimeSensor,
    /// How often pods' containers are matched to cgroups again (new
    /// containers are found at once through pod updates too).
    pub resync: Duration,
    /// Print every event, not only violations (`SIGHTLINE_RUNTIME_EVENTS=all`).
    pub all_events: bool,
    /// Where OCSF events are also POSTed (`SIGHTLINE_RUNTIME_WEBHOOK`).
    pub webhook: Option<String>,
    /// Where `/metrics` is served (`SIGHTLINE_METRICS_ADDR`, default
    /// `0.0.0.0:9464`).
    pub metrics_addr: std::net::SocketAddr,
    /// The operator's API, where violations are reported
    /// (`SIGHTLINE_API_URL`); none when the sensor runs on its own.
    pub api_url: Option<String>,
    /// The token (audience `sightline`) for it (`SIGHTLINE_TOKEN_FILE`).
    pub token_file: std::path::PathBuf,
    /// The CA (PEM) the API's certificate is issued by (`SIGHTLINE_API_CA`).
    pub api_ca: Option<Vec<u8>>,
}

impl Config {
    /// Reads the settings, naming what is missing or malformed.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let node = get("NODE_NAME")
            .filter(|v| !v.is_empty())
            .ok_or("NODE_NAME is not set (the DaemonSet sets it from spec.nodeName)")?;
        let sensor = get("SIGHTLINE_SENSOR").unwrap_or_else(|| "standalone".into());
        let runtime = match get("SIGHTLINE_CONFIG").filter(|v| !v.is_empty() && v != "null") {
            None => RuntimeSensor::default(),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| format!("SIGHTLINE_CONFIG is not a Sensor's spec.runtime: {e}"))?,
        };
        if !(1..=4096).contains(&runtime.max_hash_mib) {
            return Err(format!(
                "SIGHTLINE_CONFIG's maxHashMiB is {}: use 1 to 4096",
                runtime.max_hash_mib
            ));
        }
        let all_events = match get("SIGHTLINE_RUNTIME_EVENTS").as_deref() {
            None | Some("") | Some("violations") => false,
            Some("all") => true,
            Some(other) => {
                return Err(format!(
                    "SIGHTLINE_RUNTIME_EVENTS is {other:?}: use violations or all"
                ));
            }
        };
        let metrics_addr = get("SIGHTLINE_METRICS_ADDR")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "0.0.0.0:9464".into());
        let metrics_addr = metrics_addr.parse().map_err(|_| {
            format!("SIGHTLINE_METRICS_ADDR is {metrics_addr:?}: expected address:port")
        })?;
        Ok(Config {
            api_url: get("SIGHTLINE_API_URL").filter(|v| !v.is_empty()),
            token_file: get("SIGHTLINE_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/var/run/secrets/sightline.dev/token".into()),
            api_ca: get(sightline_report::client::API_CA_ENV)
                .filter(|v| !v.trim().is_empty())
                .map(String::into_bytes),
            webhook: get("SIGHTLINE_RUNTIME_WEBHOOK").filter(|v| !v.is_empty()),
            metrics_addr,
            node,
            sensor,
            runtime,
            resync: Duration::from_secs(10),
            all_events,
        })
    }
}

/// The container id in a runtime's `containerID` (`containerd://<id>`).
pub fn container_id(status_id: &str) -> Option<&str> {
    let id = status_id.split_once("://").map_or(status_id, |(_, id)| id);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The cgroup directory of a container: the one whose name carries its id
/// (`<id>` under cgroupfs, `cri-containerd-<id>.scope` or
/// `docker-<id>.scope` under systemd).
pub fn find_cgroup(root: &Path, id: &str) -> Option<PathBuf> {
    crate::sensor::search_cgroups(root, 8, |name| name.contains(id), |_| true)
}

/// A process in a cgroup (its first), to reach the container's root.
fn first_pid(cgroup: &Path) -> Option<u32> {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).ok()?;
    procs.lines().next()?.trim().parse().ok()
}

struct Reporting {
    node: String,
    recorder: Recorder,
    owners: Mutex<HashMap<u64, (Owner, Option<ObjectReference>)>>,
    attributor: Mutex<Attributor>,
    all_events: bool,
    metrics: Metrics,
    webhook: Option<Webhook>,
    pending: Mutex<HashMap<PolicyRef, (i64, jiff::Timestamp)>>,
    asset_counts: Mutex<HashMap<String, i64>>,
    /// Sends violations to the operator, which records them on the
    /// containers' Assets.
    reports: Option<sightline_report::client::Client>,
}

/// Runs until `shutdown` resolves. Enforcement is released when it returns
/// (nothing is pinned): see the README's "Fail-safe".
pub async fn run(
    cfg: Config,
    client: Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let opts = Options {
        enforcers: cfg.runtime.enforcers.clone(),
        audit_only: cfg.runtime.enforcement == Enforcement::AuditOnly,
        hashing: crate::fanotify::Hashing {
            max_bytes: u64::from(cfg.runtime.max_hash_mib) << 20,
            refuse_unknown: cfg.runtime.unhashed == Unhashed::Deny,
        },
        ..Options::default()
    };
    let cgroup_root = opts.cgroup_root.clone();
    let sensor = tokio::task::spawn_blocking(move || Sensor::start(opts)).await??;
    let mut reasons = Vec::new();
    reasons.extend(sensor.lsm_reason());
    reasons.extend(sensor.fanotify_reason());
    tracing::info!(node = %cfg.node, unavailable = ?reasons, "runtime sensor started");
    let ring = ring_waker(sensor.ring().as_fd().try_clone_to_owned()?);
    let sensor = Arc::new(Mutex::new(sensor));

    let pods: Api<Pod> = Api::all(client.clone());
    let (pod_store, pod_writer) = reflector::store();
    let pod_changes = reflector::reflector(
        pod_writer,
        watcher(
            pods,
            watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node)),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ());
    let policies: Api<RuntimePolicy> = Api::all(client.clone());
    let (policy_store, policy_writer) = reflector::store();
    let policy_changes =
        reflector::reflector(policy_writer, watcher(policies, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .map(|_| ());
    let mut changes = futures::stream::select(pod_changes, policy_changes).boxed();

    let metrics = Metrics::default();
    let webhook = match cfg.webhook.clone() {
        Some(url) => {
            Some(Webhook::start(url, metrics.webhook_dropped.clone()).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let server = tokio::spawn(crate::metrics::serve(cfg.metrics_addr, metrics.clone()));
    let reports = match &cfg.api_url {
        Some(url) => Some(sightline_report::client::Client::new(
            url,
            sightline_report::client::Credentials::TokenFile(cfg.token_file.clone()),
            cfg.api_ca.as_deref(),
        )?),
        None => {
            tracing::info!("SIGHTLINE_API_URL is not set: violations are not recorded on Assets");
            None
        }
    };
    let reporting = Arc::new(Reporting {
        node: cfg.node.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sightline-runtime-sensor".into(),
                instance: Some(cfg.node.clone()),
            },
        ),
        owners: Mutex::new(HashMap::new()),
        attributor: Mutex::new(Attributor::new(cgroup_root.clone())),
        all_events: cfg.all_events,
        metrics: metrics.clone(),
        webhook,
        pending: Mutex::new(HashMap::new()),
        asset_counts: Mutex::new(HashMap::new()),
        reports,
    });
    let mut resync = tokio::time::interval(cfg.resync);
    let mut flush = tokio::time::interval(Duration::from_secs(2));
    let mut node_status: HashMap<PolicyRef, (Option<Enforcer>, bool, String)> = HashMap::new();
    let mut guards = Guards::new(cgroup_root.clone());
    // Selected pods whose cgroup kubelet has not made yet.
    let mut waiting = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            change = changes.next() => {
                if change.is_none() { break; }
                // New pods are guarded at once, before their containers
                // exist; the full pass lets a burst of updates settle.
                guard_pods(&sensor, &pod_store, &policy_store, &mut guards, &reporting);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let status;
                (status, waiting) = reconcile(&sensor, &pod_store, &policy_store, &cgroup_root, &mut guards, &reporting);
                publish_node_status(&reporting, &mut node_status, status).await;
            }
            _ = tokio::time::sleep(GUARD_POLL), if waiting => {
                waiting = guard_pods(&sensor, &pod_store, &policy_store, &mut guards, &reporting);
            }
            _ = resync.tick() => {
                let status;
                (status, waiting) = reconcile(&sensor, &pod_store, &policy_store, &cgroup_root, &mut guards, &reporting);
                publish_node_status(&reporting, &mut node_status, status).await;
            }
            _ = ring.ready.notified() => {
                drain(&sensor, &reporting).await;
                let _ = ring.drained.send(());
            }
            _ = flush.tick() => {
                drain(&sensor, &reporting).await;
                if let Ok(s) = sensor.lock() {
                    let lost = metrics.observe_drops(s.drops());
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "violations were enforced but their records were lost (the ring buffer was full); counted in sightline_runtime_dropped_total{{kind=\"violation\"}}"
                        );
                    }
                    metrics.workloads.set(s.counts().0 as i64);
                    metrics.unprotected.set(s.unprotected() as i64);
                }
                if server.is_finished() {
                    anyhow::bail!("serving metrics on {} stopped (is the port taken?)", cfg.metrics_addr);
                }
                flush_policy_counts(&reporting).await;
            }
        }
    }
    drain(&sensor, &reporting).await;
    flush_policy_counts(&reporting).await;
    Ok(())
}

/// Wakes the event loop when the ring buffer has records: a thread polls
/// the map's descriptor and waits for the loop to drain it before polling
/// again.
struct RingWaker {
    ready: Arc<tokio::sync::Notify>,
    drained: std::sync::mpsc::Sender<()>,
}

fn ring_waker(fd: std::os::fd::OwnedFd) -> RingWaker {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ready = Arc::new(tokio::sync::Notify::new());
    let (drained, acks) = std::sync::mpsc::channel::<()>();
    let notify = ready.clone();
    std::thread::spawn(move || {
        loop {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("polling the ring buffer: {e}");
                    return;
                }
            }
            notify.notify_one();
            // The loop is gone when the sender is: stop.
            if acks.recv().is_err() {
                return;
            }
        }
    });
    RingWaker { ready, drained }
}

/// How often pods waiting for kubelet to make their cgroup are looked for.
const GUARD_POLL: Duration = Duration::from_millis(20);

/// The policies selecting `pod`'s containers of an image known by
/// `images` (see [`image_names`]): by namespace, pod labels and, for a
/// policy with an `imageQuery`, the images the operator listed for it.
fn selecting(
    policies: &[Arc<RuntimePolicy>],
    pod: &Pod,
    images: &[String],
) -> Vec<(PolicyRef, sightline_crds::runtime_policy::RuntimePolicySpec)> {
    let ns = pod.namespace().unwrap_or_default();
    policies
        .iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && sightline_crds::selector::matches(&p.spec.pod_selector, pod.labels())
                && p.selects_image(images.iter().map(String::as_str))
        })
        .map(|p| {
            (
                PolicyRef {
                    namespace: ns.clone(),
                    name: p.name_any(),
                },
                p.spec.clone(),
            )
        })
        .collect()
}

/// The names an image is known by in the inventory, from the references a
/// pod or its status gives (`debian:12` is `docker.io/library/debian:12`;
/// an image ID is kept as it is).
fn image_names<'a>(references: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut names = Vec::new();
    for r in references {
        if let Some(parsed) = sightline_inventory::images::Reference::parse(r) {
            names.extend(parsed.keys());
        }
        names.push(r.trim().to_ascii_lowercase());
    }
    names
}

/// The images a pod's spec names, for guarding it before its containers
/// report theirs.
fn pod_images(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    image_names(containers.filter_map(|c| c.image.as_deref()))
}

/// Guards every selected pod on the node (see [`crate::guard`]); only new
/// pods and changed policies cost anything. Returns whether a selected pod
/// is still waiting for kubelet to make its cgroup.
fn guard_pods(
    sensor: &Mutex<Sensor>,
    pods: &Store<Pod>,
    policies: &Store<RuntimePolicy>,
    guards: &mut Guards,
    reporting: &Reporting,
) -> bool {
    let Ok(mut sensor) = sensor.lock() else {
        return false;
    };
    let policies = policies.state();
    let mut waiting = false;
    for pod in pods.state() {
        let selecting = selecting(&policies, &pod, &pod_images(&pod));
        waiting |=
            guards.guard(&mut sensor, &pod, &selecting, &reporting.metrics) == Guard::Waiting;
    }
    waiting
}

/// Matches every running container on the node to its cgroup and the
/// policies selecting its pod, and applies that; guards selected pods
/// whose containers are not known yet. Returns, per policy, how this node
/// enforces it, and whether a selected pod waits for its cgroup.
fn reconcile(
    sensor: &Mutex<Sensor>,
    pods: &Store<Pod>,
    policies: &Store<RuntimePolicy>,
    cgroup_root: &Path,
    guards: &mut Guards,
    reporting: &Reporting,
) -> (HashMap<PolicyRef, NodeStatus>, bool) {
    let Ok(mut sensor) = sensor.lock() else {
        return (HashMap::new(), false);
    };
    let policies = policies.state();
    let mut wanted = HashSet::new();
    let mut waiting = false;
    let mut status: HashMap<PolicyRef, (Option<Enforcer>, bool, String)> = HashMap::new();
    let mut owners = HashMap::new();
    let pods = pods.state();
    guards.retain(&pods.iter().filter_map(|p| p.uid()).collect());
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        let guarding = selecting(&policies, &pod, &pod_images(&pod));
        match guards.guard(&mut sensor, &pod, &guarding, &reporting.metrics) {
            Guard::NotNeeded => {}
            Guard::Waiting => waiting = true,
            Guard::Guarded(id) => {
                wanted.insert(id);
            }
            Guard::Failed(id, e) => {
                wanted.insert(id);
                for (p, _) in &guarding {
                    let who = format!("pod {ns}/{} before its containers start", pod.name_any());
                    merge(&mut status, p, (None, false, format!("{who}: {e}")));
                }
            }
        }
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for cs in statuses {
            let Some(id) = cs.container_id.as_deref().and_then(container_id) else {
                continue;
            };
            let Some(cgroup) = find_cgroup(cgroup_root, id) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(&cgroup) else {
                continue;
            };
            let cgroup_id = std::os::unix::fs::MetadataExt::ino(&meta);
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                namespace: Some(ns.clone()),
                uid: pod.uid(),
                ..ObjectReference::default()
            };
            owners.insert(
                cgroup_id,
                (
                    Owner {
                        container_id: Some(id.to_string()),
                        container: Some(cs.name.clone()),
                        pod: Some(pod.name_any()),
                        namespace: Some(ns.clone()),
                        pod_uid: pod.uid(),
                    },
                    Some(reference),
                ),
            );
            let images = image_names([cs.image.as_str(), cs.image_id.as_str()]);
            let selecting = selecting(&policies, &pod, &images);
            if selecting.is_empty() {
                continue;
            }
            let root = first_pid(&cgroup).map(|pid| PathBuf::from(format!("/proc/{pid}/root")));
            let spec = WorkloadSpec {
                cgroup,
                root,
                policies: selecting.clone(),
                guard: false,
            };
            wanted.insert(cgroup_id);
            let who = format!("pod {ns}/{} container {}", pod.name_any(), cs.name);
            match sensor.apply(&spec) {
                Ok(applied) => record_status(&mut status, &selecting, &applied, &sensor, &who),
                Err(e) => {
                    for (p, _) in &selecting {
                        merge(&mut status, p, (None, false, format!("{who}: {e}")));
                    }
                }
            }
        }
    }
    for id in sensor.tracked() {
        if !wanted.contains(&id) {
            sensor.remove(id);
        }
    }
    if let Ok(mut o) = reporting.owners.lock() {
        *o = owners;
    }
    // Policies selecting no pod here are still reported: ready, nothing to enforce.
    for p in policies.iter() {
        let r = PolicyRef {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
        };
        status
            .entry(r)
            .or_insert((None, true, "no selected pod runs on this node".into()));
    }
    (status, waiting)
}

/// A policy's status on this node: enforcer, ready, why.
type NodeStatus = (Option<Enforcer>, bool, String);

/// Most workloads named in one policy's reason.
const MAX_NAMED: usize = 5;

/// Adds one workload's outcome to a policy's status on this node: the
/// policy is ready only if it holds on every workload it selects, and the
/// reason names the ones where it does not (the first few).
fn merge(status: &mut HashMap<PolicyRef, NodeStatus>, policy: &PolicyRef, entry: NodeStatus) {
    match status.get_mut(policy) {
        Some(old) if !old.1 && entry.1 => {}
        Some(old) if !old.1 && !entry.1 => {
            let named = old.2.matches("; pod ").count() + 1;
            if named < MAX_NAMED {
                old.2 = format!("{}; {}", old.2, entry.2);
            } else if named == MAX_NAMED {
                old.2.push_str("; and more");
            }
        }
        _ => {
            status.insert(policy.clone(), entry);
        }
    }
}

fn record_status(
    status: &mut HashMap<PolicyRef, NodeStatus>,
    selecting: &[(PolicyRef, sightline_crds::runtime_policy::RuntimePolicySpec)],
    applied: &Applied,
    sensor: &Sensor,
    who: &str,
) {
    for (p, _) in selecting {
        if let Some(err) = applied.errors.iter().find(|e| &e.policy == p) {
            merge(status, p, (None, false, err.to_string()));
            continue;
        }
        if let Some(why) = &applied.unprotected {
            let enforcer = applied.exec.or(applied.file).or(applied.net);
            merge(status, p, (enforcer, false, format!("{who}: {why}")));
            continue;
        }
        // The enforcer of the policy's strongest rule kind: exec, file, then connect.
        let enforcer = applied.exec.or(applied.file).or(applied.net);
        let mut parts = Vec::new();
        for (what, e) in [
            ("exec", applied.exec),
            ("file", applied.file),
            ("connect", applied.net),
        ] {
            if let Some(e) = e {
                parts.push(format!("{what} rules: {}", enforcer_name(e)));
            }
        }
        parts.extend(sensor.lsm_reason());
        if applied.exec != Some(Enforcer::Fanotify) && applied.file != Some(Enforcer::Fanotify) {
            parts.extend(sensor.fanotify_reason());
        }
        parts.extend(applied.notes.iter().cloned());
        merge(status, p, (enforcer, true, parts.join("; ")));
    }
}

/// Reports this node's entry of each policy's `status.nodes` when it
/// changed; the operator writes it. Entries the operator did not take are
/// reported again at the next pass.
async fn publish_node_status(
    r: &Reporting,
    last: &mut HashMap<PolicyRef, (Option<Enforcer>, bool, String)>,
    now: HashMap<PolicyRef, (Option<Enforcer>, bool, String)>,
) {
    let Some(client) = &r.reports else {
        *last = now;
        return;
    };
    let changed: Vec<(&PolicyRef, PolicyReport)> = now
        .iter()
        .filter(|(p, entry)| last.get(*p) != Some(*entry))
        .map(|(p, (enforcer, ready, reason))| {
            (
                p,
                PolicyReport {
                    policy: p.to_string(),
                    node: Some(PolicyNode {
                        enforcer: *enforcer,
                        ready: *ready,
                        reason: reason.clone(),
                    }),
                    violations: None,
                },
            )
        })
        .collect();
    if changed.is_empty() {
        *last = now;
        return;
    }
    let (refs, reports): (Vec<&PolicyRef>, Vec<PolicyReport>) = changed.into_iter().unzip();
    let mut keep = now.clone();
    match client.send_policies(reports).await {
        Ok(refused) => {
            for x in refused {
                tracing::warn!(reason = %x.reason, "the operator refused this node's policy status: {}", x.message);
                if let Some(p) = refs.get(x.index) {
                    keep.remove(*p);
                }
            }
        }
        Err(e) => {
            tracing::warn!(
                reason = e.reason(),
                "reporting this node's policy status: {e}"
            );
            for p in refs {
                keep.remove(p);
            }
        }
    }
    *last = keep;
}

async fn drain(sensor: &Mutex<Sensor>, r: &Reporting) {
    let mut violations = Vec::new();
    if let Ok(mut s) = sensor.lock() {
        s.drain(|rep| match rep {
            Report::Violation(v) => {
                let outcome = match v.outcome {
                    crate::sensor::Outcome::Reported => "reported",
                    crate::sensor::Outcome::Denied => "denied",
                    crate::sensor::Outcome::Killed => "killed",
                };
                r.metrics
                    .violations
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.into(),
                    })
                    .inc();
                violations.push(v);
            }
            Report::Event(ev) if r.all_events => {
                count_event(r, &ev);
                let owner = owner_of(r, ev.common().cgroup_id).0;
                emit(
                    r,
                    ocsf::activity(&ev, &owner, &r.node, jiff::Timestamp::now()),
                );
            }
            Report::Event(ev) => count_event(r, &ev),
        });
    }
    for v in violations {
        report(r, &v).await;
    }
}

/// An OCSF event to stdout and, when configured, the webhook.
fn emit(r: &Reporting, event: serde_json::Value) {
    println!("{event}");
    if let Some(w) = &r.webhook {
        w.send(event);
    }
}

fn count_event(r: &Reporting, ev: &crate::event::Event) {
    use crate::event::Event;
    let k = match ev {
        Event::Exec(_) => sightline_runtime_common::kind::EXEC,
        Event::Exit(_) => sightline_runtime_common::kind::EXIT,
        Event::Open(_) => sightline_runtime_common::kind::OPEN,
        Event::Connect(_) => sightline_runtime_common::kind::CONNECT,
    };
    r.metrics
        .events
        .get_or_create(&KindLabel {
            kind: kind_name(k).into(),
        })
        .inc();
}

/// The pod and container of a cgroup: from the pods on this node when it
/// is one of their containers, else from the cgroup's path (another
/// runtime's container, or the host).
fn owner_of(r: &Reporting, cgroup_id: u64) -> (Owner, Option<ObjectReference>) {
    if let Some(known) = r
        .owners
        .lock()
        .ok()
        .and_then(|o| o.get(&cgroup_id).cloned())
    {
        return known;
    }
    let origin = r
        .attributor
        .lock()
        .ok()
        .and_then(|mut a| a.origin(cgroup_id));
    match origin {
        Some(Origin::Container { id, pod_uid }) => (
            Owner {
                container_id: Some(id),
                pod_uid,
                ..Owner::default()
            },
            None,
        ),
        _ => (Owner::default(), None),
    }
}

async fn report(r: &Reporting, v: &Violation) {
    let now = jiff::Timestamp::now();
    let (owner, reference) = owner_of(r, v.cgroup_id);
    emit(r, ocsf::event(v, &owner, &r.node, now));
    if let Ok(mut p) = r.pending.lock() {
        let e = p.entry(v.rule.policy.clone()).or_insert((0, now));
        e.0 += 1;
        e.1 = now;
    }
    if let Some(reference) = reference {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "RuntimePolicyViolation".into(),
            note: Some(ocsf::message(v)),
            action: match v.outcome {
                crate::sensor::Outcome::Reported => "Audit".into(),
                _ => "Block".into(),
            },
            secondary: None,
        };
        if let Err(e) = r.recorder.publish(&event, &reference).await {
            tracing::warn!("publishing the violation's Event: {e}");
        }
    }
    if let Some(id) = &owner.container_id {
        let count = r.asset_counts.lock().ok().map(|mut c| {
            let n = c.entry(id.clone()).or_insert(0);
            *n += 1;
            *n
        });
        if let Some(count) = count
            && let Err(e) = asset_finding(r, id, &owner, count, v, now).await
        {
            tracing::warn!(container = %id, "recording the violation on the container's Asset: {e}");
        }
    }
}

/// The container's Asset counts this sensor's violations
/// (`findings.runtime`) and keeps the last one in `observed`: reported to
/// the operator, which writes it.
async fn asset_finding(
    r: &Reporting,
    id: &str,
    owner: &Owner,
    count: i64,
    v: &Violation,
    now: jiff::Timestamp,
) -> Result<(), sightline_report::client::Error> {
    let Some(client) = &r.reports else {
        return Ok(());
    };
    let observation =
        sightline_report::Observation::RuntimeViolations(sightline_report::ViolationObservation {
            identity: id.to_owned(),
            count,
            last: sightline_report::Violation {
                time: now.to_string(),
                policy: v.rule.policy.to_string(),
                message: ocsf::message(v),
            },
            pod: owner.pod.clone(),
            namespace: owner.namespace.clone(),
            container: owner.container.clone(),
        });
    let receipt = client.send(vec![observation], None).await?;
    for refused in receipt.refused {
        tracing::warn!(container = %id, reason = %refused.reason, "the operator refused the violation: {}", refused.message);
    }
    Ok(())
}

/// Reports the violations counted since the last flush; the operator adds
/// them to each policy's `status.violations`. Counts the operator did not
/// take are kept for the next flush: counts are never dropped.
async fn flush_policy_counts(r: &Reporting) {
    let pending: Vec<_> = match r.pending.lock() {
        Ok(mut p) => p.drain().collect(),
        Err(_) => return,
    };
    if pending.is_empty() {
        return;
    }
    let Some(client) = &r.reports else {
        return;
    };
    let reports: Vec<PolicyReport> = pending
        .iter()
        .map(|(p, (n, last))| PolicyReport {
            policy: p.to_string(),
            node: None,
            violations: Some(PolicyViolations {
                count: *n,
                last: last.to_string(),
            }),
        })
        .collect();
    let failed: Vec<usize> = match client.send_policies(reports).await {
        // A refusal is final (the policy is gone, or this sensor may not
        // count): sending the count again would be refused again.
        Ok(refused) => {
            for x in refused {
                tracing::warn!(reason = %x.reason, "the operator refused a violation count: {}", x.message);
            }
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(reason = e.reason(), "counting violations: {e}");
            (0..pending.len()).collect()
        }
    };
    if let Ok(mut kept) = r.pending.lock() {
        for i in failed {
            if let Some((p, (n, last))) = pending.get(i) {
                let e = kept.entry(p.clone()).or_insert((0, *last));
                e.0 += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_with_an_image_query_select_only_containers_of_listed_images() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "namespace": "ns", "labels": {"app": "shop"}},
            "spec": {"containers": [{"name": "app", "image": "debian:12"}]},
        }))
        .unwrap();
        let policy = |name: &str, query: Option<&str>, images: &[&str]| {
            let mut p: RuntimePolicy = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"podSelector": {"matchLabels": {"app": "shop"}},
                         "process": {"deny": [{"path": "/bin/echo"}]}},
            }))
            .unwrap();
            p.spec.image_query = query.map(str::to_owned);
            p.status = Some(sightline_crds::RuntimePolicyStatus {
                images: images.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            });
            Arc::new(p)
        };
        let policies = [
            policy("all", None, &[]),
            policy(
                "vulnerable",
                Some("findings.vulnerabilities.critical>0"),
                &["docker.io/library/debian:12", "sha256:aa"],
            ),
            policy("eol", Some("os.lifecycle.stage:EndOfLife"), &[]),
        ];
        let names = |sel: Vec<(PolicyRef, _)>| -> Vec<String> {
            sel.into_iter().map(|(p, _)| p.name).collect()
        };
        // The pod's spec names `debian:12`: guarded by both that apply.
        assert_eq!(
            names(selecting(&policies, &pod, &pod_images(&pod))),
            ["all", "vulnerable"]
        );
        // A container reports its image by the runtime's names; the image
        // ID alone is enough.
        let running = image_names(["docker.io/library/debian:12", "sha256:AA"]);
        assert_eq!(
            names(selecting(&policies, &pod, &running)),
            ["all", "vulnerable"]
        );
        let by_id = image_names(["other:1", "sha256:aa"]);
        assert_eq!(
            names(selecting(&policies, &pod, &by_id)),
            ["all", "vulnerable"]
        );
        let other = image_names(["debian:11", "sha256:bb"]);
        assert_eq!(names(selecting(&policies, &pod, &other)), ["all"]);
    }

    #[test]
    fn a_policy_is_ready_only_where_it_holds_on_every_pod_and_names_the_others() {
        let p = PolicyRef {
            namespace: "shop".into(),
            name: "block".into(),
        };
        let ok = |why: &str| (Some(Enforcer::Fanotify), true, why.to_owned());
        let failed = |pod: &str| {
            (
                Some(Enforcer::Fanotify),
                false,
                format!("pod shop/{pod} container app: fanotify: gone"),
            )
        };
        let mut status = HashMap::new();
        merge(&mut status, &p, ok("exec rules: fanotify"));
        merge(&mut status, &p, failed("web-1"));
        // A later pod where it holds does not hide the one where it does not.
        merge(&mut status, &p, ok("exec rules: fanotify"));
        for i in 2..10 {
            merge(&mut status, &p, failed(&format!("web-{i}")));
        }
        let (_, ready, why) = &status[&p];
        assert!(!ready);
        assert!(why.starts_with("pod shop/web-1 container app"), "{why}");
        assert_eq!(why.matches("pod shop/").count(), MAX_NAMED, "{why}");
        assert!(why.ends_with("; and more"), "{why}");
    }

    #[test]
    fn container_ids_come_from_runtime_urls() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("containerd://{id}")),
            Some(id.as_str())
        );
        assert_eq!(container_id("docker://short"), None);
    }

    #[test]
    fn config_names_what_is_wrong() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(
            Config::from_env(env(&[]))
                .unwrap_err()
                .contains("NODE_NAME")
        );
        let bad = Config::from_env(env(&[
            ("NODE_NAME", "n"),
            ("SIGHTLINE_CONFIG", "{\"enforcers\":[\"Selinux\"]}"),
        ]));
        assert!(bad.unwrap_err().contains("SIGHTLINE_CONFIG"));
        let ok = Config::from_env(env(&[
            ("NODE_NAME", "n"),
            (
                "SIGHTLINE_CONFIG",
                "{\"enforcement\":\"AuditOnly\",\"enforcers\":[\"signal\"]}",
            ),
        ]));
        let ok = ok.expect("valid");
        assert_eq!(ok.runtime.enforcers, vec![Enforcer::Signal]);
        assert_eq!(ok.runtime.enforcement, Enforcement::AuditOnly);
        assert_eq!(
            (ok.runtime.max_hash_mib, ok.runtime.unhashed),
            (256, Unhashed::Deny)
        );
        let zero = Config::from_env(env(&[
            ("NODE_NAME", "n"),
            ("SIGHTLINE_CONFIG", "{\"maxHashMiB\":0}"),
        ]));
        assert_eq!(
            zero.unwrap_err(),
            "SIGHTLINE_CONFIG's maxHashMiB is 0: use 1 to 4096"
        );
        let set = Config::from_env(env(&[
            ("NODE_NAME", "n"),
            (
                "SIGHTLINE_CONFIG",
                "{\"maxHashMiB\":16,\"unhashed\":\"Allow\"}",
            ),
        ]))
        .expect("valid");
        assert_eq!(
            (set.runtime.max_hash_mib, set.runtime.unhashed),
            (16, Unhashed::Allow)
        );
    }
}
