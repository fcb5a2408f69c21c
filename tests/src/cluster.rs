//! The local single-node cluster: the pod network's bridge, a control
//! plane (with the scheduler) listening on the bridge's gateway, and a
//! node (containerd, kubelet, kube-proxy). Used by `cargo xtask cluster
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
    /// How long the start took, until the Node was Ready.
    pub startup: Duration,
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
        Ok(Cluster {
            cp,
            node,
            net,
            startup: started.elapsed(),
        })
    }

    /// A client authenticated as cluster admin.
    pub fn client(&self) -> kube::Client {
        self.cp.client()
    }

    /// Leaves everything running and records how to stop it
    /// (`cargo xtask cluster down`).
    pub fn detach(mut self) -> Result<State> {
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
        // The scheduler first, so pods drained from the node stay gone;
        // each step does nothing once detached.
        self.cp.stop_component("kube-scheduler");
        self.node.drain(Duration::from_secs(60));
        self.node.stop();
        self.cp.stop();
        self.net.remove();
    }
}
