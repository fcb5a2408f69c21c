//! The chart's image admission webhook on the local cluster: the API
//! server reaches the operator through its Service with the CA the
//! operator set; an `Enforce` ImagePolicy refuses a pod whose image the
//! inventory has never analysed, naming the policy, and `Audit` admits it
//! with the warning kubectl prints.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::json;

use crate::sensor::apply;
use crate::support::Env;

/// The namespace of the admission test.
pub const NS: &str = "e2e-admission";

const POLICY: &str = "e2e-scanned-only";

/// Runs the test; the policy is deleted whatever happens, so later tests'
/// pods are not judged by it.
pub async fn refuses_and_flags_unscanned_images(env: &Env) -> Result<()> {
    let outcome = run(env).await;
    let _ = env.kubectl(&["delete", "imagepolicy", POLICY, "--ignore-not-found"]);
    let _ = env.kubectl(&["delete", "namespace", NS, "--wait=false"]);
    outcome
}

fn set_mode(env: &Env, mode: &str) -> Result<()> {
    apply(
        env,
        &json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "ImagePolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "mode": mode,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "deny": {"unscanned": {}},
            },
        }),
    )
}

/// `kubectl run` of a pod of an image no sensor has seen; what it said,
/// and whether it succeeded.
fn run_pod(env: &Env, name: &str) -> (bool, String) {
    match env.kubectl(&[
        "run",
        name,
        "-n",
        NS,
        "--image=e2e/never-analysed:1",
        "--image-pull-policy=Never",
        "--restart=Never",
    ]) {
        Ok(out) => (true, out),
        Err(e) => (false, e.to_string()),
    }
}

async fn run(env: &Env) -> Result<()> {
    env.namespace(NS)?;
    set_mode(env, "Enforce")?;
    // The operator's watch of the policies, and the webhook's CA, arrive
    // within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut attempt = 0;
    let refused = loop {
        attempt += 1;
        let name = format!("refused-{attempt}");
        let (created, said) = run_pod(env, &name);
        if !created {
            break said;
        }
        let _ = env.kubectl(&["delete", "pod", &name, "-n", NS, "--wait=false"]);
        ensure!(
            std::time::Instant::now() < deadline,
            "pods of an unanalysed image were still admitted after 90 s: {said}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    for part in [
        "images.sightline.dev",
        &format!("ImagePolicy \"{POLICY}\""),
        "not in the inventory",
    ] {
        ensure!(refused.contains(part), "{part:?} not in {refused}");
    }
    set_mode(env, "Audit")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (created, said) = run_pod(env, "audited");
        if created {
            // kubectl prints the webhook's warnings on its standard error,
            // which `kubectl` here returns only on failure: read the Event.
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "Audit still refused the pod after 60 s: {said}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let events = env.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-A",
        "--field-selector",
        "reason=ImageAudited",
        "-o",
        "jsonpath={.items[*].note}",
    ])?;
    ensure!(
        events.contains(&format!("pod {NS}/audited admitted")),
        "no ImageAudited Event for the pod: {events}"
    );
    Ok(())
}
