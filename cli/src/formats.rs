//! What `sightline scan image` writes: a table for people, JSON for
//! scripts, SARIF 2.1.0 for code-scanning tools, JUnit XML for CI test
//! reports (the SBOM formats come from `sightline_scan::sbom`).

use serde_json::{Value, json};
use sightline_scan::source::Image;
use sightline_scan::vuln::{Finding, Level, Matches};

use crate::gate::Verdict;

/// What was scanned and what was decided, as every format needs it.
pub struct Report<'a> {
    /// The reference as given.
    pub reference: &'a str,
    /// The analysed image.
    pub image: &'a Image,
    /// Findings.
    pub matches: &'a Matches,
    /// The gate's verdict.
    pub verdict: &'a Verdict<'a>,
    /// The OS's lifecycle stage, when the catalog knows it.
    pub os_stage: Option<String>,
}

impl Report<'_> {
    fn os(&self) -> String {
        self.image
            .analysis
            .os
            .as_ref()
            .map(|o| o.pretty_name())
            .unwrap_or_else(|| "unknown OS".into())
    }
}

/// A table of the counted findings and the verdict.
pub fn table(r: &Report<'_>) -> String {
    let mut out = format!(
        "{} ({}, {} packages{})\n",
        r.reference,
        r.os(),
        r.image.analysis.packages.len(),
        r.os_stage
            .as_deref()
            .map(|s| format!(", OS lifecycle {s}"))
            .unwrap_or_default()
    );
    let found = &r.verdict.counted;
    let w = |f: &dyn Fn(&Finding) -> usize, min: usize| {
        found.iter().map(|x| f(x)).max().unwrap_or(0).max(min)
    };
    let (wid, wpkg, wver) = (
        w(&|f| f.id.len(), 2),
        w(&|f| f.package.len(), 7),
        w(&|f| f.version.len(), 9),
    );
    out.push_str(&format!(
        "{:<8}  {:<wid$}  {:<wpkg$}  {:<wver$}  FIXED\n",
        "SEVERITY", "ID", "PACKAGE", "INSTALLED"
    ));
    for f in found {
        out.push_str(&format!(
            "{:<8}  {:<wid$}  {:<wpkg$}  {:<wver$}  {}{}\n",
            f.severity.level.as_str(),
            f.id,
            f.package,
            f.version,
            f.fixed.as_deref().unwrap_or("-"),
            if r.verdict.fails(f) {
                "  (fails the gate)"
            } else {
                ""
            }
        ));
    }
    let ignored = r.matches.findings.len() - found.len();
    out.push_str(&format!(
        "{} findings{}\n",
        found.len(),
        if ignored > 0 {
            format!(" ({ignored} ignored by the policy)")
        } else {
            String::new()
        }
    ));
    if r.verdict.passed {
        out.push_str("gate: passed\n");
    } else {
        out.push_str(&format!("gate: FAILED: {}\n", r.verdict.reasons.join("; ")));
    }
    out
}

/// Everything, as JSON.
pub fn json(r: &Report<'_>) -> Value {
    json!({
        "reference": r.reference,
        "image": {
            "configDigest": r.image.config_digest,
            "manifestDigest": r.image.manifest_digest,
            "repoTags": r.image.repo_tags,
            "architecture": r.image.architecture,
            "os": r.image.os,
            "created": r.image.created,
        },
        "operatingSystem": r.image.analysis.os.as_ref().map(|o| &o.fields),
        "operatingSystemLifecycle": r.os_stage,
        "packages": r.image.analysis.packages.len(),
        "vulnerabilities": r.verdict.counted,
        "ignored": r.matches.findings.len() - r.verdict.counted.len(),
        "gate": {"passed": r.verdict.passed, "reasons": r.verdict.reasons},
        "warnings": r.image.analysis.warnings.iter().chain(&r.matches.warnings).collect::<Vec<_>>(),
    })
}

fn sarif_level(f: &Finding, verdict: &Verdict<'_>) -> &'static str {
    if verdict.fails(f) {
        "error"
    } else {
        match f.severity.level {
            Level::Critical | Level::High => "error",
            Level::Medium => "warning",
            _ => "note",
        }
    }
}

/// `security-severity` as code scanning reads it (a CVSS-like score).
fn security_severity(f: &Finding) -> String {
    let score = f.severity.score.unwrap_or(match f.severity.level {
        Level::Critical => 9.5,
        Level::High => 8.0,
        Level::Medium => 5.5,
        Level::Low => 2.0,
        Level::None | Level::Unknown => 0.0,
    });
    format!("{score:.1}")
}

/// A SARIF 2.1.0 log: one rule per advisory, one result per finding,
/// located at the file inside the image that lists the package.
pub fn sarif(r: &Report<'_>) -> Value {
    let mut rules: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in &r.verdict.counted {
        if !seen.insert(f.id.clone()) {
            continue;
        }
        let summary = f
            .summary
            .clone()
            .unwrap_or_else(|| format!("{} in {}", f.id, f.matched_name));
        rules.push(json!({
            "id": f.id,
            "name": f.id.replace(['-', '.'], ""),
            "shortDescription": {"text": summary},
            "fullDescription": {"text": format!("{summary} (aliases: {})", if f.aliases.is_empty() { "none".to_owned() } else { f.aliases.join(", ") })},
            "helpUri": format!("https://osv.dev/vulnerability/{}", f.id),
            "help": {"text": format!("Upgrade {} to {}.", f.package, f.fixed.as_deref().unwrap_or("a fixed version when one exists"))},
            "properties": {
                "security-severity": security_severity(f),
                "tags": ["security", "vulnerability", f.ecosystem.clone()],
            },
        }));
    }
    let results: Vec<Value> = r
        .verdict
        .counted
        .iter()
        .map(|f| {
            let file = r
                .image
                .analysis
                .packages
                .iter()
                .find(|p| p.name == f.package && p.version == f.version)
                .map(|p| p.path.clone())
                .unwrap_or_else(|| r.reference.to_owned());
            json!({
                "ruleId": f.id,
                "level": sarif_level(f, r.verdict),
                "message": {"text": format!(
                    "{} {} is affected by {} ({}); fixed in {}.",
                    f.package, f.version, f.id, f.severity.level.as_str(),
                    f.fixed.as_deref().unwrap_or("no released version")
                )},
                "locations": [{
                    "physicalLocation": {"artifactLocation": {"uri": file}},
                    "logicalLocations": [{"name": r.reference, "kind": "image"}],
                }],
                "partialFingerprints": {"packageAndAdvisory": format!("{}@{}:{}", f.package, f.version, f.id)},
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sightline",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://sightline.dev",
                "rules": rules,
            }},
            "results": results,
            "properties": {"image": r.reference, "configDigest": r.image.config_digest},
        }],
    })
}

/// Escapes text for XML attributes and content.
fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => String::new(),
            c => c.to_string(),
        })
        .collect()
}

/// JUnit XML: a test case per counted finding (failed when it fails the
/// gate) and one for the OS's lifecycle.
pub fn junit(r: &Report<'_>) -> String {
    let mut cases = String::new();
    let mut failures = 0;
    for f in &r.verdict.counted {
        let name = format!("{} {} {}", f.id, f.package, f.version);
        if r.verdict.fails(f) {
            failures += 1;
            cases.push_str(&format!(
                "    <testcase classname=\"{cls}\" name=\"{n}\">\n      <failure type=\"{sev}\" message=\"{m}\">{m}</failure>\n    </testcase>\n",
                cls = xml(r.reference),
                n = xml(&name),
                sev = f.severity.level.as_str(),
                m = xml(&format!("{} {} fixed in {}", f.id, f.severity.level.as_str(), f.fixed.as_deref().unwrap_or("no version"))),
            ));
        } else {
            cases.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\"/>\n",
                xml(r.reference),
                xml(&name)
            ));
        }
    }
    let eol_failed = r
        .verdict
        .reasons
        .iter()
        .any(|x| x.contains("operating system"));
    if eol_failed {
        failures += 1;
        cases.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"operating system lifecycle\">\n      <failure type=\"lifecycle\" message=\"{m}\">{m}</failure>\n    </testcase>\n",
            xml(r.reference),
            m = xml(&format!("{} is {}", r.os(), r.os_stage.as_deref().unwrap_or("end of life")))
        ));
    } else {
        cases.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"operating system lifecycle\"/>\n",
            xml(r.reference)
        ));
    }
    let tests = r.verdict.counted.len() + 1;
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"sightline\" tests=\"{tests}\" failures=\"{failures}\">\n  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n{cases}  </testsuite>\n</testsuites>\n",
        xml(&format!("sightline scan image {}", r.reference))
    )
}
