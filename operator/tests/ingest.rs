//! The ingestion API against a real control plane and the real operator
//! binary: sensors' tokens are real ServiceAccount tokens bound to pods on
//! real Node objects, reviewed by the API server, so the node a report may
//! speak for comes from the token. Hostile sensors and hostile CI keys are
//! refused and change nothing; one image on 5,000 nodes keeps a small Asset.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind, Sensor, SensorType};
use sightline_operator::ingest::auth::{BoundNode, Caller};
use sightline_operator::ingest::writer::Writer;
use sightline_report::client::{Client, Credentials, Error};
use sightline_report::facts::{ContainerFacts, ImageFacts, NodeFacts};
use sightline_report::{
    ContainerObservation, ImageObservation, Listing, NodeObservation, Observation,
};
use sightline_testenv::helpers;
use support::{Env, OPERATOR_NS, key_secret};

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn image(n: u32, os: &str, runtime: Option<&str>) -> Observation {
    let mut facts = ImageFacts {
        image_id: Some(digest(n)),
        ..ImageFacts::default()
    };
    facts.os_release = Some([("ID".to_owned(), os.to_owned())].into());
    facts.packages.total = 7;
    facts.layer_count = 1;
    Observation::ContainerImage(ImageObservation {
        identity: digest(n),
        facts,
        vulnerabilities: None,
        runtime: runtime.map(str::to_owned),
        reference: None,
    })
}

/// `observation` (an image) with findings: `critical` and `high` counts,
/// and those listed by id.
fn with_findings(mut observation: Observation, critical: &[&str], high: &[&str]) -> Observation {
    use sightline_crds::asset::{VulnerabilityFindings, VulnerabilityRef};
    let refs = |ids: &[&str], severity: &str| -> Vec<VulnerabilityRef> {
        ids.iter()
            .map(|id| VulnerabilityRef {
                id: (*id).to_owned(),
                package: "openssl".into(),
                installed: "3.0.0".into(),
                fixed: None,
                severity: severity.into(),
            })
            .collect()
    };
    if let Observation::ContainerImage(i) = &mut observation {
        let mut top = refs(critical, "critical");
        top.extend(refs(high, "high"));
        i.vulnerabilities = Some(VulnerabilityFindings {
            critical: critical.len() as i64,
            high: high.len() as i64,
            top,
            ..VulnerabilityFindings::default()
        });
    }
    observation
}

/// Creates a Node and returns its UID.
async fn node(client: &kube::Client, name: &str) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    let n = nodes.create(&PostParams::default(), &n).await?;
    n.metadata.uid.context("node uid")
}

/// A token of `account` for audience `sightline` (the API server's own
/// when `for_api_server`), bound to a pod on `node` (as the DaemonSet's
/// pod there would hold).
async fn pod_token(
    env: &Env,
    account: &str,
    node: Option<&str>,
    for_api_server: bool,
) -> Result<String> {
    let audiences: Vec<&str> = if for_api_server {
        vec![]
    } else {
        vec!["sightline"]
    };
    let mut spec = json!({"audiences": audiences, "expirationSeconds": 3600});
    if let Some(node) = node {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
        let name = format!("{account}-{node}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": account,
                     "containers": [{"name": "sensor", "image": "sightline/sensor:test"}]},
        }))?;
        let pod = pods.create(&PostParams::default(), &pod).await?;
        spec["boundObjectRef"] =
            json!({"kind": "Pod", "apiVersion": "v1", "name": name, "uid": pod.metadata.uid});
    }
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.client.clone(), &env.ns);
    let req: TokenRequest = serde_json::from_value(json!({ "spec": spec }))?;
    let tr = sas
        .create_token_request(account, &PostParams::default(), &req)
        .await?;
    tr.status.map(|s| s.token).context("no token")
}

/// Waits until the operator has accepted `name` under its key.
async fn accepted(env: &Env, name: &str) -> Result<()> {
    let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
    helpers::wait_for(
        &format!("Sensor {name} accepted under its key"),
        Duration::from_secs(60),
        || async {
            let s = sensors.get_opt(name).await.ok()??;
            sightline_operator::ingest::auth::accepted(&s).then_some(())
        },
    )
    .await?;
    Ok(())
}

fn refusal(e: &Error) -> (u16, String) {
    match e {
        Error::Refused { status, reason, .. } => (*status, reason.clone()),
        other => (0, other.to_string()),
    }
}

async fn status_of(api: &Api<Asset>, name: &str) -> Result<Value> {
    let a = api.get(name).await?;
    Ok(serde_json::to_value(a.status)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_sensors_and_keys_are_refused_and_change_nothing() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator_with(
        "ingest",
        &[
            "--leader-election=false",
            "--ingest-rate",
            "2",
            "--ingest-burst",
            "12",
        ],
    )?;
    let result = hostile(&env, &op).await;
    if result.is_err() {
        eprintln!("{}", env.dump());
    }
    result
}

async fn hostile(env: &Env, op: &support::Operator) -> Result<()> {
    op.wait_serving().await?;
    let api = format!("http://127.0.0.1:{}", op.port);
    env.apply(
        r#"
apiVersion: sightline.dev/v1alpha1
kind: ActivationKey
metadata: {name: lab}
spec:
  modules: [inventory, vulnerability, containerSecurity, runtimeSecurity]
  scope: {namespaceSelector: {}}
  allow: {privilegedSensors: true}
  limits: {maxAssets: 20}
---
apiVersion: sightline.dev/v1alpha1
kind: Sensor
metadata: {name: nodes}
spec:
  type: container
  activationKeyRef: {name: lab}
  container: {}
---
apiVersion: sightline.dev/v1alpha1
kind: Sensor
metadata: {name: registry}
spec:
  type: registry
  activationKeyRef: {name: lab}
  registry: {url: "http://127.0.0.1:1", schedule: "@daily"}
---
apiVersion: sightline.dev/v1alpha1
kind: Sensor
metadata: {name: runtime}
spec:
  type: runtime
  activationKeyRef: {name: lab}
  runtime: {}
---
apiVersion: sightline.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: no-echo}
spec:
  podSelector: {matchLabels: {app: web}}
  action: Block
  process: {deny: [{path: /bin/echo}]}
"#,
    )
    .await?;
    accepted(env, "nodes").await?;
    accepted(env, "registry").await?;
    accepted(env, "runtime").await?;
    let uid_a = node(&env.client, "node-a").await?;
    let uid_b = node(&env.client, "node-b").await?;
    let account = sightline_crds::names::sensor_workload("nodes");
    let token_a = pod_token(env, &account, Some("node-a"), false).await?;
    let sensor_a = Client::new(&api, Credentials::Token(token_a), None)?;
    let assets: Api<Asset> = Api::all(env.client.clone());

    // The sensor of node A reports node A, an image and a container.
    let receipt = sensor_a
        .send(
            vec![
                Observation::Node(NodeObservation {
                    identity: uid_a.clone(),
                    facts: NodeFacts {
                        kernel_version: Some("6.1.0".into()),
                        ..NodeFacts::default()
                    },
                }),
                with_findings(image(1, "debian", Some("containerd")), &[], &["H-1", "H-2"]),
                Observation::Container(ContainerObservation {
                    identity: "c-a-1".into(),
                    facts: ContainerFacts {
                        container_id: "c-a-1".into(),
                        image_id: digest(1),
                        ..ContainerFacts::default()
                    },
                }),
            ],
            None,
        )
        .await?;
    ensure!(receipt.refused.is_empty(), "{receipt:?}");
    let node_a = status_of(&assets, &asset_name(AssetKind::Node, &uid_a)).await?;
    ensure!(node_a["observed"]["nodeName"] == "node-a", "{node_a}");
    ensure!(
        node_a["sources"][0]["sensor"] == format!("{}/nodes", env.ns)
            && node_a["sources"][0]["activationKey"] == "lab",
        "{node_a}"
    );
    let container = status_of(&assets, &asset_name(AssetKind::Container, "c-a-1")).await?;
    ensure!(container["observed"]["node"] == "node-a", "{container}");
    let image_name = asset_name(AssetKind::ContainerImage, &digest(1));
    let img = assets.get(&image_name).await?;
    let before = img.metadata.resource_version.clone();

    // Node A's sensor may not speak for node B, in any way.
    let receipt = sensor_a
        .send(
            vec![
                Observation::Node(NodeObservation {
                    identity: uid_b.clone(),
                    facts: NodeFacts::default(),
                }),
                Observation::Node(NodeObservation {
                    identity: uid_a.clone(),
                    facts: NodeFacts {
                        node_name: "node-b".into(),
                        ..NodeFacts::default()
                    },
                }),
                Observation::Container(ContainerObservation {
                    identity: "c-b-1".into(),
                    facts: ContainerFacts {
                        container_id: "c-b-1".into(),
                        node: "node-b".into(),
                        ..ContainerFacts::default()
                    },
                }),
            ],
            None,
        )
        .await?;
    let reasons: Vec<&str> = receipt.refused.iter().map(|r| r.reason.as_str()).collect();
    ensure!(
        reasons == ["NotYourNode"; 3] && receipt.accepted.is_empty(),
        "{receipt:?}"
    );
    ensure!(
        assets
            .get_opt(&asset_name(AssetKind::Node, &uid_b))
            .await?
            .is_none()
    );
    ensure!(
        assets
            .get_opt(&asset_name(AssetKind::Container, "c-b-1"))
            .await?
            .is_none()
    );

    // A forged key, Sensor or node in the body is not part of the contract.
    let http = reqwest::Client::new();
    let token_a2 = pod_token(env, &account, Some("node-b"), false).await?;
    for forged in [
        json!({"observations": [], "activationKey": "other"}),
        json!({"observations": [], "sensor": "kube-system/x"}),
        json!({"observations": [{"kind": "ContainerImage", "identity": digest(1), "facts": {}, "node": "node-b"}]}),
    ] {
        let r = http
            .post(format!("{api}/api/v1/observations"))
            .bearer_auth(&token_a2)
            .json(&forged)
            .send()
            .await?;
        ensure!(r.status() == 400, "{forged}: {}", r.status());
    }
    ensure!(assets.get(&image_name).await?.metadata.resource_version == before);

    // A token for the API server (not audience sightline) is refused: a
    // token captured from the ingestion API is useless elsewhere and
    // the other way round.
    let plain = pod_token(env, &account, None, true).await?;
    let r = Client::new(&api, Credentials::Token(plain), None)?
        .send(vec![image(1, "x", Some("containerd"))], None)
        .await;
    ensure!(
        r.as_ref().err().map(refusal).is_some_and(|(s, _)| s == 401),
        "{r:?}"
    );

    // The sensor's ServiceAccount may not write Assets or policies itself.
    let sa = format!("system:serviceaccount:{}:{account}", env.ns);
    for verb in ["create", "patch", "delete"] {
        for resource in ["assets.sightline.dev", "assets.sightline.dev/status"] {
            let (res, sub) = resource
                .split_once('/')
                .map_or((resource, None), |(r, s)| (r, Some(s)));
            let mut args = vec!["auth", "can-i", verb, res, "--as", &sa];
            if let Some(s) = sub {
                args.push("--subresource");
                args.push(s);
            }
            let out = env.cp.kubectl()?.args(&args).output()?;
            ensure!(
                String::from_utf8_lossy(&out.stdout).trim() == "no",
                "{sa} may {verb} {resource}"
            );
        }
    }
    let out = env
        .cp
        .kubectl()?
        .args([
            "patch",
            "asset",
            &image_name,
            "--type=merge",
            "--subresource=status",
            "-p",
        ])
        .arg(r#"{"status":{"findings":{"vulnerabilities":{"critical":0}}}}"#)
        .args(["--as", &sa])
        .output()?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor may any sensor write a policy's status; the runtime sensor of a
    // node reports its entry, the operator writes it for that node only.
    let runtime_account = sightline_crds::names::sensor_workload("runtime");
    let runtime_sa = format!("system:serviceaccount:{}:{runtime_account}", env.ns);
    for who in [&sa, &runtime_sa] {
        let out = env
            .cp
            .kubectl()?
            .args(["auth", "can-i", "patch", "runtimepolicies.sightline.dev"])
            .args(["--subresource", "status", "--as", who])
            .output()?;
        ensure!(
            String::from_utf8_lossy(&out.stdout).trim() == "no",
            "{who} may patch policy status"
        );
    }
    let policy_report = |count| sightline_report::PolicyReport {
        policy: format!("{}/no-echo", env.ns),
        node: Some(sightline_report::PolicyNode {
            enforcer: Some(sightline_crds::sensor::Enforcer::Fanotify),
            ready: true,
            reason: String::new(),
        }),
        violations: Some(sightline_report::PolicyViolations {
            count,
            last: "2026-12-07T00:00:00Z".into(),
        }),
    };
    let refused = sensor_a.send_policies(vec![policy_report(5)]).await?;
    ensure!(
        refused
            .first()
            .is_some_and(|r| r.reason == "KindNotAllowed"),
        "{refused:?}"
    );
    let runtime_a = Client::new(
        &api,
        Credentials::Token(pod_token(env, &runtime_account, Some("node-a"), false).await?),
        None,
    )?;
    let refused = runtime_a
        .send_policies(vec![policy_report(2), policy_report(3)])
        .await?;
    ensure!(refused.is_empty(), "{refused:?}");
    let policies: Api<sightline_crds::RuntimePolicy> = Api::namespaced(env.client.clone(), &env.ns);
    let status = serde_json::to_value(policies.get_status("no-echo").await?.status)?;
    ensure!(status["violations"] == 5, "{status}");
    ensure!(
        status["nodes"] == json!([{"node": "node-a", "enforcer": "fanotify", "ready": true}]),
        "{status}"
    );
    ensure!(assets.get(&image_name).await?.metadata.resource_version == before);

    // The registry sensor reports images, never as a node and never nodes.
    let registry_token = pod_token(
        env,
        &sightline_crds::names::sensor_workload("registry"),
        None,
        false,
    )
    .await?;
    let registry = Client::new(&api, Credentials::Token(registry_token), None)?;
    let receipt = registry
        .send(
            vec![
                Observation::Node(NodeObservation {
                    identity: uid_b.clone(),
                    facts: NodeFacts::default(),
                }),
                image(2, "alpine", Some("containerd")),
            ],
            None,
        )
        .await?;
    let reasons: Vec<&str> = receipt.refused.iter().map(|r| r.reason.as_str()).collect();
    ensure!(reasons == ["KindNotAllowed", "NotANode"], "{receipt:?}");

    // A CI key: its report joins the image, but never over what the node saw.
    let key_token = helpers::wait_for("the key's token", Duration::from_secs(30), || async {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(env.client.clone(), OPERATOR_NS);
        let s = secrets.list(&Default::default()).await.ok()?;
        s.items.into_iter().find_map(|s| {
            let key = s
                .metadata
                .labels?
                .get("sightline.dev/activation-key")?
                .clone();
            (key == "lab").then(|| {
                s.data?
                    .get("token")
                    .map(|t| String::from_utf8_lossy(&t.0).into_owned())
            })?
        })
    })
    .await?;
    let ci = Client::new(&api, Credentials::Token(key_token.clone()), None)?;
    // It claims another OS and no findings at all: the node's facts stand,
    // and its findings are not hidden.
    let mut hostile_ci = with_findings(image(1, "windows", None), &[], &[]);
    if let Observation::ContainerImage(i) = &mut hostile_ci {
        i.reference = Some("registry.example.com/app:1".into());
    }
    let receipt = ci.send(vec![hostile_ci], None).await?;
    ensure!(receipt.refused.is_empty(), "{receipt:?}");
    let img = status_of(&assets, &image_name).await?;
    ensure!(img["observed"]["osRelease"]["ID"] == "debian", "{img}");
    ensure!(
        img["findings"]["vulnerabilities"]["high"] == 2
            && img["findings"]["vulnerabilities"]["critical"] == 0,
        "{img}"
    );
    // A pipeline with a newer database finds a critical the node's missed:
    // the Asset shows both sources' findings, each source keeps its own.
    let mut newer = with_findings(image(1, "debian", None), &["C-1"], &["H-1"]);
    if let Observation::ContainerImage(i) = &mut newer {
        i.reference = Some("registry.example.com/app:1".into());
    }
    let receipt = ci.send(vec![newer], None).await?;
    ensure!(receipt.refused.is_empty(), "{receipt:?}");
    let img = status_of(&assets, &image_name).await?;
    let combined = &img["findings"]["vulnerabilities"];
    ensure!(combined["critical"] == 1 && combined["high"] == 2, "{img}");
    let top: Vec<&str> = combined["top"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    ensure!(top == ["C-1", "H-1", "H-2"], "{img}");
    let own = |sensor: &str| {
        img["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["sensor"] == sensor))
            .map(|s| s["findings"]["vulnerabilities"].clone())
    };
    ensure!(
        own(&format!("{}/nodes", env.ns)).is_some_and(|v| v["critical"] == 0 && v["high"] == 2),
        "{img}"
    );
    ensure!(
        own("ci/lab").is_some_and(|v| v["critical"] == 1 && v["high"] == 1),
        "{img}"
    );
    let ci_source = img["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sensor"] == "ci/lab"))
        .context("the key's source entry")?;
    ensure!(
        ci_source["reference"] == "registry.example.com/app:1",
        "{img}"
    );
    // Node B's pod of the same Sensor could not analyse the image node A
    // analysed: node B now holds it, but node A's facts stand.
    let sensor_b = Client::new(&api, Credentials::Token(token_a2.clone()), None)?;
    let mut failed = image(1, "", Some("containerd"));
    if let Observation::ContainerImage(i) = &mut failed {
        i.facts = sightline_report::facts::ImageFacts {
            image_id: Some(digest(1)),
            analysis_failure: Some(sightline_report::facts::AnalysisFailure {
                reason: "the analysis did not end within 600 s".into(),
                at: "2026-12-07T00:00:00Z".into(),
                attempts: 1,
                retry_after: "2026-12-07T00:15:00Z".into(),
                sensor_version: "0.1.0".into(),
            }),
            ..Default::default()
        };
    }
    let receipt = sensor_b.send(vec![failed], None).await?;
    ensure!(receipt.refused.is_empty(), "{receipt:?}");
    let img = status_of(&assets, &image_name).await?;
    ensure!(
        img["observed"]["osRelease"]["ID"] == "debian"
            && img["observed"].get("analysisFailure").is_none(),
        "{img}"
    );
    let nodes_source = img["sources"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["sensor"] == format!("{}/nodes", env.ns))
        })
        .context("the node sensor's entry")?;
    ensure!(nodes_source["nodes"]["count"] == 2, "{img}");

    // Only a Sensor's pods say which database they use; a node sensor's
    // refusal is counted and lands on its Sensor.
    let said = |reason: &str| sightline_report::DatabaseState {
        built: Some("2026-12-01T00:00:00Z".into()),
        refused: Some(sightline_report::DatabaseRefusal {
            reason: reason.into(),
            message: "signed by a key this sensor does not pin".into(),
        }),
    };
    let refused = ci.send_database(said("unknown_key")).await?;
    ensure!(
        refused
            .as_ref()
            .is_some_and(|r| r.reason == "KindNotAllowed"),
        "{refused:?}"
    );
    ensure!(sensor_a.send_database(said("unknown_key")).await?.is_none());
    let sensors: Api<sightline_crds::Sensor> = Api::namespaced(env.client.clone(), &env.ns);
    let db = serde_json::to_value(sensors.get_status("nodes").await?.status)?;
    ensure!(
        db["database"]["refusing"] == 1 && db["database"]["lastRefusal"]["node"] == "node-a",
        "{db}"
    );
    ensure!(op.metric("sightline_operator_sensor_database_refusals_total")? >= 1.0);
    // A CI key may not claim a node.
    let receipt = ci.send(vec![image(3, "x", Some("docker"))], None).await?;
    ensure!(
        receipt
            .refused
            .first()
            .is_some_and(|r| r.reason == "NotANode")
    );

    // 10 MiB: refused before it is read.
    let r = http
        .post(format!("{api}/api/v1/observations"))
        .bearer_auth(&key_token)
        .body(vec![b' '; 10 << 20])
        .send()
        .await?;
    ensure!(r.status() == 413, "{}", r.status());

    // 10,000 digests: the key may create 20 Assets (spec.limits.maxAssets),
    // and its budget runs out long before 50 requests are through.
    let raw = reqwest::Client::new();
    let responses = futures::future::join_all((0..50u32).map(|chunk| {
        let report = sightline_report::Report {
            observations: (0..200)
                .map(|i| image(1000 + chunk * 200 + i, "x", None))
                .collect(),
            ..Default::default()
        };
        raw.post(format!("{api}/api/v1/observations"))
            .bearer_auth(&key_token)
            .json(&report)
            .send()
    }))
    .await;
    let (mut created, mut limited, mut rate_limited) = (0, 0, 0);
    for r in responses {
        let r = r?;
        if r.status() == 429 {
            ensure!(r.headers().contains_key("retry-after"));
            rate_limited += 1;
            continue;
        }
        ensure!(r.status() == 200, "{}", r.status());
        let receipt: sightline_report::Receipt = r.json().await?;
        created += receipt.accepted.len();
        limited += receipt
            .refused
            .iter()
            .filter(|r| r.reason == "AssetLimit")
            .count();
    }
    let rate_limited = rate_limited >= 30;
    ensure!(rate_limited, "50 requests at once were not rate-limited");
    // Image 1 already existed; the key created at most its limit.
    ensure!(
        created <= 20 && limited > 0,
        "created {created}, limited {limited}"
    );
    let ci_assets = assets
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.sources.iter().any(|x| x.sensor == "ci/lab"))
        })
        .count();
    ensure!(ci_assets <= 21, "{ci_assets} Assets carry the key's source");
    ensure!(op.metric("sightline_operator_ingest_refusals_total")? > 0.0);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", op.proc.pid))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let kib: u64 = rss.trim_end_matches("kB").trim().parse().unwrap_or(0);
    ensure!(kib > 0 && kib < 256 * 1024, "operator RSS {rss}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_image_on_5000_nodes_keeps_a_small_asset_and_a_new_leader_knows_them() -> Result<()> {
    let env = Env::start().await?;
    let index = sightline_operator::search::SharedIndex::default();
    tokio::spawn(sightline_operator::search::feed(
        env.client.clone(),
        index.clone(),
        Arc::new(AtomicBool::new(false)),
    ));
    let dir = tempfile::tempdir()?;
    let store =
        sightline_operator::store::Store::open(&dir.path().join("details.db").to_string_lossy())
            .await?;
    let writer = Arc::new(Writer::new(
        env.client.clone(),
        index.clone(),
        Some(store.clone()),
    ));
    let caller = |i: usize| Caller::Sensor {
        sensor: "sightline-system/nodes".into(),
        sensor_type: SensorType::Container,
        key: "lab".into(),
        node: Some(BoundNode {
            name: format!("node-{i:04}"),
            uid: format!("{i:08x}-0000-0000-0000-000000000000"),
        }),
    };
    // The same image (kube-proxy, the CNI, the sensor itself) on every node;
    // each node is its own caller, as each pod's token names its node.
    let shared = image(7, "debian", Some("containerd"));
    let results: Vec<Result<String, String>> = futures::stream::iter(0..5000)
        .map(|i| {
            let (writer, shared, caller) = (writer.clone(), shared.clone(), caller(i));
            async move {
                writer
                    .write(&caller, &shared, None)
                    .await
                    .map_err(|e| format!("{e:?}"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    ensure!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );

    let assets: Api<Asset> = Api::all(env.client.clone());
    let name = asset_name(AssetKind::ContainerImage, &digest(7));
    let a = assets.get(&name).await?;
    let size = serde_json::to_vec(&a)?.len();
    ensure!(size < 64 << 10, "the Asset has {size} bytes");
    let managers = a.metadata.managed_fields.as_ref().map_or(0, Vec::len);
    ensure!(managers <= 3, "{managers} field managers");
    let status = serde_json::to_value(&a.status)?;
    ensure!(
        status["sources"][0]["nodes"]["count"] == 5000,
        "{}",
        status["sources"]
    );
    ensure!(
        status["sources"][0]["nodes"]["recent"]
            .as_array()
            .is_some_and(|r| r.len() == sightline_crds::asset::RECENT_NODES)
    );

    // A new leader (or a restarted operator) has none of the first
    // writer's memory, only the store.
    drop(writer);
    let writer = Arc::new(Writer::new(env.client.clone(), index, Some(store)));
    // A node reporting what it already held changes nothing...
    writer
        .write(&caller(1), &shared, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let status = serde_json::to_value(assets.get(&name).await?.status)?;
    ensure!(
        status["sources"][0]["nodes"]["count"] == 5000,
        "{}",
        status["sources"]
    );
    // ...and node 0 no longer holds the image: its full listing says so.
    let gone = writer
        .listing(
            &caller(0),
            &Listing {
                runtime: "containerd".into(),
                images: vec![digest(8)],
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ensure!(gone == 1);
    let status = serde_json::to_value(assets.get(&name).await?.status)?;
    ensure!(
        status["sources"][0]["nodes"]["count"] == 4999,
        "{}",
        status["sources"]
    );
    ensure!(
        !status["sources"][0]["nodes"]["recent"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["node"] == "node-0000")
    );

    // Every node but node 2 falls silent: none sends a listing any more.
    let silent_since = jiff::Timestamp::now();
    writer
        .listing(
            &caller(2),
            &Listing {
                runtime: "containerd".into(),
                images: vec![digest(7)],
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let changed = writer
        .expire_silent_nodes(silent_since)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ensure!(changed == 4998, "{changed} holdings expired");
    let status = serde_json::to_value(assets.get(&name).await?.status)?;
    ensure!(
        status["sources"][0]["nodes"]["count"] == 1
            && status["sources"][0]["nodes"]["recent"][0]["node"] == "node-0002",
        "{}",
        status["sources"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn key_tokens_rotate_with_a_grace_period_and_can_be_revoked() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator_with("rotate", &["--leader-election=false"])?;
    let result = async {
        op.wait_serving().await?;
        let api = format!("http://127.0.0.1:{}", op.port);
        env.apply(
            r#"
apiVersion: sightline.dev/v1alpha1
kind: ActivationKey
metadata: {name: ci}
spec:
  modules: [containerSecurity]
"#,
        )
        .await?;
        let token = |field: &'static str| {
            let env = &env;
            async move { key_secret(env, "ci").await?.get(field).cloned() }
        };
        let first = helpers::wait_for("the key's token", Duration::from_secs(30), || {
            token("token")
        })
        .await?;
        // Sends one image report as the holder of `t`: the HTTP status.
        let report = |t: String, n: u32| {
            let api = api.clone();
            async move {
                let c = Client::new(&api, Credentials::Token(t), None)?;
                Ok::<u16, anyhow::Error>(match c.send(vec![image(n, "alpine", None)], None).await {
                    Ok(_) => 200,
                    Err(e) => refusal(&e).0,
                })
            }
        };
        ensure!(report(first.clone(), 1).await? == 200);

        // A rotation with a grace period: both tokens work meanwhile.
        let keys: Api<sightline_crds::ActivationKey> = Api::all(env.client.clone());
        let rotate = |grace: u64| {
            let keys = keys.clone();
            async move {
                let patch = sightline_crds::activation_key::rotation_request(
                    jiff::Timestamp::now(),
                    Duration::from_secs(grace),
                );
                keys.patch(
                    "ci",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            }
        };
        rotate(3600).await?;
        let second = helpers::wait_for("a new token", Duration::from_secs(30), || async {
            token("token").await.filter(|t| *t != first)
        })
        .await?;
        let secret = key_secret(&env, "ci").await.context("the Secret")?;
        ensure!(
            secret.get("previous-token") == Some(&first),
            "{:?}",
            secret.keys()
        );
        // The new token works as soon as it is issued.
        ensure!(report(second.clone(), 2).await? == 200);
        ensure!(
            report(first.clone(), 3).await? == 200,
            "the old token lapsed early"
        );

        // Revoked: a new token, and the old ones are refused as soon as the
        // operator's watch sees the Secret change.
        rotate(0).await?;
        let third = helpers::wait_for("another token", Duration::from_secs(30), || async {
            token("token").await.filter(|t| *t != second)
        })
        .await?;
        ensure!(third != first);
        let secret = key_secret(&env, "ci").await.context("the Secret")?;
        ensure!(
            !secret.contains_key("previous-token"),
            "{:?}",
            secret.keys()
        );
        for (old, n) in [(&first, 4), (&second, 5)] {
            helpers::wait_for("the old token refused", Duration::from_secs(30), || async {
                (report(old.clone(), n).await.ok()? == 401).then_some(())
            })
            .await?;
        }
        ensure!(report(third, 6).await? == 200);
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", env.dump());
    }
    result
}
