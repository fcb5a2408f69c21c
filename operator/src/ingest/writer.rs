//! The only writer of Asset status from reports.
//!
//! Each source (a Sensor, or a key's CI reports) writes its own entry of
//! `sources`, the facts it observed and its findings with server-side
//! apply under its own field manager, `sightline/<source>`; which nodes of
//! a node Sensor hold an image is a second, bounded part of its entry
//! (`sources[].nodes`: a count and the latest few), written under
//! `sightline/<source>/nodes` from the full per-node lists this writer
//! keeps. So an image on 5,000 nodes has two field managers per Sensor,
//! not one per node, and its object stays small.
//!
//! A key's CI reports never overwrite what cluster sensors observed: once
//! an image has a sensor's source, a CI report only refreshes the key's
//! own source entry.
//!
//! Each source's findings stay in its own entry (`sources[].findings`);
//! the Asset's `findings` combine them ([`Findings::combine`]), written
//! under `sightline/findings` after every source write that changed
//! something, so no source can lower or hide what another found.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use sightline_crds::asset::{AssetSource, AssetSpec, AssetStatus, Findings, NodeSightings};
use sightline_crds::{Asset, AssetKind};
use sightline_report::{Observation, Recorded};

use super::auth::Caller;
use super::holdings::Holdings;
use super::policy::Refusal;
use crate::controllers::sensor::names::bounded;
use crate::search::{SharedIndex, read};
use crate::store::{NodeRuntime, Store, StoreError};

/// A report's facts are written again, unchanged, at most this often
/// (which refreshes `lastSeen`).
const REFRESH_UNCHANGED: Duration = Duration::from_secs(600);
/// Most remembered writes; forgotten ones are simply written again.
const MAX_REMEMBERED: usize = 200_000;
/// Writes to one Asset are serialized through one of this many locks.
const STRIPES: usize = 64;
/// How long a creation counts against a key's limit before the Asset
/// watch has surely brought it into the index.
const CREATION_WINDOW: Duration = Duration::from_secs(60);

/// Why an observation was not written.
#[derive(Debug)]
pub enum WriteError {
    /// Refused: recorded in the receipt.
    Refused(Refusal),
    /// The API server failed: the request is answered 503 and retried.
    Api(kube::Error),
    /// The detail store failed: the request is answered 503 and retried.
    Store(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl From<kube::Error> for WriteError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 422 => WriteError::Refused(Refusal {
                reason: "Invalid",
                message: format!("the API server refused the Asset: {}", s.message),
            }),
            other => WriteError::Api(other),
        }
    }
}

/// Writes Assets from reports.
pub struct Writer {
    api: Api<Asset>,
    index: SharedIndex,
    stripes: Vec<tokio::sync::Mutex<()>>,
    holdings: Holdings,
    written: Mutex<HashMap<(String, String), (u64, Instant)>>,
    created: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// What a source wrote of one observation: its status parts, and for node
/// sensors' images the node and runtime.
struct Parts {
    status: AssetStatus,
    node: Option<(String, Option<String>)>,
}

impl Writer {
    /// A writer through `client`; `index` (every Asset, from the watch)
    /// counts what each source has created; which nodes hold which image
    /// is kept in `store` when given, else in memory.
    pub fn new(client: kube::Client, index: SharedIndex, store: Option<Store>) -> Self {
        Self {
            api: Api::all(client),
            index,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            holdings: Holdings::new(store),
            written: Mutex::default(),
            created: Mutex::default(),
        }
    }

    fn stripe(&self, name: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        &self.stripes[(h.finish() % STRIPES as u64) as usize]
    }

    /// Writes one observation the policy admitted; returns the Asset's name.
    pub async fn write(
        &self,
        caller: &Caller,
        o: &Observation,
        max_assets: Option<i64>,
    ) -> Result<String, WriteError> {
        let name = o.asset_name();
        let source = caller.source();
        // A source at its limit is refused new Assets before any request
        // to the API server (the index holds every Asset, so it knows).
        if !read(&self.index).contains(&name) {
            self.at_limit(&source, max_assets)?;
        }
        let _serial = self.stripe(&name).lock().await;
        let mut parts = parts(caller, o)?;
        if matches!(caller, Caller::Key { .. }) && self.sensor_has_seen(&name).await? {
            // Cluster sensors' facts stand: the key refreshes its own
            // entry (with its findings, which are combined with theirs).
            parts.status.observed.clear();
        }
        let manager = field_manager(&source, "");
        // A node that could not analyse an image never replaces what a
        // node that could (of the same Sensor, so the same field manager)
        // wrote: only its holding of the image is recorded.
        let failed =
            matches!(o, Observation::ContainerImage(i) if i.facts.analysis_failure.is_some());
        let keep_analysis = failed && self.analysed(&name).await?;
        // Node sensors refresh everything every few minutes from thousands
        // of nodes: unchanged facts are written again only now and then.
        // Registry scans and CI reports are rare: always written.
        let unchanged = keep_analysis
            || (parts.node.is_some() && self.unchanged(&name, &manager, &parts.status));
        if !unchanged {
            let written = self
                .apply(&name, &manager, &parts.status, &source, max_assets)
                .await?;
            self.remember(&name, &manager, &parts.status);
            self.combine_findings(&name, &written).await?;
        }
        if let Some((node, runtime)) = parts.node {
            let at = NodeRuntime {
                source: source.clone(),
                node,
                runtime: runtime.unwrap_or_default(),
            };
            let new = self.holdings.see(&name, &at).await?;
            if new || !unchanged {
                let summary = self.holdings.summary(&name, &source).await?;
                match self.apply_nodes(&name, &source, summary.clone()).await {
                    // Removed since this source's facts were last written
                    // (retention): written again in full.
                    Err(WriteError::Api(kube::Error::Api(e))) if e.code == 404 => {
                        let written = self
                            .apply(&name, &manager, &parts.status, &source, max_assets)
                            .await?;
                        self.remember(&name, &manager, &parts.status);
                        self.combine_findings(&name, &written).await?;
                        self.apply_nodes(&name, &source, summary).await?;
                    }
                    other => other?,
                }
            }
        }
        Ok(name)
    }

    /// Takes the node's full listing: the images it no longer holds lose
    /// the node from their source entry.
    pub async fn listing(
        &self,
        caller: &Caller,
        listing: &sightline_report::Listing,
    ) -> Result<usize, WriteError> {
        let Caller::Sensor {
            node: Some(node), ..
        } = caller
        else {
            return Ok(0);
        };
        let at = NodeRuntime {
            source: caller.source(),
            node: node.name.clone(),
            runtime: listing.runtime.clone(),
        };
        let present: HashSet<String> = listing
            .images
            .iter()
            .map(|d| sightline_crds::asset::asset_name(AssetKind::ContainerImage, d))
            .collect();
        let gone = self.holdings.listing(&at, &present).await?;
        for name in &gone {
            self.rewrite_nodes(name, &at.source).await?;
        }
        Ok(gone.len())
    }

    /// Forgets the node runtimes that sent no listing since `before`, and
    /// rewrites the node counts of the images they held; returns how many
    /// images changed.
    pub async fn expire_silent_nodes(&self, before: jiff::Timestamp) -> Result<usize, WriteError> {
        let changed = self.holdings.expire(before).await?;
        for (name, source) in &changed {
            self.rewrite_nodes(name, source).await?;
        }
        Ok(changed.len())
    }

    /// Writes `source`'s node count of `name` again from the holdings.
    async fn rewrite_nodes(&self, name: &str, source: &str) -> Result<(), WriteError> {
        let _serial = self.stripe(name).lock().await;
        let summary = self.holdings.summary(name, source).await?;
        match self.apply_nodes(name, source, summary).await {
            // The Asset is gone already: nothing to count.
            Err(WriteError::Api(kube::Error::Api(e))) if e.code == 404 => Ok(()),
            other => other,
        }
    }

    /// The images `caller` reported, as their Assets hold them.
    pub async fn recorded(&self, caller: &Caller) -> Result<Vec<Recorded>, kube::Error> {
        let source = caller.source();
        let mut out = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = self.api.list(&params).await?;
            for a in &page.items {
                let Some(s) = &a.status else { continue };
                if s.kind != Some(AssetKind::ContainerImage)
                    || !s.sources.iter().any(|x| x.sensor == source)
                {
                    continue;
                }
                let observed: serde_json::Map<String, serde_json::Value> =
                    s.observed.clone().into_iter().collect();
                let Some(facts) = sightline_report::ImageFacts::from_observed(&observed) else {
                    continue;
                };
                out.push(Recorded {
                    identity: s.identity.clone().unwrap_or_default(),
                    facts,
                    vulnerabilities: s
                        .sources
                        .iter()
                        .find(|x| x.sensor == source)
                        .and_then(|x| x.findings.as_ref())
                        .and_then(|f| f.vulnerabilities.clone()),
                    details_kept: None,
                });
            }
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => params = params.continue_token(&c),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Whether the image of this Asset has been analysed (it has layers).
    async fn analysed(&self, name: &str) -> Result<bool, WriteError> {
        let current = self.api.get_opt(name).await?;
        Ok(current.and_then(|a| a.status).is_some_and(|s| {
            s.observed
                .get("layerCount")
                .and_then(serde_json::Value::as_u64)
                .is_some_and(|n| n > 0)
        }))
    }

    /// Whether a cluster sensor (not a CI key) has reported this Asset.
    async fn sensor_has_seen(&self, name: &str) -> Result<bool, WriteError> {
        let current = self.api.get_opt(name).await?;
        Ok(current
            .and_then(|a| a.status)
            .is_some_and(|s| s.sources.iter().any(|x| x.r#type.as_deref() != Some("ci"))))
    }

    fn unchanged(&self, name: &str, manager: &str, status: &AssetStatus) -> bool {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written
            .get(&(name.to_owned(), manager.to_owned()))
            .is_some_and(|(h, at)| *h == content_hash(status) && at.elapsed() < REFRESH_UNCHANGED)
    }

    fn remember(&self, name: &str, manager: &str, status: &AssetStatus) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.len() >= MAX_REMEMBERED {
            written.clear();
        }
        written.insert(
            (name.to_owned(), manager.to_owned()),
            (content_hash(status), Instant::now()),
        );
    }

    /// Writes the Asset's `findings` as every source's combined, when they
    /// differ from what `written` (the Asset as a source's write left it)
    /// has.
    async fn combine_findings(&self, name: &str, written: &Asset) -> Result<(), WriteError> {
        let Some(status) = &written.status else {
            return Ok(());
        };
        let mut sources: Vec<&AssetSource> = status.sources.iter().collect();
        sources.sort_by(|a, b| a.sensor.cmp(&b.sensor));
        let combined = Findings::combine(sources.iter().filter_map(|s| s.findings.as_ref()));
        if combined == status.findings {
            return Ok(());
        }
        let body = asset(
            name,
            Some(AssetStatus {
                findings: combined,
                ..AssetStatus::default()
            }),
        );
        let params = PatchParams::apply(COMBINED_FINDINGS).force();
        self.api
            .patch_status(name, &params, &Patch::Apply(&body))
            .await?;
        Ok(())
    }

    /// Applies `status` under `manager`, creating the Asset first if there
    /// is none and the source's key allows another; returns the Asset as
    /// the write left it.
    async fn apply(
        &self,
        name: &str,
        manager: &str,
        status: &AssetStatus,
        source: &str,
        max_assets: Option<i64>,
    ) -> Result<Asset, WriteError> {
        let params = PatchParams::apply(manager).force();
        let body = asset(name, Some(status.clone()));
        match self
            .api
            .patch_status(name, &params, &Patch::Apply(&body))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.may_create(source, max_assets)?;
                self.api
                    .patch(name, &params, &Patch::Apply(&asset(name, None)))
                    .await?;
                Ok(self
                    .api
                    .patch_status(name, &params, &Patch::Apply(&body))
                    .await?)
            }
            other => other.map_err(WriteError::from),
        }
    }

    /// Refuses another Asset for a source at its key's limit: the Assets
    /// in the index that list it, or those it created in the last minute
    /// (which the watch may not have brought in yet), whichever is more.
    fn at_limit(&self, source: &str, max_assets: Option<i64>) -> Result<(), WriteError> {
        let Some(max) = max_assets else {
            return Ok(());
        };
        let recent = {
            let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
            let recent = created.entry(source.to_owned()).or_default();
            while recent
                .front()
                .is_some_and(|t| t.elapsed() > CREATION_WINDOW)
            {
                recent.pop_front();
            }
            recent.len()
        };
        let indexed = read(&self.index).count_source(source);
        let have = i64::try_from(indexed.max(recent)).unwrap_or(i64::MAX);
        if have >= max {
            return Err(WriteError::Refused(Refusal {
                reason: "AssetLimit",
                message: format!(
                    "{source} has {have} Assets and its key allows {max} (spec.limits.maxAssets)"
                ),
            }));
        }
        Ok(())
    }

    /// Counts a creation against the source's limit, or refuses it.
    fn may_create(&self, source: &str, max_assets: Option<i64>) -> Result<(), WriteError> {
        self.at_limit(source, max_assets)?;
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        created
            .entry(source.to_owned())
            .or_default()
            .push_back(Instant::now());
        Ok(())
    }

    /// Applies the node part of the source's entry.
    async fn apply_nodes(
        &self,
        name: &str,
        source: &str,
        nodes: NodeSightings,
    ) -> Result<(), WriteError> {
        let status = AssetStatus {
            sources: vec![AssetSource {
                sensor: source.to_owned(),
                r#type: None,
                activation_key: None,
                last_seen: Time(jiff::Timestamp::now()),
                nodes: Some(nodes),
                reference: None,
                findings: None,
            }],
            ..AssetStatus::default()
        };
        let params = PatchParams::apply(&field_manager(source, "/nodes")).force();
        self.api
            .patch_status(name, &params, &Patch::Apply(&asset(name, Some(status))))
            .await?;
        Ok(())
    }
}

/// The field manager of the Asset's combined `findings`.
pub const COMBINED_FINDINGS: &str = "sightline/findings";

/// `sightline/<source><suffix>`, within the 128 characters a field manager may have.
pub fn field_manager(source: &str, suffix: &str) -> String {
    let mut m = bounded("sightline/", source, 128 - suffix.len());
    m.push_str(suffix);
    m
}

fn asset(name: &str, status: Option<AssetStatus>) -> Asset {
    Asset {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: AssetSpec {},
        status,
    }
}

/// A hash of what a write says, but for when it was seen.
fn content_hash(status: &AssetStatus) -> u64 {
    let mut s = status.clone();
    for src in &mut s.sources {
        src.last_seen = Time(jiff::Timestamp::UNIX_EPOCH);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&s).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The status parts `caller` writes for `o`.
fn parts(caller: &Caller, o: &Observation) -> Result<Parts, WriteError> {
    let (sensor_type, key) = match caller {
        Caller::Sensor {
            sensor_type, key, ..
        } => (sensor_type.as_str(), key.clone()),
        Caller::Key { key } => ("ci", key.clone()),
    };
    let node_name = match caller {
        Caller::Sensor { node: Some(n), .. } => Some(n.name.clone()),
        _ => None,
    };
    let mut source = AssetSource {
        sensor: caller.source(),
        r#type: Some(sensor_type.to_owned()),
        activation_key: Some(key),
        last_seen: Time(jiff::Timestamp::now()),
        nodes: None,
        reference: None,
        findings: None,
    };
    let mut status = AssetStatus {
        kind: Some(o.asset_kind()),
        identity: Some(o.identity().to_owned()),
        managed: Some(true),
        ..AssetStatus::default()
    };
    let mut node = None;
    match o {
        Observation::ContainerImage(i) => {
            status.observed = to_map(&i.facts)?;
            source.findings = i.vulnerabilities.as_ref().map(|v| Findings {
                vulnerabilities: Some(v.clone()),
                ..Findings::default()
            });
            source.reference = i.reference.clone();
            node = node_name.map(|n| (n, i.runtime.clone()));
        }
        Observation::Container(c) => {
            let mut facts = c.facts.clone();
            facts.node = node_name.unwrap_or_default();
            status.observed = to_map(&facts)?;
        }
        Observation::Node(n) => {
            let mut facts = n.facts.clone();
            facts.node_name = node_name.unwrap_or_default();
            status.observed = to_map(&facts)?;
        }
        Observation::RuntimeViolations(v) => {
            let facts = ViolationFacts {
                container_id: &v.identity,
                pod: v.pod.as_deref(),
                namespace: v.namespace.as_deref(),
                container: v.container.as_deref(),
                node: node_name.as_deref().unwrap_or_default(),
                last_runtime_violation: &v.last,
            };
            status.observed = to_map(&facts)?;
            source.findings = Some(Findings {
                runtime: Some(v.count),
                ..Findings::default()
            });
        }
    }
    status.sources = vec![source];
    Ok(Parts { status, node })
}

/// What a runtime sensor's report puts into a container's `observed`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ViolationFacts<'a> {
    container_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    node: &'a str,
    last_runtime_violation: &'a sightline_report::Violation,
}

fn to_map(
    facts: &impl serde::Serialize,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, WriteError> {
    match serde_json::to_value(facts) {
        Ok(serde_json::Value::Object(m)) => Ok(m.into_iter().collect()),
        Ok(_) | Err(_) => Err(WriteError::Refused(Refusal {
            reason: "Invalid",
            message: "the facts are not an object".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_managers_fit_and_stay_distinct() {
        let long = format!("ns/{}", "s".repeat(300));
        let a = field_manager(&long, "");
        let b = field_manager(&long, "/nodes");
        assert!(a.len() <= 128 && b.len() <= 128);
        assert_ne!(a, b);
        assert_eq!(field_manager("ns/s", "/nodes"), "sightline/ns/s/nodes");
    }
}
