//! A registry Sensor on the real cluster: the operator renders its
//! CronJob, a run of it (started at once, as `kubectl create job --from`
//! does) scans a registry the pods reach, and the images land in the
//! inventory with the Sensor's status updated; its ServiceAccount may do
//! exactly what a registry sensor needs. The vulnerability database
//! reaches it as a bundle signed by the key the chart pins, imported with
//! `sightline bundle import`, and the image's Asset carries its findings.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use serde_json::{Value, json};
use sightline_crds::{Asset, Sensor};
use sightline_testenv::archive::{RunConfig, apk_layer, docker_archive};
use sightline_testenv::node::network::GATEWAY;
use sightline_testenv::registry::{Auth, Registry};

use crate::support::{Env, OPERATOR, RELEASE_NS, eventually};

/// The namespace of the registry test.
pub const NS: &str = "e2e-registry";

/// Runs the test; the registry lives as long as the call.
pub async fn cronjob_scans_a_registry(env: &Env) -> Result<()> {
    let reg = Registry::start_on(Auth::Anonymous, false, GATEWAY)?;
    let dir = reg.scratch();
    // Alpine 3.19's OpenSSL before the fixes of the scanner's test records.
    let layer = apk_layer(
        dir,
        "app",
        b"ID=alpine\nVERSION_ID=3.19.0\n",
        b"P:libcrypto3\nV:3.1.4-r2\nA:x86_64\no:openssl\n\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n",
    )?;
    let archive = dir.join("app.tar");
    let id = docker_archive(&["team/app:1.0"], &[layer], &RunConfig::default(), &archive)?;
    reg.push(
        &format!("docker-archive:{}", archive.display()),
        "team/app",
        "1.0",
    )?;

    env.namespace(NS)?;
    let advisories = import_a_signed_bundle(env).await?;
    let sensor = json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
        "metadata": {"name": "registry", "namespace": NS},
        "spec": {
            "type": "registry",
            "activationKeyRef": {"name": "e2e"},
            "registry": {"url": reg.url, "schedule": "@hourly", "tagsPerRepository": 2},
        },
    });
    let file = env.work.join("registry-sensor.json");
    std::fs::write(&file, serde_json::to_vec(&sensor)?)?;
    env.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])?;
    eventually(
        "the registry sensor's CronJob",
        Duration::from_secs(60),
        || async {
            env.kubectl(&["get", "cronjob", "sightline-sensor-registry", "-n", NS])
                .ok()
                .map(drop)
        },
    )
    .await?;
    env.kubectl(&[
        "create",
        "job",
        "scan-now",
        "-n",
        NS,
        "--from=cronjob/sightline-sensor-registry",
    ])?;
    let jobs: Api<Job> = Api::namespaced(env.client(), NS);
    eventually(
        "the scan job to succeed",
        Duration::from_secs(180),
        || async {
            let s = jobs.get("scan-now").await.ok()?.status?;
            (s.succeeded == Some(1)).then_some(())
        },
    )
    .await?;

    let assets: Api<Asset> = Api::all(env.client());
    let status: Value = eventually("the image's Asset", Duration::from_secs(30), || async {
        let a = assets
            .get_opt(&sightline_crds::asset::asset_name(
                sightline_crds::AssetKind::ContainerImage,
                &id,
            ))
            .await
            .ok()??;
        serde_json::to_value(a.status?).ok()
    })
    .await?;
    ensure!(
        status["sources"].as_array().is_some_and(|s| s
            .iter()
            .any(|x| x["sensor"] == format!("{NS}/registry") && x["type"] == "registry")),
        "{status}"
    );
    ensure!(
        status["observed"]["registry"]["repositories"][0]["repository"] == "team/app",
        "{status}"
    );
    ensure!(status["observed"]["packages"]["apk"] == 2, "{status}");
    // Matched against the signed bundle's database (checked by the sensor
    // against the key the operator passed on).
    let top: Vec<&str> = status["findings"]["vulnerabilities"]["top"]
        .as_array()
        .map(|t| t.iter().filter_map(|v| v["id"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        top.contains(&"ALPINE-CVE-2024-0727") && advisories >= top.len(),
        "{status}"
    );
    let s = Api::<Sensor>::namespaced(env.client(), NS)
        .get("registry")
        .await?
        .status
        .context("the Sensor's status")?;
    ensure!(
        s.assets_reported == Some(1) && s.last_scan_time.is_some(),
        "{s:?}"
    );

    // The sensor's details reached the operator's store: the SBOM a user
    // reads through the API (by the tag the sensor saw) has exactly the
    // packages of `sightline sbom` of the archive that was pushed.
    let tag = status["observed"]["repoTags"][0]
        .as_str()
        .context("the image's tag")?
        .to_owned();
    let served = sbom_within_a_minute(env, &tag, "the image's SBOM from the detail store").await?;
    let local = sightline(
        env,
        &["sbom", &format!("docker-archive:{}", archive.display())],
    )?;
    ensure!(
        served["components"] == local["components"]
            && served["components"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
        "served {served:#}\nlocal {local:#}"
    );
    // The chart keeps the store on a claim of the cluster's default class
    // (the local provisioner's), so it outlives the operator's pod: a
    // second scan's details, and then a restart, keep the same SBOM.
    the_store_is_on_a_provisioned_claim(env)?;
    survives_a_restart(env, &jobs, &tag, &local)
        .await
        .map_err(|e| {
            let logs = env
                .kubectl(&["logs", &format!("deployment/{OPERATOR}"), "-n", RELEASE_NS])
                .unwrap_or_else(|e| e.to_string());
            e.context(format!("the operator on the claim logged:\n{logs}"))
        })
}

/// The image's SBOM, `sightline sbom --asset TAG`, retried for a minute;
/// the last failure when it never comes.
async fn sbom_within_a_minute(env: &Env, tag: &str, what: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match served_sbom(env, tag).await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e.context(format!("{what}, for a minute")));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// A scan sends the details to the store on its claim; they are still
/// served after the operator restarts.
async fn survives_a_restart(env: &Env, jobs: &Api<Job>, tag: &str, local: &Value) -> Result<()> {
    env.kubectl(&[
        "create",
        "job",
        "scan-again",
        "-n",
        NS,
        "--from=cronjob/sightline-sensor-registry",
    ])?;
    eventually(
        "the second scan job to succeed",
        Duration::from_secs(180),
        || async {
            let s = jobs.get("scan-again").await.ok()?.status?;
            (s.succeeded == Some(1)).then_some(())
        },
    )
    .await?;
    let again = sbom_within_a_minute(env, tag, "the SBOM from the store on its claim").await?;
    ensure!(again["components"] == local["components"], "{again:#}");
    env.kubectl(&[
        "rollout",
        "restart",
        &format!("deployment/{OPERATOR}"),
        "-n",
        RELEASE_NS,
    ])?;
    rolled_out(env)?;
    let restarted = sbom_within_a_minute(env, tag, "the SBOM after the operator restarted").await?;
    ensure!(
        restarted["components"] == local["components"],
        "{restarted:#}"
    );
    Ok(())
}

/// Waits until the operator's Deployment has rolled out its template.
fn rolled_out(env: &Env) -> Result<()> {
    env.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{OPERATOR}"),
        "-n",
        RELEASE_NS,
        "--timeout=180s",
    ])?;
    Ok(())
}

/// The chart's default claim for the store, bound to a volume the local
/// cluster's provisioner made for it in its default StorageClass.
fn the_store_is_on_a_provisioned_claim(env: &Env) -> Result<()> {
    let bound = env.kubectl(&[
        "get",
        "pvc",
        &format!("{OPERATOR}-store"),
        "-n",
        RELEASE_NS,
        "-o",
        "jsonpath={.status.phase}/{.spec.storageClassName}/{.spec.volumeName}",
    ])?;
    ensure!(
        bound.starts_with(&format!(
            "Bound/{}/pvc-",
            sightline_testenv::node::storage::STORAGE_CLASS
        )),
        "the store's claim: {bound}"
    );
    Ok(())
}

/// Runs the CLI as cluster admin; its standard output as JSON.
fn sightline(env: &Env, args: &[&str]) -> Result<Value> {
    Ok(serde_json::from_slice(&sightline_ok(env, args)?)?)
}

/// Runs the CLI as cluster admin, failing with its standard error; its
/// standard output.
fn sightline_ok(env: &Env, args: &[&str]) -> Result<Vec<u8>> {
    let out =
        std::process::Command::new(sightline_testenv::binaries::workspace_binary("sightline")?)
            .env("KUBECONFIG", &env.cluster.cp.kubeconfig)
            .args(args)
            .output()
            .context("running sightline")?;
    ensure!(
        out.status.success(),
        "sightline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// A bundle of the scanner's Alpine test records (real IDs and ranges),
/// signed with the tests' key and sent with `sightline bundle import` as a
/// ServiceAccount bound to `sightline-bundle-importer`; how many
/// advisories it holds.
async fn import_a_signed_bundle(env: &Env) -> Result<usize> {
    let (key, _) = crate::chart::bundle_signing_key(env)?;
    let records = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sensors/scan/tests/data/osv/alpine");
    let db = env.work.join("alpine.db");
    let bundle = env.work.join("alpine.bundle");
    let (records, db, bundle, key) = (
        records.display().to_string(),
        db.display().to_string(),
        bundle.display().to_string(),
        key.display().to_string(),
    );
    sightline_ok(env, &["db", "import", &records, "--output-file", &db])?;
    sightline_ok(
        env,
        &[
            "bundle",
            "export",
            "--db",
            &db,
            "--key",
            &key,
            "--output-file",
            &bundle,
        ],
    )?;
    let api = OperatorApi::open(env, "e2e-bundle-importer", "sightline-bundle-importer").await?;
    let out = api.sightline(env, &["bundle", "import", &bundle])?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && said.contains("imported"),
        "sightline bundle import: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(std::fs::read_dir(&records)?.count())
}

/// A port-forward to the operator's API, the CA the chart publishes, and
/// a token of a ServiceAccount bound to a ClusterRole.
struct OperatorApi {
    port: u16,
    token: String,
    ca: std::path::PathBuf,
    _forward: sightline_testenv::process::Proc,
}

impl OperatorApi {
    async fn open(env: &Env, account: &str, role: &str) -> Result<OperatorApi> {
        if env
            .kubectl(&["get", "serviceaccount", account, "-n", NS])
            .is_err()
        {
            env.kubectl(&["create", "serviceaccount", account, "-n", NS])?;
            env.kubectl(&[
                "create",
                "clusterrolebinding",
                account,
                &format!("--clusterrole={role}"),
                &format!("--serviceaccount={NS}:{account}"),
            ])?;
        }
        let token = env.kubectl(&["create", "token", account, "-n", NS])?;
        let ca = env.work.join("operator-ca.crt");
        let pem = env.kubectl(&[
            "get",
            "configmap",
            &format!("{OPERATOR}-ca"),
            "-n",
            RELEASE_NS,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])?;
        std::fs::write(&ca, pem)?;
        let port = sightline_testenv::process::free_port()?;
        let mut forward = env.kubectl.command();
        forward.args([
            "port-forward",
            "-n",
            RELEASE_NS,
            &format!("deploy/{OPERATOR}"),
            &format!("{port}:8443"),
        ]);
        // A log of its own: an older forward's "Forwarding from" says nothing of this one.
        let log = env.work.join(format!("port-forward-{port}.log"));
        let forward =
            sightline_testenv::process::Proc::spawn("kubectl port-forward", forward, &log)?;
        eventually("the port-forward", Duration::from_secs(20), || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("Forwarding from"))
        })
        .await?;
        Ok(OperatorApi {
            port,
            token: token.trim().to_owned(),
            ca,
            _forward: forward,
        })
    }

    /// `sightline ARGS --api …` as the ServiceAccount.
    fn sightline(&self, env: &Env, args: &[&str]) -> Result<std::process::Output> {
        std::process::Command::new(sightline_testenv::binaries::workspace_binary("sightline")?)
            .env("KUBECONFIG", &env.cluster.cp.kubeconfig)
            .env("SIGHTLINE_TOKEN", &self.token)
            .args(["--api-ca", &self.ca.display().to_string()])
            .args(args)
            .args(["--api", &format!("https://127.0.0.1:{}", self.port)])
            .output()
            .context("running sightline")
    }
}

/// `sightline sbom --asset TAG` through a port-forward to the operator's
/// API, trusting the CA the chart publishes, as a ServiceAccount bound to
/// `sightline-view`.
async fn served_sbom(env: &Env, tag: &str) -> Result<Value> {
    let api = OperatorApi::open(env, "e2e-sbom-reader", "sightline-view").await?;
    let out = api.sightline(env, &["sbom", "--asset", tag])?;
    ensure!(
        out.status.success(),
        "sightline sbom --asset {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
