//! An image the sensor cannot analyse (here, a layer in a compression OCI
//! does not allow) neither stops the sensor nor is tried again and again:
//! it is reported with why and when it is tried next, the other images are
//! analysed, and after a restart the sensor remembers the failure from the
//! operator's inventory instead of analysing the image once more. Real
//! containerd, kube-apiserver and sensor binary.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::Api;
use serde_json::json;
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind};
use sightline_testenv::archive::{RunConfig, apk_layer, docker_archive, raw_layer};
use sightline_testenv::containerd::Containerd;
use sightline_testenv::{ControlPlane, Options, helpers};

mod support;

use support::{alpine, asset_status, container_identity, ingest, start_sensor, vuln_db};

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_cannot_be_analysed_is_reported_and_not_retried_after_a_restart() -> Result<()>
{
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let assets: Api<Asset> = Api::all(client.clone());
    let ctrd = Containerd::start()?;
    let dir = tempfile::tempdir()?;
    let db_path = vuln_db(dir.path())?;

    // An xz-compressed layer: OCI allows only gzip and zstd, so analysis
    // refuses it (containerd keeps it as it is, unpacked never).
    let mut xz = b"\xfd7zXZ\x00".to_vec();
    xz.extend_from_slice(&[0u8; 4096]);
    let layer = raw_layer(dir.path(), "xz", &xz)?;
    let archive = dir.path().join("hostile.tar");
    let hostile = docker_archive(
        &["sensor-test/hostile:xz"],
        &[layer],
        &RunConfig::default(),
        &archive,
    )?;
    ctrd.import_without_unpacking(&archive)?;
    let (os, db) = alpine("3.19.0", "3.1.4-r2");
    let layer = apk_layer(dir.path(), "good", &os, &db)?;
    let archive = dir.path().join("good.tar");
    let good = docker_archive(
        &["sensor-test/alpine:good"],
        &[layer],
        &RunConfig::default(),
        &archive,
    )?;
    ctrd.import(&archive)?;

    let config = json!({"runtimes": [{"type": "containerd", "endpoint": ctrd.endpoint()}]});
    let (api, _store) = ingest(&cp).await?;
    let token = container_identity(&cp, &config, dir.path()).await?;
    let log = dir.path().join("sensor.log");
    let mut sensor = start_sensor(&cp, &api, &token, &config, &db_path, &log)?;
    let tail = |log: &std::path::Path| {
        format!(
            "sensor log:\n{}\n{}",
            sightline_testenv::process::tail(log, 40),
            ctrd.logs()
        )
    };

    // The good image is analysed, whatever the other one does.
    asset_status(
        &assets,
        &asset_name(AssetKind::ContainerImage, &good),
        "the good image's Asset",
        |s| s["observed"]["packages"]["total"] == 2,
    )
    .await
    .with_context(|| tail(&log))?;
    // The hostile one is in the inventory, with why it was not analysed.
    let hostile_asset = asset_name(AssetKind::ContainerImage, &hostile);
    let status = asset_status(&assets, &hostile_asset, "the hostile image's Asset", |s| {
        s["observed"]["analysisFailure"].is_object()
    })
    .await
    .with_context(|| tail(&log))?;
    let failure = &status["observed"]["analysisFailure"];
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("xz-compressed")),
        "{status}"
    );
    assert_eq!(failure["attempts"], 1, "{status}");
    let at: jiff::Timestamp = failure["at"].as_str().context("at")?.parse()?;
    let retry: jiff::Timestamp = failure["retryAfter"].as_str().context("retry")?.parse()?;
    assert_eq!(retry.duration_since(at).as_secs(), 15 * 60, "{status}");
    assert_eq!(
        status["observed"]["repoTags"],
        json!(["docker.io/sensor-test/hostile:xz"])
    );

    // Restarted, the sensor knows the failure and does not try again.
    sensor.stop(Duration::from_secs(10));
    let log2 = dir.path().join("sensor-2.log");
    let _sensor = start_sensor(&cp, &api, &token, &config, &db_path, &log2)?;
    helpers::wait_for(
        "the restarted sensor's full scan",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(&log2).ok()?;
            text.contains("analysed image").then_some(())
        },
    )
    .await
    .with_context(|| tail(&log2))?;
    // Give the scan time to reach the hostile image too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&log2)?;
    assert!(
        !text.contains("image analysis failed"),
        "tried again after a restart:\n{}",
        tail(&log2)
    );
    let status = serde_json::to_value(assets.get(&hostile_asset).await?.status)?;
    assert_eq!(
        status["observed"]["analysisFailure"]["attempts"], 1,
        "{status}"
    );
    Ok(())
}
