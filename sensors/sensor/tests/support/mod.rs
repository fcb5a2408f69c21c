//! What the container sensor's tests share: a sensor process started as
//! the DaemonSet starts it, small Alpine-format images, and a wait on an
//! Asset's status.

#![allow(dead_code)]

use sightline_operator::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use kube::api::Api;
use serde_json::Value;
use sightline_crds::Asset;
use sightline_scan::vuln::Database;
use sightline_testenv::identity::SensorIdentity;
use sightline_testenv::process::Proc;
use sightline_testenv::{ControlPlane, helpers};

/// The files of an Alpine-format image: os-release and an apk database
/// with `libcrypto3` at `openssl` (from the `openssl` origin) and musl.
pub fn alpine(release: &str, openssl: &str) -> (Vec<u8>, Vec<u8>) {
    let os = format!("ID=alpine\nVERSION_ID={release}\nPRETTY_NAME=\"Alpine Linux v3.19\"\n");
    let db = format!(
        "P:libcrypto3\nV:{openssl}\nA:x86_64\no:openssl\n\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n"
    );
    (os.into_bytes(), db.into_bytes())
}

/// The OSV records the tests match against, as a database file in `dir`.
pub fn vuln_db(dir: &Path) -> Result<PathBuf> {
    let osv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/data/osv");
    let (db, _) = Database::import_osv(&osv, "2026-11-26T00:00:00Z".into())?;
    let path = dir.join("vulns.db");
    db.write(&path)?;
    Ok(path)
}

/// Serves the operator's ingestion API for `cp` on a free loopback port,
/// with a detail store (a SQLite file beside the control plane's files);
/// returns its URL and the store. It runs until the test's runtime ends.
pub async fn ingest(cp: &ControlPlane) -> Result<(String, Store)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let db = cp.dir().join("details.db");
    let store = Store::open(&db.to_string_lossy()).await?;
    tokio::spawn(sightline_operator::ingest::serve_standalone(
        cp.client(),
        "sightline-system".into(),
        listener,
        Some(store.clone()),
    ));
    Ok((url, store))
}

/// The identity of the container sensor `sightline-system/containers`
/// under key `lab` on node `node-a`: a token file in `dir`.
pub async fn container_identity(cp: &ControlPlane, config: &Value, dir: &Path) -> Result<PathBuf> {
    Ok(SensorIdentity {
        namespace: "sightline-system",
        name: "containers",
        spec: serde_json::json!({"type": "container", "container": config}),
        key: "lab",
        node: Some("node-a"),
    }
    .token_file(&cp.client(), dir)
    .await?)
}

/// Starts `sightline-sensor container` on node `node-a` of `cp`, watching
/// the runtimes of `config` (`spec.container` as JSON), reporting to the
/// ingestion API at `api` with the token in `token`, logging to `log`.
pub fn start_sensor(
    cp: &ControlPlane,
    api: &str,
    token: &Path,
    config: &Value,
    db: &Path,
    log: &Path,
) -> Result<Proc> {
    start_sensor_with(cp, api, token, config, db, log, &[])
}

/// As [`start_sensor`], with more environment variables.
pub fn start_sensor_with(
    cp: &ControlPlane,
    api: &str,
    token: &Path,
    config: &Value,
    db: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Proc> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sightline-sensor"));
    cmd.arg("container")
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("NODE_NAME", "node-a")
        .env("SIGHTLINE_SENSOR", "sightline-system/containers")
        .env("SIGHTLINE_ACTIVATION_KEY", "lab")
        .env("SIGHTLINE_MODULES", "containerSecurity,vulnerability")
        .env("SIGHTLINE_CONFIG", config.to_string())
        .env("SIGHTLINE_VULN_DB", db)
        .env("SIGHTLINE_API_URL", api)
        .env("SIGHTLINE_TOKEN_FILE", token)
        // The sensor runs on this machine, not in a pod: the host is `/`.
        .env("SIGHTLINE_HOST_ROOT", "/")
        .env("RUST_LOG", "info");
    cmd.envs(env.iter().copied());
    Ok(Proc::spawn("sightline-sensor", cmd, log)?)
}

/// Waits for the Asset `name` to satisfy `ready`; returns its status.
pub async fn asset_status(
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

/// Waits for the debootstrap image's Asset (`id`) and checks it holds the
/// analysis of the real Debian 12 image: its OS and its 100+ dpkg packages
/// (the exact set is the scanner's tests' business).
pub async fn assert_debian_image(api: &Api<Asset>, id: &str) -> Result<()> {
    let name = sightline_crds::asset::asset_name(sightline_crds::AssetKind::ContainerImage, id);
    let status = asset_status(api, &name, "the Debian image's Asset", |_| true).await?;
    anyhow::ensure!(
        status["observed"]["osRelease"]["VERSION_ID"] == "12",
        "{}",
        status["observed"]
    );
    anyhow::ensure!(
        status["observed"]["packages"]["deb"]
            .as_u64()
            .is_some_and(|n| n >= 100),
        "{}",
        status["observed"]["packages"]
    );
    Ok(())
}

/// `(id, fixed)` of an Asset's top vulnerabilities.
pub fn top_fixes(status: &Value) -> Vec<(String, String)> {
    status["findings"]["vulnerabilities"]["top"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["id"].as_str().unwrap_or("").to_owned(),
                v["fixed"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The three OpenSSL advisories an Alpine 3.19 `libcrypto3` 3.1.4-r2 has,
/// with the versions that fix them (`tests/data/osv`).
pub fn openssl_advisories() -> Vec<(String, String)> {
    [
        ("ALPINE-CVE-2023-6129", "3.1.4-r3"),
        ("ALPINE-CVE-2023-6237", "3.1.4-r4"),
        ("ALPINE-CVE-2024-0727", "3.1.4-r5"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect()
}
