//! The inventory controller: turns what sensors observed into normalized,
//! lifecycle-enriched, tagged and labelled Assets, and forgets Assets no
//! sensor has seen for the retention period.
//!
//! It writes, under its own field manager and never touching what sensors
//! write: `status.normalized`, `status.tags`, `status.firstSeen`,
//! `status.lastSeen`, and the labels `sightline.dev/kind`,
//! `sightline.dev/lifecycle` and `sightline.dev/max-severity`.
//!
//! Tags are the static tags of the activation keys of every source (sources
//! in sensor order; the first key to set a tag wins), then the tags of every
//! valid `TagRule` whose query matches (rules in name order; a key already
//! set is kept). Rules are evaluated against the Asset with its static tags
//! only, so no rule depends on another.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Preconditions;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use serde::Serialize;
use sightline_crds::asset::{
    AssetStatus, LABEL_KIND, LABEL_LIFECYCLE, LABEL_MAX_SEVERITY, LifecycleStage, Normalized,
    Product,
};
use sightline_crds::{ActivationKey, Asset, TagRule};
use sightline_inventory::catalog::Catalog;
use sightline_inventory::doc::stage_str;
use sightline_inventory::query::{Query, parse_query};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::search::SharedIndex;

/// Field manager of this controller.
pub const MANAGER: &str = "sightline-operator/inventory";

/// Longest wait between two looks at an Asset (lifecycle stages move with dates).
const MAX_REQUEUE: Duration = Duration::from_secs(6 * 3600);

/// What the inventory and tag rule controllers share.
pub struct InventoryContext {
    /// Client with the operator's identity.
    pub client: kube::Client,
    /// The catalog.
    pub catalog: Catalog,
    /// Every ActivationKey (for static tags).
    pub keys: Store<ActivationKey>,
    /// Open once `keys` has listed.
    pub keys_synced: super::Synced,
    /// Every TagRule.
    pub rules: Store<TagRule>,
    /// Open once `rules` has listed.
    pub rules_synced: super::Synced,
    /// How long an Asset no sensor sees is kept; `None` keeps it forever.
    pub retention: Option<Duration>,
    /// The search index (for rule match counts).
    pub index: SharedIndex,
    /// Metrics.
    pub metrics: Metrics,
}

/// What this controller owns in an Asset's status.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Owned {
    /// Normalized facts.
    pub normalized: Normalized,
    /// Static and dynamic tags.
    pub tags: BTreeMap<String, String>,
    /// First sighting by any sensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Time>,
    /// Latest sighting by any sensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

/// A valid rule, parsed.
pub struct Rule {
    /// Its name (rules apply in name order).
    pub name: String,
    /// Its query.
    pub query: Query,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// Every TagRule whose query parses and whose tags are valid, in name order.
pub fn valid_rules(rules: &Store<TagRule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = rules
        .state()
        .iter()
        .filter(|r| r.spec.tags.keys().all(|k| super::key::valid_tag_key(k)))
        .filter_map(|r| {
            Some(Rule {
                name: r.name_any(),
                query: parse_query(&r.spec.query).ok()?,
                tags: r.spec.tags.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The Asset's latest sighting: the newest source, or what it says already.
fn last_seen(status: &AssetStatus) -> Option<Timestamp> {
    status
        .sources
        .iter()
        .map(|s| s.last_seen.0)
        .max()
        .or_else(|| status.last_seen.as_ref().map(|t| t.0))
}

/// The highest severity among the Asset's vulnerabilities, `none` when it
/// has been scanned and has none, absent when it was never scanned.
pub fn max_severity(status: &AssetStatus) -> Option<&'static str> {
    let v = status.findings.as_ref()?.vulnerabilities.as_ref()?;
    let levels = [
        (v.critical, "critical"),
        (v.high, "high"),
        (v.medium, "medium"),
        (v.low, "low"),
        (v.unknown, "unknown"),
    ];
    Some(
        levels
            .iter()
            .find(|(n, _)| *n > 0)
            .map_or("none", |(_, l)| l),
    )
}

/// The stage the Asset's lifecycle label shows: its OS's, else its hardware's.
pub fn lifecycle_label(n: &Normalized) -> Option<LifecycleStage> {
    let stage = |p: &Option<Product>| p.as_ref()?.lifecycle.as_ref().map(|l| l.stage);
    stage(&n.os).or_else(|| stage(&n.hardware))
}

/// What the Asset should look like: owned status and labels (pure).
pub fn desired(
    asset: &Asset,
    catalog: &Catalog,
    key_tags: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    rules: &[Rule],
    now: Timestamp,
) -> (Owned, BTreeMap<String, String>) {
    let status = asset.status.clone().unwrap_or_default();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let normalized = catalog.normalize(status.kind, &status.observed, today);

    let mut sources: Vec<_> = status.sources.iter().collect();
    sources.sort_by(|a, b| a.sensor.cmp(&b.sensor));
    let mut tags = BTreeMap::new();
    for key in sources.iter().filter_map(|s| s.activation_key.as_deref()) {
        for (k, v) in key_tags(key).unwrap_or_default() {
            tags.entry(k).or_insert(v);
        }
    }
    let labels = labels_for(&normalized, &status);
    if !rules.is_empty() {
        let mut view = asset.clone();
        if let Some(s) = view.status.as_mut() {
            s.normalized = Some(normalized.clone());
            s.tags = tags.clone();
        }
        view.metadata
            .labels
            .get_or_insert_default()
            .extend(labels.clone());
        for rule in rules {
            if sightline_inventory::eval::matches_asset(&rule.query, &view, now.as_second())
                .unwrap_or(false)
            {
                for (k, v) in &rule.tags {
                    tags.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }

    let last = last_seen(&status);
    let first = status
        .first_seen
        .as_ref()
        .map(|t| t.0)
        .or_else(|| status.sources.iter().map(|s| s.last_seen.0).min())
        .or(last);
    (
        Owned {
            normalized,
            tags,
            first_seen: first.map(Time),
            last_seen: last.map(Time),
        },
        labels,
    )
}

fn labels_for(n: &Normalized, status: &AssetStatus) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if let Some(k) = status.kind {
        labels.insert(LABEL_KIND.to_owned(), k.as_str().to_owned());
    }
    if let Some(stage) = lifecycle_label(n) {
        labels.insert(LABEL_LIFECYCLE.to_owned(), stage_str(stage).to_owned());
    }
    if let Some(sev) = max_severity(status) {
        labels.insert(LABEL_MAX_SEVERITY.to_owned(), sev.to_owned());
    }
    labels
}

/// When the Asset next needs a look: its expiry, or the next lifecycle date.
fn requeue_after(owned: &Owned, retention: Option<Duration>, now: Timestamp) -> Duration {
    let mut next = MAX_REQUEUE;
    if let (Some(ret), Some(seen)) = (retention, owned.last_seen.as_ref()) {
        let left =
            seen.0.as_second() + i64::try_from(ret.as_secs()).unwrap_or(i64::MAX) - now.as_second();
        next = next.min(Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1)));
    }
    let products = owned
        .normalized
        .os
        .iter()
        .chain(&owned.normalized.hardware)
        .chain(&owned.normalized.software);
    for lc in products.filter_map(|p| p.lifecycle.as_ref()) {
        for d in [&lc.eos_date, &lc.eol_date, &lc.eo_service_date]
            .into_iter()
            .flatten()
        {
            let Ok(date) = d.parse::<jiff::civil::Date>() else {
                continue;
            };
            let Ok(at) = date.to_zoned(jiff::tz::TimeZone::UTC) else {
                continue;
            };
            let left = at.timestamp().as_second() - now.as_second();
            if left > 0 {
                next = next.min(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1));
            }
        }
    }
    next
}

/// Whether the Asset has outlived the retention without a sighting.
pub fn expired(asset: &Asset, retention: Option<Duration>, now: Timestamp) -> bool {
    let (Some(ret), Some(seen)) = (retention, asset.status.as_ref().and_then(last_seen)) else {
        return false;
    };
    let ret = i64::try_from(ret.as_secs()).unwrap_or(i64::MAX);
    now.as_second().saturating_sub(seen.as_second()) >= ret
}

/// Reconciles one Asset.
#[tracing::instrument(skip_all, fields(asset = %asset.name_any()))]
pub async fn reconcile(asset: Arc<Asset>, ctx: Arc<InventoryContext>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("inventory");
    let name = asset.name_any();
    let api: Api<Asset> = Api::all(ctx.client.clone());
    let now = Timestamp::now();
    if asset.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if expired(&asset, ctx.retention, now) {
        // Only this version of the Asset: a sensor that just saw it again wins.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: asset.metadata.resource_version.clone(),
                uid: asset.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                ctx.metrics.assets_expired.inc();
                tracing::info!(asset = %name, "removed: no sensor has seen it within the retention");
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: "Asset",
                    name,
                    source,
                });
            }
        }
        return Ok(Action::await_change());
    }

    // Tags from stores still loading would strip every key's and rule's tags.
    ctx.keys_synced.wait("ActivationKey").await?;
    ctx.rules_synced.wait("TagRule").await?;
    let key_tags = |key: &str| {
        ctx.keys
            .get(&kube::runtime::reflector::ObjectRef::new(key))
            .map(|k| k.spec.tags.clone())
    };
    let rules = valid_rules(&ctx.rules);
    let (owned, labels) = desired(&asset, &ctx.catalog, &key_tags, &rules, now);

    let status = asset.status.clone().unwrap_or_default();
    let status_current = status.normalized.as_ref() == Some(&owned.normalized)
        && status.tags == owned.tags
        && status.first_seen == owned.first_seen
        && status.last_seen == owned.last_seen;
    if !status_current {
        let value = crate::apply::to_value(&owned, "Asset", &name)?;
        crate::apply::status(&api, &name, value, MANAGER, "Asset").await?;
    }
    let current_labels = asset.labels();
    let managed = [LABEL_KIND, LABEL_LIFECYCLE, LABEL_MAX_SEVERITY];
    let labels_current = managed
        .iter()
        .all(|k| current_labels.get(*k) == labels.get(*k));
    if !labels_current {
        crate::apply::labels(&api, &name, &labels, MANAGER, "Asset").await?;
    }
    Ok(Action::requeue(requeue_after(&owned, ctx.retention, now)))
}

/// Retries failures after a short, fixed delay: Assets are many and cheap.
pub fn error_policy(asset: Arc<Asset>, err: &Error, ctx: Arc<InventoryContext>) -> Action {
    ctx.metrics.failure("inventory", err.metric_label());
    tracing::warn!(asset = %asset.name_any(), error = %err, "inventory reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Parses `--asset-retention`: `30d`, `12h`, `90m`, `3600s`, or `forever`.
pub fn parse_retention(s: &str) -> std::result::Result<Option<Duration>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let bad = || format!("'{s}' is not a retention: use e.g. 30d, 12h, 90m, 3600s, or forever");
    let at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!(
            "'{s}' would remove every Asset at once; use forever to keep them"
        ));
    }
    n.checked_mul(unit)
        .map(|secs| Some(Duration::from_secs(secs)))
        .ok_or_else(bad)
}
