//! The inventory controller: turns what sensors observed into normalized,
//! lifecycle-enriched, tagged and labelled Assets, and forgets Assets no
//! sensor has seen for the retention period.
//!
//! It writes, under its own field manager and never touching what sensors
//! write: `status.normalized`, `status.displayName`, `status.tags`,
//! `status.firstSeen`, `status.lastSeen`, and the labels `sightline.dev/kind`,
//! `sightline.dev/lifecycle` and `sightline.dev/max-severity`.
//!
//! Tags are the static tags of the activation keys of every source (sources
//! in sensor order; the first key to set a tag wins), then the tags of every
//! valid `TagRule` whose query matches (rules in name order; a key already
//! set is kept). Rules are evaluated against the Asset with its static tags
//! only, so no rule depends on another.
//!
//! A container has no OS of its own to observe: it takes its image's
//! normalized OS (with its lifecycle) from the image's Asset, so a
//! container of an end-of-life image is end-of-life too.

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
    AssetKind, AssetStatus, LABEL_KIND, LABEL_LIFECYCLE, LABEL_MAX_SEVERITY, LifecycleStage,
    Normalized, Product, asset_name,
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
/// How soon a container whose image is not normalized yet is looked at again.
const IMAGE_PENDING_RECHECK: Duration = Duration::from_secs(15);
/// How long after a container is first seen its image is waited for.
const IMAGE_PENDING_FOR: Duration = Duration::from_secs(600);

/// What the inventory and tag rule controllers share.
pub struct InventoryContext {
    /// Client with the operator's identity.
    pub client: kube::Client,
    /// The catalog (the built-in one, or a signed bundle's).
    pub catalog: tokio::sync::watch::Receiver<std::sync::Arc<Catalog>>,
    /// Every ActivationKey (for static tags).
    pub keys: Store<ActivationKey>,
    /// Open once `keys` has listed.
    pub keys_synced: super::Synced,
    /// Every TagRule.
    pub rules: Store<TagRule>,
    /// Every Asset (the controller's own store), for containers' images.
    pub assets: Store<Asset>,
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
    /// A name a person reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
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

/// The Asset of a container's image, by the image ID the sensor saw.
pub fn image_of(status: &AssetStatus) -> Option<String> {
    if status.kind != Some(AssetKind::Container) {
        return None;
    }
    let text = |k: &str| status.observed.get(k)?.as_str().filter(|s| !s.is_empty());
    text("imageAsset")
        .map(str::to_owned)
        .or_else(|| text("imageId").map(|id| asset_name(AssetKind::ContainerImage, id)))
}

/// A name a person reads, from what sensors observed: a container's
/// `<namespace>/<pod>/<container>` (its runtime name outside Kubernetes),
/// an image's first tag (or digest reference), a node's or host's name.
pub fn display_name(status: &AssetStatus) -> Option<String> {
    let text = |k: &str| {
        status
            .observed
            .get(k)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let first = |k: &str| {
        status
            .observed
            .get(k)?
            .as_array()?
            .iter()
            .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
    };
    let name = match status.kind? {
        AssetKind::Container => match (text("namespace"), text("pod"), text("container")) {
            (Some(ns), Some(pod), Some(c)) => Some(format!("{ns}/{pod}/{c}")),
            _ => text("name").map(|n| n.trim_start_matches('/').to_owned()),
        },
        AssetKind::ContainerImage => first("repoTags")
            .or_else(|| first("repoDigests"))
            .map(str::to_owned)
            .or_else(|| status.sources.iter().find_map(|s| s.reference.clone())),
        AssetKind::Node => text("nodeName")
            .or_else(|| text("hostname"))
            .map(str::to_owned),
        _ => text("hostname").or_else(|| text("name")).map(str::to_owned),
    }?;
    // Bounded as the schema bounds it, on a character boundary.
    Some(name.chars().take(256).collect())
}

/// What the Asset should look like: owned status and labels (pure).
/// `image` is the normalized facts of a container's image, when known.
pub fn desired(
    asset: &Asset,
    catalog: &Catalog,
    key_tags: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    rules: &[Rule],
    image: Option<&Normalized>,
    now: Timestamp,
) -> (Owned, BTreeMap<String, String>) {
    let status = asset.status.clone().unwrap_or_default();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut normalized = catalog.normalize(status.kind, &status.observed, today);
    if normalized.os.is_none() {
        normalized.os = image.and_then(|n| n.os.clone());
    }
    let display_name = display_name(&status);

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
            s.display_name.clone_from(&display_name);
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
            display_name,
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

/// When the Asset next needs a look: its expiry (`seen` + `retention`), or
/// the next lifecycle date.
fn requeue_after(
    owned: &Owned,
    seen: Option<Timestamp>,
    retention: Option<Duration>,
    now: Timestamp,
) -> Duration {
    let mut next = MAX_REQUEUE;
    if let (Some(ret), Some(seen)) = (retention, seen) {
        let left =
            seen.as_second() + i64::try_from(ret.as_secs()).unwrap_or(i64::MAX) - now.as_second();
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

/// When the Asset was last seen; for one no source has written (its
/// writer died between creating it and writing its status), when it was
/// created, so it expires too.
fn sighted(asset: &Asset) -> Option<Timestamp> {
    asset
        .status
        .as_ref()
        .and_then(last_seen)
        .or_else(|| asset.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Whether the Asset has outlived the retention without a sighting.
pub fn expired(asset: &Asset, retention: Option<Duration>, now: Timestamp) -> bool {
    let (Some(ret), Some(seen)) = (retention, sighted(asset)) else {
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
    let status = asset.status.clone().unwrap_or_default();
    // A new container's image may not be analysed yet: look again shortly
    // (for a while; an image never reported is not waited for forever).
    let image_name = image_of(&status);
    let image = image_name
        .as_deref()
        .and_then(|n| ctx.assets.get(&kube::runtime::reflector::ObjectRef::new(n)))
        .and_then(|a| a.status.as_ref()?.normalized.clone());
    let young = status
        .first_seen
        .as_ref()
        .is_none_or(|t| now.as_second() - t.0.as_second() < IMAGE_PENDING_FOR.as_secs() as i64);
    let image_pending = image_name.is_some() && image.is_none() && young;
    let catalog = ctx.catalog.borrow().clone();
    let (owned, labels) = desired(&asset, &catalog, &key_tags, &rules, image.as_ref(), now);

    let status_current = status.normalized.as_ref() == Some(&owned.normalized)
        && status.display_name == owned.display_name
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
    let seen = owned
        .last_seen
        .as_ref()
        .map(|t| t.0)
        .or_else(|| sighted(&asset));
    let next = requeue_after(&owned, seen, ctx.retention, now);
    Ok(Action::requeue(if image_pending {
        next.min(IMAGE_PENDING_RECHECK)
    } else {
        next
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asset(kind: AssetKind, observed: serde_json::Value) -> Asset {
        let mut a = Asset::new("a", Default::default());
        a.status = Some(AssetStatus {
            kind: Some(kind),
            observed: serde_json::from_value(observed).unwrap(),
            ..Default::default()
        });
        a
    }

    #[test]
    fn people_read_a_name_for_each_kind() {
        let name = |kind, observed| display_name(asset(kind, observed).status.as_ref().unwrap());
        assert_eq!(
            name(
                AssetKind::Container,
                json!({"name": "/k8s_web", "namespace": "shop", "pod": "web-1", "container": "nginx"})
            )
            .as_deref(),
            Some("shop/web-1/nginx")
        );
        assert_eq!(
            name(AssetKind::Container, json!({"name": "/festive_lovelace"})).as_deref(),
            Some("festive_lovelace")
        );
        assert_eq!(
            name(
                AssetKind::ContainerImage,
                json!({"repoTags": ["", "nginx:1.27"]})
            )
            .as_deref(),
            Some("nginx:1.27")
        );
        assert_eq!(
            name(AssetKind::Node, json!({"nodeName": "worker-1"})).as_deref(),
            Some("worker-1")
        );
        assert_eq!(name(AssetKind::ContainerImage, json!({})), None);
        let long = "x".repeat(1000);
        assert_eq!(
            name(AssetKind::Host, json!({"hostname": long})).map(|n| n.len()),
            Some(256)
        );
    }

    #[test]
    fn a_container_takes_its_images_os_and_lifecycle() {
        let catalog = Catalog::builtin().unwrap();
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let image_observed = json!({"osRelease": {
            "ID": "debian", "VERSION_ID": "11", "NAME": "Debian GNU/Linux",
            "PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)", "VERSION_CODENAME": "bullseye",
        }});
        let image = catalog.normalize(
            Some(AssetKind::ContainerImage),
            &serde_json::from_value(image_observed).unwrap(),
            today,
        );
        let container = asset(
            AssetKind::Container,
            json!({"imageId": "sha256:1", "namespace": "shop", "pod": "web-1", "container": "app"}),
        );
        assert_eq!(
            image_of(container.status.as_ref().unwrap()),
            Some(asset_name(AssetKind::ContainerImage, "sha256:1"))
        );
        let no_tags = |_: &str| None;
        let (owned, labels) = desired(&container, &catalog, &no_tags, &[], Some(&image), now);
        assert_eq!(owned.normalized.os, image.os);
        let hw = owned.normalized.hardware.clone().unwrap();
        assert_eq!(
            (hw.category.as_deref(), hw.subcategory.as_deref()),
            (Some("Virtualized"), Some("Container"))
        );
        assert_eq!(owned.display_name.as_deref(), Some("shop/web-1/app"));
        assert_eq!(
            labels.get(LABEL_LIFECYCLE).map(String::as_str),
            lifecycle_label(&image).map(stage_str)
        );
        // Not analysed yet: no OS, no lifecycle, but still a container.
        let (owned, labels) = desired(&container, &catalog, &no_tags, &[], None, now);
        assert_eq!(owned.normalized.os, None);
        assert!(!labels.contains_key(LABEL_LIFECYCLE));
    }
}
