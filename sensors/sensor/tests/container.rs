//! The container sensor as the operator's DaemonSet runs it, against a real
//! kube-apiserver and a real dockerd: images present at start, an image
//! imported while it runs (an event), a running container, vulnerability
//! findings from an OSV database, and a clean stop on SIGTERM. The sensor
//! reports through the operator's ingestion API with a token bound to its
//! pod on `node-a`, as in a cluster.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::Api;
use serde_json::json;
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind};
use sightline_testenv::docker::Docker;
use sightline_testenv::images::debian_rootfs;
use sightline_testenv::{ControlPlane, Options, helpers};

mod support;

use support::{
    alpine, assert_debian_image, asset_status, container_identity, ingest, openssl_advisories,
    start_sensor, top_fixes, vuln_db,
};

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

#[tokio::test(flavor = "multi_thread")]
async fn reports_images_and_containers_from_docker() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let assets: Api<Asset> = Api::all(client.clone());
    let docker = Docker::start()?;
    let dir = tempfile::tempdir()?;

    let db_path = vuln_db(dir.path())?;

    let old = import_alpine(&docker, "sensor-test/alpine:old", "3.19.0", "3.1.4-r2")?;

    let config = json!({"runtimes": [{"type": "docker", "endpoint": format!("unix://{}", docker.socket().display())}]});
    let log = dir.path().join("sensor.log");
    let (api, _store) = ingest(&cp).await?;
    let token = container_identity(&cp, &config, dir.path()).await?;
    let mut sensor = start_sensor(&cp, &api, &token, &config, &db_path, &log)?;
    let tail = || sightline_testenv::process::tail(&log, 40);

    // An image present at start: analysed, matched, reported.
    let status = asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &old),
        "the old image's Asset",
        // The operator writes the facts, then (under their own field
        // manager) which nodes hold the image: wait for both.
        |s| s.get("findings").is_some() && s["sources"][0]["nodes"].is_object(),
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
    assert_eq!(
        status["sources"][0]["nodes"],
        json!({"count": 1, "recent": [{"node": "node-a", "runtime": "docker"}]})
    );
    let vulns = &status["findings"]["vulnerabilities"];
    assert_eq!(vulns["unknown"], 3, "{vulns}");
    assert_eq!(top_fixes(&status), openssl_advisories());

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
    assert_debian_image(&assets, &debian)
        .await
        .with_context(tail)?;

    // SIGTERM: a prompt, clean exit.
    let exit = sensor
        .terminate(Duration::from_secs(10))
        .context("the sensor did not stop on SIGTERM")?;
    assert!(exit.success(), "{exit}: {}", tail());
    docker.run(&["rm", "--force", "sleeper"])?;
    Ok(())
}
