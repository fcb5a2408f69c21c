//! The TagRule controller: checks each rule's query and tags, and counts the
//! Assets it matches. The tags themselves are applied by the inventory
//! controller, which re-reconciles every Asset when a rule changes.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use sightline_crds::conditions::{self, condition};
use sightline_crds::{TagRule, TagRuleStatus};
use sightline_inventory::doc::Interner;
use sightline_inventory::eval::compile_text;

use super::inventory::InventoryContext;
use crate::error::{Error, Result};

/// Field manager of this controller.
pub const MANAGER: &str = "sightline-operator/tagrule";

/// How often the match count is refreshed.
const RECOUNT: Duration = Duration::from_secs(30);

/// Whether a rule is usable: `Ok` or the reason and message of `Ready=False` (pure).
pub fn check(rule: &TagRule, now: i64) -> std::result::Result<(), (&'static str, String)> {
    compile_text(&rule.spec.query, &Interner::default(), now)
        .map_err(|e| ("InvalidQuery", e.to_string()))?;
    let bad: Vec<&str> = rule
        .spec
        .tags
        .keys()
        .filter(|k| !super::key::valid_tag_key(k))
        .map(String::as_str)
        .collect();
    if !bad.is_empty() {
        return Err((
            "InvalidTags",
            format!(
                "tag keys must be valid label keys (a DNS prefix and '/' optional, then up to 63 of [A-Za-z0-9._-]): {}",
                bad.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Reconciles one rule.
#[tracing::instrument(skip_all, fields(rule = %rule.name_any()))]
pub async fn reconcile(rule: Arc<TagRule>, ctx: Arc<InventoryContext>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("tagrule");
    let name = rule.name_any();
    let now = Timestamp::now();
    let verdict = check(&rule, now.as_second());
    let matched = match verdict {
        Ok(()) => crate::search::read(&ctx.index)
            .search(&rule.spec.query, now.as_second(), 0)
            .map_or(0, |r| r.total),
        Err(_) => 0,
    };
    let fresh = match &verdict {
        Ok(()) => condition(
            "Ready",
            true,
            "Valid",
            "the query parses and the tags are valid",
            rule.metadata.generation,
            now,
        ),
        Err((reason, message)) => condition(
            "Ready",
            false,
            reason,
            message.clone(),
            rule.metadata.generation,
            now,
        ),
    };
    let previous = rule.status.clone().unwrap_or_default();
    let status = TagRuleStatus {
        observed_generation: rule.metadata.generation,
        conditions: conditions::merge(&previous.conditions, vec![fresh]),
        matched: i64::try_from(matched).unwrap_or(i64::MAX),
    };
    if rule.status.as_ref() != Some(&status) {
        let api: Api<TagRule> = Api::all(ctx.client.clone());
        let value = crate::apply::to_value(&status, "TagRule", &name)?;
        crate::apply::status(&api, &name, value, MANAGER, "TagRule").await?;
    }
    Ok(Action::requeue(RECOUNT))
}

/// Retries failures after a short delay.
pub fn error_policy(rule: Arc<TagRule>, err: &Error, ctx: Arc<InventoryContext>) -> Action {
    ctx.metrics.failure("tagrule", err.metric_label());
    tracing::warn!(rule = %rule.name_any(), error = %err, "tag rule reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::TagRuleSpec;

    fn rule(query: &str, key: &str) -> TagRule {
        TagRule::new(
            "r",
            TagRuleSpec {
                query: query.into(),
                tags: [(key.to_string(), "v".to_string())].into(),
            },
        )
    }

    #[test]
    fn queries_and_tag_keys_are_checked() {
        assert_eq!(check(&rule("kind:Node", "site"), 0), Ok(()));
        assert_eq!(
            check(&rule("kind:Node AND", "site"), 0),
            Err((
                "InvalidQuery",
                "expected a condition, found the end of the query at column 14".into()
            ))
        );
        assert_eq!(
            check(&rule("os.lifecycle.stag:EndOfLife", "site"), 0),
            Err((
                "InvalidQuery",
                "unknown field 'os.lifecycle.stag'; did you mean 'os.lifecycle.stage'? at column 1"
                    .into()
            ))
        );
        assert!(matches!(
            check(&rule("kind:Node", "bad key!"), 0),
            Err(("InvalidTags", m)) if m.ends_with("bad key!")
        ));
    }
}
