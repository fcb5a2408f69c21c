//! What the end-to-end tests share: kubectl and helm as a user runs them,
//! namespaces, waits, and the state dump printed when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sightline_testenv::cluster::Cluster;
use sightline_testenv::node::Kubectl;

/// The release the tests install.
pub const RELEASE: &str = "sightline";
/// Its namespace.
pub const RELEASE_NS: &str = "sightline-system";
/// The operator's ServiceAccount and Deployment (`<release>-operator`).
pub const OPERATOR: &str = "sightline-operator";

/// The cluster and how to talk to it.
pub struct Env {
    /// The running cluster.
    pub cluster: Cluster,
    /// `kubectl` as cluster admin.
    pub kubectl: Kubectl,
    /// A directory for helm's state and scratch files.
    pub work: PathBuf,
}

impl Env {
    /// A client authenticated as cluster admin.
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// Runs `kubectl ARGS`, failing with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self
            .kubectl
            .command()
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `helm ARGS` against the cluster, failing with its stderr.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let home = &self.work;
        let out = Command::new(sightline_testenv::binaries::helm()?)
            .env("KUBECONFIG", &self.cluster.cp.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("helm/cache"))
            .env("HELM_CONFIG_HOME", home.join("helm/config"))
            .env("HELM_DATA_HOME", home.join("helm/data"))
            .args(args)
            .output()
            .context("running helm")?;
        if !out.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a namespace for one test.
    pub fn namespace(&self, name: &str) -> Result<String> {
        self.kubectl(&["create", "namespace", name])?;
        Ok(name.to_owned())
    }

    /// Prints what a failed test needs to be understood: events, the
    /// Sightline objects and workloads as YAML, and pod logs of the test's
    /// namespace and the operator's.
    pub fn dump(&self, namespaces: &[&str]) {
        let show = |what: &str, args: &[&str]| {
            let text = self
                .kubectl(args)
                .unwrap_or_else(|e| format!("(could not get it: {e:#})"));
            eprintln!("----- {what} -----\n{text}");
        };
        show(
            "events",
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
        );
        show("nodes and pods", &["get", "nodes,pods", "-A", "-o", "wide"]);
        show(
            "Sightline objects",
            &["get", "activationkeys,sensors,assets", "-A", "-o", "yaml"],
        );
        for ns in namespaces.iter().copied().chain([RELEASE_NS]) {
            show(
                &format!("workloads in {ns}"),
                &["get", "daemonsets,deployments,pods", "-n", ns, "-o", "yaml"],
            );
            let pods = self
                .kubectl(&["get", "pods", "-n", ns, "-o", "name"])
                .unwrap_or_default();
            for pod in pods.lines() {
                show(
                    &format!("logs of {ns}/{pod}"),
                    &["logs", "-n", ns, pod, "--all-containers", "--tail=80"],
                );
            }
        }
        eprintln!("----- node -----\n{}", self.cluster.node.logs());
    }
}

/// Polls `probe` until it gives a value or `limit` passes.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    Ok(sightline_testenv::helpers::wait_for(what, limit, probe).await?)
}

/// The chart in the repository.
pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sightline")
}

/// Waits (up to two minutes) until pod `name`'s first container is ready.
pub async fn pod_ready(env: &Env, ns: &str, name: &str) -> Result<()> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(env.client(), ns);
    eventually(
        &format!("pod {ns}/{name} running"),
        Duration::from_secs(120),
        || async {
            let p = pods.get(name).await.ok()?;
            let ready = p.status?.container_statuses?.first()?.ready;
            ready.then_some(())
        },
    )
    .await
}
