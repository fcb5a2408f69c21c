//! The chart on the real cluster: installed with the images built here,
//! upgraded with a CRD that gained a field and changed values, uninstalled
//! leaving the CRDs and the inventory.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde_json::json;
use sightline_testenv::images::{SIGHTLINE_VERSION, sightline_image};

use crate::support::{Env, OPERATOR, RELEASE, RELEASE_NS, chart, eventually};

/// `--set` values that run the images imported into the node and let
/// container sensors mount this node's containerd socket (it lives in the
/// cluster's own directory, not at one of the usual paths).
/// The operator serves vulnerability databases only as bundles signed by
/// the tests' key (`bundle_signing_key`).
pub fn local_values(env: &Env) -> Result<String> {
    let socket = env.cluster.node.containerd()?.endpoint();
    let (_, public) = bundle_signing_key(env)?;
    Ok(format!(
        "{},sensorPolicy.runtimeSockets[0]={socket},\
         vulnerabilityDatabase.enabled=true,vulnerabilityDatabase.bundleKeys[0]={public}",
        local_images()
    ))
}

/// The tests' bundle signing key (made once with `sightline bundle
/// keygen`): its file and its public key.
pub fn bundle_signing_key(env: &Env) -> Result<(std::path::PathBuf, String)> {
    let key = env.work.join("bundle-signing.pem");
    let public = env.work.join("bundle-signing.pub");
    if !public.is_file() {
        let out =
            std::process::Command::new(sightline_testenv::binaries::workspace_binary("sightline")?)
                .args(["bundle", "keygen", "--output-file"])
                .arg(&key)
                .output()
                .context("running sightline bundle keygen")?;
        ensure!(
            out.status.success(),
            "bundle keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("ed25519:"))
            .map(str::to_owned)
            .context("keygen printed no public key")?;
        std::fs::write(&public, &line)?;
    }
    Ok((key, std::fs::read_to_string(&public)?.trim().to_owned()))
}

/// `--set` values that run the images imported into the node.
fn local_images() -> String {
    let repo = |name: &str| {
        sightline_image(name)
            .rsplit_once(':')
            .map(|(r, _)| r.to_owned())
            .unwrap_or_default()
    };
    format!(
        "operator.image.repository={},operator.image.tag={SIGHTLINE_VERSION},operator.image.pullPolicy=Never,\
         sensorDefaults.image.repository={},sensorDefaults.image.tag={SIGHTLINE_VERSION},\
         sensorDefaults.refreshSeconds=5",
        repo("sightline-operator"),
        repo("sightline-sensor"),
    )
}

/// Waits until the operator's Deployment has `replicas` available replicas
/// of its current generation.
pub async fn operator_available(env: &Env, replicas: i32) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(env.client(), RELEASE_NS);
    eventually(
        "the operator Deployment to be available",
        Duration::from_secs(180),
        || async {
            let d = api.get(OPERATOR).await.ok()?;
            let s = d.status.as_ref()?;
            let current = s.observed_generation == d.metadata.generation;
            (current
                && s.available_replicas == Some(replicas)
                && s.updated_replicas == Some(replicas))
            .then_some(d)
        },
    )
    .await
}

/// `helm install` with the local images; the operator becomes available and
/// runs as the chart promises (non-root, read-only root, nothing added).
pub async fn install(env: &Env) -> Result<()> {
    env.helm(&["lint", "--strict", &chart().display().to_string()])?;
    env.helm(&[
        "install",
        RELEASE,
        &chart().display().to_string(),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        &local_values(env)?,
        "--set",
        "operator.logFormat=text",
    ])?;
    let d = operator_available(env, 1).await?;
    let pod = d
        .spec
        .and_then(|s| s.template.spec)
        .context("pod template")?;
    let sc = pod.containers[0]
        .security_context
        .clone()
        .context("securityContext")?;
    ensure!(sc.read_only_root_filesystem == Some(true), "{sc:?}");
    ensure!(sc.allow_privilege_escalation == Some(false), "{sc:?}");
    ensure!(
        pod.security_context.and_then(|p| p.run_as_non_root) == Some(true),
        "the operator must run as non-root"
    );
    Ok(())
}

/// `helm upgrade` with a Sensor CRD that gained a field and changed values:
/// the CRD changes (Helm's `crds/` directory would not) and the operator
/// rolls to two replicas under leader election.
pub async fn upgrade(env: &Env) -> Result<()> {
    let work = env.work.join("chart-upgraded");
    sightline_testenv::helpers::copy_dir(&chart(), &work)?;
    let mut crds = sightline_crds::crdgen::all();
    for crd in &mut crds {
        if crd.metadata.name.as_deref() == Some("sensors.sightline.dev") {
            let mut schema = serde_json::to_value(&crd.spec.versions[0].schema)?;
            schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeProbe"] =
                json!({"type": "string", "description": "Added by the upgrade test."});
            crd.spec.versions[0].schema = serde_json::from_value(schema)?;
        }
    }
    std::fs::write(
        work.join("templates/crds.yaml"),
        sightline_crds::crdgen::helm_template_of(&crds)?,
    )?;
    env.helm(&[
        "upgrade",
        RELEASE,
        &work.display().to_string(),
        "--namespace",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        // One SQLite file serves one replica: two keep it in emptyDirs.
        "operator.replicas=2,operator.logFormat=json,detailStore.persistence.enabled=false",
    ])?;
    let api: Api<CustomResourceDefinition> = Api::all(env.client());
    let after = api.get("sensors.sightline.dev").await?;
    let schema = serde_json::to_value(&after.spec.versions[0].schema)?;
    ensure!(
        schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["upgradeProbe"].is_object(),
        "helm upgrade did not upgrade the CRD"
    );
    let d = operator_available(env, 2).await?;
    let args = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].args.clone())
        .unwrap_or_default();
    ensure!(args.contains(&"--log-format=json".to_owned()), "{args:?}");
    Ok(())
}

/// `helm uninstall`: the operator goes; the CRDs and every Asset stay.
pub async fn uninstall(env: &Env) -> Result<()> {
    let before = env.kubectl(&["get", "assets", "-o", "name"])?;
    ensure!(!before.trim().is_empty(), "there should be Assets to keep");
    env.helm(&["uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait"])?;
    let deployments: Api<Deployment> = Api::namespaced(env.client(), RELEASE_NS);
    eventually("the operator to go", Duration::from_secs(60), || async {
        deployments
            .get_opt(OPERATOR)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    ensure!(
        crds.get_opt("assets.sightline.dev").await?.is_some(),
        "helm uninstall deleted the Asset CRD"
    );
    let after = env.kubectl(&["get", "assets", "-o", "name"])?;
    ensure!(
        before == after,
        "Assets changed on uninstall:\n{before}\nvs\n{after}"
    );
    Ok(())
}
