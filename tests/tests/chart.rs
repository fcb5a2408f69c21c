//! The chart's CRDs with a real helm and a real API server: they install,
//! `helm upgrade` changes them (Helm's `crds/` directory would not), and
//! `helm uninstall` leaves them, and so the inventory, in place.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;
use sightline_crds::Sensor;
use sightline_testenv::{ControlPlane, Options, binaries, helpers};

fn helm(cp: &ControlPlane, home: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(binaries::helm()?)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args)
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn copy_chart(to: &Path) -> Result<()> {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sightline");
    for entry in ["Chart.yaml", "values.yaml", "templates/crds.yaml"] {
        let dest = to.join(entry);
        std::fs::create_dir_all(dest.parent().context("parent")?)?;
        std::fs::copy(from.join(entry), &dest).with_context(|| format!("copying {entry}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn helm_installs_upgrades_and_keeps_the_crds() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    let work = tempfile::tempdir()?;
    let chart = work.path().join("sightline");
    copy_chart(&chart)?;
    let chart_arg = chart.display().to_string();

    helm(&cp, work.path(), &["lint", "--strict", &chart_arg])?;
    helm(
        &cp,
        work.path(),
        &["install", "sightline", &chart_arg, "--namespace", "default"],
    )?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let sensors_crd = crds.get("sensors.sightline.dev").await?;
    let annotations = sensors_crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );

    // A newer chart adds a field to the Sensor schema.
    let mut upgraded = sightline_crds::crdgen::all();
    for crd in &mut upgraded {
        if crd.metadata.name.as_deref() == Some("sensors.sightline.dev") {
            let mut schema = serde_json::to_value(&crd.spec.versions[0].schema)?;
            schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeProbe"] =
                json!({"type": "string", "description": "Added by the upgrade test."});
            crd.spec.versions[0].schema = serde_json::from_value(schema)?;
        }
    }
    std::fs::write(
        chart.join("templates/crds.yaml"),
        sightline_crds::crdgen::helm_template_of(&upgraded)?,
    )?;
    helm(
        &cp,
        work.path(),
        &["upgrade", "sightline", &chart_arg, "--namespace", "default"],
    )?;
    let after = crds.get("sensors.sightline.dev").await?;
    let schema = serde_json::to_value(&after.spec.versions[0].schema)?;
    assert!(
        schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeProbe"].is_object(),
        "helm upgrade did not upgrade the CRD"
    );
    // The API server now keeps the new field instead of pruning it.
    let ns = helpers::namespace(&client, "chart").await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<Sensor>(&()));
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor", "metadata": {"name": "probe"},
        "spec": {"type": "runtime", "activationKeyRef": {"name": "k"}, "runtime": {}, "upgradeProbe": "kept"}
    }))?;
    let created = api.create(&PostParams::default(), &obj).await?;
    assert_eq!(created.data["spec"]["upgradeProbe"], "kept");

    // Uninstalling keeps the CRDs and the objects.
    helm(
        &cp,
        work.path(),
        &["uninstall", "sightline", "--namespace", "default"],
    )?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        crds.get_opt("sensors.sightline.dev").await?.is_some(),
        "helm uninstall deleted the CRD"
    );
    assert!(
        api.get_opt("probe").await?.is_some(),
        "helm uninstall deleted a Sensor"
    );
    Ok(())
}
