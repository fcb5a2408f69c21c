//! `cargo xtask bench --only registry`: the registry sensor over 50 images
//! in a real registry, cold (everything analysed) and warm (every digest
//! known, nothing fetched but manifests), against skopeo copying the same
//! 50 images out of the registry (the floor of reading them at all); and
//! one `sightline scan image` of the debootstrap image against reading its
//! archive with `cat`. Wall time and peak RSS (release builds).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, PostParams};
use serde_json::json;
use sightline_crds::{ActivationKey, Sensor};
use sightline_testenv::archive::{Layer, LayerTar, RunConfig, docker_archive};
use sightline_testenv::registry::{Auth, Registry};
use sightline_testenv::{ControlPlane, Options, helpers};

use crate::run as run_cmd;

const IMAGES: usize = 50;

/// Runs `cmd` to completion, sampling its peak RSS (VmHWM) as it runs.
fn measure(mut cmd: Command) -> Result<(Duration, u64, String)> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting a benchmark command")?;
    let pid = child.id();
    let mut peak = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed: {text}");
    }
    Ok((elapsed, peak, text))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The registry benchmark (see the module docs).
pub async fn run() -> Result<()> {
    crate::setup()?;
    run_cmd(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "sightline-sensor",
        "-p",
        "sightline",
    ]))?;
    let release = crate::target_dir().join("release");
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let reg = Registry::start(Auth::Anonymous, false)?;
    let dir = reg.scratch().to_path_buf();

    eprintln!("pushing {IMAGES} images (a Debian base layer each, and one of its own)");
    let base = Layer::from_tar(&sightline_testenv::images::debian_rootfs()?)?;
    for i in 0..IMAGES {
        let mut own = LayerTar::create(&dir.join(format!("own-{i}.tar")))?;
        own.dir("srv", 0o755)?
            .file("srv/release", format!("image {i}\n").as_bytes(), 0o644)?;
        let archive = dir.join(format!("img-{i}.tar"));
        docker_archive(
            &[&format!("bench/app-{i:02}:1")],
            &[base.clone(), own.finish()?],
            &RunConfig::default(),
            &archive,
        )?;
        reg.push(
            &format!("docker-archive:{}", archive.display()),
            &format!("bench/app-{i:02}"),
            "1",
        )?;
        std::fs::remove_file(&archive)?;
    }

    let ns = helpers::namespace(&client, "bench").await?;
    let key: ActivationKey = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"modules": ["inventory", "containerSecurity"], "scope": {"namespaceSelector": {}}},
    }))?;
    Api::<ActivationKey>::all(client.clone())
        .create(&PostParams::default(), &key)
        .await?;
    let spec = json!({"url": reg.url, "tagsPerRepository": 1, "schedule": "@hourly"});
    let sensor: Sensor = serde_json::from_value(json!({
        "metadata": {"name": "registry", "namespace": ns},
        "spec": {"type": "registry", "activationKeyRef": {"name": "bench"}, "registry": spec},
    }))?;
    Api::<Sensor>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sensor)
        .await?;
    let sensor_run = || {
        let mut cmd = Command::new(release.join("sightline-sensor"));
        cmd.arg("registry")
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("SIGHTLINE_SENSOR", format!("{ns}/registry"))
            .env("SIGHTLINE_ACTIVATION_KEY", "bench")
            .env("SIGHTLINE_MODULES", "containerSecurity")
            .env("SIGHTLINE_CONFIG", spec.to_string())
            .env("SIGHTLINE_REGISTRY_CREDENTIALS", dir.join("none"))
            .env("RUST_LOG", "info");
        cmd
    };
    let blobs = |reg: &Registry| reg.gets("/blobs/");
    let before = blobs(&reg);
    let (cold, cold_rss, _) = measure(sensor_run())?;
    let cold_blobs = blobs(&reg) - before;
    let before = blobs(&reg);
    let (warm, warm_rss, _) = measure(sensor_run())?;
    let warm_blobs = blobs(&reg) - before;

    // Baseline: skopeo reading the same 50 images out of the registry.
    let out = dir.join("skopeo-out");
    std::fs::create_dir_all(&out)?;
    let t = Instant::now();
    for i in 0..IMAGES {
        let dest = out.join(format!("{i}"));
        run_cmd(
            Command::new("/usr/bin/skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{}/bench/app-{i:02}:1", reg.host))
                .arg(format!("dir:{}", dest.display()))
                .env("HOME", &dir),
        )?;
        std::fs::remove_dir_all(&dest)?;
    }
    let skopeo = t.elapsed();

    // One CI scan of the debootstrap image, against cat of its archive.
    let db = dir.join("vulns.db");
    run_cmd(
        Command::new(release.join("sightline"))
            .args(["db", "import"])
            .arg(crate::root().join("sensors/scan/tests/data/osv"))
            .arg("--output-file")
            .arg(&db),
    )?;
    let debian = dir.join("debian.tar");
    docker_archive(
        &["bench/debian:12"],
        std::slice::from_ref(&base),
        &RunConfig::default(),
        &debian,
    )?;
    let mut scan = Command::new(release.join("sightline"));
    scan.args(["scan", "image"])
        .arg(format!("docker-archive:{}", debian.display()))
        .arg("--db")
        .arg(&db)
        .args(["-o", "json"])
        .env("CI", "true");
    let (scan_time, scan_rss, _) = measure(scan)?;
    let t = Instant::now();
    run_cmd(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cat '{}' > /dev/null", debian.display())),
    )?;
    let cat = t.elapsed();
    let size = std::fs::metadata(&debian)?.len();

    let s = |d: Duration| d.as_secs_f64();
    println!("\n## Registry and CI scans (cargo xtask bench --only registry)\n");
    println!("| measure | wall | peak RSS | blob fetches | baseline (same run) | ratio |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| registry sensor, {IMAGES} images, cold | {:.1} s | {:.1} MiB | {cold_blobs} | skopeo copies them: {:.1} s | {:.2}x |",
        s(cold),
        mib(cold_rss),
        s(skopeo),
        s(cold) / s(skopeo)
    );
    println!(
        "| registry sensor, {IMAGES} images, warm | {:.1} s | {:.1} MiB | {warm_blobs} | the cold run: {:.1} s | {:.2}x |",
        s(warm),
        mib(warm_rss),
        s(cold),
        s(warm) / s(cold)
    );
    println!(
        "| sightline scan image, debootstrap ({:.0} MiB) | {:.2} s | {:.1} MiB | — | cat of the archive: {:.2} s | {:.1}x |",
        size as f64 / (1 << 20) as f64,
        s(scan_time),
        mib(scan_rss),
        s(cat),
        s(scan_time) / s(cat)
    );
    Ok(())
}
