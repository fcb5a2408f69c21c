//! The local single-node cluster itself: the node becomes Ready, a pod
//! runs on it from an image built here, an in-cluster client reaches the
//! API server through the `kubernetes` Service and authenticates with its
//! ServiceAccount token, and stopping the cluster takes away everything it
//! added to the machine.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use sightline_testenv::binaries::workspace_binary;
use sightline_testenv::cluster::Cluster;
use sightline_testenv::images::{binary_image, sightline_image};
use sightline_testenv::node::{NODE_NAME, cleanup, network};

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_runs_and_reaches_the_api_and_stopping_leaves_nothing() -> Result<()> {
    let chains_before = cleanup::chains();
    let cluster = Cluster::start(None).await?;
    eprintln!("cluster up in {:.1}s", cluster.startup.as_secs_f64());
    let client = cluster.client();
    let dir = cluster.cp.dir().to_path_buf();

    let node = Api::<Node>::all(client.clone()).get(NODE_NAME).await?;
    let info = node.status.and_then(|s| s.node_info).context("nodeInfo")?;
    assert_eq!(
        info.kubelet_version,
        sightline_testenv::binaries::KUBERNETES_VERSION
    );
    assert!(
        info.container_runtime_version
            .starts_with("containerd://1.6"),
        "{info:?}"
    );

    // The CLI, as a pod: with no kubeconfig it uses the in-cluster config.
    let cli = binary_image(
        &dir.join("images"),
        "sightline",
        &workspace_binary("sightline")?,
        "65532:65532",
    )?;
    cluster.node.containerd()?.import(&cli)?;
    let ns = "node-test";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "keys"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "cli",
                "image": sightline_image("sightline"),
                "imagePullPolicy": "Never",
                "args": ["keys", "list"],
            }],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let done = tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(pods.clone(), "keys", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
        }),
    )
    .await;
    let logs = pods
        .logs("keys", &Default::default())
        .await
        .unwrap_or_default();
    done.with_context(|| format!("the pod did not finish: {}", cluster.node.logs()))??;
    // Reached the API server and was known as its ServiceAccount: RBAC,
    // not the network or authentication, said no.
    assert!(
        logs.contains("system:serviceaccount:node-test:default") && logs.contains("forbidden"),
        "{logs}"
    );

    drop(cluster);
    assert!(!network::link_exists(network::BRIDGE), "the bridge is gone");
    let kube_chains: Vec<_> = cleanup::chains()
        .into_iter()
        .filter(|c| c.2.starts_with("KUBE-") && !chains_before.contains(c))
        .collect();
    assert!(kube_chains.is_empty(), "left behind: {kube_chains:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts left under {}",
        dir.display()
    );
    Ok(())
}
