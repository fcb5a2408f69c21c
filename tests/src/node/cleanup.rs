//! What a node leaves on the machine, and how it is taken away again:
//! exactly what it added. Processes are stopped by their owners; this
//! removes the rest once they are gone — the pods' network namespaces (as
//! the CNI wrappers recorded them), mounts under the node's directory, the
//! veths and the bridge, the iptables chains kube-proxy and the kubelet
//! created (those that did not exist before the node started), and the
//! kubelet's empty `kubepods` cgroups.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::network::{recorded_netns, remove_bridge};

/// Everything the cleanup needs to know, kept in the cluster's state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cleanup {
    /// The node's directory (containerd, kubelet, CNI state).
    pub dir: PathBuf,
    /// The bridge.
    pub bridge: String,
    /// The log of network namespaces the CNI wrappers were handed.
    pub netns_log: PathBuf,
    /// `(command, table, chain)` of every chain that existed before the
    /// node started, for iptables and ip6tables.
    pub chains_before: Vec<(String, String, String)>,
    /// The multi-call binary and its `kube-proxy` argument, for
    /// `kube-proxy --cleanup`.
    pub kube_proxy: Option<(PathBuf, Option<String>)>,
}

/// The tables kube-proxy and the kubelet write.
const TABLES: &[&str] = &["filter", "nat", "mangle"];
const IPTABLES: &[&str] = &["iptables", "ip6tables"];

/// Every chain of every table, as `(command, table, chain)`.
pub fn chains() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for cmd in IPTABLES {
        for table in TABLES {
            let Ok(o) = Command::new(cmd).args(["-t", table, "-S"]).output() else {
                continue;
            };
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                // "-N KUBE-SERVICES" (user chains) and "-P INPUT ACCEPT".
                if let Some(chain) = line.strip_prefix("-N ") {
                    out.push((
                        (*cmd).to_owned(),
                        (*table).to_owned(),
                        chain.trim().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

impl Cleanup {
    /// Removes what the node left, once its processes have stopped.
    pub fn run(&self) -> Vec<String> {
        let mut done = Vec::new();
        // kube-proxy's own cleanup removes its chains and the jumps into
        // them from the built-in chains.
        if let Some((program, first)) = &self.kube_proxy {
            let mut cmd = Command::new(program);
            if let Some(a) = first {
                cmd.arg(a);
            }
            if cmd
                .args(["--cleanup", "--v=0"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                done.push("kube-proxy's iptables rules".to_owned());
            }
        }
        // What is left of the chains created since the node started (the
        // kubelet's canaries and firewall): the rules jumping to them,
        // then the chains, flushed and deleted.
        let stale: Vec<(String, String, String)> = chains()
            .into_iter()
            .filter(|c| c.2.starts_with("KUBE-") && !self.chains_before.contains(c))
            .collect();
        for (cmd, table, chain) in &stale {
            for rule in jumps_to(cmd, table, chain) {
                let _ = Command::new(cmd)
                    .args(["-t", table, "-D"])
                    .args(&rule)
                    .output();
            }
        }
        for (cmd, table, chain) in &stale {
            let _ = Command::new(cmd).args(["-t", table, "-F", chain]).output();
            if Command::new(cmd)
                .args(["-t", table, "-X", chain])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                done.push(format!("{cmd} -t {table} chain {chain}"));
            }
        }
        for ns in recorded_netns(&self.netns_log) {
            if ns.exists() {
                let _ = Command::new("umount").arg("-l").arg(&ns).output();
                if std::fs::remove_file(&ns).is_ok() {
                    done.push(format!("network namespace {}", ns.display()));
                }
            }
        }
        for m in mounts_under(&self.dir) {
            if Command::new("umount")
                .arg("-l")
                .arg(&m)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                done.push(format!("mount {}", m.display()));
            }
        }
        if super::network::link_exists(&self.bridge) {
            remove_bridge(&self.bridge);
            done.push(format!("bridge {}", self.bridge));
        }
        remove_kubepods_cgroups();
        done
    }
}

/// The rules of `table` that jump to `chain`, each as the arguments after
/// `-A` (the chain they are in first), ready for `-D`.
fn jumps_to(cmd: &str, table: &str, chain: &str) -> Vec<Vec<String>> {
    let Ok(o) = Command::new(cmd).args(["-t", table, "-S"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .map(split_words)
        .filter(|w| w.windows(2).any(|p| p[0] == "-j" && p[1] == chain))
        .collect()
}

/// Splits an `iptables -S` line into words, double quotes grouping
/// (`--comment "a b"`) and a backslash escaping the next character.
fn split_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    any = true;
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Removes the kubelet's `kubepods` cgroup trees (empty once every pod's
/// processes are gone), deepest first, in every v1 hierarchy and in v2.
fn remove_kubepods_cgroups() {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for root in roots.flatten() {
        let top = root.path().join("kubepods");
        if top.is_dir() {
            remove_dirs_bottom_up(&top);
        }
    }
}

fn remove_dirs_bottom_up(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs_bottom_up(&e.path());
            }
        }
    }
    // cgroup directories are removed with rmdir, files and all.
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn iptables_rules_split_like_a_shell() {
        assert_eq!(
            split_words(r#"INPUT -m comment --comment "kubernetes firewall" -j KUBE-FIREWALL"#),
            [
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "kubernetes firewall",
                "-j",
                "KUBE-FIREWALL"
            ]
        );
        assert_eq!(
            split_words(r#"X --comment "" -j Y"#),
            ["X", "--comment", "", "-j", "Y"]
        );
    }
}
