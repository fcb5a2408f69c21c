//! Loading and validating the catalog: taxonomy, normalization rules and
//! lifecycle data, from three YAML documents.
//!
//! Validation rejects, with a message naming the data file and the entry:
//! malformed YAML or unknown keys; data versions that differ between the
//! files; empty names; duplicate rule ids, vendor aliases, os-release IDs,
//! osImage prefixes, software names, lifecycle products and cycles;
//! categories or subcategories missing from the taxonomy; references to
//! lifecycle products that do not exist; unknown fact names; bad patterns;
//! dates that do not parse or are out of order (ga ≤ eos ≤ eol ≤
//! eoService where present); `estimated` naming a date that is not there.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::civil::Date;
use serde::Deserialize;
use sightline_crds::asset::{AssetKind, Normalized};

use super::lifecycle::{Cycle, DATE_FIELDS, ProductLifecycle};
use super::normalize::{Fact, Pattern, fold};

/// File name of the taxonomy document, as used in error messages.
pub const TAXONOMY_FILE: &str = "taxonomy.yaml";
/// File name of the normalization document, as used in error messages.
pub const NORMALIZATION_FILE: &str = "normalization.yaml";
/// File name of the lifecycle document, as used in error messages.
pub const LIFECYCLE_FILE: &str = "lifecycle.yaml";

const BUILTIN_TAXONOMY: &str = include_str!("../../catalog/taxonomy.yaml");
const BUILTIN_NORMALIZATION: &str = include_str!("../../catalog/normalization.yaml");
const BUILTIN_LIFECYCLE: &str = include_str!("../../catalog/lifecycle.yaml");

/// Why a catalog could not be loaded. Every message starts with the data file
/// and names the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The document is not valid YAML or does not have the expected shape.
    #[error("{file}: invalid document: {source}")]
    Yaml {
        /// The data file.
        file: &'static str,
        /// The parser's error.
        #[source]
        source: Box<sightline_crds::yaml::Error>,
    },
    /// An entry breaks a rule of the catalog.
    #[error("{file}: {entry}: {problem}")]
    Invalid {
        /// The data file.
        file: &'static str,
        /// The entry at fault, e.g. "product `debian` cycle `12`".
        entry: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(
    file: &'static str,
    entry: impl Into<String>,
    problem: impl Into<String>,
) -> CatalogError {
    CatalogError::Invalid {
        file,
        entry: entry.into(),
        problem: problem.into(),
    }
}

/// A first-level taxonomy category and its subcategories.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// The category ("Network Device").
    pub category: String,
    /// Its subcategories ("Switch", "Router", …).
    pub subcategories: Vec<String>,
}

// ---- documents as written ------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyDoc {
    version: String,
    hardware: Vec<Category>,
    software: Vec<Category>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NormalizationDoc {
    version: String,
    #[serde(default)]
    junk: Vec<String>,
    vendors: Vec<VendorDoc>,
    hardware: Vec<HardwareDoc>,
    operating_systems: Vec<OsDoc>,
    software: Vec<SoftwareDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorDoc {
    name: String,
    aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HardwareDoc {
    id: String,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default)]
    vendor_from: Option<String>,
    #[serde(default)]
    product: Option<String>,
    #[serde(default)]
    product_from: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    subcategory: Option<String>,
    #[serde(default)]
    lifecycle: Option<String>,
    when: Vec<BTreeMap<String, OneOrMany>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OsDoc {
    id: String,
    vendor: String,
    product: String,
    category: String,
    subcategory: Option<String>,
    #[serde(default)]
    lifecycle: Option<String>,
    ids: Vec<String>,
    images: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SoftwareDoc {
    id: String,
    vendor: String,
    product: String,
    category: String,
    subcategory: Option<String>,
    #[serde(default)]
    lifecycle: Option<String>,
    names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleDoc {
    version: String,
    products: Vec<ProductDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductDoc {
    id: String,
    name: String,
    stages: String,
    source: Vec<String>,
    /// Per date kind, the page that states that kind of date for the cycles.
    #[serde(default)]
    sources: BTreeMap<String, String>,
    retrieved: String,
    cycles: Vec<CycleDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CycleDoc {
    cycle: String,
    #[serde(default)]
    ga_date: Option<String>,
    #[serde(default)]
    eos_date: Option<String>,
    #[serde(default)]
    eol_date: Option<String>,
    #[serde(default)]
    eo_service_date: Option<String>,
    #[serde(default)]
    estimated: Vec<String>,
    /// Per date kind, a page for this cycle's date other than the product's.
    #[serde(default)]
    sources: BTreeMap<String, String>,
}

/// Checks a `sources:` map: keys are date kinds, values https:// URLs.
fn check_sources(entry: &str, sources: &BTreeMap<String, String>) -> Result<(), CatalogError> {
    for (kind, url) in sources {
        if !DATE_FIELDS.contains(&kind.as_str()) {
            return Err(invalid(
                LIFECYCLE_FILE,
                entry.to_owned(),
                format!("sources `{kind}` is not one of gaDate, eosDate, eolDate, eoServiceDate"),
            ));
        }
        if !url.starts_with("https://") || url.contains(char::is_whitespace) {
            return Err(invalid(
                LIFECYCLE_FILE,
                entry.to_owned(),
                format!("sources `{kind}`: `{url}` is not an https:// URL"),
            ));
        }
    }
    Ok(())
}

// ---- compiled rules --------------------------------------------------------

/// What a matched rule says about the product.
#[derive(Debug, Clone)]
pub(crate) struct Classification {
    pub id: String,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub lifecycle: Option<String>,
}

/// A hardware rule: alternatives of (fact, patterns) conjunctions.
#[derive(Debug, Clone)]
pub(crate) struct HardwareRule {
    pub class: Classification,
    pub vendor_from: Option<Fact>,
    pub product_from: Option<Fact>,
    pub when: Vec<Vec<(Fact, Vec<Pattern>)>>,
}

/// The catalog: taxonomy, normalization rules and lifecycle data, validated.
#[derive(Debug, Clone)]
pub struct Catalog {
    version: String,
    hardware_taxonomy: Vec<Category>,
    software_taxonomy: Vec<Category>,
    pub(crate) junk: BTreeSet<String>,
    /// Lowercased alias → canonical vendor.
    pub(crate) vendors: HashMap<String, String>,
    pub(crate) hardware: Vec<HardwareRule>,
    pub(crate) os: Vec<Classification>,
    /// Lowercased os-release ID → index into `os`.
    pub(crate) os_ids: HashMap<String, usize>,
    /// (lowercased osImage prefix, index into `os`), longest prefix first.
    pub(crate) os_images: Vec<(String, usize)>,
    pub(crate) software: Vec<(Vec<Pattern>, Classification)>,
    pub(crate) lifecycles: HashMap<String, ProductLifecycle>,
}

impl Catalog {
    /// The catalog compiled into the binary (data files embedded with
    /// `include_str!` from `inventory/catalog/*.yaml`).
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::from_yaml(BUILTIN_TAXONOMY, BUILTIN_NORMALIZATION, BUILTIN_LIFECYCLE)
    }

    /// Load and validate from the three YAML documents.
    pub fn from_yaml(
        taxonomy: &str,
        normalization: &str,
        lifecycle: &str,
    ) -> Result<Catalog, CatalogError> {
        let tax: TaxonomyDoc = parse(TAXONOMY_FILE, taxonomy)?;
        let norm: NormalizationDoc = parse(NORMALIZATION_FILE, normalization)?;
        let life: LifecycleDoc = parse(LIFECYCLE_FILE, lifecycle)?;

        if tax.version.trim().is_empty() {
            return Err(invalid(TAXONOMY_FILE, "version", "is empty"));
        }
        for (file, v) in [
            (NORMALIZATION_FILE, &norm.version),
            (LIFECYCLE_FILE, &life.version),
        ] {
            if *v != tax.version {
                return Err(invalid(
                    file,
                    "version",
                    format!(
                        "`{v}` differs from {TAXONOMY_FILE} version `{}`",
                        tax.version
                    ),
                ));
            }
        }

        check_taxonomy("hardware", &tax.hardware)?;
        check_taxonomy("software", &tax.software)?;
        let lifecycles = compile_lifecycles(life.products)?;

        let check_class = |section: &str,
                           taxonomy: &[Category],
                           class: &Classification|
         -> Result<(), CatalogError> {
            let entry = format!("{section} rule `{}`", class.id);
            if class.id.trim().is_empty() {
                return Err(invalid(
                    NORMALIZATION_FILE,
                    section,
                    "a rule has an empty id",
                ));
            }
            match (&class.category, &class.subcategory) {
                (None, Some(sub)) => {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        entry,
                        format!("subcategory `{sub}` without a category"),
                    ));
                }
                (Some(cat), sub) => {
                    let Some(c) = taxonomy.iter().find(|c| &c.category == cat) else {
                        return Err(invalid(
                            NORMALIZATION_FILE,
                            entry,
                            format!("category `{cat}` is not in {TAXONOMY_FILE} ({section})"),
                        ));
                    };
                    if let Some(sub) = sub
                        && !c.subcategories.contains(sub)
                    {
                        return Err(invalid(
                            NORMALIZATION_FILE,
                            entry,
                            format!("subcategory `{cat}/{sub}` is not in {TAXONOMY_FILE}"),
                        ));
                    }
                }
                (None, None) => {}
            }
            if let Some(l) = &class.lifecycle
                && !lifecycles.contains_key(l)
            {
                return Err(invalid(
                    NORMALIZATION_FILE,
                    entry,
                    format!("lifecycle `{l}` is not a product in {LIFECYCLE_FILE}"),
                ));
            }
            for (what, v) in [("vendor", &class.vendor), ("product", &class.product)] {
                if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        entry,
                        format!("{what} is empty"),
                    ));
                }
            }
            Ok(())
        };

        let mut rule_ids = BTreeSet::new();
        let mut unique_id = |section: &str, id: &str| {
            if rule_ids.insert((section.to_owned(), id.to_owned())) {
                Ok(())
            } else {
                Err(invalid(
                    NORMALIZATION_FILE,
                    format!("{section} rule `{id}`"),
                    "duplicate rule id",
                ))
            }
        };

        // Vendors.
        let mut vendors = HashMap::new();
        for v in &norm.vendors {
            if v.name.trim().is_empty() {
                return Err(invalid(
                    NORMALIZATION_FILE,
                    "vendors",
                    "a vendor has an empty name",
                ));
            }
            for alias in std::iter::once(&v.name).chain(&v.aliases) {
                let key = fold(alias);
                if key.is_empty() {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        format!("vendor `{}`", v.name),
                        "empty alias",
                    ));
                }
                if let Some(other) = vendors.insert(key, v.name.clone())
                    && other != v.name
                {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        format!("vendor `{}`", v.name),
                        format!("alias `{alias}` is already an alias of vendor `{other}`"),
                    ));
                }
            }
        }

        // Hardware.
        let mut hardware = Vec::new();
        for h in norm.hardware {
            let entry = format!("hardware rule `{}`", h.id);
            let class = Classification {
                id: h.id.clone(),
                vendor: h.vendor,
                product: h.product,
                category: h.category,
                subcategory: h.subcategory,
                lifecycle: h.lifecycle,
            };
            check_class("hardware", &tax.hardware, &class)?;
            unique_id("hardware", &h.id)?;
            let from = |what: &str, f: Option<String>| -> Result<Option<Fact>, CatalogError> {
                f.map(|f| match Fact::parse(&f) {
                    Some(Fact::DmiAny) | None => Err(invalid(
                        NORMALIZATION_FILE,
                        entry.clone(),
                        format!("{what} `{f}` is not a single fact"),
                    )),
                    Some(fact) => Ok(fact),
                })
                .transpose()
            };
            let vendor_from = from("vendorFrom", h.vendor_from)?;
            let product_from = from("productFrom", h.product_from)?;
            if class.vendor.is_some() == vendor_from.is_some() {
                return Err(invalid(
                    NORMALIZATION_FILE,
                    entry,
                    "needs exactly one of `vendor` and `vendorFrom`",
                ));
            }
            if class.product.is_some() && product_from.is_some() {
                return Err(invalid(
                    NORMALIZATION_FILE,
                    entry,
                    "has both `product` and `productFrom`",
                ));
            }
            if h.when.is_empty() {
                return Err(invalid(NORMALIZATION_FILE, entry, "`when` is empty"));
            }
            let mut when = Vec::new();
            for alt in h.when {
                if alt.is_empty() {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        entry,
                        "an alternative of `when` is empty",
                    ));
                }
                let mut conds = Vec::new();
                for (fact, pats) in alt {
                    let Some(f) = Fact::parse(&fact) else {
                        return Err(invalid(
                            NORMALIZATION_FILE,
                            entry,
                            format!("unknown fact `{fact}`"),
                        ));
                    };
                    let pats = match pats {
                        OneOrMany::One(p) => vec![p],
                        OneOrMany::Many(p) => p,
                    };
                    conds.push((f, patterns(&entry, &pats)?));
                }
                when.push(conds);
            }
            hardware.push(HardwareRule {
                class,
                vendor_from,
                product_from,
                when,
            });
        }

        // Operating systems.
        let mut os = Vec::new();
        let mut os_ids = HashMap::new();
        let mut os_images = Vec::new();
        let mut seen_images = HashMap::new();
        for o in norm.operating_systems {
            let class = Classification {
                id: o.id.clone(),
                vendor: Some(o.vendor),
                product: Some(o.product),
                category: Some(o.category),
                subcategory: o.subcategory,
                lifecycle: o.lifecycle,
            };
            check_class("operatingSystems", &tax.software, &class)?;
            unique_id("operatingSystems", &o.id)?;
            let entry = format!("operatingSystems rule `{}`", o.id);
            let idx = os.len();
            for id in &o.ids {
                let key = id.trim().to_ascii_lowercase();
                if key.is_empty() {
                    return Err(invalid(NORMALIZATION_FILE, entry, "empty os-release ID"));
                }
                if let Some(prev) = os_ids.insert(key, idx) {
                    let other: &Classification = &os[prev];
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        entry,
                        format!(
                            "os-release ID `{id}` is already used by rule `{}`",
                            other.id
                        ),
                    ));
                }
            }
            for img in &o.images {
                let key = fold(img);
                if key.is_empty() {
                    return Err(invalid(NORMALIZATION_FILE, entry, "empty osImage prefix"));
                }
                if let Some(prev) = seen_images.insert(key.clone(), o.id.clone()) {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        entry,
                        format!("osImage prefix `{img}` is already used by rule `{prev}`"),
                    ));
                }
                os_images.push((key, idx));
            }
            os.push(class);
        }
        os_images.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));

        // Software.
        let mut software = Vec::new();
        let mut seen_names: HashMap<String, String> = HashMap::new();
        for s in norm.software {
            let class = Classification {
                id: s.id.clone(),
                vendor: Some(s.vendor),
                product: Some(s.product),
                category: Some(s.category),
                subcategory: s.subcategory,
                lifecycle: s.lifecycle,
            };
            check_class("software", &tax.software, &class)?;
            unique_id("software", &s.id)?;
            let entry = format!("software rule `{}`", s.id);
            if s.names.is_empty() {
                return Err(invalid(NORMALIZATION_FILE, entry, "`names` is empty"));
            }
            for n in &s.names {
                if let Some(prev) = seen_names.insert(fold(n), s.id.clone()) {
                    return Err(invalid(
                        NORMALIZATION_FILE,
                        entry,
                        format!("name `{n}` is already used by rule `{prev}`"),
                    ));
                }
            }
            software.push((patterns(&entry, &s.names)?, class));
        }

        Ok(Catalog {
            version: tax.version,
            hardware_taxonomy: tax.hardware,
            software_taxonomy: tax.software,
            junk: norm.junk.iter().map(|j| fold(j)).collect(),
            vendors,
            hardware,
            os,
            os_ids,
            os_images,
            software,
            lifecycles,
        })
    }

    /// Catalog data version (e.g. "2026.11.26"), from the data files (all
    /// three must agree).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Normalize an asset's observed facts, lifecycle stages computed as of
    /// `today`. See [`super::normalize`] for the facts read and for when
    /// `hardware`/`os` are present and `Unidentified` vs `Unknown`.
    pub fn normalize(
        &self,
        kind: Option<AssetKind>,
        observed: &BTreeMap<String, serde_json::Value>,
        today: Date,
    ) -> Normalized {
        super::normalize::normalize(self, kind, observed, today)
    }

    /// The hardware taxonomy: categories and their subcategories.
    pub fn hardware_categories(&self) -> &[Category] {
        &self.hardware_taxonomy
    }

    /// The software and operating-system taxonomy: categories and their
    /// subcategories.
    pub fn software_categories(&self) -> &[Category] {
        &self.software_taxonomy
    }

    /// The lifecycle of a product by its id in `lifecycle.yaml` (e.g. `debian`).
    pub fn lifecycle(&self, id: &str) -> Option<&ProductLifecycle> {
        self.lifecycles.get(id)
    }

    /// Ids of every product with lifecycle data, sorted.
    pub fn lifecycle_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.lifecycles.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Every lifecycle id the normalization rules refer to, sorted and deduplicated.
    pub fn referenced_lifecycles(&self) -> Vec<&str> {
        let classes = self
            .hardware
            .iter()
            .map(|h| &h.class)
            .chain(&self.os)
            .chain(self.software.iter().map(|(_, c)| c));
        let set: BTreeSet<&str> = classes.filter_map(|c| c.lifecycle.as_deref()).collect();
        set.into_iter().collect()
    }
}

fn parse<'de, T: Deserialize<'de>>(file: &'static str, text: &'de str) -> Result<T, CatalogError> {
    sightline_crds::yaml::from_str(text).map_err(|source| CatalogError::Yaml {
        file,
        source: Box::new(source),
    })
}

fn patterns(entry: &str, pats: &[String]) -> Result<Vec<Pattern>, CatalogError> {
    if pats.is_empty() {
        return Err(invalid(NORMALIZATION_FILE, entry, "empty pattern list"));
    }
    pats.iter()
        .map(|p| {
            Pattern::parse(p)
                .ok_or_else(|| invalid(NORMALIZATION_FILE, entry, format!("invalid pattern `{p}`")))
        })
        .collect()
}

fn check_taxonomy(section: &str, cats: &[Category]) -> Result<(), CatalogError> {
    let mut seen = BTreeSet::new();
    for c in cats {
        let entry = format!("{section} category `{}`", c.category);
        if c.category.trim().is_empty() {
            return Err(invalid(
                TAXONOMY_FILE,
                section,
                "a category has an empty name",
            ));
        }
        if !seen.insert(&c.category) {
            return Err(invalid(TAXONOMY_FILE, entry, "duplicate category"));
        }
        let mut subs = BTreeSet::new();
        for s in &c.subcategories {
            if s.trim().is_empty() {
                return Err(invalid(TAXONOMY_FILE, entry, "empty subcategory"));
            }
            if !subs.insert(s) {
                return Err(invalid(
                    TAXONOMY_FILE,
                    entry,
                    format!("duplicate subcategory `{s}`"),
                ));
            }
        }
    }
    Ok(())
}

fn compile_lifecycles(
    products: Vec<ProductDoc>,
) -> Result<HashMap<String, ProductLifecycle>, CatalogError> {
    let mut out = HashMap::new();
    for p in products {
        let entry = format!("product `{}`", p.id);
        if p.id.trim().is_empty() {
            return Err(invalid(
                LIFECYCLE_FILE,
                "products",
                "a product has an empty id",
            ));
        }
        if out.contains_key(&p.id) {
            return Err(invalid(LIFECYCLE_FILE, entry, "duplicate product"));
        }
        if p.source.is_empty() || p.source.iter().any(|s| !s.starts_with("https://")) {
            return Err(invalid(
                LIFECYCLE_FILE,
                entry,
                "`source` must list at least one https:// URL, and only URLs",
            ));
        }
        check_sources(&entry, &p.sources)?;
        let retrieved = p.retrieved.parse::<Date>().map_err(|e| {
            invalid(
                LIFECYCLE_FILE,
                entry.clone(),
                format!("retrieved `{}` is not a date: {e}", p.retrieved),
            )
        })?;
        if p.cycles.is_empty() {
            return Err(invalid(LIFECYCLE_FILE, entry, "no cycles"));
        }
        let mut cycles: Vec<Cycle> = Vec::new();
        for c in p.cycles {
            let entry = format!("product `{}` cycle `{}`", p.id, c.cycle);
            if c.cycle.is_empty() || c.cycle.split('.').any(str::is_empty) {
                return Err(invalid(
                    LIFECYCLE_FILE,
                    entry,
                    "cycle must be dot-separated, non-empty components",
                ));
            }
            if cycles.iter().any(|o| o.cycle == c.cycle) {
                return Err(invalid(LIFECYCLE_FILE, entry, "duplicate cycle"));
            }
            let raw = [&c.ga_date, &c.eos_date, &c.eol_date, &c.eo_service_date];
            let mut dates = [None; 4];
            for (i, r) in raw.iter().enumerate() {
                if let Some(r) = r {
                    dates[i] = Some(r.parse::<Date>().map_err(|e| {
                        invalid(
                            LIFECYCLE_FILE,
                            entry.clone(),
                            format!("{} `{r}` is not a date: {e}", DATE_FIELDS[i]),
                        )
                    })?);
                }
            }
            if dates.iter().all(Option::is_none) {
                return Err(invalid(LIFECYCLE_FILE, entry, "has no dates"));
            }
            // Every date says where it comes from: the cycle's own page for
            // that kind of date, or the product's.
            check_sources(&entry, &c.sources)?;
            let mut sources = BTreeMap::new();
            for (i, kind) in DATE_FIELDS.iter().enumerate() {
                if dates[i].is_none() {
                    if c.sources.contains_key(*kind) {
                        return Err(invalid(
                            LIFECYCLE_FILE,
                            entry,
                            format!("sources `{kind}` but there is no {kind}"),
                        ));
                    }
                    continue;
                }
                let Some(url) = c.sources.get(*kind).or_else(|| p.sources.get(*kind)) else {
                    return Err(invalid(
                        LIFECYCLE_FILE,
                        entry,
                        format!(
                            "{kind} has no source: add `sources: {{ {kind}: https://… }}` to the cycle or the product"
                        ),
                    ));
                };
                sources.insert((*kind).to_owned(), url.clone());
            }
            for i in 0..4 {
                for j in i + 1..4 {
                    if let (Some(a), Some(b)) = (dates[i], dates[j])
                        && b < a
                    {
                        return Err(invalid(
                            LIFECYCLE_FILE,
                            entry,
                            format!("{} {b} is before {} {a}", DATE_FIELDS[j], DATE_FIELDS[i]),
                        ));
                    }
                }
            }
            let mut est = BTreeSet::new();
            for e in &c.estimated {
                let Some(i) = DATE_FIELDS.iter().position(|f| f == e) else {
                    return Err(invalid(
                        LIFECYCLE_FILE,
                        entry,
                        format!(
                            "estimated `{e}` is not one of gaDate, eosDate, eolDate, eoServiceDate"
                        ),
                    ));
                };
                if dates[i].is_none() {
                    return Err(invalid(
                        LIFECYCLE_FILE,
                        entry,
                        format!("estimated `{e}` but there is no {e}"),
                    ));
                }
                if !est.insert(i) {
                    return Err(invalid(
                        LIFECYCLE_FILE,
                        entry,
                        format!("estimated `{e}` listed twice"),
                    ));
                }
            }
            cycles.push(Cycle {
                cycle: c.cycle,
                ga: dates[0],
                eos: dates[1],
                eol: dates[2],
                eo_service: dates[3],
                estimated: est.into_iter().map(|i| DATE_FIELDS[i].to_owned()).collect(),
                sources,
            });
        }
        out.insert(
            p.id.clone(),
            ProductLifecycle {
                id: p.id,
                name: p.name,
                stages: p.stages,
                source: p.source,
                retrieved,
                cycles,
            },
        );
    }
    Ok(out)
}
