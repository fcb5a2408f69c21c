//! A sensor's identity as the operator's workloads give it, for sensors
//! run as processes by tests: the ActivationKey, the Sensor, its
//! ServiceAccount, and a token for audience `sightline` bound to a pod on
//! the sensor's node (so the API server's TokenReview names that node),
//! written to a file as the kubelet writes a projected token.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::helpers::MANAGER;
use crate::{Error, Result};

fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// Who a test's sensor is.
pub struct SensorIdentity<'a> {
    /// The Sensor's namespace.
    pub namespace: &'a str,
    /// The Sensor's name.
    pub name: &'a str,
    /// Its `spec` (`type`, the type's block; `activationKeyRef` is added).
    pub spec: Value,
    /// Its ActivationKey (created, enabling every module, if absent).
    pub key: &'a str,
    /// The node its pod runs on (node sensors), created if absent.
    pub node: Option<&'a str>,
}

impl SensorIdentity<'_> {
    /// Creates what is missing and writes a token to `dir/<name>.token`;
    /// returns the file.
    pub async fn token_file(&self, client: &kube::Client, dir: &Path) -> Result<PathBuf> {
        let apply = PatchParams::apply(MANAGER).force();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}});
        namespaces
            .patch(self.namespace, &apply, &Patch::Apply(&ns))
            .await
            .map_err(kube(format!("applying Namespace {}", self.namespace)))?;
        let keys: Api<sightline_crds::ActivationKey> = Api::all(client.clone());
        let key = json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "ActivationKey",
            "metadata": {"name": self.key},
            "spec": {
                "modules": ["inventory", "vulnerability", "containerSecurity", "runtimeSecurity"],
                "scope": {"namespaceSelector": {}},
            },
        });
        keys.patch(self.key, &apply, &Patch::Apply(&key))
            .await
            .map_err(kube(format!("applying ActivationKey {}", self.key)))?;
        let mut spec = self.spec.clone();
        spec["activationKeyRef"] = json!({"name": self.key});
        let sensors: Api<sightline_crds::Sensor> = Api::namespaced(client.clone(), self.namespace);
        let sensor = json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        });
        let applied = sensors
            .patch(self.name, &apply, &Patch::Apply(&sensor))
            .await
            .map_err(kube(format!("applying Sensor {}", self.name)))?;
        // What the operator's Sensor controller says of a Sensor it runs:
        // the ingestion API admits only Sensors accepted under their key.
        let status = json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
            "status": {"conditions": [{
                "type": "KeyRejected", "status": "False", "reason": "KeyAccepted", "message": "",
                "observedGeneration": applied.metadata.generation,
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]},
        });
        sensors
            .patch_status(self.name, &apply, &Patch::Apply(&status))
            .await
            .map_err(kube(format!("accepting Sensor {}", self.name)))?;
        let account = sightline_crds::names::sensor_workload(self.name);
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), self.namespace);
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": self.namespace},
        });
        accounts
            .patch(&account, &apply, &Patch::Apply(&sa))
            .await
            .map_err(kube(format!("applying ServiceAccount {account}")))?;
        let mut bound = None;
        if let Some(node) = self.node {
            let nodes: Api<Node> = Api::all(client.clone());
            if nodes
                .get_opt(node)
                .await
                .map_err(kube(format!("reading Node {node}")))?
                .is_none()
            {
                let n: Node = serde_json::from_value(json!({"metadata": {"name": node}}))
                    .map_err(|e| Error::Manifest(e.to_string()))?;
                nodes
                    .create(&PostParams::default(), &n)
                    .await
                    .map_err(kube(format!("creating Node {node}")))?;
            }
            let pod_name = format!("{account}-{node}");
            let pods: Api<Pod> = Api::namespaced(client.clone(), self.namespace);
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": account,
                    "containers": [{"name": "sensor", "image": "sightline/sensor:test"}],
                },
            });
            let pod = pods
                .patch(&pod_name, &apply, &Patch::Apply(&pod))
                .await
                .map_err(kube(format!("applying Pod {pod_name}")))?;
            bound = Some(json!({
                "kind": "Pod", "apiVersion": "v1",
                "name": pod_name, "uid": pod.metadata.uid,
            }));
        }
        let mut request = json!({"spec": {"audiences": ["sightline"], "expirationSeconds": 3600}});
        if let Some(b) = bound {
            request["spec"]["boundObjectRef"] = b;
        }
        let request: TokenRequest =
            serde_json::from_value(request).map_err(|e| Error::Manifest(e.to_string()))?;
        let token = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(kube(format!("requesting a token of {account}")))?
            .status
            .map(|s| s.token)
            .ok_or_else(|| Error::Manifest("the TokenRequest returned no token".into()))?;
        let path = dir.join(format!("{}.token", self.name));
        std::fs::write(&path, token).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        Ok(path)
    }
}
