//! `cargo xtask bench --only cluster`: the local cluster and Sightline on
//! it, each measure beside a baseline taken in the same run.
//!
//! - start: `Cluster::start` → the Node is Ready (binaries cached);
//!   baseline: the control plane alone (etcd, API server, controller
//!   manager) up and serving.
//! - first Asset: `helm install`, then an ActivationKey and a container
//!   Sensor, → the first Asset exists; baseline: a pod of the pause image
//!   created → Running on the same node (the cluster's own floor).
//! - idle RSS of the operator and of a sensor pod's process, 30 s after the
//!   sensor reported (release builds), against the goals (64 and 32 MiB).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use sightline_testenv::cluster::Cluster;
use sightline_testenv::containerd::PAUSE_IMAGE;
use sightline_testenv::images::{SIGHTLINE_VERSION, binary_image};
use sightline_testenv::{ControlPlane, Options};

use crate::run as run_cmd;

/// Resident memory of the running process whose program is `program`, in KiB.
fn rss_kib_of(program: &str) -> Result<u64> {
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let pid = entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if argv0 != program.as_bytes() {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status"))?;
        return status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS");
    }
    bail!("no running {program}")
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let out = cluster
        .cp
        .kubectl()?
        .args(args)
        .output()
        .context("kubectl")?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn wait_until<F>(what: &str, limit: Duration, mut probe: F) -> Result<Duration>
where
    F: FnMut() -> bool,
{
    let start = Instant::now();
    while !probe() {
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(start.elapsed())
}

/// The cluster benchmark (see the module docs).
pub async fn run() -> Result<()> {
    crate::setup()?;
    run_cmd(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "sightline-operator",
        "-p",
        "sightline-sensor",
    ]))?;
    let release = crate::target_dir().join("release");

    let t = Instant::now();
    let cp = ControlPlane::start(Options::default()).await?;
    let control_plane = t.elapsed();
    drop(cp);

    let cluster = Cluster::start(None).await?;
    let node_ready = cluster.startup;
    let images = cluster.cp.dir().join("images");
    for (name, user) in [
        ("sightline-operator", "65532:65532"),
        ("sightline-sensor", "0:0"),
    ] {
        let archive = binary_image(&images, name, &release.join(name), user)?;
        cluster.node.containerd()?.import(&archive)?;
    }

    // Baseline: a pod of an image already on the node.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "baseline"},
        "spec": {"containers": [{"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}]},
    }))?;
    let t = Instant::now();
    pods.create(&PostParams::default(), &pod).await?;
    loop {
        let phase = pods
            .get("baseline")
            .await?
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default();
        if phase == "Running" {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the baseline pod did not run");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pod_running = t.elapsed();

    // helm install → key and Sensor → the first Asset.
    let socket = cluster.node.containerd()?.endpoint();
    let key_and_sensor = cluster.cp.dir().join("bench-sensor.yaml");
    std::fs::write(
        &key_and_sensor,
        format!(
            "apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata: {{name: bench}}\n\
             spec: {{modules: [inventory, containerSecurity], scope: {{namespaceSelector: {{}}}}}}\n---\n\
             apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {{name: nodes, namespace: default}}\n\
             spec:\n  type: container\n  activationKeyRef: {{name: bench}}\n  container:\n    runtimes: [{{type: containerd, endpoint: \"{socket}\"}}]\n"
        ),
    )?;
    let t = Instant::now();
    let helm_home = cluster.cp.dir().join("helm");
    run_cmd(
        Command::new(sightline_testenv::binaries::helm()?)
            .env("KUBECONFIG", &cluster.cp.kubeconfig)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .args([
                "install",
                "sightline",
                &crate::root().join("charts/sightline").display().to_string(),
                "--namespace",
                "sightline-system",
                "--create-namespace",
                "--set",
                &format!(
                    "operator.image.repository=sightline.local/sightline-operator,operator.image.tag={SIGHTLINE_VERSION},\
                     operator.image.pullPolicy=Never,sensorDefaults.image.repository=sightline.local/sightline-sensor,\
                     sensorDefaults.image.tag={SIGHTLINE_VERSION},sensorPolicy.runtimeSockets[0]={socket}"
                ),
            ]),
    )?;
    // The CRDs come with the release; apply once they are served.
    wait_until("the CRDs", Duration::from_secs(60), || {
        kubectl(
            &cluster,
            &["apply", "-f", &key_and_sensor.display().to_string()],
        )
        .is_ok()
    })
    .await?;
    wait_until("the first Asset", Duration::from_secs(300), || {
        kubectl(&cluster, &["get", "assets", "-o", "name"]).is_ok_and(|o| !o.trim().is_empty())
    })
    .await?;
    let first_asset = t.elapsed();

    tokio::time::sleep(Duration::from_secs(30)).await;
    let operator_rss = rss_kib_of("/usr/local/bin/sightline-operator")?;
    let sensor_rss = rss_kib_of("/usr/local/bin/sightline-sensor")?;
    let assets = kubectl(&cluster, &["get", "assets", "-o", "name"])?
        .lines()
        .count();

    let s = |d: Duration| d.as_secs_f64();
    println!("\n## Local cluster and Sightline on it (cargo xtask bench --only cluster)\n");
    println!("| measure | result | baseline (same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| cluster start → Node Ready | {:.1} s | control plane alone: {:.1} s | {:.2}x |",
        s(node_ready),
        s(control_plane),
        s(node_ready) / s(control_plane)
    );
    println!(
        "| helm install → first Asset | {:.1} s | a pod created → Running: {:.2} s | {:.1}x |",
        s(first_asset),
        s(pod_running),
        s(first_asset) / s(pod_running)
    );
    println!(
        "| operator idle RSS | {:.1} MiB | goal 64 MiB | {:.2} of the goal |",
        operator_rss as f64 / 1024.0,
        operator_rss as f64 / (64.0 * 1024.0)
    );
    println!(
        "| sensor idle RSS ({assets} Assets reported) | {:.1} MiB | goal 32 MiB | {:.2} of the goal |",
        sensor_rss as f64 / 1024.0,
        sensor_rss as f64 / (32.0 * 1024.0)
    );
    Ok(())
}
