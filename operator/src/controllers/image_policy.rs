//! The ImagePolicy controller: checks each policy's query, and says in
//! `Ready` whether the policy is applied. The webhook itself
//! ([`crate::admission`]) reads the policies from its own watch on every
//! replica.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use sightline_crds::conditions::{self, condition};
use sightline_crds::{ImagePolicy, ImagePolicyStatus};
use sightline_inventory::doc::Interner;
use sightline_inventory::eval::compile_text;

use super::inventory::InventoryContext;
use crate::error::{Error, Result};

/// Field manager of this controller.
pub const MANAGER: &str = "sightline-operator/imagepolicy";

/// Whether a policy is usable: `Ok` or the reason and message of
/// `Ready=False` (pure).
pub fn check(policy: &ImagePolicy, now: i64) -> std::result::Result<(), (&'static str, String)> {
    if let Some(q) = &policy.spec.deny.query {
        compile_text(q, &Interner::default(), now).map_err(|e| ("InvalidQuery", e.to_string()))?;
    }
    Ok(())
}

/// Reconciles one policy.
#[tracing::instrument(skip_all, fields(policy = %policy.name_any()))]
pub async fn reconcile(policy: Arc<ImagePolicy>, ctx: Arc<InventoryContext>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("imagepolicy");
    let name = policy.name_any();
    let now = Timestamp::now();
    let fresh = match check(&policy, now.as_second()) {
        Ok(()) => condition(
            "Ready",
            true,
            "Applied",
            format!(
                "pods are judged against this policy ({:?})",
                policy.spec.mode
            ),
            policy.metadata.generation,
            now,
        ),
        Err((reason, message)) => condition(
            "Ready",
            false,
            reason,
            message,
            policy.metadata.generation,
            now,
        ),
    };
    let previous = policy.status.clone().unwrap_or_default();
    let status = ImagePolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: conditions::merge(&previous.conditions, vec![fresh]),
    };
    if policy.status.as_ref() != Some(&status) {
        let api: Api<ImagePolicy> = Api::all(ctx.client.clone());
        let value = crate::apply::to_value(&status, "ImagePolicy", &name)?;
        crate::apply::status(&api, &name, value, MANAGER, "ImagePolicy").await?;
    }
    Ok(Action::await_change())
}

/// Retries failures after a short delay.
pub fn error_policy(policy: Arc<ImagePolicy>, err: &Error, ctx: Arc<InventoryContext>) -> Action {
    ctx.metrics.failure("imagepolicy", err.metric_label());
    tracing::warn!(policy = %policy.name_any(), error = %err, "image policy reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::image_policy::{ImageDeny, ImagePolicySpec};

    #[test]
    fn the_query_is_checked() {
        let with = |q: &str| {
            ImagePolicy::new(
                "p",
                ImagePolicySpec {
                    deny: ImageDeny {
                        query: Some(q.into()),
                        ..ImageDeny::default()
                    },
                    ..ImagePolicySpec::default()
                },
            )
        };
        assert_eq!(check(&with("os.lifecycle.stage:EndOfLife"), 0), Ok(()));
        assert!(matches!(
            check(&with("os.lifecycle.stag:EndOfLife"), 0),
            Err(("InvalidQuery", m)) if m.contains("did you mean")
        ));
    }
}
