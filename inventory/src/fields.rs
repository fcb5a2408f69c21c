//! The fields a query can name, with their types.
//!
//! Field names follow the Asset status (`os.lifecycle.stage`,
//! `findings.vulnerabilities.critical`) and are matched case-insensitively.
//! `tags.<key>` and `observed.<key>` name any tag or raw observed fact.

use std::fmt;

/// What kind of values a field holds, which decides the operators it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Text: `:` with wildcards, case-insensitive unless in backticks.
    Text,
    /// A whole number: `:`, comparisons, ranges.
    Number,
    /// A point in time: comparisons and ranges with dates or `now-7d`.
    Date,
    /// A version: comparisons and ranges compare numerically part by part;
    /// `:` matches the version or any version it is a prefix of (`12` matches `12.5`).
    Version,
    /// `true` or `false`.
    Bool,
    /// A list of records, searched with `field:(query)`: some element must match.
    List,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Date => "date",
            FieldType::Version => "version",
            FieldType::Bool => "bool",
            FieldType::List => "list",
        })
    }
}

/// Which normalized product a product field reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// `hardware.*`
    Hardware,
    /// `os.*`
    Os,
}

/// A field of a normalized product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductField {
    /// Canonical vendor.
    Vendor,
    /// Canonical product.
    Product,
    /// Version.
    Version,
    /// Category; also matches `Category / Subcategory`.
    Category,
    /// Subcategory.
    Subcategory,
    /// Lifecycle stage.
    Stage,
    /// General availability date.
    GaDate,
    /// End of sale date.
    EosDate,
    /// End of life date.
    EolDate,
    /// End of service date.
    EoServiceDate,
}

/// A field of one vulnerability in `findings.vulnerabilities.top`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VulnField {
    /// Advisory ID.
    Id,
    /// Package name.
    Package,
    /// Installed version.
    Installed,
    /// Fixed version.
    Fixed,
    /// Severity level.
    Severity,
}

/// A resolved field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// The Asset's object name.
    Name,
    /// `kind`
    Kind,
    /// `identity`
    Identity,
    /// `displayName`
    DisplayName,
    /// `hardware.*` and `os.*`
    Product(Which, ProductField),
    /// `software`, a list of products.
    Software,
    /// A field of a software element, inside `software:(…)`.
    SoftwareField(ProductField),
    /// Vulnerability counts by severity: 0 critical … 4 unknown.
    VulnCount(usize),
    /// `findings.vulnerabilities.top`, a list.
    Vulnerabilities,
    /// A field of a vulnerability, inside `findings.vulnerabilities.top:(…)`.
    VulnField(VulnField),
    /// `findings.misconfigurations`
    Misconfigurations,
    /// `findings.runtime`
    RuntimeViolations,
    /// `findings.certificates`
    CertificateProblems,
    /// `maxSeverity`, the highest severity among the findings.
    MaxSeverity,
    /// `lifecycle`, the Asset's overall lifecycle stage (its label).
    Lifecycle,
    /// `tags.<key>`
    Tag(String),
    /// `observed.<key>`: a raw fact, dotted path into `status.observed`.
    Observed(String),
    /// `sources.sensor`
    SourceSensor,
    /// `sources.type`
    SourceType,
    /// `firstSeen`
    FirstSeen,
    /// `lastSeen`
    LastSeen,
    /// `managed`
    Managed,
}

/// A field as listed by `sightline search --fields`.
#[derive(Clone, Debug)]
pub struct FieldInfo {
    /// Its name in queries.
    pub name: String,
    /// Its type.
    pub ty: FieldType,
    /// What it holds.
    pub doc: &'static str,
}

const PRODUCT_FIELDS: &[(&str, ProductField, FieldType, &str)] = &[
    (
        "vendor",
        ProductField::Vendor,
        FieldType::Text,
        "canonical vendor",
    ),
    (
        "product",
        ProductField::Product,
        FieldType::Text,
        "canonical product",
    ),
    (
        "version",
        ProductField::Version,
        FieldType::Version,
        "version",
    ),
    (
        "category",
        ProductField::Category,
        FieldType::Text,
        "category, or `Category / Subcategory`",
    ),
    (
        "subcategory",
        ProductField::Subcategory,
        FieldType::Text,
        "subcategory",
    ),
    (
        "lifecycle.stage",
        ProductField::Stage,
        FieldType::Text,
        "GeneralAvailability, EndOfSale, EndOfLife, EndOfService, Unidentified or Unknown",
    ),
    (
        "lifecycle.gaDate",
        ProductField::GaDate,
        FieldType::Date,
        "general availability",
    ),
    (
        "lifecycle.eosDate",
        ProductField::EosDate,
        FieldType::Date,
        "end of sale",
    ),
    (
        "lifecycle.eolDate",
        ProductField::EolDate,
        FieldType::Date,
        "end of life",
    ),
    (
        "lifecycle.eoServiceDate",
        ProductField::EoServiceDate,
        FieldType::Date,
        "end of service",
    ),
];

const VULN_FIELDS: &[(&str, VulnField, FieldType, &str)] = &[
    (
        "id",
        VulnField::Id,
        FieldType::Text,
        "advisory ID (CVE, GHSA, DSA…)",
    ),
    (
        "package",
        VulnField::Package,
        FieldType::Text,
        "affected package",
    ),
    (
        "installed",
        VulnField::Installed,
        FieldType::Version,
        "installed version",
    ),
    (
        "fixed",
        VulnField::Fixed,
        FieldType::Version,
        "first fixed version",
    ),
    (
        "severity",
        VulnField::Severity,
        FieldType::Text,
        "critical, high, medium, low or unknown",
    ),
];

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

const TOP_LEVEL: &[(&str, FieldType, &str)] = &[
    ("name", FieldType::Text, "the Asset's object name"),
    (
        "kind",
        FieldType::Text,
        "Node, ContainerImage, Container, Host, NetworkDevice, CloudResource or Certificate",
    ),
    (
        "identity",
        FieldType::Text,
        "node UID, image digest, container ID, MAC, cloud resource ID or certificate fingerprint",
    ),
    (
        "displayName",
        FieldType::Text,
        "a name a person reads: <namespace>/<pod>/<container>, an image's tag, a node's name",
    ),
    (
        "software",
        FieldType::List,
        "installed software: software:(product:openssl AND version<3.0); also software.<field>",
    ),
    (
        "findings.vulnerabilities.top",
        FieldType::List,
        "the worst vulnerabilities: findings.vulnerabilities.top:(id:CVE-2024-* AND severity:critical)",
    ),
    (
        "findings.misconfigurations",
        FieldType::Number,
        "misconfigurations found",
    ),
    (
        "findings.runtime",
        FieldType::Number,
        "runtime policy violations",
    ),
    (
        "findings.certificates",
        FieldType::Number,
        "certificate problems",
    ),
    (
        "maxSeverity",
        FieldType::Text,
        "the highest severity among the vulnerabilities, or none",
    ),
    (
        "lifecycle",
        FieldType::Text,
        "the Asset's lifecycle stage (its OS's, or its hardware's)",
    ),
    (
        "tags.<key>",
        FieldType::Text,
        "a tag, static (activation key) or dynamic (TagRule)",
    ),
    (
        "observed.<key>",
        FieldType::Text,
        "a raw fact as a sensor reported it, by dotted path",
    ),
    (
        "sources.sensor",
        FieldType::Text,
        "a sensor that saw the Asset",
    ),
    (
        "sources.type",
        FieldType::Text,
        "the type of a sensor that saw the Asset",
    ),
    ("firstSeen", FieldType::Date, "when any sensor first saw it"),
    ("lastSeen", FieldType::Date, "when any sensor last saw it"),
    (
        "managed",
        FieldType::Bool,
        "false for devices seen only by passive sensors",
    ),
];

/// Every field, for `--fields`: the top-level fields, then those of
/// `hardware.`, `os.` and `software.`, the severity counts, and the fields of
/// `findings.vulnerabilities.top.`.
pub fn all() -> Vec<FieldInfo> {
    let info = |name: String, ty, doc| FieldInfo { name, ty, doc };
    let mut out: Vec<FieldInfo> = TOP_LEVEL
        .iter()
        .map(|&(name, ty, doc)| info(name.to_string(), ty, doc))
        .collect();
    for prefix in ["hardware", "os", "software"] {
        for &(sub, _, ty, doc) in PRODUCT_FIELDS {
            out.push(info(format!("{prefix}.{sub}"), ty, doc));
        }
    }
    for sev in SEVERITIES {
        let doc = "vulnerabilities of that severity";
        out.push(info(
            format!("findings.vulnerabilities.{sev}"),
            FieldType::Number,
            doc,
        ));
    }
    for &(sub, _, ty, doc) in VULN_FIELDS {
        out.push(info(format!("findings.vulnerabilities.top.{sub}"), ty, doc));
    }
    out
}

/// The scope a field name is resolved in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// An Asset.
    Asset,
    /// An element of `software`.
    Software,
    /// An element of `findings.vulnerabilities.top`.
    Vulnerability,
}

fn product_field(name: &str) -> Option<(ProductField, FieldType)> {
    if name.eq_ignore_ascii_case("name") {
        // `software:(name:openssl)` reads naturally; it is the product.
        return Some((ProductField::Product, FieldType::Text));
    }
    PRODUCT_FIELDS
        .iter()
        .find(|(n, ..)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f, ty, _)| (f, ty))
}

fn vuln_field(name: &str) -> Option<(VulnField, FieldType)> {
    VULN_FIELDS
        .iter()
        .find(|(n, ..)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f, ty, _)| (f, ty))
}

fn strip_prefix_ci<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// A field name resolved in a scope: the field, its type, and, for
/// `software.version`-style names, the list it reaches into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The field.
    pub field: Field,
    /// Its type.
    pub ty: FieldType,
    /// Set when the name reached into a list (`software.product`): the
    /// term then means "some element of the list matches".
    pub through: Option<Field>,
}

/// Resolve a field name, or say what is wrong with it.
pub fn resolve(name: &str, scope: Scope) -> Result<Resolved, String> {
    let plain = |field, ty| Resolved {
        field,
        ty,
        through: None,
    };
    match scope {
        Scope::Software => {
            return product_field(name)
                .map(|(f, ty)| plain(Field::SoftwareField(f), ty))
                .ok_or_else(|| unknown(name, &nested_names(PRODUCT_FIELDS.iter().map(|f| f.0))));
        }
        Scope::Vulnerability => {
            return vuln_field(name)
                .map(|(f, ty)| plain(Field::VulnField(f), ty))
                .ok_or_else(|| unknown(name, &nested_names(VULN_FIELDS.iter().map(|f| f.0))));
        }
        Scope::Asset => {}
    }
    let eq = |s: &str| name.eq_ignore_ascii_case(s);
    let simple = [
        ("name", Field::Name, FieldType::Text),
        ("kind", Field::Kind, FieldType::Text),
        ("identity", Field::Identity, FieldType::Text),
        ("displayName", Field::DisplayName, FieldType::Text),
        ("software", Field::Software, FieldType::List),
        (
            "findings.vulnerabilities.top",
            Field::Vulnerabilities,
            FieldType::List,
        ),
        (
            "findings.misconfigurations",
            Field::Misconfigurations,
            FieldType::Number,
        ),
        (
            "findings.runtime",
            Field::RuntimeViolations,
            FieldType::Number,
        ),
        (
            "findings.certificates",
            Field::CertificateProblems,
            FieldType::Number,
        ),
        ("maxSeverity", Field::MaxSeverity, FieldType::Text),
        ("lifecycle", Field::Lifecycle, FieldType::Text),
        ("sources.sensor", Field::SourceSensor, FieldType::Text),
        ("sources.type", Field::SourceType, FieldType::Text),
        ("firstSeen", Field::FirstSeen, FieldType::Date),
        ("lastSeen", Field::LastSeen, FieldType::Date),
        ("managed", Field::Managed, FieldType::Bool),
    ];
    if let Some((_, f, ty)) = simple.into_iter().find(|(n, ..)| eq(n)) {
        return Ok(plain(f, ty));
    }
    for (prefix, which) in [("hardware.", Which::Hardware), ("os.", Which::Os)] {
        if let Some(rest) = strip_prefix_ci(name, prefix)
            && let Some((f, ty)) =
                product_field(rest).filter(|_| !rest.eq_ignore_ascii_case("name"))
        {
            return Ok(plain(Field::Product(which, f), ty));
        }
    }
    if let Some(rest) = strip_prefix_ci(name, "software.")
        && let Some((f, ty)) = product_field(rest)
    {
        return Ok(Resolved {
            field: Field::SoftwareField(f),
            ty,
            through: Some(Field::Software),
        });
    }
    if let Some(rest) = strip_prefix_ci(name, "findings.vulnerabilities.top.")
        && let Some((f, ty)) = vuln_field(rest)
    {
        return Ok(Resolved {
            field: Field::VulnField(f),
            ty,
            through: Some(Field::Vulnerabilities),
        });
    }
    if let Some(rest) = strip_prefix_ci(name, "findings.vulnerabilities.")
        && let Some(i) = SEVERITIES.iter().position(|s| rest.eq_ignore_ascii_case(s))
    {
        return Ok(plain(Field::VulnCount(i), FieldType::Number));
    }
    if let Some(key) = strip_prefix_ci(name, "tags.").filter(|k| !k.is_empty()) {
        return Ok(plain(Field::Tag(key.to_string()), FieldType::Text));
    }
    if let Some(key) = strip_prefix_ci(name, "observed.").filter(|k| !k.is_empty()) {
        return Ok(plain(Field::Observed(key.to_string()), FieldType::Text));
    }
    let names: Vec<String> = all().iter().map(|f| f.name.to_string()).collect();
    Err(unknown(name, &names))
}

fn nested_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = names.map(str::to_string).collect();
    v.push("name".into());
    v
}

fn unknown(name: &str, candidates: &[String]) -> String {
    let best = candidates
        .iter()
        .map(|c| {
            (
                edit_distance(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 3 => format!("unknown field '{name}'; did you mean '{c}'?"),
        _ => format!("unknown field '{name}'; `sightline search --fields` lists them"),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
