//! Helpers tests share: installing the CRDs, applying manifests, waiting.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Field manager of objects the test environment applies.
pub const MANAGER: &str = "sightline-testenv";

/// Applies every Sightline CRD and waits until each is established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    for crd in sightline_crds::crdgen::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .map_err(|e| Error::Kube {
                what: format!("applying CRD {name}"),
                source: e,
            })?;
    }
    for crd in sightline_crds::crdgen::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_for(
            &format!("CRD {name} to be established"),
            Duration::from_secs(30),
            || async {
                let c = api.get(&name).await.ok()?;
                let established = c
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

/// Polls `probe` every 100 ms until it yields a value or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the object `name` exists and satisfies `pred`; returns it.
pub async fn wait_object<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let start = Instant::now();
    loop {
        let current = api.get_opt(name).await.ok().flatten();
        if let Some(obj) = &current
            && pred(obj)
        {
            return Ok(obj.clone());
        }
        if start.elapsed() > timeout {
            let last = match current {
                Some(obj) => format!("{obj:?}"),
                None => "absent".to_owned(),
            };
            return Err(Error::Timeout {
                what: format!("{what}; last seen: {last}"),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    wait_for(&format!("{name} to be deleted"), timeout, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

/// Creates a namespace named `<prefix>-<random>` and returns its name.
pub async fn namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    use rand::Rng;
    let suffix: u32 = rand::rng().random_range(0..1_000_000);
    let name = format!("{prefix}-{suffix:06}");
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .map_err(|e| Error::Kube {
            what: format!("creating namespace {name}"),
            source: e,
        })?;
    Ok(name)
}

/// Applies every document of a YAML stream with server-side apply, in
/// `namespace` when a namespaced object names none.
pub async fn apply_yaml(
    client: &kube::Client,
    yaml: &str,
    namespace: &str,
) -> Result<Vec<DynamicObject>> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| Error::Kube {
            what: "discovering API resources".into(),
            source: e,
        })?;
    let mut applied = Vec::new();
    let docs: Vec<serde_json::Value> = sightline_crds::yaml::from_multiple(yaml)?;
    for value in docs {
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value)
            .map_err(|e| Error::Manifest(format!("not an object: {e}")))?;
        let types = obj.types.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let gvk = GroupVersionKind::try_from(&types)
            .map_err(|e| Error::Manifest(format!("{name}: apiVersion/kind: {e}")))?;
        let (ar, caps) = discovery.resolve_gvk(&gvk).ok_or_else(|| {
            Error::Manifest(format!(
                "{name}: the API server serves no {}/{} {}",
                gvk.group, gvk.version, gvk.kind
            ))
        })?;
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.to_owned());
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let out = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| Error::Kube {
                what: format!("applying {} {name}", gvk.kind),
                source: e,
            })?;
        applied.push(out);
    }
    Ok(applied)
}

/// Copies a directory tree (test data into a build context, a chart to
/// change a copy of it).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(crate::io(format!("creating {}", to.display())))?;
    let entries =
        std::fs::read_dir(from).map_err(crate::io(format!("reading {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(crate::io(format!("reading {}", from.display())))?;
        let dest = to.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .map_err(crate::io(format!("reading {}", entry.path().display())))?
            .is_dir();
        if is_dir {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .map_err(crate::io(format!("copying {}", entry.path().display())))?;
        }
    }
    Ok(())
}
