//! The local single-node cluster: the pod network's bridge, a control
//! plane (with the scheduler) listening on the bridge's gateway, and a
//! node (containerd, kubelet, kube-proxy, CoreDNS), with a default
//! StorageClass its provisioner answers with directories on the node. Used by `cargo xtask cluster
//! up` (which detaches it) and by the end-to-end tests (dropping it stops
//! everything and removes what the node added to the machine).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Result;
use crate::controlplane::{ControlPlane, Options, State};
use crate::node::{NODE_NAME, Network, Node};

/// A running single-node cluster.
pub struct Cluster {
    /// The control plane.
    pub cp: ControlPlane,
    /// The node.
    pub node: Node,
    net: Network,
    /// The storage provisioner, while this process runs it.
    provisioner: Option<tokio::task::JoinHandle<Result<()>>>,
    /// How long the start took, until the Node was Ready.
    pub startup: Duration,
}

/// Where the storage provisioner keeps the volumes of a cluster in `dir`.
pub fn volumes_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("node").join("volumes")
}

impl Cluster {
    /// Starts a cluster in `dir` (a temporary directory when `None`),
    /// without Sightline's CRDs: the chart installs (and owns) them.
    pub async fn start(dir: Option<PathBuf>) -> Result<Cluster> {
        let started = Instant::now();
        let net = Network::create()?;
        let cp = ControlPlane::start(Options {
            dir,
            scheduler: true,
            address: net.gateway,
            node: Some(NODE_NAME.to_owned()),
            install_crds: false,
            ..Options::default()
        })
        .await?;
        let node_dir = cp.dir().join("node");
        let node = Node::start(&cp, &net, &node_dir).await?;
        crate::node::storage::install_class(&cp.client()).await?;
        let provisioner = tokio::spawn(crate::node::storage::run(
            cp.client(),
            volumes_dir(cp.dir()),
        ));
        Ok(Cluster {
            cp,
            node,
            net,
            provisioner: Some(provisioner),
            startup: started.elapsed(),
        })
    }

    /// A client authenticated as cluster admin.
    pub fn client(&self) -> kube::Client {
        self.cp.client()
    }

    /// Leaves everything running and records how to stop it
    /// (`cargo xtask cluster down`). The storage provisioner runs in this
    /// process, so it stops here: run [`crate::node::storage::run`] in a
    /// process of its own and record it.
    pub fn detach(mut self) -> Result<State> {
        if let Some(p) = self.provisioner.take() {
            p.abort();
        }
        let cleanup = self.node.cleanup().clone();
        let node_pids = self.node.detach();
        let mut state = self.cp.detach()?;
        state.pids.extend(node_pids);
        state.node = Some(cleanup);
        self.net.detach();
        state.save()?;
        Ok(state)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(p) = self.provisioner.take() {
            p.abort();
        }
        // The scheduler first, so pods drained from the node stay gone;
        // each step does nothing once detached.
        self.cp.stop_component("kube-scheduler");
        self.node.drain(Duration::from_secs(60));
        self.node.stop();
        self.cp.stop();
        self.net.remove();
    }
}
