//! The in-memory index the operator's search API serves from: one
//! [`AssetDoc`] per Asset, fed by the Asset watch, so a query never lists
//! Assets from the API server.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sightline_crds::asset::Asset;

use crate::doc::{AssetDoc, Hit, Interner};
use crate::eval::{Compiled, compile_text};
use crate::query::Error;

/// Indexes at least this large are scanned on several threads.
const PARALLEL_FROM: usize = 16_384;
/// Most threads one search uses.
const MAX_THREADS: usize = 4;

/// Marks in `words` (64 slots each, from `first`) the documents that match;
/// returns how many.
fn scan(docs: &[Option<AssetDoc>], compiled: &Compiled, first: usize, words: &mut [u64]) -> usize {
    let mut n = 0;
    for (w, word) in words.iter_mut().enumerate() {
        for bit in 0..64 {
            if let Some(Some(d)) = docs.get(first + w * 64 + bit)
                && compiled.matches(d)
            {
                *word |= 1 << bit;
                n += 1;
            }
        }
    }
    n
}

/// Assets, searchable.
///
/// Documents live in slots scanned in slot order (sequential memory, the
/// fast way to evaluate a query over everything); `order` lists the
/// occupied slots by name, so the first `limit` matches by name come from
/// one pass over it instead of sorting every match.
#[derive(Default, Debug)]
pub struct Index {
    interner: Interner,
    docs: Vec<Option<AssetDoc>>,
    slots: HashMap<Box<str>, usize>,
    free: Vec<usize>,
    order: Vec<u32>,
    /// Set while bulk loading: `order` is rebuilt once by [`Index::finish_bulk`].
    bulk: bool,
    /// Image Assets by the references they were seen with
    /// ([`crate::images::keys_of`]), and each image slot's keys.
    images: HashMap<Box<str>, Vec<usize>>,
    image_keys: HashMap<usize, Vec<Box<str>>>,
    /// Queries [`Index::matches`] compiled, valid while the interner has
    /// not grown and within the same second (compiling looks at every
    /// interned string, so it costs as much as the index is large).
    compiled: std::sync::Mutex<HashMap<Box<str>, CachedQuery>>,
}

/// A compiled query, the interner size and the second it was compiled for.
#[derive(Debug)]
struct CachedQuery {
    interned: usize,
    now: i64,
    compiled: std::sync::Arc<Compiled>,
}

/// Most queries [`Index::matches`] keeps compiled.
const MAX_CACHED_QUERIES: usize = 256;

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

    /// An empty index about to receive many Assets (a full list): name
    /// order is built once by [`Index::finish_bulk`] instead of kept up to
    /// date on every insert. Searches work meanwhile, only slower.
    pub fn bulk() -> Index {
        Index {
            bulk: true,
            ..Index::default()
        }
    }

    /// Ends a bulk load: sorts the name order once.
    pub fn finish_bulk(&mut self) {
        let docs = &self.docs;
        let name = |slot: &u32| docs[*slot as usize].as_ref().map(|d| &d.name);
        self.order = self.slots.values().map(|&s| s as u32).collect();
        self.order.sort_unstable_by(|a, b| name(a).cmp(&name(b)));
        self.bulk = false;
    }

    fn name_of(&self, slot: u32) -> &str {
        self.docs[slot as usize].as_ref().map_or("", |d| &d.name)
    }

    /// Add or replace an Asset.
    pub fn upsert(&mut self, asset: &Asset) {
        let doc = AssetDoc::from_asset(asset, &mut self.interner);
        if let Some(&slot) = self.slots.get(&doc.name) {
            self.docs[slot] = Some(doc);
            self.index_image(slot, asset);
            return;
        }
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
        self.slots.insert(name.clone(), slot);
        self.index_image(slot, asset);
        if !self.bulk {
            let at = self
                .order
                .partition_point(|&s| self.name_of(s) < name.as_ref());
            self.order.insert(at, slot as u32);
        }
    }

    /// Remove an Asset by name.
    pub fn remove(&mut self, name: &str) {
        let Some(slot) = self.slots.remove(name) else {
            return;
        };
        if !self.bulk {
            let at = self.order.partition_point(|&s| self.name_of(s) < name);
            if self.order.get(at) == Some(&(slot as u32)) {
                self.order.remove(at);
            }
        }
        self.docs[slot] = None;
        self.unindex_image(slot);
        self.free.push(slot);
    }

    /// Keeps the image map up to date for the Asset in `slot`.
    fn index_image(&mut self, slot: usize, asset: &Asset) {
        self.unindex_image(slot);
        let Some(status) = &asset.status else { return };
        if status.kind != Some(sightline_crds::AssetKind::ContainerImage) {
            return;
        }
        let strings = |key: &str| -> Vec<&str> {
            status
                .observed
                .get(key)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default()
        };
        let keys = crate::images::keys_of(
            &strings("repoTags"),
            &strings("repoDigests"),
            status.identity.as_deref(),
        );
        let keys: Vec<Box<str>> = keys.into_iter().map(String::into_boxed_str).collect();
        for k in &keys {
            self.images.entry(k.clone()).or_default().push(slot);
        }
        self.image_keys.insert(slot, keys);
    }

    fn unindex_image(&mut self, slot: usize) {
        for k in self.image_keys.remove(&slot).unwrap_or_default() {
            if let Some(slots) = self.images.get_mut(&k) {
                slots.retain(|s| *s != slot);
                if slots.is_empty() {
                    self.images.remove(&k);
                }
            }
        }
    }

    /// The image Assets a pod's image reference names (by tag, registry
    /// digest or image ID), as admission control reads them.
    pub fn images(&self, reference: &str) -> Vec<crate::images::ImageView> {
        let Some(r) = crate::images::Reference::parse(reference) else {
            return Vec::new();
        };
        let mut slots: Vec<usize> = Vec::new();
        for k in r.keys() {
            for s in self.images.get(k.as_str()).into_iter().flatten() {
                if !slots.contains(s) {
                    slots.push(*s);
                }
            }
        }
        // An image ID given as a reference (`sha256:…`) is not a reference
        // Docker parses; look it up as it is.
        if slots.is_empty()
            && let Some(s) = self.images.get(reference.to_ascii_lowercase().as_str())
        {
            slots.extend(s);
        }
        slots
            .into_iter()
            .filter_map(|s| self.docs.get(s)?.as_ref())
            .map(|d| self.image_view(d))
            .collect()
    }

    fn image_view(&self, d: &AssetDoc) -> crate::images::ImageView {
        let sym = |s: crate::doc::OptSym| s.get().map(|s| self.interner.get(s).to_owned());
        crate::images::ImageView {
            name: d.name.to_string(),
            display_name: d.display_name.as_deref().map(str::to_owned),
            counts: d.vuln_counts.map(|n| n.get().unwrap_or(0)),
            top: d
                .vulns
                .iter()
                .map(|v| crate::images::TopVulnerability {
                    id: sym(v.id).unwrap_or_default(),
                    package: sym(v.package).unwrap_or_default(),
                    installed: sym(v.installed).unwrap_or_default(),
                    fixed: sym(v.fixed),
                    severity: sym(v.severity).unwrap_or_default(),
                })
                .collect(),
            lifecycle: sym(d.lifecycle),
            last_seen: d.last_seen.get(),
        }
    }

    /// Whether the Asset `name` matches `query` (anchored at `now`).
    pub fn matches(&self, query: &str, now: i64, name: &str) -> Result<bool, Error> {
        let interned = self.interner.len();
        let cached = {
            let cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(query)
                .filter(|c| c.interned == interned && c.now == now)
                .map(|c| c.compiled.clone())
        };
        let compiled = match cached {
            Some(c) => c,
            None => {
                let c = std::sync::Arc::new(compile_text(query, &self.interner, now)?);
                let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_CACHED_QUERIES {
                    cache.clear();
                }
                cache.insert(
                    query.into(),
                    CachedQuery {
                        interned,
                        now,
                        compiled: c.clone(),
                    },
                );
                c
            }
        };
        Ok(self
            .slots
            .get(name)
            .and_then(|&s| self.docs.get(s)?.as_ref())
            .is_some_and(|d| compiled.matches(d)))
    }

    /// Every name (normalized tags and digests, the image ID) of the image
    /// Assets `query` matches, sorted, at most `max` of them; and how many
    /// names there were in all.
    pub fn image_names(
        &self,
        query: &str,
        now: i64,
        max: usize,
    ) -> Result<(Vec<String>, usize), Error> {
        let compiled = compile_text(query, &self.interner, now)?;
        let mut names: Vec<&str> = self
            .image_keys
            .iter()
            .filter(|(slot, _)| {
                self.docs
                    .get(**slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|d| compiled.matches(d))
            })
            .flat_map(|(_, keys)| keys.iter().map(|k| &**k))
            .collect();
        names.sort_unstable();
        names.dedup();
        let total = names.len();
        names.truncate(max);
        Ok((names.into_iter().map(str::to_owned).collect(), total))
    }

    /// Number of Assets.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether an Asset of this name is indexed.
    pub fn contains(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    /// How many Assets list `source` among their sources.
    pub fn count_source(&self, source: &str) -> usize {
        let Some(sym) = self.interner.lookup(source) else {
            return 0;
        };
        self.docs().filter(|d| d.sources.contains(&sym)).count()
    }

    /// Every document.
    pub fn docs(&self) -> impl Iterator<Item = &AssetDoc> {
        self.docs.iter().flatten()
    }

    /// Run `query`, anchoring relative dates at `now` (Unix seconds), and
    /// return at most `limit` hits sorted by name (`limit` 0: just count).
    pub fn search(&self, query: &str, now: i64, limit: usize) -> Result<SearchResult, Error> {
        let compiled = compile_text(query, &self.interner, now)?;
        // Pass 1, in slot order: which slots match; large indexes are
        // split over the cores, each scanning its own run of slots.
        let mut matched = vec![0u64; self.docs.len().div_ceil(64)];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
        let total = if threads > 1 && self.docs.len() >= PARALLEL_FROM {
            let per = matched.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let workers: Vec<_> = matched
                    .chunks_mut(per)
                    .enumerate()
                    .map(|(i, words)| {
                        let (docs, compiled) = (&self.docs, &compiled);
                        scope.spawn(move || scan(docs, compiled, i * per * 64, words))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .sum()
            })
        } else {
            scan(&self.docs, &compiled, 0, &mut matched)
        };
        let is_match = |slot: usize| matched[slot / 64] & (1 << (slot % 64)) != 0;
        // Pass 2, in name order: the first `limit` of them.
        let mut hits: Vec<&AssetDoc> = Vec::with_capacity(limit.min(total));
        if self.bulk {
            hits = (0..self.docs.len())
                .filter(|&s| is_match(s))
                .filter_map(|s| self.docs[s].as_ref())
                .collect();
            hits.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            hits.truncate(limit);
        } else {
            for &slot in &self.order {
                if hits.len() >= limit {
                    break;
                }
                if is_match(slot as usize)
                    && let Some(d) = &self.docs[slot as usize]
                {
                    hits.push(d);
                }
            }
        }
        Ok(SearchResult {
            total,
            hits: hits.iter().map(|d| d.summary(&self.interner)).collect(),
        })
    }

    /// Counts by kind, category, lifecycle stage and highest severity.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let name = |sym| self.interner.get(sym).to_string();
        for d in self.docs() {
            s.total += 1;
            let kind = d.kind.get().map_or_else(|| "(none)".to_string(), name);
            *s.by_kind.entry(kind).or_default() += 1;
            if let Some(c) = d
                .hardware
                .as_ref()
                .and_then(|h| h.category_path.get().or(h.category.get()))
            {
                *s.by_category.entry(name(c)).or_default() += 1;
            }
            let lc = d.lifecycle.get().map_or_else(|| "(none)".to_string(), name);
            *s.by_lifecycle.entry(lc).or_default() += 1;
            let sev = d
                .max_severity
                .get()
                .map_or_else(|| "none".to_string(), name);
            *s.by_max_severity.entry(sev).or_default() += 1;
        }
        s
    }
}
