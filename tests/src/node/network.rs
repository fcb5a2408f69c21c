//! The node's pod network: a Linux bridge of our own with the gateway
//! address on it, and the CNI configuration (Debian's bridge, host-local
//! and loopback plugins) that puts each pod on it. No masquerading and no
//! port mapping, so the CNI plugins add no iptables rules; pods reach the
//! API server on the gateway through the `kubernetes` Service.
//!
//! The plugins are called through small wrappers that record every network
//! namespace they are handed, so a cleanup after a crash removes exactly
//! the namespaces this node's pods had, and no one else's.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::docker::checked;
use crate::{Error, Result, io};

/// The bridge every local node cluster uses; one such cluster runs per
/// machine (kube-proxy's iptables chains are global).
pub const BRIDGE: &str = "sl0";
/// The gateway, which is also the node's and the API server's address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The pod subnet.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The Service range (the API server's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The bridge, created by us and removed with the node.
#[derive(Debug)]
pub struct Network {
    /// The bridge's name.
    pub bridge: String,
    /// Its address, the pods' gateway.
    pub gateway: Ipv4Addr,
    removed: bool,
}

fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    checked(cmd, &format!("ip {}", args.join(" ")))
}

/// Whether a network interface exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Network {
    /// Creates the bridge with the gateway address. Fails when it already
    /// exists: another local node cluster is running (or one crashed
    /// without `cargo xtask cluster down`).
    pub fn create() -> Result<Network> {
        if link_exists(BRIDGE) {
            return Err(Error::MissingBinary(format!(
                "the network bridge {BRIDGE} exists: another local Sightline cluster with a node is running on this machine (only one can: kube-proxy's iptables rules are global); stop it with `cargo xtask cluster down`, or delete the bridge with `ip link del {BRIDGE}`"
            )));
        }
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        let net = Network {
            bridge: BRIDGE.to_owned(),
            gateway: GATEWAY,
            removed: false,
        };
        ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// Deletes the bridge and any veth still attached to it.
    pub fn remove(&mut self) {
        if !self.removed {
            remove_bridge(&self.bridge);
            self.removed = true;
        }
    }

    /// Forgets the bridge so dropping this keeps it (the cluster outlives
    /// `cargo xtask cluster up`).
    pub fn detach(&mut self) {
        self.removed = true;
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Deletes the veths attached to `bridge`, then the bridge.
pub fn remove_bridge(bridge: &str) {
    if !link_exists(bridge) {
        return;
    }
    if let Ok(out) = ip(&["-o", "link", "show", "master", bridge]) {
        for line in out.lines() {
            // "7: veth1234@if3: <...>"
            if let Some(name) = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or(""))
                && !name.is_empty()
            {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    let _ = ip(&["link", "del", bridge]);
}

/// Writes the CNI configuration into `conf_dir` and the plugin wrappers
/// into `bin_dir`; the wrappers log each namespace to `netns_log`.
pub fn write_cni(conf_dir: &Path, bin_dir: &Path, netns_log: &Path, ipam_dir: &Path) -> Result<()> {
    for d in [conf_dir, bin_dir, ipam_dir] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "sightline",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir.display().to_string(),
            },
        }],
    });
    let path = conf_dir.join("10-sightline.conflist");
    std::fs::write(&path, conf.to_string()).map_err(io(format!("writing {}", path.display())))?;
    for plugin in ["bridge", "host-local", "loopback"] {
        let script = format!(
            "#!/bin/sh\n# Records the namespace, then runs Debian's plugin.\n\
             [ -n \"$CNI_NETNS\" ] && echo \"$CNI_NETNS\" >> '{log}'\n\
             exec /usr/lib/cni/{plugin} \"$@\"\n",
            log = netns_log.display()
        );
        let path = bin_dir.join(plugin);
        std::fs::write(&path, script).map_err(io(format!("writing {}", path.display())))?;
        crate::binaries::set_executable(&path)?;
    }
    Ok(())
}

/// The namespaces the wrappers recorded, each once.
pub fn recorded_netns(log: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut seen: Vec<PathBuf> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let p = PathBuf::from(line);
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}
