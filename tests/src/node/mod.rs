//! A real Kubernetes node on this machine: containerd with CRI, the
//! kubelet and kube-proxy (iptables mode), joined to a [`ControlPlane`]
//! that listens on the pod network's gateway. Every path is in the node's
//! own directory; what it adds to the machine (a bridge, network
//! namespaces, mounts, iptables chains, cgroups) is recorded and removed
//! by [`cleanup::Cleanup`], and nothing else is touched.
//!
//! Settings that this VM needs, and why:
//! - cgroupfs, not systemd (no systemd here), on hybrid cgroup v1;
//! - `oomScoreAdj: 0` and containerd's `restrict_oom_score_adj`: without
//!   `CAP_SYS_RESOURCE` a process may not lower its OOM score;
//! - kube-proxy leaves conntrack sysctls alone (`--conntrack-*=0`) and
//!   does not route NodePorts on localhost, so it writes no sysctl;
//! - the cluster DNS is CoreDNS on the gateway address ([`dns`]), with no
//!   forwarder: pods resolve Services, and nothing outside the cluster.

pub mod cleanup;
pub mod dns;
pub mod network;
pub mod storage;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;

use crate::containerd::{Containerd, Layout};
use crate::controlplane::ControlPlane;
use crate::process::{Proc, free_port};
use crate::{Error, Result, io};

pub use cleanup::Cleanup;
pub use network::Network;

/// The node's name.
pub const NODE_NAME: &str = "sightline-node";

/// A running node.
pub struct Node {
    dir: PathBuf,
    containerd: Option<Containerd>,
    kubelet: Option<Proc>,
    proxy: Option<Proc>,
    dns: Option<Proc>,
    kubelet_cmd: Vec<String>,
    cleanup: Cleanup,
    client: kube::Client,
    kubectl: Kubectl,
    stopped: bool,
}

impl Node {
    /// Starts containerd, the kubelet and kube-proxy in `dir` and waits
    /// until the Node is Ready. `cp` must have been started with
    /// `Options::node` set to [`NODE_NAME`] and its address on `net`.
    pub async fn start(cp: &ControlPlane, net: &Network, dir: &Path) -> Result<Node> {
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let chains_before = cleanup::chains();
        let netns_log = dir.join("netns.log");
        let cni_conf = dir.join("cni/net.d");
        let cni_bin = dir.join("cni/bin");
        network::write_cni(&cni_conf, &cni_bin, &netns_log, &dir.join("cni/ipam"))?;
        let kube_proxy = cp.binaries.program("kube-proxy");
        let cleanup = Cleanup {
            dir: dir.to_path_buf(),
            bridge: net.bridge.clone(),
            netns_log,
            chains_before,
            kube_proxy,
        };
        let containerd = Containerd::start_in(&Layout {
            dir: dir.join("containerd"),
            cni_conf_dir: cni_conf,
            cni_bin_dir: Some(cni_bin),
        })?;
        let mut node = Node {
            dir: dir.to_path_buf(),
            containerd: Some(containerd),
            kubelet: None,
            proxy: None,
            dns: None,
            kubelet_cmd: Vec::new(),
            cleanup,
            client: cp.client(),
            kubectl: Kubectl::of(cp)?,
            stopped: false,
        };
        node.dns = Some(dns::start(cp, net.gateway, dir).await?);
        node.kubelet_cmd = node.write_kubelet_config(cp, net)?;
        node.start_kubelet(cp)?;
        node.start_proxy(cp)?;
        node.wait_ready(Duration::from_secs(120)).await?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "node ready");
        Ok(node)
    }

    /// The node's containerd.
    pub fn containerd(&self) -> Result<&Containerd> {
        self.containerd
            .as_ref()
            .ok_or_else(|| Error::MissingBinary("the node's containerd is stopped".into()))
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What [`Cleanup::run`] needs, for a cluster that outlives this value.
    pub fn cleanup(&self) -> &Cleanup {
        &self.cleanup
    }

    fn write_kubelet_config(&self, cp: &ControlPlane, net: &Network) -> Result<Vec<String>> {
        let root = self.dir.join("kubelet");
        std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
        let endpoint = self.containerd()?.endpoint();
        let config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": net.gateway.to_string(),
            "port": free_port()?,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port()?,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": false},
                "x509": {"clientCAFile": cp.dir().join("pki/ca.crt").display().to_string()},
            },
            // Only holders of a certificate from the cluster CA get in (the
            // API server, for logs and exec); they may do anything.
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": endpoint,
            "failSwapOn": false,
            "oomScoreAdj": 0,
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": dns::CLUSTER_DOMAIN,
            "clusterDNS": [net.gateway.to_string()],
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": false,
            "registerNode": true,
            "rotateCertificates": false,
            "serverTLSBootstrap": false,
            "staticPodPath": "",
            "maxPods": 50,
            "logging": {"verbosity": 1},
        });
        let path = self.dir.join("kubelet-config.json");
        std::fs::write(&path, config.to_string())
            .map_err(io(format!("writing {}", path.display())))?;
        Ok(vec![
            format!("--config={}", path.display()),
            format!(
                "--kubeconfig={}",
                cp.dir().join("kubelet.kubeconfig").display()
            ),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={}", net.gateway),
            format!("--root-dir={}", root.display()),
            format!("--cert-dir={}", root.join("pki").display()),
        ])
    }

    fn start_kubelet(&mut self, cp: &ControlPlane) -> Result<()> {
        let mut cmd = cp.binaries.command("kubelet")?;
        cmd.args(&self.kubelet_cmd);
        self.kubelet = Some(Proc::spawn("kubelet", cmd, &self.dir.join("kubelet.log"))?);
        Ok(())
    }

    fn start_proxy(&mut self, cp: &ControlPlane) -> Result<()> {
        let mut cmd = cp.binaries.command("kube-proxy")?;
        cmd.args([
            format!(
                "--kubeconfig={}",
                cp.dir().join("kube-proxy.kubeconfig").display()
            ),
            format!("--hostname-override={NODE_NAME}"),
            "--proxy-mode=iptables".to_owned(),
            format!("--cluster-cidr={}", network::POD_CIDR),
            format!("--nodeport-addresses={}", network::POD_CIDR),
            // Leave the machine's sysctls as they are.
            "--conntrack-max-per-core=0".to_owned(),
            "--conntrack-tcp-timeout-established=0".to_owned(),
            "--conntrack-tcp-timeout-close-wait=0".to_owned(),
            "--iptables-localhost-nodeports=false".to_owned(),
            format!("--healthz-bind-address=127.0.0.1:{}", free_port()?),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
            "--v=1".to_owned(),
        ]);
        self.proxy = Some(Proc::spawn(
            "kube-proxy",
            cmd,
            &self.dir.join("kube-proxy.log"),
        )?);
        Ok(())
    }

    /// Waits until the Node reports Ready.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ready_since(None, timeout).await
    }

    /// Waits until the Node is Ready and, with `since`, the kubelet has
    /// renewed its node Lease after it (its heartbeat, every 10 s: a
    /// restarted kubelet's own word, not its predecessor's).
    async fn wait_ready_since(
        &mut self,
        since: Option<jiff::Timestamp>,
        timeout: Duration,
    ) -> Result<()> {
        use k8s_openapi::api::coordination::v1::Lease;
        let nodes: Api<NodeObject> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let start = Instant::now();
        loop {
            for p in [self.kubelet.as_mut(), self.proxy.as_mut()]
                .into_iter()
                .flatten()
            {
                p.check_running()?;
            }
            let ready = nodes
                .get_opt(NODE_NAME)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.status?.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let renewed = match since {
                None => true,
                Some(t) => leases
                    .get_opt(NODE_NAME)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|l| l.spec?.renew_time)
                    .is_some_and(|r| r.0 > t),
            };
            if ready && renewed {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: format!("node {NODE_NAME}"),
                    seconds: timeout.as_secs(),
                    log: self.dir.join("kubelet.log").display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the kubelet and starts it again on the same state, as a node
    /// restart of the kubelet looks.
    pub async fn restart_kubelet(&mut self, cp: &ControlPlane) -> Result<()> {
        if let Some(mut k) = self.kubelet.take() {
            k.stop(Duration::from_secs(10));
        }
        let restarted = jiff::Timestamp::now();
        self.start_kubelet(cp)?;
        self.wait_ready_since(Some(restarted), Duration::from_secs(120))
            .await
    }

    /// Restarts containerd (its containers keep running under their
    /// shims) and waits for the kubelet to report the node Ready again.
    pub async fn restart_containerd(&mut self) -> Result<()> {
        self.containerd
            .as_mut()
            .ok_or_else(|| Error::MissingBinary("the node's containerd is stopped".into()))?
            .restart()?;
        let restarted = jiff::Timestamp::now();
        self.wait_ready_since(Some(restarted), Duration::from_secs(120))
            .await
    }

    /// The PIDs to record for a cluster that outlives this value, in start
    /// order, as `(component, pid, program)`.
    pub fn detach(&mut self) -> Vec<(String, u32, String)> {
        self.stopped = true;
        let mut out = Vec::new();
        if let Some(c) = self.containerd.take() {
            out.push((
                "containerd".into(),
                c.detach(),
                "/usr/bin/containerd".into(),
            ));
        }
        for (name, p) in [
            ("kubelet", self.kubelet.take()),
            ("kube-proxy", self.proxy.take()),
            ("coredns", self.dns.take()),
        ] {
            if let Some(p) = p {
                out.push((name.into(), p.detach(), name.into()));
            }
        }
        out
    }

    /// Deletes every pod and waits (up to `limit`) until the kubelet has
    /// stopped their containers, so their networks and mounts are taken
    /// down the normal way. The scheduler must be stopped first, or
    /// controllers' new pods would land again.
    pub fn drain(&self, limit: Duration) {
        if let Some(c) = &self.containerd {
            drain(&self.kubectl, c.socket(), limit);
        }
    }

    /// Stops kube-proxy, the kubelet and containerd, then removes what
    /// they left on the machine.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for p in [self.proxy.take(), self.kubelet.take(), self.dns.take()]
            .into_iter()
            .flatten()
        {
            let mut p = p;
            p.stop(Duration::from_secs(10));
        }
        drop(self.containerd.take());
        for what in self.cleanup.run() {
            tracing::debug!(removed = %what, "node cleanup");
        }
    }

    /// The end of the kubelet's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["kubelet", "kube-proxy", "coredns"] {
            let log = self.dir.join(format!("{name}.log"));
            out.push_str(&format!(
                "{name} log {}:\n{}\n",
                log.display(),
                crate::process::tail(&log, 30)
            ));
        }
        if let Some(c) = &self.containerd {
            out.push_str(&c.logs());
        }
        out
    }
}

/// `kubectl` with a kubeconfig: the program, its leading argument, the file.
#[derive(Clone, Debug)]
pub struct Kubectl {
    program: PathBuf,
    first: Option<String>,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// `kubectl` of `cp`, as its admin.
    pub fn of(cp: &ControlPlane) -> Result<Kubectl> {
        let (program, first) = cp
            .binaries
            .program("kubectl")
            .ok_or_else(|| Error::MissingBinary("no kubectl binary".into()))?;
        Ok(Kubectl {
            program,
            first,
            kubeconfig: cp.kubeconfig.clone(),
        })
    }

    /// From a script in `bin_dir` and a kubeconfig (a detached cluster).
    pub fn at(bin_dir: &Path, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            program: bin_dir.join("kubectl"),
            first: None,
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// A command running `kubectl`.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        if let Some(a) = &self.first {
            cmd.arg(a);
        }
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }
}

/// Force-deletes every pod, then waits up to `limit` until the
/// containerd at `socket` runs no task in CRI's namespace.
pub fn drain(kubectl: &Kubectl, socket: &Path, limit: Duration) {
    let _ = kubectl
        .command()
        .args([
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=0",
            "--force",
            "--wait=false",
            "--request-timeout=10s",
        ])
        .output();
    let start = Instant::now();
    while start.elapsed() < limit {
        let running = std::process::Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io", "tasks", "ls"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains("RUNNING"))
                    .count()
            })
            .unwrap_or(0);
        if running == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}
