//! RuntimePolicies selected by inventory facts, against a real API server
//! and the real operator binary: the operator resolves a policy's
//! `imageQuery` over the image Assets it indexes and lists every name of
//! the matching images in `status.images` (where the runtime sensors read
//! them), follows the inventory as it changes, and names an invalid query
//! in `Ready=False`, leaving the sensors' own status fields alone.

mod support;

use std::time::Duration;

use anyhow::Result;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sightline_crds::RuntimePolicy;
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind};
use sightline_testenv::helpers;
use support::{Env, legacy_app};

async fn apply_policy(api: &Api<RuntimePolicy>, name: &str, query: &str) -> Result<()> {
    api.patch(
        name,
        &PatchParams::apply("sightline-test").force(),
        &Patch::Apply(json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "RuntimePolicy",
            "metadata": {"name": name},
            "spec": {
                "action": "Block",
                "imageQuery": query,
                "process": {"deny": [{"path": "/usr/bin/apt-get"}]},
            },
        })),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_policy_selects_the_images_its_query_matches_as_the_inventory_changes() -> Result<()> {
    let env = Env::start().await?;
    let mut op = env.operator("runtime-policies")?;
    let result = async {
        op.wait_serving().await?;
        legacy_app(&env.client).await?;
        let policies: Api<RuntimePolicy> = Api::namespaced(env.client.clone(), &env.ns);
        apply_policy(&policies, "critical", "findings.vulnerabilities.critical>0").await?;
        apply_policy(&policies, "end-of-life", "os.lifecycle.stage:EndOfLife").await?;
        apply_policy(&policies, "broken", "findings.vulnerabilities.critical>").await?;
        // A runtime sensor's node entry, written as the ingestion API does.
        policies
            .patch_status(
                "critical",
                &PatchParams::apply("sensor@node-a").force(),
                &Patch::Apply(json!({
                    "apiVersion": "sightline.dev/v1alpha1", "kind": "RuntimePolicy",
                    "status": {"nodes": [{"node": "node-a", "ready": true, "reason": "exec rules: fanotify"}]},
                })),
            )
            .await?;

        let images = helpers::wait_for(
            "the vulnerable image listed",
            Duration::from_secs(60),
            || async {
                let s = policies.get("critical").await.ok()?.status?;
                (!s.images.is_empty()).then_some(s)
            },
        )
        .await?;
        assert_eq!(
            images.images,
            [
                "sha256:0a0b",
                "sha256:ffee",
                "sightline.local/legacy-app:1.0",
                "sightline.local/legacy-app@sha256:ffee",
            ],
            "every name the image is known by"
        );
        let ready = images.conditions.iter().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| (c.status.as_str(), c.reason.as_str())), Some(("True", "Resolved")));
        assert_eq!(images.nodes.len(), 1, "the sensor's entry is kept: {images:?}");

        let eol = policies.get("end-of-life").await?.status;
        assert!(eol.as_ref().is_none_or(|s| s.images.is_empty()), "{eol:?}");
        let broken = helpers::wait_for("the invalid query named", Duration::from_secs(60), || async {
            let s = policies.get("broken").await.ok()?.status?;
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .await?;
        assert_eq!(broken.reason, "InvalidQuery");
        assert!(broken.message.contains("column"), "{broken:?}");

        // The image's findings fixed: it is no longer selected.
        let assets: Api<Asset> = Api::all(env.client.clone());
        assets
            .patch_status(
                &asset_name(AssetKind::ContainerImage, "sha256:0a0b"),
                // Another manager, so the rest of the status stays.
                &PatchParams::apply("sightline-test-rescan").force(),
                &Patch::Apply(json!({
                    "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
                    "status": {"findings": {"vulnerabilities": {
                        "critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}}},
                })),
            )
            .await?;
        helpers::wait_for("the fixed image unlisted", Duration::from_secs(60), || async {
            let s = policies.get("critical").await.ok()?.status?;
            s.images.is_empty().then_some(())
        })
        .await?;
        let asset = assets
            .get(&asset_name(AssetKind::ContainerImage, "sha256:0a0b"))
            .await?;
        let kind = asset.status.and_then(|s| s.kind);
        assert_eq!(kind, Some(AssetKind::ContainerImage), "still an image");
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", env.dump());
    }
    op.kill();
    result
}
