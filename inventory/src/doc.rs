//! The searchable view of an Asset: only what queries read, with repeated
//! strings interned, so 100,000 Assets fit in a few tens of MiB.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sightline_crds::asset::{Asset, Product};
use smallvec::SmallVec;

/// An interned string.
pub type Sym = u32;

/// Interned strings: vendors, products, versions, categories, tag keys and
/// values — the low-cardinality text of an inventory. Symbols are never
/// freed; their number is bounded by the distinct values ever seen.
#[derive(Default, Debug)]
pub struct Interner {
    ids: HashMap<Box<str>, Sym>,
    strings: Vec<Box<str>>,
}

impl Interner {
    /// The symbol of `s`, adding it if new.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        // u32::MAX is `OptSym::NONE`; an inventory never has that many
        // distinct strings, and if it did the extra ones would share a symbol.
        let id = Sym::try_from(self.strings.len()).map_or(Sym::MAX - 1, |id| id.min(Sym::MAX - 1));
        self.strings.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    /// The symbol of `s`, if it was ever interned.
    pub fn lookup(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    /// The string of a symbol.
    pub fn get(&self, sym: Sym) -> &str {
        self.strings.get(sym as usize).map_or("", |s| s)
    }

    /// How many symbols there are.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Every symbol with its string.
    pub fn iter(&self) -> impl Iterator<Item = (Sym, &str)> {
        self.strings
            .iter()
            .enumerate()
            .map(|(i, s)| (i as Sym, &**s))
    }
}

/// An optional symbol in four bytes (`Option<u32>` takes eight): the index
/// is scanned whole by every query, so its size is its speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptSym(u32);

impl OptSym {
    /// No symbol.
    pub const NONE: OptSym = OptSym(u32::MAX);

    /// The symbol, if any.
    pub fn get(self) -> Option<Sym> {
        (self.0 != u32::MAX).then_some(self.0)
    }
}

impl Default for OptSym {
    fn default() -> Self {
        OptSym::NONE
    }
}

impl From<Option<Sym>> for OptSym {
    fn from(s: Option<Sym>) -> Self {
        s.map_or(OptSym::NONE, OptSym)
    }
}

/// An optional number (a count, or Unix seconds) in eight bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptNum(i64);

impl OptNum {
    /// No number.
    pub const NONE: OptNum = OptNum(i64::MIN);

    /// The number, if any.
    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }
}

impl Default for OptNum {
    fn default() -> Self {
        OptNum::NONE
    }
}

impl From<Option<i64>> for OptNum {
    fn from(n: Option<i64>) -> Self {
        n.filter(|&n| n != i64::MIN).map_or(OptNum::NONE, OptNum)
    }
}

/// A normalized product, searchable.
#[derive(Clone, Debug, Default)]
pub struct ProductDoc {
    /// Vendor.
    pub vendor: OptSym,
    /// Product.
    pub product: OptSym,
    /// Version.
    pub version: OptSym,
    /// Category.
    pub category: OptSym,
    /// `Category / Subcategory`.
    pub category_path: OptSym,
    /// Subcategory.
    pub subcategory: OptSym,
    /// Lifecycle stage.
    pub stage: OptSym,
    /// Lifecycle dates, as Unix seconds: GA, end of sale, end of life, end of service.
    pub dates: [OptNum; 4],
}

/// A vulnerability, searchable.
#[derive(Clone, Debug, Default)]
pub struct VulnDoc {
    /// Advisory ID.
    pub id: OptSym,
    /// Package.
    pub package: OptSym,
    /// Installed version.
    pub installed: OptSym,
    /// Fixed version.
    pub fixed: OptSym,
    /// Severity.
    pub severity: OptSym,
}

/// An Asset as the index holds it.
#[derive(Clone, Debug, Default)]
pub struct AssetDoc {
    /// Object name.
    pub name: Box<str>,
    /// Kind.
    pub kind: OptSym,
    /// Identity (unique per Asset, so not interned).
    pub identity: Option<Box<str>>,
    /// A name a person reads (near-unique, so not interned).
    pub display_name: Option<Box<str>>,
    /// Normalized hardware.
    pub hardware: Option<ProductDoc>,
    /// Normalized OS.
    pub os: Option<ProductDoc>,
    /// Normalized software.
    pub software: Box<[ProductDoc]>,
    /// Vulnerability counts: critical, high, medium, low, unknown.
    pub vuln_counts: [OptNum; 5],
    /// The worst vulnerabilities.
    pub vulns: Box<[VulnDoc]>,
    /// Misconfigurations, runtime violations, certificate problems.
    pub other_findings: [OptNum; 3],
    /// The highest severity.
    pub max_severity: OptSym,
    /// The Asset's lifecycle stage.
    pub lifecycle: OptSym,
    /// Tags, key and value; a few inline, so matching a tag does not chase
    /// a pointer per Asset (that cache miss was most of a tag query's time).
    pub tags: SmallVec<[(Sym, Sym); 4]>,
    /// Raw facts flattened to dotted paths; values are often unique, so not interned.
    pub observed: Box<[(Sym, Box<str>)]>,
    /// Sensors that saw it (usually one or two: inline).
    pub sources: SmallVec<[Sym; 2]>,
    /// Their types.
    pub source_types: SmallVec<[Sym; 2]>,
    /// First seen, Unix seconds.
    pub first_seen: OptNum,
    /// Last seen, Unix seconds.
    pub last_seen: OptNum,
    /// Managed.
    pub managed: Option<bool>,
}

/// Most raw facts kept per Asset, and the longest value, so one Asset with
/// an enormous `observed` cannot blow up the index.
const MAX_OBSERVED: usize = 256;
const MAX_OBSERVED_VALUE: usize = 1024;

fn date_secs(d: &Option<String>) -> Option<i64> {
    let d: jiff::civil::Date = d.as_deref()?.parse().ok()?;
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

fn product(p: &Product, i: &mut Interner) -> ProductDoc {
    let mut s = |v: &Option<String>| OptSym::from(v.as_deref().map(|v| i.intern(v)));
    let lc = p.lifecycle.as_ref();
    let mut doc = ProductDoc {
        vendor: s(&p.vendor),
        product: s(&p.product),
        version: s(&p.version),
        category: s(&p.category),
        subcategory: s(&p.subcategory),
        stage: lc.map(|l| i.intern(stage_str(l.stage))).into(),
        dates: [OptNum::NONE; 4],
        category_path: OptSym::NONE,
    };
    if let (Some(c), Some(sc)) = (&p.category, &p.subcategory) {
        doc.category_path = OptSym::from(Some(i.intern(&format!("{c} / {sc}"))));
    }
    if let Some(l) = lc {
        doc.dates = [
            date_secs(&l.ga_date).into(),
            date_secs(&l.eos_date).into(),
            date_secs(&l.eol_date).into(),
            date_secs(&l.eo_service_date).into(),
        ];
    }
    doc
}

/// A lifecycle stage as written in the API.
pub fn stage_str(stage: sightline_crds::asset::LifecycleStage) -> &'static str {
    use sightline_crds::asset::LifecycleStage as S;
    match stage {
        S::GeneralAvailability => "GeneralAvailability",
        S::EndOfSale => "EndOfSale",
        S::EndOfLife => "EndOfLife",
        S::EndOfService => "EndOfService",
        S::Unidentified => "Unidentified",
        S::Unknown => "Unknown",
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    if out.len() >= MAX_OBSERVED {
        return;
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(items) => {
            // Each element under the same path: `observed.ports:443` finds
            // an Asset whose ports include 443.
            for item in items {
                flatten(prefix, item, out);
            }
        }
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => out.push((prefix.to_string(), truncate(s))),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_OBSERVED_VALUE {
        return s.to_string();
    }
    let mut end = MAX_OBSERVED_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl AssetDoc {
    /// The searchable view of `asset`.
    pub fn from_asset(asset: &Asset, i: &mut Interner) -> AssetDoc {
        let labels = asset.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        let status = asset.status.clone().unwrap_or_default();
        let normalized = status.normalized.unwrap_or_default();
        let mut observed = Vec::new();
        for (k, v) in &status.observed {
            flatten(k, v, &mut observed);
        }
        let vulns = status
            .findings
            .as_ref()
            .and_then(|f| f.vulnerabilities.as_ref());
        let findings = status.findings.as_ref();
        let mut s = |v: &str| i.intern(v);
        let mut sources = SmallVec::new();
        let mut source_types = SmallVec::new();
        for src in &status.sources {
            sources.push(s(&src.sensor));
            if let Some(t) = &src.r#type {
                source_types.push(s(t));
            }
        }
        AssetDoc {
            name: asset.metadata.name.as_deref().unwrap_or_default().into(),
            kind: status.kind.map(|k| s(k.as_str())).into(),
            identity: status.identity.as_deref().map(Into::into),
            display_name: status.display_name.as_deref().map(Into::into),
            max_severity: label(sightline_crds::asset::LABEL_MAX_SEVERITY)
                .map(&mut s)
                .into(),
            lifecycle: label(sightline_crds::asset::LABEL_LIFECYCLE)
                .map(&mut s)
                .into(),
            tags: status.tags.iter().map(|(k, v)| (s(k), s(v))).collect(),
            observed: observed
                .into_iter()
                .map(|(k, v)| (s(&k), v.into_boxed_str()))
                .collect(),
            vuln_counts: vulns.map_or([OptNum::NONE; 5], |v| {
                [v.critical, v.high, v.medium, v.low, v.unknown].map(|n| Some(n).into())
            }),
            vulns: vulns
                .map(|v| {
                    v.top
                        .iter()
                        .map(|t| VulnDoc {
                            id: Some(s(&t.id)).into(),
                            package: Some(s(&t.package)).into(),
                            installed: Some(s(&t.installed)).into(),
                            fixed: t.fixed.as_deref().map(&mut s).into(),
                            severity: Some(s(&t.severity)).into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            other_findings: [
                findings.and_then(|f| f.misconfigurations).into(),
                findings.and_then(|f| f.runtime).into(),
                findings.and_then(|f| f.certificates).into(),
            ],
            sources,
            source_types,
            first_seen: status.first_seen.map(|t| t.0.as_second()).into(),
            last_seen: status.last_seen.map(|t| t.0.as_second()).into(),
            managed: status.managed,
            hardware: normalized.hardware.as_ref().map(|p| product(p, i)),
            os: normalized.os.as_ref().map(|p| product(p, i)),
            software: normalized.software.iter().map(|p| product(p, i)).collect(),
        }
    }

    /// A short, serializable summary for search results.
    pub fn summary(&self, i: &Interner) -> Hit {
        let s = |v: OptSym| v.get().map(|v| i.get(v).to_string());
        let os = self.os.as_ref();
        Hit {
            name: self.name.to_string(),
            kind: s(self.kind),
            identity: self.identity.as_deref().map(str::to_string),
            display_name: self.display_name.as_deref().map(str::to_string),
            os: os.and_then(|o| {
                let product = s(o.product)?;
                Some(match s(o.version) {
                    Some(v) => format!("{product} {v}"),
                    None => product,
                })
            }),
            hardware: self
                .hardware
                .as_ref()
                .and_then(|h| s(h.category_path).or(s(h.category))),
            lifecycle: s(self.lifecycle),
            max_severity: s(self.max_severity),
            last_seen: self
                .last_seen
                .get()
                .and_then(|t| jiff::Timestamp::from_second(t).ok())
                .map(|t| t.to_string()),
            tags: self
                .tags
                .iter()
                .map(|&(k, v)| (i.get(k).to_string(), i.get(v).to_string()))
                .collect(),
        }
    }
}

/// One search result.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    /// Object name.
    pub name: String,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A name a person reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// OS product and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Hardware category path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Lifecycle stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    /// Highest severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_severity: Option<String>,
    /// Last seen, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}
