//! The registry sensor as the operator's CronJob runs it, against a real
//! kube-apiserver and Debian's docker-registry: the catalog over several
//! pages, include and exclude globs, the newest N images of a repository,
//! a multi-platform index analysed per platform, and a second run that
//! fetches no blob at all (counted in the registry's own access log).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sightline_crds::{Asset, Sensor};
use sightline_testenv::archive::{
    Layer, PlatformImage, RunConfig, apk_layer, docker_archive, oci_index_layout,
};
use sightline_testenv::registry::{Auth, Registry};
use sightline_testenv::{ControlPlane, Options, helpers};

mod support;

use support::alpine;

/// One layer of Alpine-format files, in `dir`.
fn alpine_layer(dir: &Path, name: &str, release: &str, openssl: &str) -> Result<Layer> {
    let (os, db) = alpine(release, openssl);
    Ok(apk_layer(dir, name, &os, &db)?)
}

/// Pushes an Alpine-format image built at `created` as `repo:tag`.
fn push(reg: &Registry, repo: &str, tag: &str, openssl: &str, created: &str) -> Result<()> {
    let dir = reg.scratch();
    let name = format!("{}-{tag}", repo.replace('/', "_"));
    let layer = alpine_layer(dir, &name, "3.19.0", openssl)?;
    let archive = dir.join(format!("{name}.tar"));
    docker_archive(
        &[&format!("{repo}:{tag}")],
        &[layer],
        &RunConfig {
            created: Some(created.to_owned()),
            ..RunConfig::default()
        },
        &archive,
    )?;
    Ok(reg.push(&format!("docker-archive:{}", archive.display()), repo, tag)?)
}

/// Runs the sensor once; its log on failure.
fn run_sensor(
    cp: &ControlPlane,
    reg: &Registry,
    (api, token): (&str, &Path),
    sensor: &str,
    spec: &Value,
    log: &Path,
) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sightline-sensor"))
        .arg("registry")
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("SIGHTLINE_API_URL", api)
        .env("SIGHTLINE_TOKEN_FILE", token)
        .env("SIGHTLINE_SENSOR", sensor)
        .env("SIGHTLINE_ACTIVATION_KEY", "lab")
        .env("SIGHTLINE_MODULES", "containerSecurity")
        .env("SIGHTLINE_CONFIG", spec.to_string())
        .env(
            "SIGHTLINE_REGISTRY_CREDENTIALS",
            reg.scratch().join("no-credentials"),
        )
        .env("SIGHTLINE_REGISTRY_PAGE_SIZE", "4")
        .env("RUST_LOG", "info")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(log, &text)?;
    ensure!(out.status.success(), "the registry sensor failed:\n{text}");
    Ok(text)
}

/// Every registry-sensor Asset's status, by the tags it records.
async fn registry_assets(api: &Api<Asset>, sensor: &str) -> Result<Vec<Value>> {
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|a| serde_json::to_value(a.status?).ok())
        .filter(|s| {
            s["sources"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x["sensor"] == sensor))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_a_registry_and_skips_what_it_analysed_before() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let reg = Registry::start(Auth::Anonymous, false)?;

    // app/web: four tags on three images; latest is 2.0.
    push(&reg, "app/web", "1.0", "3.1.4-r2", "2026-01-01T00:00:00Z")?;
    push(&reg, "app/web", "1.1", "3.1.4-r3", "2026-02-01T00:00:00Z")?;
    push(&reg, "app/web", "2.0", "3.1.4-r5", "2026-03-01T00:00:00Z")?;
    push(
        &reg,
        "app/web",
        "latest",
        "3.1.4-r5",
        "2026-03-01T00:00:00Z",
    )?;
    // Filtered out: an excluded and a not-included repository.
    push(
        &reg,
        "app/scratch-1",
        "1",
        "3.1.4-r2",
        "2026-01-01T00:00:00Z",
    )?;
    push(&reg, "other/tool", "1", "3.1.4-r2", "2026-01-01T00:00:00Z")?;
    // Enough repositories for several catalog pages (4 per page here).
    for i in 0..6 {
        push(
            &reg,
            &format!("app/svc-{i}"),
            "1",
            "3.1.4-r2",
            "2026-01-01T00:00:00Z",
        )?;
    }
    // A multi-platform image: an index of amd64 and arm64 manifests.
    let dir = reg.scratch();
    let amd = alpine_layer(dir, "multi-amd64", "3.19.0", "3.1.4-r2")?;
    let arm = alpine_layer(dir, "multi-arm64", "3.19.1", "3.1.4-r5")?;
    let layout = dir.join("multi-layout");
    oci_index_layout(
        &layout,
        "1",
        &[
            PlatformImage {
                architecture: "amd64",
                layers: &[amd],
                run: RunConfig::default(),
            },
            PlatformImage {
                architecture: "arm64",
                layers: &[arm],
                run: RunConfig::default(),
            },
        ],
    )?;
    reg.push(&format!("oci:{}:1", layout.display()), "app/multi", "1")?;
    let index_digest = reg.digest("app/multi", "1")?;

    let key: ActivationKeyObj = serde_json::from_value(json!({
        "metadata": {"name": "lab"}, "spec": {"modules": ["inventory", "containerSecurity"]},
    }))?;
    Api::<ActivationKeyObj>::all(client.clone())
        .create(&PostParams::default(), &key)
        .await?;
    let ns = helpers::namespace(&client, "scans").await?;
    let sensor_id = format!("{ns}/registry");
    let spec = json!({
        "url": reg.url, "tagsPerRepository": 2, "schedule": "@hourly",
        "repositories": {"include": ["app/**"], "exclude": ["app/scratch-*"]},
    });
    let sensor: Sensor = serde_json::from_value(json!({
        "metadata": {"name": "registry", "namespace": ns},
        "spec": {"type": "registry", "activationKeyRef": {"name": "lab"}, "registry": spec},
    }))?;
    let sensors: Api<Sensor> = Api::namespaced(client.clone(), &ns);
    sensors.create(&PostParams::default(), &sensor).await?;

    let (api, store) = support::ingest(&cp).await?;
    let token = sightline_testenv::identity::SensorIdentity {
        namespace: &ns,
        name: "registry",
        spec: json!({"type": "registry", "registry": spec}),
        key: "lab",
        node: None,
    }
    .token_file(&client, dir)
    .await?;
    let log = dir.join("sensor-1.log");
    run_sensor(&cp, &reg, (&api, &token), &sensor_id, &spec, &log)?;
    ensure!(
        reg.gets("/v2/_catalog") >= 3,
        "the catalog took several pages"
    );
    let assets: Api<Asset> = Api::all(client.clone());
    let found = registry_assets(&assets, &sensor_id).await?;
    // (repository, tags) of each repository an Asset lists.
    let entries = |s: &Value| -> Vec<(String, Vec<String>)> {
        s["observed"]["registry"]["repositories"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let mut tags: Vec<String> = e["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect();
                tags.sort();
                (e["repository"].as_str().unwrap_or("").to_owned(), tags)
            })
            .collect()
    };
    let tags_of =
        |s: &Value| -> Vec<String> { entries(s).into_iter().flat_map(|(_, t)| t).collect() };
    let in_repo = |s: &Value, repo: &str| entries(s).iter().any(|(r, _)| r == repo);
    let web: Vec<Vec<String>> = found
        .iter()
        .filter(|s| in_repo(s, "app/web"))
        .map(tags_of)
        .collect();
    // The two newest images of app/web (2.0 with latest, then 1.1), not 1.0.
    ensure!(web.len() == 2, "{web:?}");
    ensure!(
        web.contains(&vec!["2.0".to_owned(), "latest".to_owned()]),
        "{web:?}"
    );
    ensure!(web.contains(&vec!["1.1".to_owned()]), "{web:?}");
    let repos: std::collections::BTreeSet<String> = found
        .iter()
        .flat_map(|s| entries(s).into_iter().map(|(r, _)| r))
        .collect();
    ensure!(
        repos
            .iter()
            .all(|r| r.starts_with("app/") && !r.starts_with("app/scratch")),
        "{repos:?}"
    );
    ensure!(
        repos.len() == 8,
        "app/web, app/multi and six app/svc-*: {repos:?}"
    );
    // Each image's whole analysis went to the detail store, as this Sensor's.
    for s in &found {
        let id = s["identity"].as_str().unwrap_or_default();
        let name = sightline_crds::asset::asset_name(sightline_crds::AssetKind::ContainerImage, id);
        let kept = store.latest(&name, Some(&sensor_id)).await?;
        let total = s["observed"]["packages"]["total"].as_u64();
        ensure!(
            kept.as_ref()
                .is_some_and(|k| Some(k.image.analysis.packages.len() as u64) == total),
            "details of {name} ({total:?} packages): {:?}",
            kept.map(|k| k.image.analysis.packages.len())
        );
    }
    // The six app/svc-* hold the very same image: one Asset lists them all.
    let svc: Vec<&Value> = found.iter().filter(|s| in_repo(s, "app/svc-0")).collect();
    ensure!(svc.len() == 1 && entries(svc[0]).len() == 6, "{svc:?}");
    // One Asset per platform of the index, both naming it.
    let multi: Vec<&Value> = found.iter().filter(|s| in_repo(s, "app/multi")).collect();
    let mut platforms: Vec<&str> = multi
        .iter()
        .filter_map(|s| s["observed"]["registry"]["platform"].as_str())
        .collect();
    platforms.sort();
    ensure!(platforms == ["linux/amd64", "linux/arm64"], "{platforms:?}");
    ensure!(
        multi.iter().all(|s| {
            s["observed"]["registry"]["repositories"][0]["indexDigest"] == index_digest.as_str()
        }),
        "index {index_digest}: {:?}",
        multi
            .iter()
            .map(|s| &s["observed"]["registry"])
            .collect::<Vec<_>>()
    );
    let web2 = found
        .iter()
        .find(|s| tags_of(s).contains(&"latest".to_owned()))
        .context("2.0")?;
    ensure!(
        web2["observed"]["packages"] == json!({"total": 2, "apk": 2}),
        "{}",
        web2["observed"]
    );
    ensure!(
        web2["observed"]["repoTags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!(format!("{}/app/web:latest", reg.host)))),
        "{}",
        web2["observed"]
    );
    let status = sensors
        .get("registry")
        .await?
        .status
        .context("the Sensor's status")?;
    ensure!(
        status.assets_reported == Some(5),
        "two of app/web, two of app/multi, one of app/svc-*: {status:?}"
    );
    ensure!(status.last_scan_time.is_some());

    // The second run: everything known, so not one blob is fetched.
    let blobs_before = reg.gets("/blobs/");
    let seen_before = web2["sources"][0]["lastSeen"].clone();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let text = run_sensor(
        &cp,
        &reg,
        (&api, &token),
        &sensor_id,
        &spec,
        &dir.join("sensor-2.log"),
    )?;
    ensure!(
        reg.gets("/blobs/") == blobs_before,
        "blobs were fetched again:\n{text}"
    );
    ensure!(
        text.contains("analysed=0") && text.contains("blob_fetches=0"),
        "{text}"
    );
    let again = registry_assets(&assets, &sensor_id).await?;
    ensure!(again.len() == found.len());
    let web2 = again
        .iter()
        .find(|s| tags_of(s).contains(&"latest".to_owned()))
        .context("2.0")?;
    ensure!(
        web2["sources"][0]["lastSeen"] != seen_before,
        "lastSeen moved"
    );
    ensure!(
        web2["observed"]["packages"] == json!({"total": 2, "apk": 2}),
        "the recorded facts were kept"
    );

    // On demand, from the CLI with the user's credentials: the same scan.
    let out = Command::new(sightline_testenv::binaries::workspace_binary("sightline")?)
        .args(["registry", "scan", "-n", &ns, "registry", "--api", &api])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        said.contains("8 repositories, 5 images reported (0 analysed"),
        "{said}"
    );
    ensure!(reg.gets("/blobs/") == blobs_before, "the CLI fetched blobs");

    // A Sensor that asks for arm64 only analyses that platform of the index.
    let arm_spec = json!({
        "url": reg.url, "tagsPerRepository": 2, "schedule": "@hourly",
        "repositories": {"include": ["app/multi"]}, "platforms": ["linux/arm64"],
    });
    let arm_token = sightline_testenv::identity::SensorIdentity {
        namespace: &ns,
        name: "registry-arm",
        spec: json!({"type": "registry", "registry": arm_spec}),
        key: "lab",
        node: None,
    }
    .token_file(&client, dir)
    .await?;
    let arm_id = format!("{ns}/registry-arm");
    let text = run_sensor(
        &cp,
        &reg,
        (&api, &arm_token),
        &arm_id,
        &arm_spec,
        &dir.join("sensor-arm.log"),
    )?;
    ensure!(text.contains("analysed=1"), "{text}");
    let arm: Vec<Value> = registry_assets(&assets, &arm_id).await?;
    let arm_platforms: Vec<&str> = arm
        .iter()
        .filter_map(|s| s["observed"]["registry"]["platform"].as_str())
        .collect();
    ensure!(arm_platforms == ["linux/arm64"], "{arm_platforms:?}");
    Ok(())
}

type ActivationKeyObj = sightline_crds::ActivationKey;
