//! The container sensor as the operator's DaemonSet runs it, against a real
//! kube-apiserver and a real dockerd: images present at start, an image
//! imported while it runs (an event), a running container, vulnerability
//! findings from an OSV database, and a clean stop on SIGTERM.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::Api;
use serde_json::{Value, json};
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind};
use sightline_scan::vuln::Database;
use sightline_testenv::docker::Docker;
use sightline_testenv::images::debian_rootfs;
use sightline_testenv::process::Proc;
use sightline_testenv::{ControlPlane, Options, helpers};

fn alpine(release: &str, openssl: &str) -> (Vec<u8>, Vec<u8>) {
    let os = format!("ID=alpine\nVERSION_ID={release}\nPRETTY_NAME=\"Alpine Linux v3.19\"\n");
    let db = format!(
        "P:libcrypto3\nV:{openssl}\nA:x86_64\no:openssl\n\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n"
    );
    (os.into_bytes(), db.into_bytes())
}

fn import_alpine(docker: &Docker, tag: &str, release: &str, openssl: &str) -> Result<String> {
    let (os, db) = alpine(release, openssl);
    docker.import_files(
        tag,
        &[("etc/os-release", &os), ("lib/apk/db/installed", &db)],
    )?;
    Ok(docker
        .run(&["image", "inspect", "--format", "{{.Id}}", tag])?
        .trim()
        .to_owned())
}

/// Waits for the Asset `name` to satisfy `ready`; returns its status.
async fn asset_status(
    api: &Api<Asset>,
    name: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value> {
    Ok(helpers::wait_for(what, Duration::from_secs(90), || async {
        let a = api.get_opt(name).await.ok()??;
        let status = serde_json::to_value(a.status?).ok()?;
        ready(&status).then_some(status)
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_images_and_containers_from_docker() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let assets: Api<Asset> = Api::all(client.clone());
    let docker = Docker::start()?;
    let dir = tempfile::tempdir()?;

    let osv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/data/osv");
    let (db, _) = Database::import_osv(&osv, "2026-11-26T00:00:00Z".into())?;
    let db_path = dir.path().join("vulns.db");
    db.write(&db_path)?;

    let old = import_alpine(&docker, "sensor-test/alpine:old", "3.19.0", "3.1.4-r2")?;

    let config = json!({"runtimes": [{"type": "docker", "endpoint": format!("unix://{}", docker.socket().display())}]});
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sightline-sensor"));
    cmd.arg("container")
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("NODE_NAME", "node-a")
        .env("SIGHTLINE_SENSOR", "sightline-system/containers")
        .env("SIGHTLINE_ACTIVATION_KEY", "lab")
        .env("SIGHTLINE_MODULES", "containerSecurity,vulnerability")
        .env("SIGHTLINE_CONFIG", config.to_string())
        .env("SIGHTLINE_VULN_DB", &db_path)
        .env("RUST_LOG", "info");
    let log = dir.path().join("sensor.log");
    let mut sensor = Proc::spawn("sightline-sensor", cmd, &log)?;
    let tail = || sightline_testenv::process::tail(&log, 40);

    // An image present at start: analysed, matched, reported.
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &old),
        "the old image's Asset",
        |s| s.get("findings").is_some(),
    )
    .await
    .with_context(tail)?;
    assert_eq!(status["kind"], "ContainerImage");
    assert_eq!(status["identity"], old.as_str());
    assert_eq!(
        status["sources"][0]["sensor"],
        "sightline-system/containers"
    );
    assert_eq!(status["sources"][0]["activationKey"], "lab");
    let observed = &status["observed"];
    assert_eq!(observed["osRelease"]["ID"], "alpine");
    assert_eq!(observed["repoTags"], json!(["sensor-test/alpine:old"]));
    assert_eq!(observed["packages"], json!({"total": 2, "apk": 2}));
    assert_eq!(observed["nodes"], json!({"node-a": "docker"}));
    let vulns = &status["findings"]["vulnerabilities"];
    assert_eq!(vulns["unknown"], 3, "{vulns}");
    let top: Vec<(&str, &str)> = vulns["top"]
        .as_array()
        .context("top")?
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap_or(""),
                v["fixed"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        top,
        [
            ("ALPINE-CVE-2023-6129", "3.1.4-r3"),
            ("ALPINE-CVE-2023-6237", "3.1.4-r4"),
            ("ALPINE-CVE-2024-0727", "3.1.4-r5"),
        ]
    );

    // An image imported while the sensor runs: the event brings it in.
    let new = import_alpine(&docker, "sensor-test/alpine:new", "3.19.1", "3.1.4-r5")?;
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &new),
        "the new image's Asset",
        |s| s.get("findings").is_some(),
    )
    .await
    .with_context(tail)?;
    assert_eq!(status["findings"]["vulnerabilities"]["unknown"], 0);

    // A running container of a real Debian image.
    docker.run(&[
        "import",
        &debian_rootfs()?.display().to_string(),
        "sensor-test/debian:12",
    ])?;
    let id = docker
        .run(&[
            "run",
            "--detach",
            "--network",
            "none",
            "--name",
            "sleeper",
            "sensor-test/debian:12",
            "sleep",
            "600",
        ])?
        .trim()
        .to_owned();
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::Container, &id),
        "the container's Asset",
        |_| true,
    )
    .await
    .with_context(tail)?;
    let observed = &status["observed"];
    assert_eq!(observed["image"], "sensor-test/debian:12");
    assert_eq!(observed["name"], "sleeper");
    assert_eq!(observed["state"], "running");
    assert_eq!(observed["node"], "node-a");
    assert!(
        observed["started"]
            .as_str()
            .is_some_and(|s| s.starts_with("20")),
        "{observed}"
    );
    let debian = observed["imageId"].as_str().context("imageId")?.to_owned();
    assert_eq!(
        observed["imageAsset"],
        asset_name(AssetKind::ContainerImage, &debian)
    );
    // Starting the container analysed its image: the whole dpkg database.
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &debian),
        "the Debian image's Asset",
        |_| true,
    )
    .await
    .with_context(tail)?;
    assert_eq!(status["observed"]["osRelease"]["VERSION_ID"], "12");
    assert!(
        status["observed"]["packages"]["deb"]
            .as_u64()
            .is_some_and(|n| n >= 100),
        "{}",
        status["observed"]["packages"]
    );

    // SIGTERM: a prompt, clean exit.
    let exit = sensor
        .terminate(Duration::from_secs(10))
        .context("the sensor did not stop on SIGTERM")?;
    assert!(exit.success(), "{exit}: {}", tail());
    docker.run(&["rm", "--force", "sleeper"])?;
    Ok(())
}
