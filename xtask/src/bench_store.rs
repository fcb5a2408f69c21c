//! `cargo xtask bench --only store`: the detail store on each engine.
//!
//! A real control plane and the release operator binary, once with a SQLite
//! file and once with a real PostgreSQL server. The images' package lists
//! are real: the debootstrap image's, analysed by the real analyser, each
//! image with some of its versions changed so no two are alike. The
//! benchmark reports the images (Assets) once, then for each engine:
//!
//! - ingest: every image's details sent through the API, two at a time
//!   (the operator's limit), as images and packages per second;
//! - memory: the operator's RSS after start (the Asset index loaded), after
//!   1,000 images' details and after all of them;
//! - queries: p50/p99 of `GET …/sbom` and `GET …/findings` for random
//!   images; baseline: `GET /api/v1/summary` (answered from memory, behind
//!   the same authentication) in the same run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sightline_report::client::{Client, Credentials};
use sightline_report::details::ImageDetails;
use sightline_report::facts::ImageFacts;
use sightline_report::{ImageObservation, Observation};
use sightline_scan::source::Image;
use sightline_scan::vuln::{Finding, Level, Severity};
use sightline_testenv::archive::{Layer, RunConfig, docker_archive};
use sightline_testenv::process::{Proc, free_port};
use sightline_testenv::{ControlPlane, Options};

use crate::run as run_cmd;

/// The benchmark's numbers for one engine.
struct Numbers {
    engine: &'static str,
    seconds: f64,
    images: usize,
    packages: usize,
    rss_start_mib: f64,
    rss_1k_mib: f64,
    rss_all_mib: f64,
    sbom: (Duration, Duration),
    findings: (Duration, Duration),
    baseline: (Duration, Duration),
}

/// Runs the benchmark with `images` images.
pub async fn run(images: usize) -> Result<()> {
    crate::setup()?;
    run_cmd(crate::cargo().args(["build", "--release", "-p", "sightline-operator"]))?;
    let base = debian_image()?;
    eprintln!(
        "base image: {} packages from the debootstrap image",
        base.analysis.packages.len()
    );
    let cp = ControlPlane::start(Options::default()).await?;
    let client = cp.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "sightline-system"}}))?,
        )
        .await?;
    let pg = sightline_testenv::postgres::Postgres::start()?;
    let dir = tempfile::tempdir()?;
    let sqlite = dir.path().join("details.db").display().to_string();
    let reader = reader_token(&client).await?;

    let mut results = Vec::new();
    let mut reported = false;
    for (engine, location) in [("sqlite", sqlite.as_str()), ("postgresql", &pg.url())] {
        let port = free_port()?;
        let mut cmd = Command::new(crate::target_dir().join("release/sightline-operator"));
        cmd.env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "warn")
            .args([
                "--namespace",
                "sightline-system",
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--leader-election=false",
                "--ingest-rate",
                "100000",
                "--ingest-burst",
                "100000",
                "--detail-store",
                location,
            ]);
        let operator = Proc::spawn(
            "sightline-operator",
            cmd,
            &cp.dir().join(format!("operator-{engine}.log")),
        )?;
        let api = format!("http://127.0.0.1:{port}");
        if !reported {
            let token = key_token(&client).await?;
            report_images(&api, &token, &base, images).await?;
            reported = true;
        }
        let token = key_token(&client).await?;
        wait_synced(&api, &reader).await?;
        let rss_start = rss_mib(operator.pid)?;
        let ci = Client::new(&api, Credentials::Token(token), None)?;
        let start = Instant::now();
        let mut rss_1k = rss_start;
        let mut packages = 0;
        for chunk in (0..images).collect::<Vec<_>>().chunks(1000) {
            let sent: Vec<usize> = futures::stream::iter(chunk.iter().map(|&i| {
                let (ci, base) = (&ci, &base);
                async move {
                    let d = details(base, i);
                    ci.send_details(&d)
                        .await
                        .with_context(|| format!("details of image {i}"))
                        .map(|r| r.packages)
                }
            }))
            .buffer_unordered(2)
            .try_collect()
            .await?;
            packages += sent.iter().sum::<usize>();
            if chunk.first() == Some(&0) {
                rss_1k = rss_mib(operator.pid)?;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let rss_all = rss_mib(operator.pid)?;
        let names: Vec<String> = (0..images)
            .step_by((images / 500).max(1))
            .map(|i| details(&base, i).asset_name())
            .collect();
        let sbom = latencies(
            &api,
            &reader,
            names.iter().map(|n| format!("/api/v1/assets/{n}/sbom")),
        )
        .await?;
        let findings = latencies(
            &api,
            &reader,
            names.iter().map(|n| format!("/api/v1/assets/{n}/findings")),
        )
        .await?;
        let baseline = latencies(
            &api,
            &reader,
            names.iter().map(|_| "/api/v1/summary".to_owned()),
        )
        .await?;
        drop(operator);
        results.push(Numbers {
            engine,
            seconds,
            images,
            packages,
            rss_start_mib: rss_start,
            rss_1k_mib: rss_1k,
            rss_all_mib: rss_all,
            sbom,
            findings,
            baseline,
        });
    }
    drop(pg);

    println!(
        "\ndetail store, {images} images ({} packages each on average)",
        results.first().map_or(0, |r| r.packages / r.images.max(1))
    );
    println!(
        "{:<11} {:>9} {:>11} {:>9} {:>9} {:>9} {:>16} {:>16} {:>16}",
        "engine",
        "images/s",
        "packages/s",
        "RSS 0",
        "RSS 1k",
        "RSS all",
        "sbom p50/p99",
        "findings p50/99",
        "baseline p50/99"
    );
    for r in &results {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<11} {:>9.0} {:>11.0} {:>7.1}Mi {:>7.1}Mi {:>7.1}Mi {:>7.2}/{:<6.2}ms {:>7.2}/{:<6.2}ms {:>7.2}/{:<6.2}ms",
            r.engine,
            r.images as f64 / r.seconds,
            r.packages as f64 / r.seconds,
            r.rss_start_mib,
            r.rss_1k_mib,
            r.rss_all_mib,
            ms(r.sbom.0),
            ms(r.sbom.1),
            ms(r.findings.0),
            ms(r.findings.1),
            ms(r.baseline.0),
            ms(r.baseline.1),
        );
        println!(
            "{:<11} sbom p99 / baseline p99 = {:.1}x; RSS all / RSS 1k = {:.2}",
            "",
            r.sbom.1.as_secs_f64() / r.baseline.1.as_secs_f64().max(1e-9),
            r.rss_all_mib / r.rss_1k_mib.max(1e-9)
        );
    }
    Ok(())
}

/// The debootstrap image, analysed: a real package list.
fn debian_image() -> Result<Image> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("debian.tar");
    docker_archive(
        &["bench/debian:12"],
        &[Layer::from_tar(
            &sightline_testenv::images::debian_rootfs()?
        )?],
        &RunConfig::default(),
        &archive,
    )?;
    Ok(sightline_scan::source::docker_archive::analyze(
        &archive,
        None,
        &sightline_scan::Limits::default(),
    )?)
}

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

/// Image `i`: the base's packages, every seventh (shifted by `i`) at
/// another version, and two findings.
fn details(base: &Image, i: usize) -> ImageDetails {
    let mut image = base.clone();
    image.config_digest = digest(i);
    image.repo_tags = vec![format!("bench/app-{i}:1")];
    for (j, p) in image.analysis.packages.iter_mut().enumerate() {
        if (i + j).is_multiple_of(7) {
            p.version = format!("{}+bench{i}", p.version);
        }
    }
    let findings = image
        .analysis
        .packages
        .iter()
        .take(2)
        .enumerate()
        .map(|(n, p)| Finding {
            id: format!("CVE-2026-{}", 1000 + (i + n) % 50),
            aliases: vec![],
            package: p.name.clone(),
            version: p.version.clone(),
            purl: p.purl.clone(),
            matched_name: p.name.clone(),
            ecosystem: "Debian:12".into(),
            fixed: None,
            severity: Severity {
                level: Level::High,
                score: None,
                source: None,
            },
            summary: None,
            layer: 0,
            path: String::new(),
        })
        .collect();
    ImageDetails::new(image, Some(findings))
}

/// Reports the images' observations as the key's CI, 200 a request.
async fn report_images(api: &str, token: &str, base: &Image, n: usize) -> Result<()> {
    let ci = Client::new(api, Credentials::Token(token.to_owned()), None)?;
    let start = Instant::now();
    let observations: Vec<Observation> = (0..n)
        .map(|i| {
            Observation::ContainerImage(ImageObservation {
                identity: digest(i),
                facts: ImageFacts {
                    image_id: Some(digest(i)),
                    ..ImageFacts::default()
                },
                vulnerabilities: None,
                runtime: None,
                reference: Some(format!("bench/app-{i}:1")),
            })
        })
        .collect();
    let receipt = ci.send(observations, None).await?;
    if receipt.accepted.len() != n {
        bail!(
            "{} of {n} images were accepted: {:?}",
            receipt.accepted.len(),
            receipt.refused.first()
        );
    }
    eprintln!(
        "reported {n} images ({} packages each) in {:.1}s",
        base.analysis.packages.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The CI key's token, once the operator has made it.
async fn key_token(client: &kube::Client) -> Result<String> {
    let keys: Api<sightline_crds::ActivationKey> = Api::all(client.clone());
    keys.patch(
        "bench",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "ActivationKey",
            "metadata": {"name": "bench"}, "spec": {"modules": ["containerSecurity", "vulnerability"]}})),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "sightline-system");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = secrets
            .get_opt("sightline-key-bench")
            .await?
            .and_then(|s| s.data?.remove("token"))
        {
            return Ok(String::from_utf8_lossy(&t.0).into_owned());
        }
        if Instant::now() > deadline {
            bail!("the key's token did not appear");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A token of a ServiceAccount allowed to get and list Assets.
async fn reader_token(client: &kube::Client) -> Result<String> {
    let ns = "sightline-system";
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench-reader"}}))?,
        )
        .await?;
    let pp = PatchParams::apply("bench").force();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
        .patch(
            "bench-reader",
            &pp,
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "bench-reader"},
                "rules": [{"apiGroups": ["sightline.dev"], "resources": ["assets"], "verbs": ["get", "list"]}]})),
        )
        .await?;
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .patch(
            "bench-reader",
            &pp,
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "bench-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "bench-reader", "namespace": ns}]})),
        )
        .await?;
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 7200}}))?;
    let tr = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request("bench-reader", &PostParams::default(), &req)
        .await?;
    tr.status.map(|s| s.token).context("no token")
}

/// Waits until the operator answers searches (its index holds the Assets).
async fn wait_synced(api: &str, token: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = http
            .get(format!("{api}/api/v1/summary"))
            .bearer_auth(token)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the operator did not serve its index within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// p50 and p99 of GETs of `paths`, one at a time.
async fn latencies(
    api: &str,
    token: &str,
    paths: impl Iterator<Item = String>,
) -> Result<(Duration, Duration)> {
    let http = reqwest::Client::new();
    let mut took = Vec::new();
    for path in paths {
        let start = Instant::now();
        let r = http
            .get(format!("{api}{path}"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        took.push(start.elapsed());
        if !status.is_success() {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
    }
    took.sort();
    let at = |p: f64| {
        took.get(((took.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok((at(0.5), at(0.99)))
}

/// The resident set of `pid`, in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the operator's /proc status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kib / 1024.0)
}
