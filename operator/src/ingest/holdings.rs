//! Which nodes of each node Sensor hold each image.
//!
//! An Asset carries only a count and the latest few nodes per Sensor
//! ([`NodeSightings`]); the whole list is kept here. With a detail store
//! it is kept there, so it survives an operator restart and a change of
//! leader (before, a new leader counted an image on 5,000 nodes as on one
//! until every node had reported again); without one, in memory.
//!
//! A node's runtime sends its full listing every refresh: what is missing
//! from it has left the node. A node runtime that sends no listing for a
//! long time (the node is gone, or its sensor) is forgotten by
//! [`Holdings::expire`], and its images lose it.
//!
//! "Latest" means the nodes that took the image up last: a node that
//! reports an image it already held changes nothing, so thousands of
//! nodes refreshing the same image cost no Asset writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use sightline_crds::asset::{NodeSighting, NodeSightings, RECENT_NODES};

use crate::store::{Holders, NodeRuntime, Store, StoreError};

/// Where the holdings are kept.
pub enum Holdings {
    /// In the detail store.
    Store(Store),
    /// In this process only.
    Memory(Mutex<Members>),
}

impl Holdings {
    /// In `store` when given, else in memory.
    pub fn new(store: Option<Store>) -> Self {
        match store {
            Some(s) => Holdings::Store(s),
            None => Holdings::Memory(Mutex::default()),
        }
    }

    fn memory(m: &Mutex<Members>) -> std::sync::MutexGuard<'_, Members> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `at` holds `asset`; returns whether that is new.
    pub async fn see(&self, asset: &str, at: &NodeRuntime) -> Result<bool, StoreError> {
        match self {
            Holdings::Store(s) => s.hold(asset, at).await,
            Holdings::Memory(m) => Ok(Self::memory(m).see(asset, at)),
        }
    }

    /// On how many of `source`'s nodes `asset` is, and the latest few.
    pub async fn summary(&self, asset: &str, source: &str) -> Result<NodeSightings, StoreError> {
        let holders = match self {
            Holdings::Store(s) => s.holders(asset, source, RECENT_NODES).await?,
            Holdings::Memory(m) => Self::memory(m).holders(asset, source),
        };
        Ok(sightings(holders))
    }

    /// `at` sent its full listing, `present`: returns the assets that
    /// left it.
    pub async fn listing(
        &self,
        at: &NodeRuntime,
        present: &HashSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Holdings::Store(s) => {
                let gone: Vec<String> = s
                    .held_on(at)
                    .await?
                    .into_iter()
                    .filter(|a| !present.contains(a))
                    .collect();
                s.release(at, gone.clone(), true).await?;
                Ok(gone)
            }
            Holdings::Memory(m) => Ok(Self::memory(m).listing(at, present)),
        }
    }

    /// Forgets every node runtime that sent no listing since `before`;
    /// returns the (asset, source) pairs whose holders changed.
    pub async fn expire(
        &self,
        before: jiff::Timestamp,
    ) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Holdings::Store(s) => {
                let mut changed = Vec::new();
                for at in s.silent(before).await? {
                    let held = s.held_on(&at).await?;
                    s.release(&at, held.clone(), false).await?;
                    tracing::info!(sensor = %at.source, node = %at.node, runtime = %at.runtime, images = held.len(), "a node runtime sent no listing for too long: its images no longer count it");
                    changed.extend(held.into_iter().map(|a| (a, at.source.clone())));
                }
                Ok(changed)
            }
            Holdings::Memory(m) => Ok(Self::memory(m).expire(before.as_millisecond())),
        }
    }
}

/// The Asset's form of `holders`.
fn sightings(h: Holders) -> NodeSightings {
    NodeSightings {
        count: h.count,
        recent: h
            .recent
            .into_iter()
            .map(|(node, runtime)| NodeSighting {
                node,
                runtime: Some(runtime).filter(|r| !r.is_empty()),
            })
            .collect(),
    }
}

/// The holdings in memory, answering as the store's queries do.
#[derive(Default)]
pub struct Members {
    /// (asset, source) → node → runtime → when it took the asset up.
    by_asset: HashMap<(String, String), HashMap<String, BTreeMap<String, u64>>>,
    /// Node runtime → the assets it holds.
    by_node: HashMap<NodeRuntime, HashSet<String>>,
    /// Node runtime → when it last sent a listing (ms), or was first heard of.
    listed: HashMap<NodeRuntime, i64>,
    /// Orders takings-up: a counter, not a clock, so no two tie.
    clock: u64,
}

impl Members {
    fn see(&mut self, asset: &str, at: &NodeRuntime) -> bool {
        if !self
            .by_node
            .entry(at.clone())
            .or_default()
            .insert(asset.to_owned())
        {
            return false;
        }
        self.listed
            .entry(at.clone())
            .or_insert_with(|| jiff::Timestamp::now().as_millisecond());
        self.clock += 1;
        self.by_asset
            .entry((asset.to_owned(), at.source.clone()))
            .or_default()
            .entry(at.node.clone())
            .or_default()
            .insert(at.runtime.clone(), self.clock);
        true
    }

    fn release(&mut self, asset: &str, at: &NodeRuntime) {
        if let Some(set) = self.by_node.get_mut(at) {
            set.remove(asset);
        }
        let key = (asset.to_owned(), at.source.clone());
        let Some(nodes) = self.by_asset.get_mut(&key) else {
            return;
        };
        if let Some(runtimes) = nodes.get_mut(&at.node) {
            runtimes.remove(&at.runtime);
            if runtimes.is_empty() {
                nodes.remove(&at.node);
            }
        }
        if nodes.is_empty() {
            self.by_asset.remove(&key);
        }
    }

    fn holders(&self, asset: &str, source: &str) -> Holders {
        let Some(nodes) = self.by_asset.get(&(asset.to_owned(), source.to_owned())) else {
            return Holders::default();
        };
        let mut latest: Vec<(u64, &String, &String)> = nodes
            .iter()
            .filter_map(|(node, runtimes)| {
                let since = runtimes.values().max()?;
                let runtime = runtimes.keys().next()?;
                Some((*since, node, runtime))
            })
            .collect();
        latest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        Holders {
            count: i64::try_from(nodes.len()).unwrap_or(i64::MAX),
            recent: latest
                .into_iter()
                .take(RECENT_NODES)
                .map(|(_, n, r)| (n.clone(), r.clone()))
                .collect(),
        }
    }

    fn listing(&mut self, at: &NodeRuntime, present: &HashSet<String>) -> Vec<String> {
        self.listed
            .insert(at.clone(), jiff::Timestamp::now().as_millisecond());
        let gone: Vec<String> = self
            .by_node
            .get(at)
            .map(|held| held.difference(present).cloned().collect())
            .unwrap_or_default();
        for asset in &gone {
            self.release(asset, at);
        }
        gone
    }

    fn expire(&mut self, before_ms: i64) -> Vec<(String, String)> {
        let silent: Vec<NodeRuntime> = self
            .listed
            .iter()
            .filter(|(_, at)| **at < before_ms)
            .map(|(n, _)| n.clone())
            .collect();
        let mut changed = Vec::new();
        for at in silent {
            self.listed.remove(&at);
            for asset in self.by_node.remove(&at).unwrap_or_default() {
                self.release(&asset, &at);
                changed.push((asset, at.source.clone()));
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node: &str, runtime: &str) -> NodeRuntime {
        NodeRuntime {
            source: "ns/s".into(),
            node: node.into(),
            runtime: runtime.into(),
        }
    }

    #[test]
    fn members_count_every_node_and_name_the_latest_to_take_it_up() {
        let mut m = Members::default();
        for i in 0..20 {
            assert!(m.see("img", &at(&format!("n{i}"), "containerd")));
        }
        // Seen again: nothing changes, so nothing is written.
        assert!(!m.see("img", &at("n3", "containerd")));
        let h = m.holders("img", "ns/s");
        assert_eq!(h.count, 20);
        assert_eq!(h.recent.len(), RECENT_NODES);
        assert_eq!(h.recent[0], ("n19".to_owned(), "containerd".to_owned()));
        // A second runtime on a node is the same node.
        assert!(m.see("img", &at("n3", "docker")));
        let h = m.holders("img", "ns/s");
        assert_eq!(h.count, 20);
        assert_eq!(h.recent[0], ("n3".to_owned(), "containerd".to_owned()));
        // Leaving one runtime of two: still on the node.
        let gone = m.listing(&at("n3", "docker"), &HashSet::new());
        assert_eq!(gone, vec!["img".to_owned()]);
        assert_eq!(m.holders("img", "ns/s").count, 20);
        m.listing(&at("n3", "containerd"), &HashSet::new());
        let h = m.holders("img", "ns/s");
        assert_eq!(h.count, 19);
        assert!(h.recent.iter().all(|(n, _)| n != "n3"));
    }

    #[test]
    fn silent_nodes_are_forgotten_and_listed_ones_kept() {
        let mut m = Members::default();
        m.see("img", &at("quiet", "containerd"));
        m.see("img", &at("busy", "containerd"));
        let listed: HashSet<String> = ["img".to_owned()].into();
        assert!(m.listing(&at("busy", "containerd"), &listed).is_empty());
        // Make "quiet" silent since long ago.
        m.listed.insert(at("quiet", "containerd"), 0);
        let changed = m.expire(1);
        assert_eq!(changed, vec![("img".to_owned(), "ns/s".to_owned())]);
        let h = m.holders("img", "ns/s");
        assert_eq!(h.count, 1);
        assert_eq!(h.recent[0].0, "busy");
        assert!(m.expire(1).is_empty());
    }

    #[test]
    fn runtimes_left_unnamed_are_none_on_the_asset() {
        let s = sightings(Holders {
            count: 1,
            recent: vec![("n".into(), String::new())],
        });
        assert_eq!(s.recent[0].runtime, None);
    }
}
