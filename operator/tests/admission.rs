//! The image admission webhook against a real API server and the real
//! operator binary: the operator sets the webhook configuration's caBundle
//! to its CA; the API server sends it new pods; a pod whose image the
//! inventory knows to have a fixable critical vulnerability is refused by
//! an `Enforce` ImagePolicy with a message naming the policy and the
//! findings, admitted with a warning and an Event under `Audit`; an image
//! the inventory does not know is admitted unless the policy asks for
//! scanned images; an invalid query makes the policy `Ready=False`.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sightline_crds::ImagePolicy;
use sightline_testenv::helpers;
use sightline_testenv::process::free_port;
use support::{Env, IMAGE, OPERATOR_NS, legacy_app};

const WEBHOOK: &str = "sightline-images";

fn policy(mode: &str, deny: Value) -> Value {
    json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "ImagePolicy",
        "metadata": {"name": "no-critical"},
        "spec": {"mode": mode, "deny": deny},
    })
}

async fn apply_policy(client: &kube::Client, body: Value) -> Result<()> {
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Api::<ImagePolicy>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("sightline-test").force(),
            &Patch::Apply(body),
        )
        .await?;
    Ok(())
}

fn pod(name: &str, image: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }))?)
}

/// Creates a pod; the API server's refusal message, if it refused.
async fn create(pods: &Api<Pod>, name: &str, image: &str) -> Result<Option<String>> {
    match pods
        .create(&PostParams::default(), &pod(name, image)?)
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 400 => Ok(Some(e.message)),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_with_images_the_inventory_knows_to_be_bad_are_refused_or_flagged() -> Result<()> {
    let env = Env::start().await?;
    let port = free_port()?;
    let op = env.operator_with(
        "admission",
        &[
            "--tls-secret",
            "sightline-operator-tls",
            "--ca-config-map",
            "sightline-operator-ca",
            "--tls-name",
            "localhost,127.0.0.1",
            "--api-addr",
            &format!("127.0.0.1:{port}"),
            "--admission",
            "--admission-webhook",
            WEBHOOK,
        ],
    )?;
    let result = async {
        op.wait_serving().await?;
        // As the chart registers it, but by URL (the API server runs on this
        // machine) and refusing pods the operator cannot judge.
        let configs: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
        let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": WEBHOOK},
            "webhooks": [{
                "name": "images.sightline.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": ["kube-system", OPERATOR_NS],
                }]},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/api/v1/admission/images")},
            }],
        }))?;
        configs.create(&PostParams::default(), &config).await?;
        helpers::wait_for(
            "the operator to set the webhook's caBundle",
            Duration::from_secs(90),
            || async {
                let c = configs.get(WEBHOOK).await.ok()?;
                c.webhooks?.first()?.client_config.ca_bundle.clone()
            },
        )
        .await?;

        legacy_app(&env.client).await?;
        apply_policy(
            &env.client,
            policy("Enforce", json!({"severity": "critical"})),
        )
        .await?;
        let policies: Api<ImagePolicy> = Api::all(env.client.clone());
        helpers::wait_for("the policy Ready", Duration::from_secs(60), || async {
            let s = policies.get("no-critical").await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await?;

        // Refused, naming the policy, the image and the fixable finding
        // (not the one without a fix: fixableOnly is the default).
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
        let mut refused = None;
        for attempt in 0..30 {
            if let Some(m) = create(&pods, &format!("app-{attempt}"), IMAGE).await? {
                refused = Some(m);
                break;
            }
            // The operator's index had not seen the Asset yet.
            pods.delete(&format!("app-{attempt}"), &Default::default()).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let refused = refused.context("the pod was never refused")?;
        for part in [
            "ImagePolicy \"no-critical\"",
            IMAGE,
            "GHSA-jf85-cpcp-j695 in lodash 1.0 (fixed in 4.17.12)",
        ] {
            ensure!(refused.contains(part), "{part:?} not in {refused:?}");
        }
        ensure!(!refused.contains("CVE-2099-0001"), "{refused}");
        // The same image by its registry digest, and by a short name
        // pinned to that digest.
        for (name, image) in [
            ("by-digest", "sightline.local/legacy-app@sha256:ffee"),
            ("by-tag-and-digest", "sightline.local/legacy-app:9@sha256:ffee"),
        ] {
            ensure!(
                create(&pods, name, image).await?.is_some(),
                "{image} was admitted"
            );
        }
        // An image the inventory does not know is judged only by `unscanned`.
        ensure!(create(&pods, "unknown", "busybox:1").await?.is_none());
        apply_policy(
            &env.client,
            policy("Enforce", json!({"unscanned": {}})),
        )
        .await?;
        let unscanned = eventually_refused(&pods, "unknown-2", "busybox:1").await?;
        ensure!(unscanned.contains("not in the inventory"), "{unscanned}");

        // Audit: admitted, with a warning kubectl prints and an Event.
        apply_policy(
            &env.client,
            policy("Audit", json!({"severity": "critical"})),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let manifest = env.cp.dir().join("audited.json");
        let mut audited = serde_json::to_value(pod("audited", IMAGE)?)?;
        audited["metadata"]["namespace"] = json!(env.ns);
        std::fs::write(&manifest, serde_json::to_vec(&audited)?)?;
        let out = sightline_testenv::node::Kubectl::of(&env.cp)?
            .command()
            .args(["create", "-f"])
            .arg(&manifest)
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "kubectl create: {said}");
        ensure!(
            said.contains("Warning: image \"sightline.local/legacy-app:1.0\" flagged by ImagePolicy \"no-critical\""),
            "{said}"
        );
        let events: Api<Event> = Api::all(env.client.clone());
        helpers::wait_for("the Audit Event", Duration::from_secs(30), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("ImageAudited")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("no-critical")
                        && e.note.as_deref().is_some_and(|n| n.contains("audited"))
                })
        })
        .await?;

        // A query the operator cannot parse: Ready=False, saying why.
        apply_policy(
            &env.client,
            policy("Enforce", json!({"query": "os.lifecycle.stag:EndOfLife"})),
        )
        .await?;
        helpers::wait_for("InvalidQuery", Duration::from_secs(60), || async {
            let s = policies.get("no-critical").await.ok()?.status?;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidQuery")
                .then_some(())
        })
        .await?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if let Err(e) = &result {
        bail!("{e:#}\n{}", env.dump());
    }
    drop(op);
    Ok(())
}

/// Creates pods named `name-N` until one is refused (the operator's watch
/// of the policies is eventually consistent); the message.
async fn eventually_refused(pods: &Api<Pod>, name: &str, image: &str) -> Result<String> {
    for attempt in 0..30 {
        let n = format!("{name}-{attempt}");
        if let Some(m) = create(pods, &n, image).await? {
            return Ok(m);
        }
        pods.delete(&n, &Default::default()).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("{image} was never refused")
}
