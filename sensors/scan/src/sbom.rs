//! SBOM documents of an analysed image: CycloneDX 1.5 JSON and SPDX 2.3
//! JSON, each package with its name, version and package URL, and the
//! layer and file it was found in; CycloneDX documents also carry the
//! image's findings ([`add_vulnerabilities`]) when it was matched.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use std::collections::{BTreeMap, HashMap};

use crate::source::Image;
use crate::vuln::{Finding, Level};

/// Who made the document.
#[derive(Clone, Debug)]
pub struct Tool {
    /// The tool's name (`sightline`).
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The image's display name: its first tag, else its config digest.
fn image_name(image: &Image) -> String {
    image
        .repo_tags
        .first()
        .cloned()
        .unwrap_or_else(|| image.config_digest.clone())
}

/// A UUID (version 4 layout) derived from the image and the time, so two
/// documents made at different times differ and the same run is repeatable.
fn uuid_for(image: &Image, timestamp: &str) -> String {
    let h = Sha256::new_with_prefix(image.config_digest.as_bytes())
        .chain_update(timestamp.as_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// CycloneDX 1.5 (JSON): the image as the metadata component, its
/// operating system and packages as components.
pub fn cyclonedx(image: &Image, tool: &Tool, timestamp: &str) -> Value {
    let a = &image.analysis;
    let mut components = Vec::new();
    if let Some(os) = &a.os {
        components.push(json!({
            "type": "operating-system",
            "bom-ref": "os",
            "name": os.id().unwrap_or("unknown"),
            "version": os.version_id().unwrap_or_default(),
            "description": os.pretty_name(),
        }));
    }
    // A package found at several paths is one component per copy; the
    // first keeps its package URL as its reference, the others add where
    // they are (references are unique within a BOM).
    let mut refs = std::collections::HashSet::new();
    for p in &a.packages {
        let bom_ref = component_ref(&mut refs, &p.purl, &p.path);
        let mut properties = vec![
            json!({"name": "sightline:package:type", "value": p.kind.purl_type()}),
            json!({"name": "sightline:layer:index", "value": p.layer.to_string()}),
            json!({"name": "sightline:location", "value": p.path}),
        ];
        if let Some(layer) = a.layers.get(p.layer) {
            properties.push(json!({"name": "sightline:layer:diffID", "value": layer.diff_id}));
        }
        if let Some(src) = &p.source {
            properties.push(json!({"name": "sightline:package:source", "value": src.name}));
            properties
                .push(json!({"name": "sightline:package:source-version", "value": src.version}));
        }
        components.push(json!({
            "type": "library",
            "bom-ref": bom_ref,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": properties,
        }));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_for(image, timestamp)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": tool.name, "version": tool.version}]},
            "component": {
                "type": "container",
                "bom-ref": image.config_digest,
                "name": image_name(image),
                "version": image.config_digest,
            },
        },
        "components": components,
    })
}

/// SPDX 2.3 (JSON): the image as the described package, containing one
/// package per installed package, each with its package URL.
pub fn spdx(image: &Image, tool: &Tool, timestamp: &str) -> Value {
    let a = &image.analysis;
    let name = image_name(image);
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "versionInfo": image.config_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": image.config_digest.trim_start_matches("sha256:")}],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    if let Some(os) = &a.os {
        packages.push(json!({
            "SPDXID": "SPDXRef-OperatingSystem",
            "name": os.id().unwrap_or("unknown"),
            "versionInfo": os.version_id().unwrap_or_default(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "description": os.pretty_name(),
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": "SPDXRef-OperatingSystem",
        }));
    }
    for (i, p) in a.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{i}", p.kind.purl_type());
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
            "sourceInfo": format!("found in {} (layer {})", p.path, p.layer),
        });
        if let Some(src) = &p.source {
            pkg["comment"] = json!(format!("source package {} {}", src.name, src.version));
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!(
            "https://sightline.dev/spdx/{}/{}",
            image.config_digest.trim_start_matches("sha256:"),
            uuid_for(image, timestamp)
        ),
        "creationInfo": {
            "created": timestamp,
            "creators": [format!("Tool: {}-{}", tool.name, tool.version)],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// Where an advisory ID is published, by its prefix.
fn advisory_source(id: &str) -> Value {
    if id.starts_with("CVE-") {
        json!({"name": "NVD", "url": format!("https://nvd.nist.gov/vuln/detail/{id}")})
    } else if id.starts_with("GHSA-") {
        json!({"name": "GitHub", "url": format!("https://github.com/advisories/{id}")})
    } else {
        json!({"name": "OSV", "url": format!("https://osv.dev/vulnerability/{id}")})
    }
}

/// CycloneDX's name for a severity level.
fn cyclonedx_severity(level: Level) -> &'static str {
    match level {
        Level::Critical => "critical",
        Level::High => "high",
        Level::Medium => "medium",
        Level::Low => "low",
        Level::None => "none",
        Level::Unknown => "unknown",
    }
}

/// CycloneDX's rating method for the vector a severity came from.
fn rating_method(vector: &str) -> Option<&'static str> {
    if vector.starts_with("CVSS:3.1/") {
        Some("CVSSv31")
    } else if vector.starts_with("CVSS:3.0/") {
        Some("CVSSv3")
    } else if vector.starts_with("CVSS:4.0/") {
        Some("CVSSv4")
    } else if vector.starts_with("AV:") {
        Some("CVSSv2")
    } else {
        None
    }
}

/// A component's `bom-ref`: its package URL, or, for a second copy of the
/// same package, the URL and where the copy is.
fn component_ref(taken: &mut std::collections::HashSet<String>, purl: &str, path: &str) -> String {
    if taken.insert(purl.to_owned()) {
        return purl.to_owned();
    }
    let located = format!("{purl}#{path}");
    taken.insert(located.clone());
    located
}

/// Adds CycloneDX 1.5's `vulnerabilities` to a [`cyclonedx`] document: one
/// entry per advisory, with its source, aliases, rating (severity, score
/// and CVSS vector), summary, the fixed versions as a recommendation, and
/// the affected components by their `bom-ref` (package URL) and installed
/// version.
pub fn add_vulnerabilities(doc: &mut Value, findings: &[Finding]) {
    // Each copy's component, by package URL and location.
    let mut refs: HashMap<(&str, &str), &str> = HashMap::new();
    let empty = Vec::new();
    let components = doc["components"].as_array().unwrap_or(&empty);
    for c in components {
        let location = c["properties"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == "sightline:location")
                .and_then(|p| p["value"].as_str())
        });
        if let (Some(purl), Some(location), Some(r)) =
            (c["purl"].as_str(), location, c["bom-ref"].as_str())
        {
            refs.insert((purl, location), r);
        }
    }
    let mut by_id: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        by_id.entry(f.id.as_str()).or_default().push(f);
    }
    let mut out = Vec::with_capacity(by_id.len());
    for (id, fs) in by_id {
        let first = fs[0];
        let mut rating = json!({"severity": cyclonedx_severity(first.severity.level)});
        if let Some(score) = first.severity.score {
            rating["score"] = json!(score);
        }
        if let Some(method) = first.severity.source.as_deref().and_then(rating_method) {
            rating["method"] = json!(method);
            rating["vector"] = json!(first.severity.source);
        }
        let mut aliases: Vec<&str> = fs
            .iter()
            .flat_map(|f| f.aliases.iter().map(String::as_str))
            .collect();
        aliases.sort_unstable();
        aliases.dedup();
        let references: Vec<Value> = aliases
            .iter()
            .map(|a| json!({"id": a, "source": advisory_source(a)}))
            .collect();
        let mut affects: Vec<Value> = Vec::new();
        let mut fixes: Vec<String> = Vec::new();
        for f in &fs {
            let r = refs
                .get(&(f.purl.as_str(), f.path.as_str()))
                .copied()
                .unwrap_or(f.purl.as_str());
            affects.push(json!({
                "ref": r,
                "versions": [{"version": f.version, "status": "affected"}],
            }));
            if let Some(fixed) = &f.fixed {
                let fix = format!("{} {fixed}", f.package);
                if !fixes.contains(&fix) {
                    fixes.push(fix);
                }
            }
        }
        let mut v = json!({
            "bom-ref": id,
            "id": id,
            "source": advisory_source(id),
            "ratings": [rating],
            "affects": affects,
        });
        if !references.is_empty() {
            v["references"] = json!(references);
        }
        if let Some(summary) = &first.summary {
            v["description"] = json!(summary);
        }
        if !fixes.is_empty() {
            v["recommendation"] = json!(format!("Upgrade to {}", fixes.join(", ")));
        }
        out.push(v);
    }
    doc["vulnerabilities"] = Value::Array(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vuln::Severity;

    fn finding(id: &str, package: &str, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec!["CVE-2024-0001".into()],
            package: package.into(),
            version: "1.0".into(),
            purl: format!("pkg:deb/debian/{package}@1.0"),
            matched_name: package.into(),
            ecosystem: "Debian:12".into(),
            fixed: fixed.map(str::to_owned),
            severity: Severity {
                level: Level::High,
                score: Some(7.5),
                source: Some("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N".into()),
            },
            summary: Some("a flaw".into()),
            layer: 0,
            path: String::new(),
        }
    }

    #[test]
    fn one_entry_per_advisory_naming_every_affected_component() {
        let mut doc = json!({"bomFormat": "CycloneDX"});
        add_vulnerabilities(
            &mut doc,
            &[
                finding("DSA-1", "openssl", Some("1.1")),
                finding("DSA-1", "libssl3", Some("1.1")),
                finding("GHSA-xxxx", "zlib", None),
            ],
        );
        let v = doc["vulnerabilities"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(v.len(), 2);
        let dsa = &v[0];
        assert_eq!(dsa["id"], "DSA-1");
        assert_eq!(dsa["source"]["name"], "OSV");
        assert_eq!(dsa["affects"].as_array().map(Vec::len), Some(2));
        assert_eq!(dsa["affects"][0]["ref"], "pkg:deb/debian/openssl@1.0");
        assert_eq!(dsa["affects"][0]["versions"][0]["status"], "affected");
        assert_eq!(dsa["ratings"][0]["severity"], "high");
        assert_eq!(dsa["ratings"][0]["method"], "CVSSv31");
        assert_eq!(dsa["ratings"][0]["score"], 7.5);
        assert_eq!(dsa["references"][0]["id"], "CVE-2024-0001");
        assert_eq!(dsa["references"][0]["source"]["name"], "NVD");
        assert_eq!(dsa["recommendation"], "Upgrade to openssl 1.1, libssl3 1.1");
        let ghsa = &v[1];
        assert_eq!(ghsa["source"]["name"], "GitHub");
        assert!(ghsa.get("recommendation").is_none());
    }

    #[test]
    fn each_copy_of_a_package_is_its_own_component_and_affected_as_such() {
        let mut taken = std::collections::HashSet::new();
        let purl = "pkg:npm/lodash@4.17.20";
        let a = component_ref(&mut taken, purl, "srv/a/node_modules/lodash/package.json");
        let b = component_ref(&mut taken, purl, "srv/b/node_modules/lodash/package.json");
        assert_eq!(a, purl);
        assert_eq!(b, format!("{purl}#srv/b/node_modules/lodash/package.json"));
        let component = |r: &str, at: &str| {
            json!({"bom-ref": r, "purl": purl,
                   "properties": [{"name": "sightline:location", "value": at}]})
        };
        let mut doc = json!({"components": [
            component(&a, "srv/a/node_modules/lodash/package.json"),
            component(&b, "srv/b/node_modules/lodash/package.json"),
        ]});
        let copy = |at: &str| Finding {
            purl: purl.into(),
            path: at.into(),
            ..finding("GHSA-35jh-r3h4-6jhm", "lodash", Some("4.17.21"))
        };
        add_vulnerabilities(
            &mut doc,
            &[
                copy("srv/a/node_modules/lodash/package.json"),
                copy("srv/b/node_modules/lodash/package.json"),
            ],
        );
        let refs: Vec<&str> = doc["vulnerabilities"][0]["affects"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["ref"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(refs, [a.as_str(), b.as_str()]);
    }

    #[test]
    fn ratings_name_the_method_only_for_a_cvss_vector() {
        assert_eq!(rating_method("CVSS:3.0/AV:N"), Some("CVSSv3"));
        assert_eq!(rating_method("AV:N/AC:L/Au:N/C:P/I:P/A:P"), Some("CVSSv2"));
        assert_eq!(rating_method("CVSS:4.0/AV:N"), Some("CVSSv4"));
        assert_eq!(rating_method("HIGH"), None);
    }
}
