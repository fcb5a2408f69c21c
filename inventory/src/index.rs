//! The in-memory index the operator's search API serves from: one
//! [`AssetDoc`] per Asset, fed by the Asset watch, so a query never lists
//! Assets from the API server.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sightline_crds::asset::Asset;

use crate::doc::{AssetDoc, Hit, Interner};
use crate::eval::compile;
use crate::query::{Error, parse_query};

/// Assets, searchable.
#[derive(Default, Debug)]
pub struct Index {
    interner: Interner,
    docs: Vec<Option<AssetDoc>>,
    slots: HashMap<Box<str>, usize>,
    free: Vec<usize>,
}

/// The result of a search.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    /// How many Assets matched (may exceed `hits.len()` when limited).
    pub total: usize,
    /// The matches, sorted by name.
    pub hits: Vec<Hit>,
}

/// Counts over the whole inventory.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Assets in all.
    pub total: usize,
    /// By kind.
    pub by_kind: BTreeMap<String, usize>,
    /// By hardware category (`Category / Subcategory`), for Assets with hardware.
    pub by_category: BTreeMap<String, usize>,
    /// By lifecycle stage (the Asset's label).
    pub by_lifecycle: BTreeMap<String, usize>,
    /// By highest severity (the Asset's label).
    pub by_max_severity: BTreeMap<String, usize>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Add or replace an Asset.
    pub fn upsert(&mut self, asset: &Asset) {
        let doc = AssetDoc::from_asset(asset, &mut self.interner);
        match self.slots.get(&doc.name) {
            Some(&slot) => self.docs[slot] = Some(doc),
            None => {
                let name = doc.name.clone();
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.docs[slot] = Some(doc);
                        slot
                    }
                    None => {
                        self.docs.push(Some(doc));
                        self.docs.len() - 1
                    }
                };
                self.slots.insert(name, slot);
            }
        }
    }

    /// Remove an Asset by name.
    pub fn remove(&mut self, name: &str) {
        if let Some(slot) = self.slots.remove(name) {
            self.docs[slot] = None;
            self.free.push(slot);
        }
    }

    /// Drop everything (before a full relist).
    pub fn clear(&mut self) {
        *self = Index::default();
    }

    /// Number of Assets.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the Asset named `name` matches a query, for callers that
    /// evaluate one Asset (dynamic tags).
    pub fn docs(&self) -> impl Iterator<Item = &AssetDoc> {
        self.docs.iter().flatten()
    }

    /// The interner the documents refer to.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// Run `query`, anchoring relative dates at `now` (Unix seconds), and
    /// return at most `limit` hits sorted by name.
    pub fn search(&self, query: &str, now: i64, limit: usize) -> Result<SearchResult, Error> {
        let names = self.matching(query, now)?;
        let total = names.len();
        let mut docs: Vec<&AssetDoc> = names;
        docs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        docs.truncate(limit);
        Ok(SearchResult {
            total,
            hits: docs.iter().map(|d| d.summary(&self.interner)).collect(),
        })
    }

    /// Every document matching `query`.
    pub fn matching(&self, query: &str, now: i64) -> Result<Vec<&AssetDoc>, Error> {
        let parsed = parse_query(query)?;
        let compiled = compile(&parsed, &self.interner, now).map_err(|e| e.locate(query))?;
        Ok(self.docs().filter(|d| compiled.matches(d)).collect())
    }

    /// Counts by kind, category, lifecycle stage and highest severity.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let name = |sym| self.interner.get(sym).to_string();
        for d in self.docs() {
            s.total += 1;
            let kind = d.kind.map_or_else(|| "(none)".to_string(), name);
            *s.by_kind.entry(kind).or_default() += 1;
            if let Some(c) = d
                .hardware
                .as_ref()
                .and_then(|h| h.category_path.or(h.category))
            {
                *s.by_category.entry(name(c)).or_default() += 1;
            }
            let lc = d.lifecycle.map_or_else(|| "(none)".to_string(), name);
            *s.by_lifecycle.entry(lc).or_default() += 1;
            let sev = d.max_severity.map_or_else(|| "none".to_string(), name);
            *s.by_max_severity.entry(sev).or_default() += 1;
        }
        s
    }
}
