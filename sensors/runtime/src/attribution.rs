//! Which container (or the host) a cgroup id belongs to, from the cgroup
//! directory's path: runtimes name a container's cgroup after its id
//! (`…/<id>` under cgroupfs, `…/cri-containerd-<id>.scope`,
//! `…/docker-<id>.scope` under systemd) and the kubelet names a pod's after
//! its UID (`pod<uid>`, `kubepods-…-pod<uid_with_underscores>.slice`).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a process ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Not in any container: the node itself.
    Host,
    /// A container.
    Container {
        /// Its id (64 hex digits).
        id: String,
        /// The UID of its pod, when the kubelet made its cgroup.
        pod_uid: Option<String>,
    },
}

/// The origin encoded in a cgroup path (relative to the hierarchy's root).
pub fn origin_of_path(path: &str) -> Origin {
    let mut id = None;
    let mut pod_uid = None;
    for part in path.split('/') {
        if let Some(found) = hex64(part) {
            id = Some(found.to_string());
        }
        if let Some(uid) = pod_uid_of(part) {
            pod_uid = Some(uid);
        }
    }
    match id {
        Some(id) => Origin::Container { id, pod_uid },
        None => Origin::Host,
    }
}

/// The first run of exactly 64 hex digits in a path component.
fn hex64(part: &str) -> Option<&str> {
    let bytes = part.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if !bytes[start].is_ascii_hexdigit() {
            start += 1;
            continue;
        }
        let end = (start..bytes.len())
            .find(|&i| !bytes[i].is_ascii_hexdigit())
            .unwrap_or(bytes.len());
        if end - start == 64 {
            return part.get(start..end);
        }
        start = end;
    }
    None
}

fn pod_uid_of(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let idx = part.rfind("pod")?;
    let uid = part[idx + 3..].replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

/// Maps cgroup ids to origins, walking the hierarchy when it meets an id it
/// does not know (at most once a second, so a flood of short-lived cgroups
/// cannot turn into a flood of walks).
pub struct Attributor {
    root: PathBuf,
    known: HashMap<u64, Origin>,
    last_walk: Option<Instant>,
}

impl Attributor {
    /// For the hierarchy mounted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Attributor {
            root,
            known: HashMap::new(),
            last_walk: None,
        }
    }

    /// The origin of `cgroup_id`; `None` when the cgroup is not (or no
    /// longer) found.
    pub fn origin(&mut self, cgroup_id: u64) -> Option<Origin> {
        if let Some(o) = self.known.get(&cgroup_id) {
            return Some(o.clone());
        }
        if self
            .last_walk
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        self.walk();
        self.known.get(&cgroup_id).cloned()
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let mut known = HashMap::new();
        let mut stack = vec![(self.root.clone(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            if let Ok(m) = std::fs::metadata(&dir) {
                let rel = relative(&self.root, &dir);
                known.insert(m.ino(), origin_of_path(&rel));
            }
            if depth >= 10 {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push((e.path(), depth + 1));
                    }
                }
            }
        }
        self.known = known;
    }
}

fn relative(root: &Path, dir: &Path) -> String {
    format!("/{}", dir.strip_prefix(root).unwrap_or(dir).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_containers_and_pods() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(origin_of_path("/"), Origin::Host);
        assert_eq!(origin_of_path("/system.slice/sshd.service"), Origin::Host);
        assert_eq!(
            origin_of_path(&format!("/docker/{id}")),
            Origin::Container {
                id: id.clone(),
                pod_uid: None
            }
        );
        assert_eq!(
            origin_of_path(&format!(
                "/kubepods/besteffort/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427/{id}"
            )),
            Origin::Container {
                id: id.clone(),
                pod_uid: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into())
            }
        );
        assert_eq!(
            origin_of_path(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-{id}.scope"
            )),
            Origin::Container {
                id: id.clone(),
                pod_uid: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into())
            }
        );
        // 65 hex digits are not an id.
        assert_eq!(origin_of_path(&format!("/x/{id}0")), Origin::Host);
    }
}
