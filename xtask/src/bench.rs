//! `cargo xtask bench`: the operator's reconcile latency and scale, each with
//! a baseline measured in the same run on the same control plane, so the
//! ratios hold on a noisy shared machine where absolute numbers do not.
//!
//! - latency: `apply` of a Sensor → its DaemonSet exists, one at a time;
//!   baselines: `apply` of the same DaemonSet directly → it is visible, and
//!   of the five objects the operator writes per Sensor (ServiceAccount,
//!   Role, ClusterRoleBinding, RoleBinding, DaemonSet) in its order.
//! - scale: N Sensors and K keys applied at once → every Sensor `Ready`;
//!   baselines: the same number of DaemonSets, and of five-object sets,
//!   applied directly at the same concurrency until the DaemonSet
//!   controller has observed every DaemonSet (what `Ready` waits for).
//!   Also the operator's peak RSS.
//! - search: the in-memory index over 100,000 synthetic Assets (build,
//!   memory, ten queries' p50/p99) and, as baseline, label-selector lists
//!   of the same Assets from a real API server (see
//!   `operator/examples/search_bench.rs`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use sightline_crds::Sensor;
use sightline_crds::conditions::is_true;
use sightline_testenv::process::{Proc, free_port};
use sightline_testenv::{ControlPlane, Options};

use crate::run as run_cmd;

const CONCURRENCY: usize = 16;

pub async fn run(latency_n: usize, scale_n: usize, scale_keys: usize) -> Result<()> {
    crate::setup()?;
    run_cmd(crate::cargo().args(["build", "--release", "-p", "sightline-operator"]))?;
    let cp = ControlPlane::start(Options::default()).await?;
    let client = cp.client();
    for ns in [
        "sightline-system",
        "bench-latency",
        "bench-direct",
        "bench-scale",
        "bench-scale-direct",
        "bench-scale-objects",
    ] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await?;
    }
    let mut cmd = Command::new(crate::target_dir().join("release/sightline-operator"));
    cmd.env("KUBECONFIG", &cp.kubeconfig)
        .env("RUST_LOG", "warn")
        .args([
            "--namespace",
            "sightline-system",
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()?),
            "--leader-election=false",
        ]);
    let operator = Proc::spawn("sightline-operator", cmd, &cp.dir().join("operator.log"))?;
    key(&client, "bench", &["inventory", "containerSecurity"]).await?;

    // Latency.
    let seen = watch_daemonsets(&client, "bench-latency");
    let direct_seen = watch_daemonsets(&client, "bench-direct");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut via_operator = Vec::with_capacity(latency_n);
    let mut direct = Vec::with_capacity(latency_n);
    let mut objects = Vec::with_capacity(latency_n);
    for i in 0..latency_n {
        let name = format!("lat-{i}");
        let start = Instant::now();
        sensor(&client, "bench-latency", &name, "bench").await?;
        via_operator.push(wait_seen(&seen, &format!("sightline-sensor-{name}"), start).await?);
        let start = Instant::now();
        daemonset(&client, "bench-direct", &format!("sightline-sensor-{name}")).await?;
        direct.push(wait_seen(&direct_seen, &format!("sightline-sensor-{name}"), start).await?);
        let start = Instant::now();
        let object_name = format!("sightline-sensor-o{name}");
        sensor_objects(&client, "bench-direct", &object_name).await?;
        objects.push(wait_seen(&direct_seen, &object_name, start).await?);
    }
    let (op50, op99) = percentiles(&mut via_operator);
    let (d50, d99) = percentiles(&mut direct);
    let (o50, o99) = percentiles(&mut objects);

    // Scale.
    let keys: Vec<String> = (0..scale_keys).map(|i| format!("scale-{i}")).collect();
    futures::stream::iter(
        keys.iter()
            .map(|k| key(&client, k, &["inventory", "containerSecurity"])),
    )
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    let start = Instant::now();
    futures::stream::iter((0..scale_n).map(|i| {
        let client = client.clone();
        let key = keys[i % keys.len().max(1)].clone();
        async move { sensor(&client, "bench-scale", &format!("s-{i}"), &key).await }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    let applied = start.elapsed();
    let sensors: Api<Sensor> = Api::namespaced(client.clone(), "bench-scale");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = sensors.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| is_true(&st.conditions, "Ready"))
            })
            .count();
        if ready == scale_n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {scale_n} Sensors became Ready within 10 minutes");
        }
        // Polled gently: listing every Sensor is itself load on the API server.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_ready = start.elapsed();
    let start = Instant::now();
    futures::stream::iter((0..scale_n).map(|i| {
        let client = client.clone();
        async move {
            daemonset(
                &client,
                "bench-scale-direct",
                &format!("sightline-sensor-s-{i}"),
            )
            .await
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    // Ready, as the operator counts it, means the DaemonSet controller has
    // observed the DaemonSet: the baselines wait for that too.
    observed(&client, "bench-scale-direct", scale_n).await?;
    let direct_scale = start.elapsed();
    // The second baseline: every object the operator writes for a Sensor
    // (its ServiceAccount, Role, ClusterRoleBinding, RoleBinding and
    // DaemonSet, in the operator's order), applied directly: the API cost
    // of what least privilege per Sensor asks, without the operator.
    let start = Instant::now();
    futures::stream::iter((0..scale_n).map(|i| {
        let client = client.clone();
        async move {
            sensor_objects(
                &client,
                "bench-scale-objects",
                &format!("sightline-sensor-o-{i}"),
            )
            .await
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    observed(&client, "bench-scale-objects", scale_n).await?;
    let objects_scale = start.elapsed();
    let peak_rss = peak_rss_kib(operator.pid)?;

    println!(
        "\nreconcile latency, apply Sensor -> DaemonSet exists ({latency_n} sensors, one at a time):"
    );
    println!(
        "  operator  p50 {:>8.1} ms   p99 {:>8.1} ms",
        ms(op50),
        ms(op99)
    );
    println!(
        "  baseline  p50 {:>8.1} ms   p99 {:>8.1} ms   (apply the DaemonSet directly)",
        ms(d50),
        ms(d99)
    );
    println!(
        "  ratio     p50 {:>8.2}x     p99 {:>8.2}x",
        ratio(op50, d50),
        ratio(op99, d99)
    );
    println!(
        "  baseline  p50 {:>8.1} ms   p99 {:>8.1} ms   (apply the same five objects directly)",
        ms(o50),
        ms(o99)
    );
    println!(
        "  ratio     p50 {:>8.2}x     p99 {:>8.2}x",
        ratio(op50, o50),
        ratio(op99, o99)
    );
    println!(
        "\nscale, {scale_n} Sensors and {scale_keys} keys applied at once ({CONCURRENCY} in flight):"
    );
    println!(
        "  applied in {:.1} s; every Sensor Ready after {:.1} s",
        applied.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    println!(
        "  baseline: {scale_n} DaemonSets applied directly and observed by their controller in {:.1} s",
        direct_scale.as_secs_f64()
    );
    println!("  ratio     {:.2}x", ratio(all_ready, direct_scale));
    println!(
        "  baseline: the same five objects per Sensor applied directly, DaemonSets observed, in {:.1} s",
        objects_scale.as_secs_f64()
    );
    println!("  ratio     {:.2}x", ratio(all_ready, objects_scale));
    println!("  operator peak RSS {:.1} MiB", peak_rss as f64 / 1024.0);
    drop(operator);
    Ok(())
}

/// The search benchmark: the operator crate's `search_bench` example,
/// built with `--release` (index numbers from a debug build mean nothing).
pub fn search(assets: usize, api_assets: usize) -> Result<()> {
    crate::setup()?;
    run_cmd(crate::cargo().args([
        "run",
        "--release",
        "-p",
        "sightline-operator",
        "--example",
        "search_bench",
        "--",
        "--assets",
        &assets.to_string(),
        "--api-assets",
        &api_assets.to_string(),
    ]))
}

/// The image admission webhook's judging, from the in-memory index.
pub fn admission() -> Result<()> {
    run_cmd(crate::cargo().args([
        "run",
        "--release",
        "-p",
        "sightline-operator",
        "--example",
        "admission_bench",
    ]))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (at(0.5), at(0.99))
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the operator's /proc status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc status")
}

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_daemonsets(client: &kube::Client, ns: &str) -> Seen {
    let seen: Seen = Arc::default();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(ds)) = stream.next().await {
            if let Some(name) = ds.metadata.name {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    seen
}

async fn wait_seen(seen: &Seen, name: &str, start: Instant) -> Result<Duration> {
    let deadline = start + Duration::from_secs(60);
    loop {
        if let Some(t) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(t.saturating_duration_since(start));
        }
        if Instant::now() > deadline {
            bail!("{name} did not appear within 60 s");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn key(client: &kube::Client, name: &str, modules: &[&str]) -> Result<()> {
    let api: Api<sightline_crds::ActivationKey> = Api::all(client.clone());
    let obj = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "ActivationKey", "metadata": {"name": name},
        "spec": {"modules": modules, "scope": {"namespaceSelector": {}}}});
    apply(&api, name, &obj).await
}

async fn sensor(client: &kube::Client, ns: &str, name: &str, key: &str) -> Result<()> {
    let api: Api<Sensor> = Api::namespaced(client.clone(), ns);
    let obj = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor", "metadata": {"name": name},
        "spec": {"type": "container", "activationKeyRef": {"name": key}, "container": {}}});
    apply(&api, name, &obj).await
}

async fn daemonset(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let obj = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "sensor", "image": "sightline/sensor:0.1.0"}]}}}});
    apply(&api, name, &obj).await
}

/// Waits until the DaemonSet controller has observed `n` DaemonSets of `ns`
/// (their `status.observedGeneration` caught up), polling gently.
async fn observed(client: &kube::Client, ns: &str, n: usize) -> Result<()> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list = api.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|d| {
                d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation
                    && d.metadata.generation.is_some()
            })
            .count();
        if done >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} DaemonSets in {ns} were observed within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Sensor's objects as the operator writes them, applied directly: the
/// ServiceAccount, Role and ClusterRoleBinding at once, then the
/// RoleBinding, then the DaemonSet.
async fn sensor_objects(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}]);
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name},
        "automountServiceAccountToken": false});
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
        "rules": [{"apiGroups": ["sightline.dev"], "resources": ["sensors"], "resourceNames": [name], "verbs": ["get"]}]});
    let crb_name = format!("{ns}-{name}");
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": crb_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sightline-sensor-container"},
        "subjects": subject});
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subject});
    let (sa_api, role_api, crb_api) = (
        Api::<ServiceAccount>::namespaced(client.clone(), ns),
        Api::<Role>::namespaced(client.clone(), ns),
        Api::<ClusterRoleBinding>::all(client.clone()),
    );
    let (a, b, c) = tokio::join!(
        apply(&sa_api, name, &sa),
        apply(&role_api, name, &role),
        apply(&crb_api, &crb_name, &crb),
    );
    a?;
    b?;
    c?;
    apply(
        &Api::<RoleBinding>::namespaced(client.clone(), ns),
        name,
        &rb,
    )
    .await?;
    daemonset(client, ns, name).await
}

/// Server-side applies a JSON manifest, as `kubectl apply --server-side` would.
async fn apply<K>(api: &Api<K>, name: &str, obj: &serde_json::Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// The image-analysis benchmark: the scan library's `analyze` example
/// (release build) on real images made here (the debootstrap image, the same
/// as a gzip OCI layout, and one with a `big_mib` MiB layer of random data),
/// each run three times; baseline: reading the same bytes with `cat` (plain
/// archive) or decompressing the layers with `gzip -dc` (OCI), the floor
/// any reader of the image pays before hashing or parsing anything.
pub fn scan(big_mib: u64) -> Result<()> {
    use sightline_testenv::docker::Docker;
    use sightline_testenv::images::{debian_rootfs, to_oci_layout};

    crate::setup()?;
    run_cmd(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "sightline-scan",
        "--example",
        "analyze",
    ]))?;
    let analyze = crate::target_dir().join("release/examples/analyze");
    let rootfs = debian_rootfs()?;
    let docker = Docker::start()?;
    let rootfs_s = rootfs.display().to_string();
    docker.run(&["import", &rootfs_s, "bench/debian:12"])?;
    let debian = docker.save("bench/debian:12")?;
    eprintln!("building an image with a {big_mib} MiB layer");
    docker.build(
        "bench/big:1",
        &format!("FROM bench/debian:12\nRUN head -c {big_mib}M /dev/urandom > /big.bin\n"),
    )?;
    let big = docker.save("bench/big:1")?;
    let oci = docker.scratch().join("oci-debian");
    to_oci_layout(&debian, &oci, "debian")?;
    let oci_layers = oci_layer_blobs(&oci)?;

    let read = |path: &std::path::Path| format!("cat '{}' > /dev/null", path.display());
    let gunzip = format!(
        "for f in {}; do gzip -dc \"$f\"; done > /dev/null",
        oci_layers
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cases = [
        (
            "debootstrap, docker-archive",
            "docker-archive",
            &debian,
            read(&debian),
        ),
        ("debootstrap, OCI gzip", "oci", &oci, gunzip),
        (
            "debootstrap + big layer",
            "docker-archive",
            &big,
            read(&big),
        ),
    ];
    println!(
        "\n{:<30} {:>9} {:>6} {:>9} {:>10} {:>9} {:>9} {:>10} {:>6}",
        "image", "MiB", "pkgs", "time s", "pkgs/s", "MiB/s", "RSS MiB", "baseline s", "ratio"
    );
    for (label, kind, path, baseline) in cases {
        let mut times = Vec::new();
        let mut rss = 0u64;
        let mut summary = serde_json::Value::Null;
        for _ in 0..3 {
            let out = Command::new(&analyze).arg(kind).arg(path).output()?;
            if !out.status.success() {
                bail!(
                    "analyze {kind} {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            summary = serde_json::from_slice(&out.stdout)?;
            times.push(Duration::from_secs_f64(
                summary["seconds"].as_f64().unwrap_or(0.0),
            ));
            rss = rss.max(summary["peakRssKiB"].as_u64().unwrap_or(0));
        }
        let mut base = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            run_cmd(Command::new("sh").arg("-c").arg(&baseline))?;
            base.push(start.elapsed());
        }
        let (t, _) = percentiles(&mut times);
        let (b, _) = percentiles(&mut base);
        let mib = summary["bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
        let pkgs = summary["packages"].as_u64().unwrap_or(0);
        println!(
            "{:<30} {:>9.0} {:>6} {:>9.2} {:>10.0} {:>9.0} {:>9.1} {:>10.2} {:>5.1}x",
            label,
            mib,
            pkgs,
            t.as_secs_f64(),
            pkgs as f64 / t.as_secs_f64().max(1e-9),
            mib / t.as_secs_f64().max(1e-9),
            rss as f64 / 1024.0,
            b.as_secs_f64(),
            ratio(t, b)
        );
    }
    println!(
        "(time: median of 3 analyses; RSS: the largest peak of the three; ratio: time / baseline)"
    );
    Ok(())
}

/// The layer blobs of the single image in an OCI layout.
fn oci_layer_blobs(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let blob = |digest: &str| {
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .context("no manifest in index.json")?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(manifest))?)?;
    Ok(manifest["layers"]
        .as_array()
        .context("no layers in the manifest")?
        .iter()
        .filter_map(|l| l["digest"].as_str().map(blob))
        .collect())
}

/// The runtime sensor's benchmarks (as root): the `bench` example of
/// `sensors/runtime` in a release build. Overhead of fork+exec and
/// open/close from a tracked cgroup with and without the sensor and a
/// policy, in alternating rounds; records per second delivered with one
/// generator per core against the generators' own rate with nothing
/// attached; the sensor's peak RSS.
pub fn runtime() -> Result<()> {
    crate::setup()?;
    run_cmd(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "sightline-runtime-sensor",
        "--example",
        "bench",
    ]))?;
    let bench = crate::target_dir().join("release/examples/bench");
    run_cmd(Command::new(&bench).args(["overhead", "20000", "200000"]))?;
    run_cmd(Command::new(&bench).args(["throughput", "5"]))?;
    Ok(())
}
