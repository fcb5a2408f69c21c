//! `sightline registry scan SENSOR`: a registry Sensor's scan, now, with
//! the user's credentials: the Sensor's spec and key from the cluster, its
//! credentials Secret read into a private temporary directory, a
//! ten-minute token of the Sensor's ServiceAccount (audience `sightline`;
//! minting it needs `create serviceaccounts/token` in the namespace), then
//! the same scan the CronJob runs, reported to the operator's API as the
//! Sensor.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use sightline_crds::{ActivationKey, Sensor};
use sightline_registry::sensor::{self, Config};

/// Runs the scan of Sensor `namespace/name`, reporting to the operator at
/// `api`, and prints what it did.
pub async fn scan(namespace: &str, name: &str, api: &str, out: &mut impl Write) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (is KUBECONFIG set?)")?;
    let s = Api::<Sensor>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("reading Sensor {namespace}/{name}"))?;
    let Some(spec) = s.spec.registry.clone() else {
        bail!("Sensor {namespace}/{name} is not a registry sensor");
    };
    let key_name = s.spec.activation_key_ref.name.clone();
    let key = Api::<ActivationKey>::all(client.clone())
        .get(&key_name)
        .await
        .with_context(|| format!("reading ActivationKey {key_name}"))?;
    let dir = tempfile::tempdir()?;
    let credentials_dir = match &spec.credentials_secret_ref {
        Some(r) => {
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get(&r.name)
                .await
                .with_context(|| {
                    format!("reading the credentials Secret {namespace}/{}", r.name)
                })?;
            for (k, v) in secret.data.unwrap_or_default() {
                std::fs::write(dir.path().join(&k), v.0).with_context(|| format!("writing {k}"))?;
            }
            Some(dir.path().to_path_buf())
        }
        None => None,
    };
    let account = sightline_crds::names::sensor_workload(name);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![sightline_report::AUDIENCE.to_owned()],
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| {
            format!("minting a token of the Sensor's ServiceAccount {namespace}/{account}")
        })?
        .status
        .map(|s| s.token)
        .context("the API server returned no token")?;
    let token_file = dir.path().join(".sensor-token");
    std::fs::write(&token_file, token).context("writing the Sensor's token")?;
    let cfg = Config {
        sensor: format!("{namespace}/{name}"),
        activation_key: Some(key_name),
        modules: key
            .spec
            .modules
            .iter()
            .map(|m| {
                serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect(),
        spec,
        credentials_dir,
        page_size: 100,
        api_url: Some(api.to_owned()),
        token_file,
        api_ca: crate::report::api_ca().map(<[u8]>::to_vec),
    };
    let registry = Arc::new(sensor::client_for(&cfg)?);
    let summary = sensor::scan_once(&cfg, registry, client, None).await?;
    writeln!(
        out,
        "{} repositories, {} images reported ({} analysed, the rest unchanged)",
        summary.repositories, summary.images, summary.analysed
    )?;
    for f in &summary.failures {
        writeln!(out, "failed: {f}")?;
    }
    if !summary.failures.is_empty() {
        bail!(
            "{} repositories or images could not be scanned",
            summary.failures.len()
        );
    }
    Ok(())
}
