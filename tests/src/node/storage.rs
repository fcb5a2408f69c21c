//! Storage for the local cluster: a default StorageClass whose claims are
//! answered with a directory on the node, as a hostPath PersistentVolume
//! bound to the claim (what rancher's local-path-provisioner does; one
//! node, so the directory is wherever the pod runs).
//!
//! A volume's directory is world-writable: hostPath volumes get no
//! `fsGroup` ownership, and non-root workloads (the operator runs as
//! 65532) must write to them. A claim deleted under the class's `Delete`
//! policy takes its volume and directory with it. Directories live in the
//! node's directory, so `cargo xtask cluster down` removes any left.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::{Error, Result, io};

/// The StorageClass (the cluster's default).
pub const STORAGE_CLASS: &str = "local-hostpath";
/// The provisioner's name, in the class and on the volumes it makes.
pub const PROVISIONER: &str = "sightline.dev/local-hostpath";
/// The annotation Kubernetes' provisioners put on their volumes.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Creates (or updates) the default StorageClass.
pub async fn install_class(client: &kube::Client) -> Result<()> {
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    });
    Api::<StorageClass>::all(client.clone())
        .patch(
            STORAGE_CLASS,
            &PatchParams::apply(crate::helpers::MANAGER).force(),
            &Patch::Apply(class),
        )
        .await
        .map_err(kube("applying the local StorageClass"))?;
    Ok(())
}

/// Answers claims of [`STORAGE_CLASS`] with volumes under `dir`, and
/// deletes released ones, until the watches end (or the task is dropped).
pub async fn run(client: kube::Client, dir: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claim_events = watcher(claims, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_ok(|c| Event::Claim(Box::new(c)))
        .boxed();
    let volume_events = watcher(volumes.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_ok(|v| Event::Volume(Box::new(v)))
        .boxed();
    let mut events = futures::stream::select(claim_events, volume_events);
    while let Some(event) = events.next().await {
        let outcome = match event {
            Ok(Event::Claim(c)) => provision(&volumes, &dir, &c).await,
            Ok(Event::Volume(v)) => reclaim(&volumes, &dir, &v).await,
            Err(e) => {
                tracing::warn!(error = %e, "local provisioner: watching");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "local provisioner");
        }
    }
    Ok(())
}

enum Event {
    Claim(Box<PersistentVolumeClaim>),
    Volume(Box<PersistentVolume>),
}

/// The volume for an unbound claim of the class: a directory, and a
/// PersistentVolume pre-bound to the claim (the PV controller finishes
/// the binding).
async fn provision(
    volumes: &Api<PersistentVolume>,
    dir: &Path,
    claim: &PersistentVolumeClaim,
) -> Result<()> {
    let Some(spec) = &claim.spec else {
        return Ok(());
    };
    let pending = claim.metadata.deletion_timestamp.is_none()
        && spec.volume_name.as_deref().unwrap_or_default().is_empty()
        && spec.storage_class_name.as_deref() == Some(STORAGE_CLASS);
    let (Some(ns), Some(name), Some(uid)) = (
        claim.metadata.namespace.as_deref(),
        claim.metadata.name.as_deref(),
        claim.metadata.uid.as_deref(),
    ) else {
        return Ok(());
    };
    if !pending {
        return Ok(());
    }
    let volume = format!("pvc-{uid}");
    let path = dir.join(&volume);
    std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        .map_err(io(format!("opening up {}", path.display())))?;
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map_or_else(|| "1Gi".to_owned(), |q| q.0.clone());
    let modes = spec
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": volume,
            "annotations": BTreeMap::from([(PROVISIONED_BY, PROVISIONER)]),
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": path.display().to_string(), "type": "Directory"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": ns, "name": name, "uid": uid},
        },
    }))
    .map_err(|e| Error::Manifest(format!("a PersistentVolume for {ns}/{name}: {e}")))?;
    match volumes.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            tracing::info!(claim = %format!("{ns}/{name}"), volume, "provisioned");
            Ok(())
        }
        // Made already (an earlier event of the same claim).
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(kube(format!("creating the volume for {ns}/{name}"))(e)),
    }
}

/// A released volume of this provisioner: its directory and itself go.
async fn reclaim(volumes: &Api<PersistentVolume>, dir: &Path, pv: &PersistentVolume) -> Result<()> {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER);
    let released = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Released");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    let Some(name) = pv.metadata.name.as_deref() else {
        return Ok(());
    };
    if !(ours && released && delete) {
        return Ok(());
    }
    // Only a directory this provisioner made, by its own naming.
    let path = dir.join(name);
    if name.starts_with("pvc-") && !name.contains('/') && path.is_dir() {
        std::fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
    }
    match volumes.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(kube(format!("deleting the volume {name}"))(e)),
    }
    tracing::info!(volume = name, "reclaimed");
    Ok(())
}
