//! Normalization: raw observed facts → canonical, categorized products with
//! their lifecycle.
//!
//! # Observed facts read (keys of `Asset.status.observed`)
//!
//! * `osRelease`: object of os-release keys (`ID`, `ID_LIKE`, `VERSION_ID`,
//!   `VERSION`, `NAME`, `PRETTY_NAME`, …) — see [`parse_os_release`];
//! * `osImage`: free-form OS string (Kubernetes `nodeInfo.osImage`);
//! * `operatingSystem`: `linux` | `windows`;
//! * `dmi`: object `{sysVendor, productName, biosVendor, boardVendor}`;
//! * `hypervisor`, `cloudProvider`: strings;
//! * `device`: object `{vendor, model, sysDescr, type}` for network devices;
//! * `software`: array of `{name, version, vendor?}`.
//!
//! `kernelVersion` is accepted but not used yet. Facts of the wrong JSON
//! type, empty strings and firmware placeholders listed under `junk` in
//! `normalization.yaml` ("To Be Filled By O.E.M.", …) are treated as absent.
//!
//! # Operating system
//!
//! os-release first: `ID` picks the catalog entry and `VERSION_ID` the
//! version (refined by `VERSION` when that starts with a longer form of it,
//! e.g. Ubuntu `22.04` → `22.04.4`). An unknown `ID` yields the product
//! `NAME` and version `VERSION_ID`, categorized by the first `ID_LIKE` entry
//! the catalog knows (the family only: never its vendor or lifecycle). Then
//! `osImage`, by longest known prefix; an unknown image is split into a name
//! and the first token that looks like a version ("FooOS 3.1"). Last,
//! `operatingSystem` alone gives the family (`Operating System/Linux`, or
//! Microsoft `Operating System/Windows`) with stage `Unidentified`.
//!
//! `os` is always present for kinds that have an operating system (`Node`,
//! `ContainerImage`, `Host`): with stage `Unidentified` when nothing
//! identifies it. For other kinds (and no kind) it is present only when
//! facts identify something.
//!
//! # Hardware
//!
//! Hardware rules in order, first match wins (clouds, hypervisors, server/
//! desktop/laptop product lines, network devices by single-purpose vendor
//! then by type hint, then any vendor). `hardware` is always present for
//! `Node`, `Host` and `NetworkDevice` (stage `Unidentified` when nothing
//! matched); for other kinds only when facts identify something.
//!
//! # Software
//!
//! Each `software` entry with a non-empty `name` gives one product: the
//! catalog's when the name matches a rule, else the name as product (and the
//! entry's `vendor`, through the vendor aliases), uncategorized.
//!
//! # Versions
//!
//! Trimmed; an epoch (`1:`) is dropped, then a leading `v` or `go` before a
//! digit, then everything from the first `-`, `+`, `~` or space: the upstream
//! version (`v1.34.4` → `1.34.4`, `go1.22.1` → `1.22.1`,
//! `1:1.6.20-0ubuntu1` → `1.6.20`).
//!
//! # Unidentified vs Unknown
//!
//! * `Unidentified`: too little data to tell what it is — no facts, only a
//!   family (`operatingSystem`, a device type hint without a vendor), or a
//!   product the catalog has lifecycle data for but no version to pick a
//!   cycle with (e.g. Ubuntu without a version).
//! * `Unknown`: identified (vendor or product known) but the catalog has no
//!   lifecycle for it: a product without lifecycle data (Fedora, any
//!   hardware), a version that matches no cycle (Debian 99), a name the
//!   catalog does not know ("FooOS 3.1"), or a version before the cycle's
//!   general availability.

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde_json::{Map, Value};
use sightline_crds::asset::{AssetKind, Lifecycle, LifecycleStage, Normalized, Product};

use super::catalog::{Catalog, Classification};
use super::lifecycle::bare;

/// Case-fold and collapse whitespace: the form every pattern, alias and fact
/// is compared in.
pub fn fold(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A pattern of `normalization.yaml`: `"foo"` equals, `"foo*"` starts with,
/// `"*foo*"` contains, `"*"` any non-empty value; case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Any non-empty value.
    Any,
    /// The whole value.
    Equals(String),
    /// A prefix.
    Prefix(String),
    /// A substring.
    Contains(String),
}

impl Pattern {
    /// Parse a pattern; `None` when it is empty or has a `*` elsewhere than
    /// the allowed places.
    pub fn parse(p: &str) -> Option<Pattern> {
        let p = fold(p);
        if p == "*" {
            return Some(Pattern::Any);
        }
        let (body, pat): (&str, fn(String) -> Pattern) =
            if let Some(inner) = p.strip_prefix('*').and_then(|s| s.strip_suffix('*')) {
                (inner, Pattern::Contains)
            } else if let Some(prefix) = p.strip_suffix('*') {
                (prefix, Pattern::Prefix)
            } else {
                (p.as_str(), Pattern::Equals)
            };
        let body = body.trim();
        if body.is_empty() || body.contains('*') {
            return None;
        }
        Some(pat(body.to_owned()))
    }

    /// Whether an already [`fold`]ed value matches.
    pub fn matches(&self, folded: &str) -> bool {
        match self {
            Pattern::Any => !folded.is_empty(),
            Pattern::Equals(s) => folded == s,
            Pattern::Prefix(s) => folded.starts_with(s.as_str()),
            Pattern::Contains(s) => folded.contains(s.as_str()),
        }
    }
}

/// A fact hardware rules can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// `dmi.sysVendor`.
    DmiSysVendor,
    /// `dmi.productName`.
    DmiProductName,
    /// `dmi.biosVendor`.
    DmiBiosVendor,
    /// `dmi.boardVendor`.
    DmiBoardVendor,
    /// Any of the four DMI strings (tests only, never a value source).
    DmiAny,
    /// `hypervisor`.
    Hypervisor,
    /// `cloudProvider`.
    CloudProvider,
    /// `device.vendor`.
    DeviceVendor,
    /// `device.model`.
    DeviceModel,
    /// `device.type`.
    DeviceType,
    /// `device.sysDescr`.
    DeviceSysDescr,
}

impl Fact {
    /// Parse a fact name as written in `normalization.yaml`.
    pub fn parse(s: &str) -> Option<Fact> {
        Some(match s {
            "dmi.sysVendor" => Fact::DmiSysVendor,
            "dmi.productName" => Fact::DmiProductName,
            "dmi.biosVendor" => Fact::DmiBiosVendor,
            "dmi.boardVendor" => Fact::DmiBoardVendor,
            "dmi.any" => Fact::DmiAny,
            "hypervisor" => Fact::Hypervisor,
            "cloudProvider" => Fact::CloudProvider,
            "device.vendor" => Fact::DeviceVendor,
            "device.model" => Fact::DeviceModel,
            "device.type" => Fact::DeviceType,
            "device.sysDescr" => Fact::DeviceSysDescr,
            _ => return None,
        })
    }

    fn path(self) -> (&'static str, Option<&'static str>) {
        match self {
            Fact::DmiSysVendor => ("dmi", Some("sysVendor")),
            Fact::DmiProductName => ("dmi", Some("productName")),
            Fact::DmiBiosVendor => ("dmi", Some("biosVendor")),
            Fact::DmiBoardVendor => ("dmi", Some("boardVendor")),
            Fact::DmiAny => ("dmi", None),
            Fact::Hypervisor => ("hypervisor", None),
            Fact::CloudProvider => ("cloudProvider", None),
            Fact::DeviceVendor => ("device", Some("vendor")),
            Fact::DeviceModel => ("device", Some("model")),
            Fact::DeviceType => ("device", Some("type")),
            Fact::DeviceSysDescr => ("device", Some("sysDescr")),
        }
    }
}

/// Parse the text of an os-release file into the object sensors put under
/// `observed.osRelease`: `KEY=value` lines, quotes removed, comments and
/// blank lines skipped.
pub fn parse_os_release(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        let v = v
            .replace("\\\"", "\"")
            .replace("\\$", "$")
            .replace("\\\\", "\\");
        out.insert(k.trim().to_owned(), Value::String(v));
    }
    out
}

/// The upstream version of a raw version string (see the module docs), or
/// `None` when nothing is left.
pub fn normalize_version(raw: &str) -> Option<String> {
    let mut v = raw.trim();
    if let Some((epoch, rest)) = v.split_once(':')
        && !epoch.is_empty()
        && epoch.chars().all(|c| c.is_ascii_digit())
    {
        v = rest;
    }
    for prefix in ["v", "V", "go"] {
        if let Some(rest) = v.strip_prefix(prefix)
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            v = rest;
            break;
        }
    }
    let end = v.find(['-', '+', '~', ' ']).unwrap_or(v.len());
    let v = v[..end].trim_end_matches('.');
    (!v.is_empty()).then(|| v.to_owned())
}

/// A non-empty, non-placeholder string at `observed[key]`.
fn top<'a>(cat: &Catalog, observed: &'a BTreeMap<String, Value>, key: &str) -> Option<&'a str> {
    clean(cat, observed.get(key)?)
}

fn clean<'a>(cat: &Catalog, v: &'a Value) -> Option<&'a str> {
    let s = v.as_str()?.trim();
    (!s.is_empty() && !cat.junk.contains(&fold(s))).then_some(s)
}

fn sub<'a>(cat: &Catalog, obj: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a str> {
    clean(cat, obj?.get(key)?)
}

fn fact_values<'a>(
    cat: &Catalog,
    observed: &'a BTreeMap<String, Value>,
    fact: Fact,
) -> Vec<&'a str> {
    let (outer, inner) = fact.path();
    match inner {
        None if fact == Fact::DmiAny => {
            let dmi = observed.get("dmi").and_then(Value::as_object);
            ["sysVendor", "productName", "biosVendor", "boardVendor"]
                .iter()
                .filter_map(|k| sub(cat, dmi, k))
                .collect()
        }
        None => top(cat, observed, outer).into_iter().collect(),
        Some(inner) => {
            let obj = observed.get(outer).and_then(Value::as_object);
            sub(cat, obj, inner).into_iter().collect()
        }
    }
}

impl Catalog {
    /// The canonical vendor for a raw vendor string: its alias target, or the
    /// string itself (trimmed) when the catalog has no alias for it.
    pub fn canonical_vendor(&self, raw: &str) -> String {
        self.vendors
            .get(&fold(raw))
            .cloned()
            .unwrap_or_else(|| raw.trim().to_owned())
    }

    fn lifecycle_of(
        &self,
        vendor: Option<&str>,
        product: Option<&str>,
        version: Option<&str>,
        lifecycle: Option<&str>,
        today: Date,
    ) -> Lifecycle {
        if vendor.is_none() && product.is_none() {
            return bare(LifecycleStage::Unidentified);
        }
        let Some(pl) = lifecycle.and_then(|id| self.lifecycles.get(id)) else {
            return bare(LifecycleStage::Unknown);
        };
        let Some(version) = version else {
            return bare(LifecycleStage::Unidentified);
        };
        match pl.cycle_for(version) {
            Some(c) => c.lifecycle(today),
            None => bare(LifecycleStage::Unknown),
        }
    }

    fn product(&self, class: &Classification, version: Option<String>, today: Date) -> Product {
        let lifecycle = self.lifecycle_of(
            class.vendor.as_deref(),
            class.product.as_deref(),
            version.as_deref(),
            class.lifecycle.as_deref(),
            today,
        );
        Product {
            vendor: class.vendor.clone(),
            product: class.product.clone(),
            version,
            category: class.category.clone(),
            subcategory: class.subcategory.clone(),
            lifecycle: Some(lifecycle),
        }
    }

    fn hardware(&self, observed: &BTreeMap<String, Value>, today: Date) -> Option<Product> {
        let holds = |(fact, pats): &(Fact, Vec<Pattern>)| {
            fact_values(self, observed, *fact)
                .iter()
                .any(|v| pats.iter().any(|p| p.matches(&fold(v))))
        };
        let rule = self
            .hardware
            .iter()
            .find(|r| r.when.iter().any(|alt| alt.iter().all(holds)))?;
        let first = |f: Option<Fact>| {
            f.and_then(|f| {
                fact_values(self, observed, f)
                    .first()
                    .map(|s| s.to_string())
            })
        };
        let mut class = rule.class.clone();
        if class.vendor.is_none() {
            class.vendor = first(rule.vendor_from).map(|v| self.canonical_vendor(&v));
        }
        if class.product.is_none() {
            class.product = first(rule.product_from);
        }
        Some(self.product(&class, None, today))
    }

    fn os(&self, observed: &BTreeMap<String, Value>, today: Date) -> Option<Product> {
        let os_family = top(self, observed, "operatingSystem").map(str::to_ascii_lowercase);
        if let Some(osr) = observed.get("osRelease").and_then(Value::as_object) {
            let osr = Some(osr);
            let version_id = sub(self, osr, "VERSION_ID");
            let version = version_id.and_then(|id| {
                let refined = sub(self, osr, "VERSION")
                    .and_then(|v| v.split_whitespace().next())
                    .filter(|v| {
                        v.len() > id.len() && v.starts_with(id) && v[id.len()..].starts_with('.')
                    });
                normalize_version(refined.unwrap_or(id))
            });
            let id = sub(self, osr, "ID").map(str::to_ascii_lowercase);
            if let Some(&i) = id.as_ref().and_then(|id| self.os_ids.get(id)) {
                return Some(self.product(&self.os[i], version, today));
            }
            let family = sub(self, osr, "ID_LIKE").and_then(|like| {
                like.split_whitespace()
                    .find_map(|l| self.os_ids.get(&l.to_ascii_lowercase()))
                    .map(|&i| &self.os[i])
            });
            let name = sub(self, osr, "NAME").or(sub(self, osr, "PRETTY_NAME"));
            if name.is_some() || family.is_some() {
                let class = Classification {
                    id: String::new(),
                    vendor: None,
                    product: name.map(str::to_owned),
                    category: Some(OS_CATEGORY.to_owned()),
                    subcategory: family
                        .and_then(|f| f.subcategory.clone())
                        .or_else(|| family_subcategory(os_family.as_deref())),
                    lifecycle: None,
                };
                return Some(self.product(&class, version, today));
            }
        }
        if let Some(image) = top(self, observed, "osImage") {
            let folded = fold(image);
            let hit = self.os_images.iter().find(|(prefix, _)| {
                folded.starts_with(prefix.as_str())
                    && !folded[prefix.len()..].starts_with(|c: char| c.is_alphanumeric())
            });
            let (class, rest) = match hit {
                Some((prefix, i)) => (self.os[*i].clone(), folded[prefix.len()..].to_owned()),
                None => {
                    // Unknown OS: the words before the first version-like token.
                    let words: Vec<&str> = image.split_whitespace().collect();
                    let at = words
                        .iter()
                        .position(|w| looks_like_version(w))
                        .unwrap_or(words.len());
                    let name = words[..at].join(" ");
                    let class = Classification {
                        id: String::new(),
                        vendor: None,
                        product: Some(if name.is_empty() {
                            image.to_owned()
                        } else {
                            name
                        }),
                        category: Some(OS_CATEGORY.to_owned()),
                        subcategory: family_subcategory(os_family.as_deref()),
                        lifecycle: None,
                    };
                    (class, words[at..].join(" "))
                }
            };
            let version = rest
                .split_whitespace()
                .map(|t| t.trim_matches(|c| c == '(' || c == ')' || c == ','))
                .find(|t| looks_like_version(t))
                .and_then(normalize_version);
            return Some(self.product(&class, version, today));
        }
        let family = os_family?;
        let subcategory = family_subcategory(Some(&family))?;
        Some(Product {
            vendor: (family == "windows").then(|| "Microsoft".to_owned()),
            product: None,
            version: None,
            category: Some(OS_CATEGORY.to_owned()),
            subcategory: Some(subcategory),
            lifecycle: Some(bare(LifecycleStage::Unidentified)),
        })
    }

    fn software(&self, observed: &BTreeMap<String, Value>, today: Date) -> Vec<Product> {
        let Some(items) = observed.get("software").and_then(Value::as_array) else {
            return Vec::new();
        };
        // The Asset's schema holds at most this many; the first ones win.
        items
            .iter()
            .take(MAX_SOFTWARE)
            .filter_map(|item| {
                let obj = item.as_object();
                let name = sub(self, obj, "name")?;
                let version = sub(self, obj, "version").and_then(normalize_version);
                let folded = fold(name);
                let class = match self
                    .software
                    .iter()
                    .find(|(pats, _)| pats.iter().any(|p| p.matches(&folded)))
                {
                    Some((_, class)) => class.clone(),
                    None => Classification {
                        id: String::new(),
                        vendor: sub(self, obj, "vendor").map(|v| self.canonical_vendor(v)),
                        product: Some(name.to_owned()),
                        category: None,
                        subcategory: None,
                        lifecycle: None,
                    },
                };
                Some(self.product(&class, version, today))
            })
            .collect()
    }
}

const OS_CATEGORY: &str = "Operating System";

/// Most software products kept in `normalized.software` (the CRD's bound).
pub const MAX_SOFTWARE: usize = 100;

fn family_subcategory(family: Option<&str>) -> Option<String> {
    match family? {
        "linux" => Some("Linux".to_owned()),
        "windows" => Some("Windows".to_owned()),
        _ => None,
    }
}

fn looks_like_version(token: &str) -> bool {
    let t = token.strip_prefix(['v', 'V']).unwrap_or(token);
    t.starts_with(|c: char| c.is_ascii_digit())
}

fn unidentified() -> Product {
    Product {
        lifecycle: Some(bare(LifecycleStage::Unidentified)),
        ..Product::default()
    }
}

/// Normalize `observed` (see the module documentation).
pub fn normalize(
    cat: &Catalog,
    kind: Option<AssetKind>,
    observed: &BTreeMap<String, Value>,
    today: Date,
) -> Normalized {
    use AssetKind::*;
    let has_os = matches!(kind, Some(Node | ContainerImage | Host));
    let has_hardware = matches!(kind, Some(Node | Host | NetworkDevice));
    let os = cat
        .os(observed, today)
        .or_else(|| has_os.then(unidentified));
    let hardware = cat
        .hardware(observed, today)
        .or_else(|| has_hardware.then(unidentified))
        // A container is virtual hardware of its own kind; its OS is its
        // image's, which the operator adds from the image's Asset.
        .or_else(|| {
            matches!(kind, Some(Container)).then(|| Product {
                category: Some("Virtualized".into()),
                subcategory: Some("Container".into()),
                ..Product::default()
            })
        });
    Normalized {
        hardware,
        os,
        software: cat.software(observed, today),
    }
}
