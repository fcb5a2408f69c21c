//! `sightline-sensor runtime` as the operator's DaemonSet runs it, against
//! a real kube-apiserver and the real kernel (as root). The "container" is
//! a jail: a busybox root filesystem and a cgroup named after a container
//! id, the way containerd names them, with a Pod in the API whose status
//! carries that id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sightline_crds::asset::asset_name;
use sightline_crds::runtime_policy::RuntimePolicy;
use sightline_crds::{Asset, AssetKind};
use sightline_testenv::jail::Jail;
use sightline_testenv::process::Proc;
use sightline_testenv::{ControlPlane, Options, helpers};

mod support;

const ID: &str = "5e11f1e0c0ffee0000000000000000000000000000000000000000000000beef";

async fn pod(client: &kube::Client, ns: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "shop/web:1"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    // What the kubelet reports once the container runs.
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "app", "ready": true, "restartCount": 0, "image": "shop/web:1",
        "imageID": "sha256:0000000000000000000000000000000000000000000000000000000000000001",
        "containerID": format!("containerd://{ID}"),
        "state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}},
    }]}});
    pods.patch_status("web-0", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

fn policy(ns: &str) -> Value {
    json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "RuntimePolicy",
        "metadata": {"name": "no-echo", "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "action": "Block",
            "process": {"deny": [{"path": "/bin/echo"}]},
        },
    })
}

async fn wait_policy(
    api: &Api<RuntimePolicy>,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value> {
    Ok(helpers::wait_for(what, Duration::from_secs(60), || async {
        let p = api.get_opt("no-echo").await.ok()??;
        let status = serde_json::to_value(p.status?).ok()?;
        ready(&status).then_some(status)
    })
    .await?)
}

/// Runs the denied program until it is (or is not) refused: the sensor
/// applies changes asynchronously.
async fn until_echo(jail: &Jail, refused: bool) -> Result<String> {
    Ok(helpers::wait_for(
        if refused {
            "/bin/echo refused"
        } else {
            "/bin/echo allowed"
        },
        Duration::from_secs(30),
        || async {
            let out = jail.sh("/bin/echo ran; echo rc=$?").ok()?;
            (out.contains("rc=126") == refused).then_some(out)
        },
    )
    .await?)
}

/// A loopback HTTP server keeping every event POSTed to it.
async fn webhook_receiver() -> Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |axum::Json(batch): axum::Json<Vec<Value>>| {
            let store = store.clone();
            async move {
                if let Ok(mut s) = store.lock() {
                    s.extend(batch);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, received))
}

/// GET /metrics over a plain socket (loopback, HTTP/1.0).
async fn scrape(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn enforces_a_policy_on_a_pods_container_and_reports_the_violation() -> Result<()> {
    let cp = ControlPlane::start(Options::default()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let ns = helpers::namespace(&client, "shop").await?;
    helpers::wait_for(
        "the default ServiceAccount",
        Duration::from_secs(30),
        || async {
            let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(client.clone(), &ns);
            sas.get_opt("default").await.ok()?
        },
    )
    .await?;
    let mut jail = Jail::named(ID)?;
    jail.hold()?;
    pod(&client, &ns).await?;
    let policies: Api<RuntimePolicy> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("test");
    policies
        .patch("no-echo", &apply, &Patch::Apply(&policy(&ns)))
        .await?;

    let dir = tempfile::tempdir()?;
    let log = dir.path().join("sensor.log");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (webhook_url, received) = webhook_receiver().await?;
    let (api, _store) = support::ingest(&cp).await?;
    let token = sightline_testenv::identity::SensorIdentity {
        namespace: "sightline-system",
        name: "runtime",
        spec: json!({"type": "runtime", "runtime": {"enforcers": ["lsm", "fanotify", "signal"]}}),
        key: "lab",
        node: Some("node-a"),
    }
    .token_file(&client, dir.path())
    .await?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sightline-sensor"));
    cmd.arg("runtime")
        .env(
            "SIGHTLINE_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("NODE_NAME", "node-a")
        .env("SIGHTLINE_SENSOR", "sightline-system/runtime")
        .env(
            "SIGHTLINE_CONFIG",
            r#"{"enforcers":["lsm","fanotify","signal"]}"#,
        )
        .env("SIGHTLINE_RUNTIME_EVENTS", "all")
        .env("SIGHTLINE_RUNTIME_WEBHOOK", &webhook_url)
        .env("SIGHTLINE_API_URL", &api)
        .env("SIGHTLINE_TOKEN_FILE", &token)
        .env("RUST_LOG", "info");
    let mut sensor = Proc::spawn("sightline-sensor", cmd, &log)?;
    let tail = || sightline_testenv::process::tail(&log, 40);

    // The node's entry: fanotify for exec rules, and why not lsm.
    let status = wait_policy(&policies, "the policy's node status", |s| {
        s["nodes"][0]["enforcer"] == "fanotify"
    })
    .await
    .with_context(tail)?;
    let node = &status["nodes"][0];
    assert_eq!(node["node"], "node-a");
    assert_eq!(node["ready"], true);
    let reason = node["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exec rules: fanotify"), "{reason}");
    assert!(reason.contains("lsm: "), "the LSM probe's result: {reason}");

    // A policy selecting no pod on this node: ready, nothing to enforce.
    let mut other = policy(&ns);
    other["metadata"]["name"] = json!("elsewhere");
    other["spec"]["podSelector"] = json!({"matchLabels": {"app": "none"}});
    policies
        .patch("elsewhere", &apply, &Patch::Apply(&other))
        .await?;
    let elsewhere = helpers::wait_for(
        "the other policy's node status",
        Duration::from_secs(60),
        || async {
            let p = policies.get_opt("elsewhere").await.ok()??;
            let n = p.status?.nodes.first()?.clone();
            Some(n)
        },
    )
    .await
    .with_context(tail)?;
    assert!(
        elsewhere.ready && elsewhere.enforcer.is_none(),
        "{elsewhere:?}"
    );
    assert_eq!(elsewhere.reason, "no selected pod runs on this node");

    let out = until_echo(&jail, true).await.with_context(tail)?;
    assert!(!out.contains("ran\n"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    // The count, the Event, the Asset and the OCSF line.
    let status = wait_policy(&policies, "the violation count", |s| s["violations"] == 1)
        .await
        .with_context(tail)?;
    assert!(status["lastViolation"].is_string(), "{status}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let event = helpers::wait_for("the violation's Event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RuntimePolicyViolation"))
    })
    .await
    .with_context(tail)?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("web-0")
    );
    let note = event.note.unwrap_or_default();
    assert!(
        note.starts_with("exec of /bin/echo denied (EPERM) by RuntimePolicy"),
        "{note}"
    );
    let assets: Api<Asset> = Api::all(client.clone());
    let asset = helpers::wait_for("the container's Asset", Duration::from_secs(30), || async {
        let a = assets
            .get_opt(&asset_name(AssetKind::Container, ID))
            .await
            .ok()??;
        let s = serde_json::to_value(a.status?).ok()?;
        (s["findings"]["runtime"] == 1).then_some(s)
    })
    .await
    .with_context(tail)?;
    assert_eq!(asset["observed"]["pod"], "web-0");
    assert_eq!(asset["observed"]["namespace"], ns.as_str());
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["class_uid"].is_number())
        .collect();
    let ocsf: Vec<&Value> = lines
        .iter()
        .filter(|v| v["class_uid"] == 1007 && v.get("disposition").is_some())
        .collect();
    ensure!(
        ocsf.len() == 1,
        "one OCSF Process Activity violation: {text}"
    );
    // Every exec is an event too, attributed to the pod's container or to
    // the host.
    let in_pod = lines.iter().find(|v| {
        v["activity_name"] == "Launch"
            && v["process"]["file"]["path"] == "/bin/sh"
            && v["container"]["uid"] == ID
    });
    let in_pod = in_pod.with_context(|| format!("the jail's shell as a Launch event: {text}"))?;
    assert_eq!(in_pod["unmapped"]["k8s"]["pod"], "web-0");
    assert!(
        lines
            .iter()
            .any(|v| v["activity_name"] == "Launch" && v["device"]["type"] == "host"),
        "host execs (the test's own sh and chroot) are attributed to the host"
    );
    assert_eq!(ocsf[0]["disposition"], "Blocked");
    assert_eq!(ocsf[0]["container"]["uid"], ID);
    assert_eq!(ocsf[0]["unmapped"]["k8s"]["pod"], "web-0");

    // The same violation through the webhook, in a JSON array batch.
    let hooked = helpers::wait_for(
        "the violation at the webhook",
        Duration::from_secs(30),
        || async {
            let got = received.lock().ok()?;
            got.iter()
                .find(|v| v["class_uid"] == 1007 && v["disposition"] == "Blocked")
                .cloned()
        },
    )
    .await
    .with_context(tail)?;
    assert_eq!(hooked["container"]["uid"], ID);

    // The metrics: the violation, events delivered, nothing dropped.
    let metrics = helpers::wait_for("the metrics", Duration::from_secs(30), || async {
        let text = scrape(metrics_port).await?;
        text.contains("sightline_runtime_violations_total{outcome=\"denied\"} 1")
            .then_some(text)
    })
    .await
    .with_context(tail)?;
    for k in ["exec", "exit", "open", "connect", "violation"] {
        let line = format!("sightline_runtime_dropped_total{{kind=\"{k}\"}} 0");
        assert!(metrics.contains(&line), "{line}: {metrics}");
    }
    assert!(
        metrics.contains("sightline_runtime_workloads 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("sightline_runtime_events_total{kind=\"exec\"} 0"),
        "{metrics}"
    );

    // Deleting the policy lifts it; applying it again restores it.
    policies.delete("no-echo", &DeleteParams::default()).await?;
    until_echo(&jail, false).await.with_context(tail)?;
    policies
        .patch("no-echo", &apply, &Patch::Apply(&policy(&ns)))
        .await?;
    until_echo(&jail, true).await.with_context(tail)?;

    // Fail-safe: when the sensor dies (SIGKILL, no chance to clean up),
    // the kernel closes its fanotify group and detaches its programs, and
    // enforcement is released. Nothing is pinned to outlive it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sensor.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    sensor.stop(Duration::from_secs(5));
    let out = jail.sh("/bin/echo ran; echo rc=$?")?;
    assert!(out.contains("ran\n") && out.contains("rc=0"), "{out}");
    Ok(())
}
