//! Server-side apply, the one way the operator writes objects and status.
//!
//! `Patch::Apply` needs `apiVersion` and `kind` in the body; typed objects
//! serialize without them, so they are filled in here from the type.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

fn with_type<K>(value: &mut serde_json::Value)
where
    K: Resource,
    K::DynamicType: Default,
{
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            K::api_version(&Default::default()).into(),
        );
        map.insert("kind".into(), K::kind(&Default::default()).into());
    }
}

/// Applies `obj` under field manager `manager`, taking over conflicting fields.
pub async fn object<K>(api: &Api<K>, obj: &K, manager: &str, kind: &'static str) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(obj).map_err(|e| Error::Apply {
        kind,
        name: name.clone(),
        source: kube::Error::SerdeError(e),
    })?;
    with_type::<K>(&mut value);
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| Error::Apply { kind, name, source })
}

/// Applies `status` (already serialized, so callers can leave out fields
/// other managers own) as the status of `name`.
pub async fn status<K>(
    api: &Api<K>,
    name: &str,
    status: serde_json::Value,
    manager: &str,
    kind: &'static str,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut patch = serde_json::json!({ "status": status });
    with_type::<K>(&mut patch);
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Status {
        kind,
        name: name.to_owned(),
        source,
    })
}

/// Applies `labels` as the labels `manager` owns on `name`; labels it set
/// before and no longer lists are removed, other managers' are kept.
pub async fn labels<K>(
    api: &Api<K>,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    manager: &str,
    kind: &'static str,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut patch = serde_json::json!({ "metadata": { "name": name, "labels": labels } });
    with_type::<K>(&mut patch);
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Apply {
        kind,
        name: name.to_owned(),
        source,
    })
}

/// Serializes a status for [`status`].
pub fn to_value(
    status: &impl Serialize,
    kind: &'static str,
    name: &str,
) -> Result<serde_json::Value> {
    serde_json::to_value(status).map_err(|e| Error::Status {
        kind,
        name: name.to_owned(),
        source: kube::Error::SerdeError(e),
    })
}
