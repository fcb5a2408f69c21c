//! A container sensor on the real node: its DaemonSet pod runs, it reports
//! the node, the images on it and the running containers; it survives
//! restarts of the kubelet and containerd without losing or duplicating
//! Assets; deleting the Sensor removes its pods and keeps the inventory.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use sightline_crds::Asset;
use sightline_testenv::node::NODE_NAME;

use crate::support::{Env, eventually};

/// The namespace of the sensor tests.
pub const NS: &str = "e2e-nodes";
/// The Sensor.
pub const SENSOR: &str = "nodes";

/// Applies `doc` with `kubectl apply --server-side` (as a user would).
pub fn apply(env: &Env, doc: &Value) -> Result<()> {
    let file = env.work.join(format!(
        "{}-{}.json",
        doc["kind"].as_str().unwrap_or("object"),
        doc["metadata"]["name"].as_str().unwrap_or("x")
    ));
    std::fs::write(&file, serde_json::to_vec(doc)?)?;
    env.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])
        .map(drop)
}

/// The sensor's pods on the node.
async fn sensor_pods(env: &Env) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(env.client(), NS);
    Ok(pods
        .list(&ListParams::default().labels(&format!("sightline.dev/sensor={SENSOR}")))
        .await?
        .items)
}

fn running(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| cs.iter().all(|c| c.ready))
}

/// Every Asset, by name, with its status as JSON.
async fn assets(env: &Env) -> Result<Vec<(String, Value)>> {
    let api: Api<Asset> = Api::all(env.client());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|a| {
            (
                a.metadata.name.clone().unwrap_or_default(),
                serde_json::to_value(&a.status).unwrap_or_default(),
            )
        })
        .collect())
}

/// The Node Asset of the cluster's node.
async fn node_asset(env: &Env) -> Option<Value> {
    assets(env)
        .await
        .ok()?
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s["kind"] == "Node" && s["observed"]["nodeName"] == NODE_NAME)
}

fn last_seen(status: &Value) -> Option<jiff::Timestamp> {
    status["sources"]
        .as_array()?
        .iter()
        .find(|s| s["sensor"] == format!("{NS}/{SENSOR}"))?["lastSeen"]
        .as_str()?
        .parse()
        .ok()
}

/// Applies a key and a container Sensor for the node's containerd; waits
/// for the pod and for the node's, images' and containers' Assets.
pub async fn reports_the_node(env: &Env) -> Result<()> {
    env.namespace(NS)?;
    apply(
        env,
        &json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "ActivationKey",
            "metadata": {"name": "e2e"},
            "spec": {
                "modules": ["inventory", "containerSecurity", "runtimeSecurity", "vulnerability"],
                "tags": {"site": "e2e"},
                "scope": {"namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In",
                    "values": [NS, crate::runtime::NS, crate::registry::NS],
                }]}},
                "allow": {"privilegedSensors": true},
            },
        }),
    )?;
    let socket = env.cluster.node.containerd()?.endpoint();
    apply(
        env,
        &json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
            "metadata": {"name": SENSOR, "namespace": NS},
            "spec": {
                "type": "container",
                "activationKeyRef": {"name": "e2e"},
                "container": {"runtimes": [{"type": "containerd", "endpoint": socket}]},
            },
        }),
    )?;
    let pod = eventually(
        "the sensor's pod to run on the node",
        Duration::from_secs(180),
        || async {
            let pods = sensor_pods(env).await.ok()?;
            let p = pods.first()?;
            let on_node = p.spec.as_ref()?.node_name.as_deref() == Some(NODE_NAME);
            (on_node && running(p)).then_some(p.clone())
        },
    )
    .await?;
    // It reports over TLS, trusting the operator's CA only.
    let env_of = |name: &str| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.env.as_ref())
            .and_then(|e| e.iter().find(|v| v.name == name))
            .and_then(|v| v.value.clone())
            .unwrap_or_default()
    };
    ensure!(
        env_of("SIGHTLINE_API_URL").starts_with("https://"),
        "the sensor reports to {:?}",
        env_of("SIGHTLINE_API_URL")
    );
    ensure!(env_of("SIGHTLINE_API_CA").starts_with("-----BEGIN CERTIFICATE-----"));

    let node = eventually(
        "the Node Asset, normalized",
        Duration::from_secs(120),
        || async {
            node_asset(env)
                .await
                .filter(|s| s["normalized"]["os"].is_object())
        },
    )
    .await?;
    let seen = last_seen(&node).context("the sensor's source entry")?;
    ensure!(
        jiff::Timestamp::now().duration_since(seen).as_secs() < 120,
        "lastSeen {seen} is not recent"
    );
    let o = &node["observed"];
    ensure!(
        o["kubeletVersion"] == sightline_testenv::binaries::KUBERNETES_VERSION,
        "{o}"
    );
    ensure!(
        o["software"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["name"] == "containerd")),
        "{o}"
    );
    ensure!(
        node["tags"]["site"] == "e2e",
        "the key's tags: {}",
        node["tags"]
    );
    ensure!(
        node["normalized"]["os"]["vendor"] == "Debian",
        "{}",
        node["normalized"]
    );
    // Every element of a list is searchable, not only the first: the node's
    // second software entry is containerd (issue 16, defect 1).
    let name = assets(env)
        .await?
        .into_iter()
        .find(|(_, s)| s["kind"] == "Node" && s["observed"]["nodeName"] == NODE_NAME)
        .map(|(n, _)| n)
        .context("the Node Asset's name")?;
    for query in [
        "software:(product:Kubernetes)",
        "software:(product:containerd)",
        "software:(vendor:CNCF AND version:1.6.20)",
        "software.subcategory:\"Container Runtime\"",
        "sources.type:container",
    ] {
        let out =
            std::process::Command::new(sightline_testenv::binaries::workspace_binary("sightline")?)
                .env("KUBECONFIG", &env.cluster.cp.kubeconfig)
                .args(["search", "--client-side", "-o", "name", query])
                .output()
                .context("running sightline search")?;
        let found = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && found.lines().any(|l| l.ends_with(&name)),
            "sightline search --client-side '{query}' did not find {name}: {found}{}\nsoftware: {}",
            String::from_utf8_lossy(&out.stderr),
            node["normalized"]["software"]
        );
    }

    // The images on the node and the containers running on it.
    let images = [
        sightline_testenv::images::sightline_image("sightline-operator"),
        sightline_testenv::images::sightline_image("sightline-sensor"),
        sightline_testenv::containerd::PAUSE_IMAGE.to_owned(),
    ];
    eventually(
        "the images' and containers' Assets",
        Duration::from_secs(120),
        || async {
            let all = assets(env).await.ok()?;
            let tagged = |tag: &str| {
                all.iter().any(|(_, s)| {
                    s["kind"] == "ContainerImage"
                        && s["observed"]["repoTags"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|x| x == tag))
                })
            };
            let container = |ns: &str| {
                all.iter()
                    .any(|(_, s)| s["kind"] == "Container" && s["observed"]["namespace"] == ns)
            };
            (images.iter().all(|i| tagged(i))
                && container(NS)
                && container(crate::support::RELEASE_NS))
            .then_some(())
        },
    )
    .await?;
    Ok(())
}

/// The names of the Assets this sensor reports.
async fn reported(env: &Env) -> Result<BTreeSet<String>> {
    Ok(assets(env)
        .await?
        .into_iter()
        .filter(|(_, s)| last_seen(s).is_some())
        .map(|(n, _)| n)
        .collect())
}

/// Restarts the kubelet, then containerd, under the running sensor: it
/// keeps reporting (lastSeen moves past the restarts) and the set of
/// Assets stays the same, with no duplicates.
pub async fn survives_runtime_restarts(env: &mut Env) -> Result<()> {
    let before = reported(env).await?;
    let (cp, node) = (&env.cluster.cp, &mut env.cluster.node);
    node.restart_kubelet(cp).await?;
    node.restart_containerd().await?;
    let restarted = jiff::Timestamp::now();
    let env = &*env;
    eventually(
        "the sensor's pod to be ready again",
        Duration::from_secs(120),
        || async {
            sensor_pods(env)
                .await
                .ok()?
                .first()
                .filter(|p| running(p))
                .map(drop)
        },
    )
    .await?;
    eventually(
        "lastSeen to move past the restarts",
        Duration::from_secs(120),
        || async {
            let seen = last_seen(&node_asset(env).await?)?;
            (seen > restarted).then_some(())
        },
    )
    .await?;
    let after = reported(env).await?;
    ensure!(
        before == after,
        "Assets changed across the restarts:\nlost {:?}\nnew {:?}",
        before.difference(&after).collect::<Vec<_>>(),
        after.difference(&before).collect::<Vec<_>>()
    );
    Ok(())
}

/// Deletes the Sensor: its pods go, the Assets stay, lastSeen stops.
pub async fn deleting_the_sensor_keeps_the_inventory(env: &Env) -> Result<()> {
    let before = reported(env).await?;
    env.kubectl(&[
        "delete",
        "sensor",
        SENSOR,
        "-n",
        NS,
        "--wait=true",
        "--timeout=60s",
    ])?;
    eventually(
        "the sensor's pods to go",
        Duration::from_secs(120),
        || async { sensor_pods(env).await.ok()?.is_empty().then_some(()) },
    )
    .await?;
    let stopped =
        last_seen(&node_asset(env).await.context("the Node Asset")?).context("its lastSeen")?;
    // Several refresh periods (5 s here) later, nothing has moved.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let node = node_asset(env)
        .await
        .context("the Node Asset after the deletion")?;
    ensure!(
        last_seen(&node) == Some(stopped),
        "lastSeen moved after the Sensor was deleted"
    );
    let after = reported(env).await?;
    ensure!(
        before == after,
        "Assets went with the Sensor: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    Ok(())
}
