//! A sensor offered a database it must refuse (signed by a key it does not
//! pin) keeps matching with the one it has, logs why, and says so to the
//! operator: the Sensor's `status.database` counts it as refusing, names
//! the node and the reason, and clears once a good database arrives. Real
//! sensor binary, real kube-apiserver, the operator's ingestion API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::Api;
use serde_json::{Value, json};
use sightline_scan::bundle::{self, Extras, SigningKey};
use sightline_testenv::{ControlPlane, Options, helpers};

mod support;

use support::{container_identity, ingest, start_sensor_with, vuln_db};

/// Serves whatever `body` holds at `/api/v1/vulndb` on a loopback port;
/// returns the URL.
async fn serve(body: Arc<Mutex<Vec<u8>>>) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/v1/vulndb", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/api/v1/vulndb",
        axum::routing::get(move || {
            let body = body.lock().map(|b| b.clone()).unwrap_or_default();
            async move { body }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The Sensor's `status.database` once it satisfies `ready`.
async fn database(
    client: &kube::Client,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let sensors: Api<sightline_crds::Sensor> = Api::namespaced(client.clone(), "sightline-system");
    Ok(helpers::wait_for(what, Duration::from_secs(60), || async {
        let s = sensors.get_status("containers").await.ok()?;
        let d = serde_json::to_value(s.status?.database?).ok()?;
        ready(&d).then_some(d)
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_database_shows_on_the_sensor_and_clears() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let dir = tempfile::tempdir()?;
    // The database the sensor starts with (built 2026-11-26).
    let db = vuln_db(dir.path())?;
    let (pinned, _) = SigningKey::generate()?;
    let (stranger, _) = SigningKey::generate()?;
    let bundle_of = |name: &str, key: &SigningKey| -> Result<Vec<u8>> {
        let out = dir.path().join(name);
        bundle::write(
            &out,
            key,
            &db,
            Extras::default(),
            "2026-12-07T00:00:00Z".into(),
        )?;
        Ok(std::fs::read(out)?)
    };
    let body = Arc::new(Mutex::new(bundle_of("forged.bundle", &stranger)?));
    let vulndb = serve(body.clone()).await?;

    // No runtime answers: the sensor's database loop runs regardless.
    let config = json!({"runtimes": [{"type": "containerd", "endpoint": format!("unix://{}/none.sock", dir.path().display())}]});
    let (api, _store) = ingest(&cp).await?;
    let token = container_identity(&cp, &config, dir.path()).await?;
    let log = dir.path().join("sensor.log");
    let keys = pinned.public().to_string();
    let _sensor = start_sensor_with(
        &cp,
        &api,
        &token,
        &config,
        &db,
        &log,
        &[
            ("SIGHTLINE_VULN_DB_URL", vulndb.as_str()),
            (bundle::KEYS_ENV, keys.as_str()),
            ("SIGHTLINE_VULN_DB_REFRESH_SECONDS", "1"),
        ],
    )?;
    let tail = || sightline_testenv::process::tail(&log, 30);

    let d = database(&client, "a refusing pod", |d| d["refusing"] == 1)
        .await
        .with_context(tail)?;
    assert_eq!(d["reporting"], 1, "{d}");
    assert_eq!(
        d["oldestBuilt"], "2026-11-26T00:00:00Z",
        "the database it kept: {d}"
    );
    assert_eq!(d["lastRefusal"]["node"], "node-a", "{d}");
    assert_eq!(d["lastRefusal"]["reason"], "unknown_key", "{d}");
    let logged = std::fs::read_to_string(&log)?;
    assert!(logged.contains("is refused (unknown_key)"), "{}", tail());

    // A bundle signed by the pinned key: taken, and nobody refuses.
    *body.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = bundle_of("good.bundle", &pinned)?;
    let d = database(&client, "no refusing pod", |d| d["refusing"] == 0)
        .await
        .with_context(tail)?;
    assert_eq!(d["reporting"], 1, "{d}");
    assert_eq!(
        d["lastRefusal"]["reason"], "unknown_key",
        "the last refusal stays on record: {d}"
    );
    Ok(())
}
