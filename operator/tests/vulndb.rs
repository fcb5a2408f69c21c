//! The vulnerability database endpoint as container sensors use it: the
//! real operator serving a database file, the sensor's fetcher with a
//! ServiceAccount token, ETags, a replaced database, a broken file that must
//! not be served, and callers without a token or without access; and
//! with a pinned key, signed bundles imported, served and checked again by
//! the sensors' fetcher, while unsigned, foreign and altered ones are not.

mod support;

use std::path::Path;

use anyhow::{Context, Result};
use sightline_container_sensor::vulndb::Fetcher;
use sightline_scan::bundle::{self, Extras, PublicKey, SigningKey};
use sightline_scan::vuln::Database;
use support::{Env, service_account_token};

fn import(dir: &Path, subdirs: &[&str], out: &Path) -> Result<usize> {
    let staging = dir.join(format!("osv-{}", subdirs.join("-")));
    std::fs::create_dir_all(&staging)?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensors/scan/tests/data/osv");
    for sub in subdirs {
        for e in std::fs::read_dir(data.join(sub))? {
            let p = e?.path();
            std::fs::copy(&p, staging.join(p.file_name().context("name")?))?;
        }
    }
    let (db, _) = Database::import_osv(&staging, "2026-11-26T00:00:00Z".into())?;
    db.write(out)?;
    Ok(db.meta.advisories)
}

fn status(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_vulnerability_database_to_sensors() -> Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let served = dir.path().join("vulns.db");
    assert_eq!(import(dir.path(), &["debian"], &served)?, 6);
    let op = env.operator_with("a", &["--vuln-db", &served.display().to_string()])?;
    op.wait_serving().await.with_context(|| env.dump())?;

    let token = service_account_token(&env, "sensor", true).await?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token)?;
    let url = format!("http://127.0.0.1:{}/api/v1/vulndb", op.port);
    let mut fetcher = Fetcher::new(url, token_file, dir.path().join("sensor-copy.db"), None);

    let first = fetcher
        .refresh()
        .await?
        .context("the first fetch brings a database")?;
    assert_eq!(first.meta.advisories, 6);
    assert!(fetcher.cache().is_file());
    assert!(
        fetcher.refresh().await?.is_none(),
        "unchanged: 304, nothing downloaded"
    );

    // A new database (written aside and renamed, as `db import` does).
    assert_eq!(import(dir.path(), &["debian", "alpine"], &served)?, 10);
    let second = fetcher
        .refresh()
        .await?
        .context("a changed database is fetched")?;
    assert_eq!(second.meta.advisories, 10);

    // A broken file in its place is not served: the last good one is.
    std::fs::write(&served, b"sightline-vulndb 1\nnot zstd at all")?;
    assert!(
        fetcher.refresh().await?.is_none(),
        "still the good database's ETag"
    );

    // Callers without a token, or whose token may not list Assets.
    assert_eq!(status(&op.get("/api/v1/vulndb")?), 401);
    let nobody = service_account_token(&env, "nobody", false).await?;
    let raw = op.get_as("/api/v1/vulndb", Some(&nobody))?;
    assert_eq!(status(&raw), 403, "{raw}");
    Ok(())
}

/// A bundle of `db` signed by `key`, with `catalog` (a directory of the
/// three documents) when given.
fn bundle_of(
    dir: &Path,
    name: &str,
    key: &SigningKey,
    db: &Path,
    catalog: Option<&Path>,
) -> Result<std::path::PathBuf> {
    let out = dir.join(name);
    let files: Vec<(String, std::path::PathBuf)> = catalog
        .map(|c| {
            ["taxonomy.yaml", "normalization.yaml", "lifecycle.yaml"]
                .iter()
                .map(|f| (format!("catalog/{f}"), c.join(f)))
                .collect()
        })
        .unwrap_or_default();
    let extras = Extras {
        files: files
            .iter()
            .map(|(n, p)| (n.clone(), p.as_path()))
            .collect(),
        catalog_version: catalog.map(|_| "2099.01.01".to_owned()),
        images: Default::default(),
    };
    bundle::write(&out, key, db, extras, "2026-12-07T00:00:00Z".into())?;
    Ok(out)
}

/// The built-in catalog, re-versioned as a newer one.
fn newer_catalog(dir: &Path) -> Result<std::path::PathBuf> {
    let out = dir.join("catalog");
    std::fs::create_dir_all(&out)?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/catalog");
    for f in ["taxonomy.yaml", "normalization.yaml", "lifecycle.yaml"] {
        let text = std::fs::read_to_string(src.join(f))?;
        let version = sightline_inventory::catalog::Catalog::builtin()?
            .version()
            .to_owned();
        std::fs::write(
            out.join(f),
            text.replace(
                &format!("version: \"{version}\""),
                "version: \"2099.01.01\"",
            ),
        )?;
    }
    Ok(out)
}

async fn put(port: u16, token: &str, file: &Path) -> Result<(u16, String)> {
    let resp = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/api/v1/vulndb"))
        .bearer_auth(token)
        .body(std::fs::read(file)?)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

/// The real operator serving `served` (a bundle path) with `key` pinned.
async fn bundle_operator(env: &Env, served: &Path, key: &PublicKey) -> Result<support::Operator> {
    std::fs::create_dir_all(served.parent().context("parent")?)?;
    let op = env.operator_with(
        "a",
        &[
            "--vuln-db",
            &served.display().to_string(),
            "--bundle-key",
            &key.to_string(),
        ],
    )?;
    op.wait_serving().await.with_context(|| env.dump())?;
    Ok(op)
}

/// A token of ServiceAccount `importer`, bound to a role that may import
/// bundles (`create bundles.sightline.dev`).
async fn bundle_importer(env: &Env) -> Result<String> {
    let token = service_account_token(env, "importer", false).await?;
    env.apply(&format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: importer-{ns}}}
rules:
- apiGroups: [sightline.dev]
  resources: [bundles]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: importer-{ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: importer-{ns}}}
subjects:
- {{kind: ServiceAccount, name: importer, namespace: {ns}}}
"#,
        ns = env.ns
    ))
    .await?;
    Ok(token)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_bundles_signed_by_a_pinned_key_are_imported_and_served() -> Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let (trusted, _) = SigningKey::generate()?;
    let (stranger, _) = SigningKey::generate()?;
    let small = dir.path().join("small.db");
    let large = dir.path().join("large.db");
    import(dir.path(), &["debian"], &small)?;
    import(dir.path(), &["debian", "alpine"], &large)?;
    let first = bundle_of(dir.path(), "first.bundle", &trusted, &small, None)?;
    let catalog = newer_catalog(dir.path())?;
    let second = bundle_of(
        dir.path(),
        "second.bundle",
        &trusted,
        &large,
        Some(&catalog),
    )?;
    let forged = bundle_of(dir.path(), "forged.bundle", &stranger, &large, None)?;
    let mut altered = std::fs::read(&first)?;
    // A byte inside the database member.
    let at = altered
        .windows(16)
        .position(|w| w == b"sightline-vulndb")
        .context("the database in the bundle")?;
    altered[at + 24] ^= 0x55;
    let tampered = dir.path().join("tampered.bundle");
    std::fs::write(&tampered, altered)?;

    let served = dir.path().join("served/vulns.bundle");
    let op = bundle_operator(&env, &served, &trusted.public()).await?;

    let sensor = service_account_token(&env, "sensor", true).await?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &sensor)?;
    let url = format!("http://127.0.0.1:{}/api/v1/vulndb", op.port);
    let fetcher = |name: &str, keys: Vec<PublicKey>| {
        Fetcher::new(url.clone(), token_file.clone(), dir.path().join(name), None)
            .with_bundle_keys(keys)
    };
    let mut pinned = fetcher("pinned.db", vec![trusted.public()]);
    let raw = op.get_as("/api/v1/vulndb", Some(&sensor))?;
    assert_eq!(status(&raw), 503, "nothing imported yet: {raw}");

    // Importing takes `create bundles.sightline.dev`; reading Assets is not enough.
    let (code, said) = put(op.port, &sensor, &first).await?;
    assert_eq!(code, 403, "{said}");
    assert!(said.contains("create bundles.sightline.dev"), "{said}");
    let importer = bundle_importer(&env).await?;
    let (code, said) = put(op.port, &importer, &first).await?;
    assert_eq!(code, 200, "{said}");
    assert!(
        said.contains("6 advisories") && said.contains(&trusted.public().key_id()),
        "{said}"
    );
    let db = pinned.refresh().await?.context("the bundle's database")?;
    assert_eq!(db.meta.advisories, 6);

    // Sensors check too: another pinned key, or none, refuses it.
    for (name, keys, reason) in [
        ("other.db", vec![stranger.public()], "unknown_key"),
        ("none.db", vec![], "no_key"),
    ] {
        let mut f = fetcher(name, keys);
        match f.refresh().await {
            Err(sightline_container_sensor::vulndb::FetchError::Refused { reason: r, .. }) => {
                assert_eq!(r, reason)
            }
            other => anyhow::bail!("{name}: expected a refusal, got {other:?}"),
        }
        assert!(!dir.path().join(name).exists());
    }

    // A stranger's bundle, an altered one, and a bare database are refused;
    // the imported bundle stays served (same ETag: nothing new to fetch).
    let (code, said) = put(op.port, &importer, &forged).await?;
    assert_eq!(code, 400, "{said}");
    assert!(
        said.contains(&stranger.public().key_id()) && said.contains("not among the trusted keys"),
        "{said}"
    );
    let (code, said) = put(op.port, &importer, &tampered).await?;
    assert_eq!(code, 400, "{said}");
    let (code, said) = put(op.port, &importer, &small).await?;
    assert_eq!(code, 400, "{said}");
    assert!(said.contains("signed bundle"), "{said}");
    assert!(pinned.refresh().await?.is_none());
    assert!(op.metric("sightline_operator_vulndb_refusals_total")? >= 3.0);

    // A bare database put in place on disk is not served either.
    std::fs::copy(&large, &served)?;
    assert!(pinned.refresh().await?.is_none(), "still the signed bundle");

    // A newer bundle with a newer catalog: sensors get its database, and
    // the operator normalizes with its catalog.
    let (code, said) = put(op.port, &importer, &second).await?;
    assert_eq!(code, 200, "{said}");
    assert!(said.contains("catalog 2099.01.01"), "{said}");
    let db = pinned.refresh().await?.context("the second bundle")?;
    assert_eq!(db.meta.advisories, 10);
    let log = std::fs::read_to_string(&op.proc.log)?;
    assert!(
        log.contains("catalog from the signed bundle in use") && log.contains("2099.01.01"),
        "{}",
        sightline_testenv::process::tail(&op.proc.log, 30)
    );
    Ok(())
}

/// The container image of DaemonSet `name` once it is `image`.
async fn daemonset_image(env: &Env, name: &str, image: &str) -> Result<()> {
    let dss: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    sightline_testenv::helpers::wait_for(
        &format!("DaemonSet {name} to run {image}"),
        std::time::Duration::from_secs(30),
        || async {
            let ds = dss.get_opt(name).await.ok()??;
            let now = ds.spec?.template.spec?.containers.first()?.image.clone()?;
            (now == image).then_some(())
        },
    )
    .await
    .with_context(|| env.dump())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_pins_the_sensor_image_by_digest() -> Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let (key, _) = SigningKey::generate()?;
    let db = dir.path().join("small.db");
    import(dir.path(), &["debian"], &db)?;
    let bundle_with = |name: &str, sensor: Option<&str>| -> Result<std::path::PathBuf> {
        let out = dir.path().join(name);
        let extras = Extras {
            images: sensor
                .map(|s| {
                    (
                        sightline_operator::vulndb::SENSOR_IMAGE.to_owned(),
                        s.to_owned(),
                    )
                })
                .into_iter()
                .collect(),
            ..Extras::default()
        };
        bundle::write(&out, &key, &db, extras, "2026-12-07T00:00:00Z".into())?;
        Ok(out)
    };
    let default = "sightline/sensor:test";
    let pinned = format!("sightline/sensor@sha256:{}", "a".repeat(64));
    let evil = format!("evil.example/sensor@sha256:{}", "b".repeat(64));
    let pinning = bundle_with("pinning.bundle", Some(&pinned))?;
    let foreign = bundle_with("foreign.bundle", Some(&evil))?;
    let plain = bundle_with("plain.bundle", None)?;

    let served = dir.path().join("served/vulns.bundle");
    let op = bundle_operator(&env, &served, &key.public()).await?;
    env.apply(
        r#"
apiVersion: sightline.dev/v1alpha1
kind: ActivationKey
metadata: {name: lab}
spec:
  modules: [inventory, containerSecurity]
  scope: {namespaceSelector: {}}
---
apiVersion: sightline.dev/v1alpha1
kind: Sensor
metadata: {name: nodes}
spec:
  type: container
  activationKeyRef: {name: lab}
  container: {}
---
apiVersion: sightline.dev/v1alpha1
kind: Sensor
metadata: {name: own}
spec:
  type: container
  activationKeyRef: {name: lab}
  container: {}
  image: sightline/sensor:own
"#,
    )
    .await?;
    daemonset_image(&env, "sightline-sensor-nodes", default).await?;
    daemonset_image(&env, "sightline-sensor-own", "sightline/sensor:own").await?;

    let importer = bundle_importer(&env).await?;

    // The bundle pins the sensor image by digest: Sensors that name no
    // image of their own run it.
    let (code, said) = put(op.port, &importer, &pinning).await?;
    assert_eq!(code, 200, "{said}");
    assert!(said.contains(&format!("sensor image {pinned}")), "{said}");
    daemonset_image(&env, "sightline-sensor-nodes", &pinned).await?;
    daemonset_image(&env, "sightline-sensor-own", "sightline/sensor:own").await?;

    // A bundle pinning an image from a repository the operator does not
    // allow is refused whole, though its signature is good.
    let (code, said) = put(op.port, &importer, &foreign).await?;
    assert_eq!(code, 400, "{said}");
    assert!(
        said.contains(&evil) && said.contains("not from an allowed repository"),
        "{said}"
    );
    daemonset_image(&env, "sightline-sensor-nodes", &pinned).await?;

    // A bundle pinning nothing: back to the operator's default.
    let (code, said) = put(op.port, &importer, &plain).await?;
    assert_eq!(code, 200, "{said}");
    daemonset_image(&env, "sightline-sensor-nodes", default).await?;
    Ok(())
}
