//! The local cluster's storage: a claim of the default class gets a volume
//! from the local provisioner, a non-root pod writes to it, and deleting
//! the claim removes the volume and its directory.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::Api;
use serde_json::json;
use sightline_testenv::node::storage::STORAGE_CLASS;

use crate::sensor::apply;
use crate::support::{Env, eventually, pod_ready};

/// The namespace of the storage test.
pub const NS: &str = "e2e-storage";

/// Runs the test.
pub async fn claims_get_volumes_until_deleted(env: &Env) -> Result<()> {
    crate::runtime::busybox_image(env)?;
    env.namespace(NS)?;
    apply(
        env,
        &json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": NS},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
        }),
    )?;
    apply(
        env,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "writer", "namespace": NS},
            "spec": {
                "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true},
                "containers": [{
                    "name": "app", "image": "e2e/busybox:1", "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "sh", "-c", "echo kept > /data/file && /bin/busybox sleep 3600"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                "terminationGracePeriodSeconds": 0,
            },
        }),
    )?;
    pod_ready(env, NS, "writer").await?;
    let bound = env.kubectl(&[
        "get",
        "pvc",
        "data",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.storageClassName}/{.spec.volumeName}",
    ])?;
    let (class, volume) = bound.split_once('/').unwrap_or_default();
    ensure!(
        class == STORAGE_CLASS && volume.starts_with("pvc-"),
        "the claim: {bound}"
    );
    let pv = Api::<PersistentVolume>::all(env.client())
        .get(volume)
        .await?;
    let path = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| std::path::PathBuf::from(h.path))
        .unwrap_or_default();
    let written = std::fs::read_to_string(path.join("file")).unwrap_or_default();
    ensure!(
        written == "kept\n",
        "what the pod wrote, in {}: {written:?}",
        path.display()
    );
    env.kubectl(&["delete", "pod", "writer", "-n", NS, "--wait=true"])?;
    env.kubectl(&["delete", "pvc", "data", "-n", NS, "--wait=true"])?;
    let volumes: Api<PersistentVolume> = Api::all(env.client());
    eventually("the volume reclaimed", Duration::from_secs(60), || async {
        (volumes.get_opt(volume).await.ok()?.is_none() && !path.exists()).then_some(())
    })
    .await?;
    env.kubectl(&["delete", "namespace", NS, "--wait=false"])?;
    Ok(())
}
