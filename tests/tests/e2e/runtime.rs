//! A runtime Sensor on the real cluster: the operator's DaemonSet loads the
//! eBPF programs on the node, a RuntimePolicy selects a pod, `kubectl exec`
//! of the denied program fails, and the violation shows up as an Event on
//! the pod, a count in the policy's status and a finding on the
//! container's Asset.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;
use sightline_crds::Asset;
use sightline_crds::asset::asset_name;
use sightline_crds::runtime_policy::RuntimePolicy;
use sightline_testenv::archive::{LayerTar, RunConfig, docker_archive};

use crate::sensor::apply;
use crate::support::{Env, eventually};

/// The namespace of the runtime test.
pub const NS: &str = "e2e-runtime";

/// A busybox image: `/bin/busybox`, `/bin/sh`, and `/bin/echo` (the program
/// the policy denies), imported into the node's containerd.
pub fn busybox_image(env: &Env) -> Result<()> {
    let dir = env.work.join("runtime-image");
    std::fs::create_dir_all(&dir)?;
    let mut layer = LayerTar::create(&dir.join("layer.tar"))?;
    layer.dir("bin", 0o755)?.dir("tmp", 0o1777)?;
    for name in ["busybox", "sh", "echo"] {
        layer.copy(
            &format!("bin/{name}"),
            std::path::Path::new("/bin/busybox"),
            0o755,
        )?;
    }
    let layer = layer.finish()?;
    let archive = dir.join("busybox.tar");
    docker_archive(
        &["e2e/busybox:1"],
        &[layer],
        &RunConfig::default(),
        &archive,
    )?;
    env.cluster.node.containerd()?.import(&archive)?;
    Ok(())
}

/// A pod of the busybox image that sleeps for an hour.
pub fn busybox_pod(ns: &str, name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "containers": [{
                "name": "app", "image": "e2e/busybox:1", "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sleep", "3600"],
            }],
            "terminationGracePeriodSeconds": 0,
        },
    })
}

/// Runs the test.
pub async fn blocks_an_exec_in_a_pod(env: &Env) -> Result<()> {
    busybox_image(env)?;
    env.namespace(NS)?;
    apply(
        env,
        &json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
            "metadata": {"name": "runtime", "namespace": NS},
            "spec": {"type": "runtime", "activationKeyRef": {"name": "e2e"}, "runtime": {}},
        }),
    )?;
    apply(env, &busybox_pod(NS, "shop", json!({"app": "shop"})))?;
    apply(
        env,
        &json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "RuntimePolicy",
            "metadata": {"name": "no-echo", "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": {"app": "shop"}},
                "action": "Block",
                "process": {"deny": [{"path": "/bin/echo"}]},
            },
        }),
    )?;
    let pods: Api<Pod> = Api::namespaced(env.client(), NS);
    let container_id = eventually("the pod running", Duration::from_secs(120), || async {
        let p = pods.get("shop").await.ok()?;
        let cs = p.status?.container_statuses?;
        let c = cs.first()?;
        c.ready
            .then(|| c.container_id.clone())
            .flatten()
            .map(|id| id.trim_start_matches("containerd://").to_string())
    })
    .await?;
    let policies: Api<RuntimePolicy> = Api::namespaced(env.client(), NS);
    let node = eventually(
        "the node enforcing the policy",
        Duration::from_secs(180),
        || async {
            let s = policies.get("no-echo").await.ok()?.status?;
            let n = s.nodes.first()?.clone();
            (n.ready && n.enforcer.is_some()).then_some(n)
        },
    )
    .await?;
    ensure!(
        node.reason.contains("exec rules: fanotify") && node.reason.contains("lsm: "),
        "{node:?}"
    );

    // The shell runs; the denied program does not.
    let out = env.kubectl(&[
        "exec",
        "-n",
        NS,
        "shop",
        "--",
        "/bin/sh",
        "-c",
        "/bin/echo ran; echo rc=$?; /bin/busybox echo allowed",
    ])?;
    ensure!(
        out.contains("rc=126") && !out.contains("ran\n") && out.contains("allowed"),
        "{out}"
    );
    let direct = env.kubectl(&["exec", "-n", NS, "shop", "--", "/bin/echo", "hi"]);
    ensure!(
        direct.is_err(),
        "exec of the denied program itself fails: {direct:?}"
    );

    let events: Api<Event> = Api::namespaced(env.client(), NS);
    let event = eventually("the violation's Event", Duration::from_secs(60), || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RuntimePolicyViolation"))
    })
    .await?;
    ensure!(
        event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop"),
        "{event:?}"
    );
    let status = eventually("the violation count", Duration::from_secs(60), || async {
        let s = policies.get("no-echo").await.ok()?.status?;
        (s.violations >= 2).then_some(s)
    })
    .await?;
    ensure!(status.last_violation.is_some(), "{status:?}");
    let assets: Api<Asset> = Api::all(env.client());
    let asset = eventually(
        "the container's runtime finding",
        Duration::from_secs(60),
        || async {
            let a = assets
                .get_opt(&asset_name(
                    sightline_crds::AssetKind::Container,
                    &container_id,
                ))
                .await
                .ok()??;
            let s = serde_json::to_value(a.status?).ok()?;
            (s["findings"]["runtime"].as_i64() >= Some(2)).then_some(s)
        },
    )
    .await
    .context("the Container Asset")?;
    ensure!(asset["observed"]["pod"] == "shop", "{asset}");

    let last = pods_that_come_and_go_are_held_from_their_first_command(env).await?;

    // The policy deleted, the program runs again.
    env.kubectl(&["delete", "runtimepolicy", "-n", NS, "no-echo"])?;
    eventually(
        "/bin/echo allowed again",
        Duration::from_secs(60),
        || async {
            env.kubectl(&["exec", "-n", NS, &last, "--", "/bin/echo", "hi"])
                .ok()
                .filter(|o| o.contains("hi"))
        },
    )
    .await?;
    Ok(())
}

/// The pod deleted, 20 pods of the same labels in a row, each running
/// the denied program as its entrypoint's first command: every one is
/// refused, and the policy's status on the node comes back ready each
/// time. The last pod is left running; its name is returned.
async fn pods_that_come_and_go_are_held_from_their_first_command(env: &Env) -> Result<String> {
    env.kubectl(&["delete", "pod", "-n", NS, "shop", "--wait=true"])?;
    let pods: Api<Pod> = Api::namespaced(env.client(), NS);
    let policies: Api<RuntimePolicy> = Api::namespaced(env.client(), NS);
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let name = format!("churn-{round}");
        let mut pod = busybox_pod(NS, &name, json!({"app": "shop"}));
        pod["spec"]["containers"][0]["command"] = json!([
            "/bin/sh",
            "-c",
            "/bin/echo ran; echo rc=$?; exec /bin/busybox sleep 3600"
        ]);
        apply(env, &pod)?;
        let logs = eventually(
            &format!("pod {name} running its entrypoint"),
            Duration::from_secs(60),
            || async {
                let logs = pods.logs(&name, &Default::default()).await.ok()?;
                logs.contains("rc=").then_some(logs)
            },
        )
        .await?;
        ensure!(
            !logs.contains("ran\n") && (logs.contains("rc=137") || logs.contains("rc=126")),
            "pod {name}'s first command ran: {logs:?}"
        );
        eventually(
            &format!("round {round}: the policy ready on the node"),
            Duration::from_secs(30),
            || async {
                let s = policies.get("no-echo").await.ok()?.status?;
                s.nodes.first()?.ready.then_some(())
            },
        )
        .await?;
        if round + 1 < ROUNDS {
            env.kubectl(&["delete", "pod", "-n", NS, &name, "--wait=false"])?;
        }
    }
    // How many pods were guarded before a container of theirs existed (the
    // rest were held by the container's own rules, after its start).
    if let Some(sensor) = pods
        .list(&ListParams::default().labels("sightline.dev/sensor=runtime"))
        .await?
        .items
        .first()
    {
        let path = format!(
            "/api/v1/namespaces/{NS}/pods/{}:9464/proxy/metrics",
            sensor.metadata.name.as_deref().unwrap_or_default()
        );
        match env.kubectl(&["get", "--raw", &path]) {
            Ok(m) => m
                .lines()
                .filter(|l| l.starts_with("sightline_runtime_pods_guarded"))
                .for_each(|l| eprintln!("{l}")),
            Err(e) => eprintln!("the runtime sensor's metrics: {e}"),
        }
    }
    Ok(format!("churn-{}", ROUNDS - 1))
}

/// Deletes the runtime Sensor and the pod: the rest of the suite runs
/// without the runtime sensor on the node.
pub async fn remove(env: &Env) -> Result<()> {
    env.kubectl(&["delete", "pod", "-n", NS, "-l", "app=shop", "--wait=false"])?;
    env.kubectl(&["delete", "sensor", "-n", NS, "runtime"])?;
    let pods: Api<Pod> = Api::namespaced(env.client(), NS);
    eventually(
        "the runtime sensor's pods gone",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("sightline.dev/sensor=runtime"))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await
}
