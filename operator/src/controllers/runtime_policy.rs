//! The RuntimePolicy image controller: resolves each policy's
//! `spec.imageQuery` against the inventory and lists the matching images
//! in `status.images`, where the runtime sensors read which containers the
//! policy selects. Re-resolved as the inventory changes (every
//! [`RESOLVE`]). Node entries and violation counts of the same status are
//! the sensors' (written through the ingestion API, under other field
//! managers); this controller owns `images`, its `Ready` condition and
//! `observedGeneration` only.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::json;
use sightline_crds::RuntimePolicy;
use sightline_crds::conditions::{self, Condition, condition};
use sightline_crds::runtime_policy::MAX_POLICY_IMAGES;

use super::inventory::InventoryContext;
use crate::error::{Error, Result};

/// Field manager of this controller.
pub const MANAGER: &str = "sightline-operator/runtimepolicy-images";

/// How often the images are resolved again.
const RESOLVE: Duration = Duration::from_secs(15);

/// The images a policy selects and its `Ready` condition's reason and
/// message, from the index (pure but for the index read).
pub fn resolve(
    policy: &RuntimePolicy,
    index: &sightline_inventory::index::Index,
    now: i64,
) -> (Vec<String>, bool, &'static str, String) {
    let Some(query) = &policy.spec.image_query else {
        return (Vec::new(), true, "AllImages", "no imageQuery".into());
    };
    match index.image_names(query, now, MAX_POLICY_IMAGES) {
        Err(e) => (Vec::new(), false, "InvalidQuery", e.to_string()),
        Ok((names, total)) if total > names.len() => (
            names,
            false,
            "TooManyImages",
            format!(
                "the query matches images known by {total} names; only the first {MAX_POLICY_IMAGES} are listed, so containers of the others are not selected: narrow the query"
            ),
        ),
        Ok((names, _)) => {
            let message = format!(
                "containers of images known by {} names are selected",
                names.len()
            );
            (names, true, "Resolved", message)
        }
    }
}

/// Reconciles one policy.
#[tracing::instrument(skip_all, fields(policy = %policy.name_any()))]
pub async fn reconcile(policy: Arc<RuntimePolicy>, ctx: Arc<InventoryContext>) -> Result<Action> {
    let current = policy.status.as_ref();
    let listed = current.map_or(0, |s| s.images.len());
    if policy.spec.image_query.is_none() && listed == 0 {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile("runtimepolicy");
    let now = Timestamp::now();
    let (images, ready, reason, message) = {
        let index = crate::search::read(&ctx.index);
        resolve(&policy, &index, now.as_second())
    };
    let previous: &[Condition] = current.map_or(&[], |s| &s.conditions);
    let fresh = condition(
        "Ready",
        ready,
        reason,
        message,
        policy.metadata.generation,
        now,
    );
    let conditions = conditions::merge(previous, vec![fresh]);
    let unchanged = current.is_some_and(|s| {
        s.images == images
            && s.conditions == conditions
            && s.observed_generation == policy.metadata.generation
    });
    if !unchanged {
        let ns = policy.namespace().unwrap_or_default();
        let api: Api<RuntimePolicy> = Api::namespaced(ctx.client.clone(), &ns);
        let status = json!({
            "observedGeneration": policy.metadata.generation,
            "conditions": conditions,
            "images": images,
        });
        crate::apply::status(&api, &policy.name_any(), status, MANAGER, "RuntimePolicy").await?;
    }
    Ok(if policy.spec.image_query.is_some() {
        Action::requeue(RESOLVE)
    } else {
        Action::await_change()
    })
}

/// Retries failures after a short delay.
pub fn error_policy(policy: Arc<RuntimePolicy>, err: &Error, ctx: Arc<InventoryContext>) -> Action {
    ctx.metrics.failure("runtimepolicy", err.metric_label());
    tracing::warn!(policy = %policy.name_any(), error = %err, "runtime policy reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(query: Option<&str>) -> RuntimePolicy {
        let mut p = RuntimePolicy::new("p", Default::default());
        p.spec.image_query = query.map(str::to_owned);
        p
    }

    fn index() -> sightline_inventory::index::Index {
        let mut index = sightline_inventory::index::Index::new();
        let asset: sightline_crds::Asset = serde_json::from_value(json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
            "metadata": {"name": "containerimage-1"}, "spec": {},
            "status": {
                "kind": "ContainerImage", "identity": "sha256:aa",
                "observed": {"repoTags": ["docker.io/library/debian:12"]},
                "findings": {"vulnerabilities": {"critical": 1, "high": 0, "medium": 0, "low": 0, "unknown": 0}},
            },
        }))
        .unwrap();
        index.upsert(&asset);
        index
    }

    #[test]
    fn images_are_resolved_from_the_query_and_errors_are_named() {
        let index = index();
        let (images, ready, reason, _) = resolve(
            &policy(Some("findings.vulnerabilities.critical>0")),
            &index,
            0,
        );
        assert_eq!(images, ["docker.io/library/debian:12", "sha256:aa"]);
        assert_eq!((ready, reason), (true, "Resolved"));
        let (images, ready, reason, message) = resolve(&policy(Some("kind:")), &index, 0);
        assert!(images.is_empty());
        assert_eq!((ready, reason), (false, "InvalidQuery"));
        assert!(message.contains("column"), "{message}");
        let (images, ready, _, _) = resolve(&policy(None), &index, 0);
        assert!(images.is_empty() && ready);
    }

    #[test]
    fn a_container_is_selected_by_any_name_of_a_listed_image() {
        let mut p = policy(Some("findings.vulnerabilities.critical>0"));
        assert!(
            !p.selects_image(["sha256:aa"].into_iter()),
            "nothing listed yet"
        );
        p.status = Some(sightline_crds::RuntimePolicyStatus {
            images: vec!["docker.io/library/debian:12".into(), "sha256:aa".into()],
            ..Default::default()
        });
        assert!(p.selects_image(["docker.io/library/debian:11", "sha256:aa"].into_iter()));
        assert!(!p.selects_image(["docker.io/library/debian:11"].into_iter()));
        assert!(policy(None).selects_image(std::iter::empty()));
    }
}
