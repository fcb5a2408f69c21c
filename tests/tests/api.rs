//! The generated CRDs against a real kube-apiserver: they install, every
//! example is accepted, and invalid objects are rejected with a message that
//! names the offending field.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use sightline_crds::{ActivationKey, Asset, Connector, RuntimePolicy, Sensor, TagRule};
use sightline_testenv::{ControlPlane, Options, helpers};

fn resource_for(kind: &str) -> ApiResource {
    match kind {
        "ActivationKey" => ApiResource::erase::<ActivationKey>(&()),
        "Sensor" => ApiResource::erase::<Sensor>(&()),
        "RuntimePolicy" => ApiResource::erase::<RuntimePolicy>(&()),
        "Connector" => ApiResource::erase::<Connector>(&()),
        "TagRule" => ApiResource::erase::<TagRule>(&()),
        _ => ApiResource::erase::<Asset>(&()),
    }
}

async fn create(client: &kube::Client, ns: &str, obj: Value) -> Result<(), kube::Error> {
    let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
    let ar = resource_for(&kind);
    let api: Api<DynamicObject> = if ["ActivationKey", "Asset", "TagRule"].contains(&kind.as_str())
    {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), ns, &ar)
    };
    let obj: DynamicObject = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}

fn key(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "ActivationKey", "metadata": {"name": name}, "spec": spec})
}

fn namespaced(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "sightline.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn sensor(name: &str, spec: Value) -> Value {
    namespaced("Sensor", name, spec)
}

fn policy(name: &str, spec: Value) -> Value {
    namespaced("RuntimePolicy", name, spec)
}

/// Each case: what it shows, the object, and text the rejection must contain.
fn invalid_objects() -> Vec<(&'static str, Value, &'static str)> {
    let k = json!({"name": "lab"});
    vec![
        (
            "empty modules",
            key("bad-empty", json!({"modules": []})),
            "spec.modules",
        ),
        (
            "unknown module",
            key("bad-module", json!({"modules": ["telepathy"]})),
            "spec.modules[0]: Unsupported value: \"telepathy\"",
        ),
        (
            "duplicate module",
            key("bad-dup", json!({"modules": ["inventory", "inventory"]})),
            "spec.modules[1]: Duplicate value",
        ),
        (
            "zero maxSensors",
            key(
                "bad-max",
                json!({"modules": ["inventory"], "limits": {"maxSensors": 0}}),
            ),
            "spec.limits.maxSensors",
        ),
        (
            "expires not a date",
            key(
                "bad-exp",
                json!({"modules": ["inventory"], "limits": {"expires": "next tuesday"}}),
            ),
            "spec.limits.expires",
        ),
        (
            "bad network CIDR in scope",
            key(
                "bad-net",
                json!({"modules": ["passive"], "scope": {"networks": ["10.0.0.0/33"]}}),
            ),
            "spec.scope.networks",
        ),
        (
            "registry type with a runtime block",
            sensor(
                "bad-block",
                json!({"type": "registry", "activationKeyRef": k, "registry": {"url": "https://r.example"}, "runtime": {}}),
            ),
            "spec.runtime",
        ),
        (
            "container type without its block",
            sensor(
                "bad-missing",
                json!({"type": "container", "activationKeyRef": k}),
            ),
            "spec.container",
        ),
        (
            "unknown sensor type",
            sensor(
                "bad-type",
                json!({"type": "quantum", "activationKeyRef": k}),
            ),
            "spec.type: Unsupported value: \"quantum\"",
        ),
        (
            "missing key reference",
            sensor("bad-noref", json!({"type": "runtime", "runtime": {}})),
            "spec.activationKeyRef: Required value",
        ),
        (
            "registry URL not a URL",
            sensor(
                "bad-url",
                json!({"type": "registry", "activationKeyRef": k, "registry": {"url": "not a url"}}),
            ),
            "spec.registry.url",
        ),
        (
            "unknown enforcement",
            sensor(
                "bad-enf",
                json!({"type": "runtime", "activationKeyRef": k, "runtime": {"enforcement": "Sometimes"}}),
            ),
            "spec.runtime.enforcement: Unsupported value",
        ),
        (
            "socket endpoint not a unix URL",
            sensor(
                "bad-sock",
                json!({"type": "container", "activationKeyRef": k, "container": {"runtimes": [{"type": "docker", "endpoint": "tcp://1.2.3.4:2375"}]}}),
            ),
            "spec.container.runtimes[0].endpoint",
        ),
        (
            "socket endpoint climbing out of its directory",
            sensor(
                "bad-climb",
                json!({"type": "container", "activationKeyRef": k, "container": {"runtimes": [{"type": "containerd", "endpoint": "unix:///run/containerd/../../etc/kubernetes/pki/x"}]}}),
            ),
            "endpoint must be a plain path",
        ),
        (
            "registry scan timeout not a duration",
            sensor(
                "bad-timeout",
                json!({"type": "registry", "activationKeyRef": k, "registry": {"url": "https://r.example", "scanTimeout": "soon"}}),
            ),
            "spec.registry.scanTimeout",
        ),
        (
            "registry platform not os/arch",
            sensor(
                "bad-platform",
                json!({"type": "registry", "activationKeyRef": k, "registry": {"url": "https://r.example", "platforms": ["arm64"]}}),
            ),
            "spec.registry.platforms[0]",
        ),
        (
            "passive network not a CIDR",
            sensor(
                "bad-pass",
                json!({"type": "passive", "activationKeyRef": k, "passive": {"interface": "eth0", "networks": {"internal": ["192.168.1.0/24", "lan"]}}}),
            ),
            "spec.passive.networks.internal",
        ),
        (
            "bad CIDR in denyConnect",
            policy(
                "bad-cidr",
                json!({"network": {"denyConnect": [{"cidr": "10.0.0.0/33"}]}}),
            ),
            "spec.network.denyConnect[0].cidr",
        ),
        (
            "port 70000",
            policy(
                "bad-port",
                json!({"network": {"denyConnect": [{"cidr": "10.0.0.0/8", "ports": [443, 70000]}]}}),
            ),
            "spec.network.denyConnect[0].ports[1]",
        ),
        (
            "allow and deny both set",
            policy(
                "bad-both",
                json!({"process": {"allow": [{"path": "/app"}], "deny": [{"path": "/bin/sh"}]}}),
            ),
            "spec.process",
        ),
        (
            "process entry with path and sha256",
            policy(
                "bad-entry",
                json!({"process": {"deny": [{"path": "/bin/sh", "sha256": "ab"}]}}),
            ),
            "spec.process.deny[0]",
        ),
        (
            "sha256 not hex",
            policy("bad-sha", json!({"process": {"deny": [{"sha256": "xyz"}]}})),
            "spec.process.deny[0].sha256",
        ),
        (
            "relative denyWrite prefix",
            policy("bad-rel", json!({"file": {"denyWrite": ["etc/"]}})),
            "spec.file.denyWrite",
        ),
        (
            "unknown action",
            policy(
                "bad-act",
                json!({"action": "Shrug", "file": {"denyRead": ["/etc/shadow"]}}),
            ),
            "spec.action: Unsupported value",
        ),
        (
            "policy without rules",
            policy("bad-empty", json!({"action": "Audit"})),
            "spec.process, spec.file or spec.network",
        ),
        (
            "regions on a gcp connector",
            namespaced(
                "Connector",
                "bad-conn",
                json!({"provider": "gcp", "credentialsSecretRef": {"name": "x"}, "regions": ["us-east-1"]}),
            ),
            "spec.regions",
        ),
        (
            "tag rule with an empty query",
            namespaced(
                "TagRule",
                "bad-query",
                json!({"query": "", "tags": {"a": "b"}}),
            ),
            "spec.query",
        ),
        (
            "tag rule without tags",
            namespaced(
                "TagRule",
                "bad-tags",
                json!({"query": "kind:Node", "tags": {}}),
            ),
            "spec.tags",
        ),
    ]
}

#[tokio::test]
async fn crds_install_examples_apply_and_invalid_objects_are_rejected() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    if let Err(e) = helpers::install_crds(&client).await {
        panic!("installing the generated CRDs: {e:?}");
    }
    let ns = helpers::namespace(&client, "api").await?;

    // Every example is accepted as written.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)?.collect::<Result<_, _>>()?;
    files.sort_by_key(|e| e.path());
    assert!(
        files.len() >= 5,
        "expected the examples directory to hold the sample resources"
    );
    for f in files {
        let yaml = std::fs::read_to_string(f.path())?;
        let applied = helpers::apply_yaml(&client, &yaml, &ns)
            .await
            .with_context(|| format!("applying {}", f.path().display()))?;
        assert!(
            !applied.is_empty(),
            "{} holds no object",
            f.path().display()
        );
    }

    let cases = invalid_objects();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (what, obj, expected) in cases {
        match create(&client, &ns, obj).await {
            Ok(()) => failures.push(format!("{what}: was accepted")),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(expected) {
                    failures.push(format!(
                        "{what}: expected a 422 naming {expected:?}, got {}: {}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: unexpected error {e}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} invalid objects were not rejected as expected:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    // Defaults are applied by the API server, so a minimal Sensor reads back complete.
    create(
        &client,
        &ns,
        sensor(
            "defaults",
            json!({"type": "container", "activationKeyRef": {"name": "lab"}, "container": {}}),
        ),
    )
    .await?;
    let sensors: Api<Sensor> = Api::namespaced(client.clone(), &ns);
    let s = helpers::wait_object(
        &sensors,
        "defaults",
        Duration::from_secs(5),
        "the defaulted sensor",
        |_| true,
    )
    .await?;
    let c = s.spec.container.context("container block")?;
    assert_eq!(c.runtimes.len(), 2);
    assert_eq!(c.rescan_interval, "24h");
    // A registry sensor's scans are bounded unless it says otherwise: the
    // API server itself fills in the timeout.
    create(
        &client,
        &ns,
        sensor(
            "reg-defaults",
            json!({"type": "registry", "activationKeyRef": {"name": "lab"}, "registry": {"url": "https://r.example"}}),
        ),
    )
    .await?;
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &resource_for("Sensor"));
    let stored = raw.get("reg-defaults").await?;
    assert_eq!(
        stored.data["spec"]["registry"]["scanTimeout"],
        sightline_crds::sensor::DEFAULT_SCAN_TIMEOUT
    );
    Ok(())
}
