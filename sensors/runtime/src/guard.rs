//! Pods guarded before their containers start.
//!
//! A container's own rules can only be applied once its cgroup is known,
//! and kubelet reports a container's id after it has started: its first
//! commands would run unjudged. So as soon as a pod selected by a policy
//! is on this node and kubelet has made the pod's cgroup, the policies'
//! rules are written for that cgroup. The `cgroup_mkdir` program then gives
//! every container cgroup created below it the same rules, in the kernel,
//! before anything can run in it; the container's own workload replaces
//! them once the container is known (and brings the fanotify enforcer, the
//! SHA-256 rules and allowlists, which a guard leaves out).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sightline_crds::runtime_policy::RuntimePolicySpec;

use crate::metrics::{Metrics, WhenLabel};
use crate::rules::PolicyRef;
use crate::sensor::{Sensor, WorkloadSpec};

/// What guarding one pod came to.
#[derive(Debug, PartialEq)]
pub enum Guard {
    /// No policy selects the pod, or it has finished.
    NotNeeded,
    /// Selected, but kubelet has not made its cgroup yet: look again soon.
    Waiting,
    /// The pod's cgroup (by id) carries its rules.
    Guarded(u64),
    /// Writing the rules failed (retried at the next pass).
    Failed(u64, String),
}

/// The pods' cgroups, found once each.
pub struct Guards {
    cgroup_root: PathBuf,
    cgroups: HashMap<String, PathBuf>,
}

impl Guards {
    /// Guards for pods under the cgroup v2 hierarchy at `cgroup_root`.
    pub fn new(cgroup_root: PathBuf) -> Self {
        Guards {
            cgroup_root,
            cgroups: HashMap::new(),
        }
    }

    /// Writes the rules of the policies `selecting` the pod on its cgroup.
    /// Applying the same policies again changes nothing.
    pub fn guard(
        &mut self,
        sensor: &mut Sensor,
        pod: &Pod,
        selecting: &[(PolicyRef, RuntimePolicySpec)],
        metrics: &Metrics,
    ) -> Guard {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if selecting.is_empty() || matches!(phase, Some("Succeeded" | "Failed")) {
            return Guard::NotNeeded;
        }
        let Some(uid) = pod.uid() else {
            return Guard::NotNeeded;
        };
        let path = match self.cgroups.get(&uid) {
            Some(p) => p.clone(),
            None => match find_pod_cgroup(&self.cgroup_root, &uid) {
                Some(p) => {
                    self.cgroups.insert(uid.clone(), p.clone());
                    p
                }
                // A running pod whose cgroup is not where kubelet puts it:
                // its containers get their rules when they are known.
                None if matches!(phase, None | Some("Pending")) => return Guard::Waiting,
                None => return Guard::NotNeeded,
            },
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            // Gone with the pod; the watch has not said so yet.
            self.cgroups.remove(&uid);
            return Guard::NotNeeded;
        };
        let id = meta.ino();
        let first = !sensor.tracks(id);
        // Counted before the rules are written: a container cgroup made
        // after this point inherits them.
        let children = first.then(|| child_cgroups(&path));
        let spec = WorkloadSpec {
            cgroup: path,
            root: None,
            policies: selecting.to_vec(),
            guard: true,
        };
        match sensor.apply(&spec) {
            Ok(_) => {
                if let Some(children) = children {
                    // The sandbox's cgroup comes first; more means a
                    // container's existed before its pod was guarded.
                    let when = if children <= 1 {
                        "before_containers"
                    } else {
                        "after_containers"
                    };
                    tracing::debug!(pod = %pod.name_any(), when, "pod guarded");
                    metrics
                        .guarded
                        .get_or_create(&WhenLabel { when: when.into() })
                        .inc();
                }
                Guard::Guarded(id)
            }
            Err(e) => Guard::Failed(id, e),
        }
    }

    /// Forgets the cgroups of pods not in `uids`.
    pub fn retain(&mut self, uids: &HashSet<String>) {
        self.cgroups.retain(|uid, _| uids.contains(uid));
    }
}

/// How many cgroups are directly below `dir`.
fn child_cgroups(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count()
    })
}

/// The cgroup kubelet made for the pod `uid`: `pod<uid>` under the
/// cgroupfs driver (`kubepods/besteffort/pod<uid>`), or
/// `kubepods-<qos>-pod<uid with underscores>.slice` under systemd. Only
/// kubelet's own directories are searched (`kubepods*`, `kubelet*`, the
/// QoS classes), a few levels deep, so `--cgroup-root` may add a level.
pub fn find_pod_cgroup(root: &Path, uid: &str) -> Option<PathBuf> {
    let cgroupfs = format!("pod{uid}");
    let systemd = format!("-pod{}.slice", uid.replace('-', "_"));
    crate::sensor::search_cgroups(
        root,
        4,
        |name| name == cgroupfs.as_str() || name.ends_with(systemd.as_str()),
        |name| {
            (name.starts_with("kube") && !name.contains("-pod"))
                || name == "besteffort"
                || name == "burstable"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroups_are_found_under_either_driver_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let uid = "0a1b2c3d-0000-4000-8000-000000000001";
        let cgroupfs = root.join(format!("kubepods/besteffort/pod{uid}"));
        std::fs::create_dir_all(cgroupfs.join("abc")).unwrap();
        assert_eq!(find_pod_cgroup(root, uid), Some(cgroupfs));

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let systemd = root.join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        ));
        std::fs::create_dir_all(&systemd).unwrap();
        assert_eq!(find_pod_cgroup(root, uid), Some(systemd));

        // Guaranteed pods sit under kubepods itself; --cgroup-root adds a level.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let nested = root.join(format!("kubelet/kubepods/pod{uid}"));
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(find_pod_cgroup(root, uid), Some(nested));

        // Outside kubelet's directories, a same-named cgroup is not the pod's.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(format!("system.slice/pod{uid}"))).unwrap();
        std::fs::create_dir_all(root.join("kubepods/besteffort/podother")).unwrap();
        assert_eq!(find_pod_cgroup(root, uid), None);
    }
}
