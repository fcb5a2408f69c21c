//! The local cluster's DNS (CoreDNS on the node, as kubeadm clusters run
//! it): a pod resolves a Service's name to its cluster IP, and a name
//! outside the cluster is not resolved (there is no forwarder).

use anyhow::{Result, ensure};
use serde_json::json;

use crate::sensor::apply;
use crate::support::{Env, OPERATOR, RELEASE_NS, pod_ready};

/// The namespace of the DNS test.
pub const NS: &str = "e2e-dns";

/// Runs the test.
pub async fn pods_resolve_services(env: &Env) -> Result<()> {
    crate::runtime::busybox_image(env)?;
    env.namespace(NS)?;
    apply(env, &crate::runtime::busybox_pod(NS, "resolver", json!({})))?;
    pod_ready(env, NS, "resolver").await?;
    let cluster_ip = env.kubectl(&[
        "get",
        "service",
        OPERATOR,
        "-n",
        RELEASE_NS,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let nslookup = |name: &str| {
        env.kubectl(&[
            "exec",
            "-n",
            NS,
            "resolver",
            "--",
            "/bin/busybox",
            "nslookup",
            name,
        ])
    };
    let name = format!("{OPERATOR}.{RELEASE_NS}.svc.cluster.local");
    let resolved = nslookup(&name)?;
    ensure!(
        resolved.contains(cluster_ip.trim()),
        "{name} should resolve to the Service's cluster IP {cluster_ip}: {resolved}"
    );
    let outside = nslookup("sightline.example.org");
    ensure!(
        outside.is_err(),
        "a name outside the cluster resolved (the cluster DNS has no forwarder): {outside:?}"
    );
    env.kubectl(&["delete", "namespace", NS, "--wait=false"])?;
    Ok(())
}
