//! Vulnerability matching: installed packages against OSV advisories,
//! distro-aware and with each ecosystem's own version ordering.
//!
//! Distribution packages match on the source package and the release:
//! a bookworm image's packages look up `Debian:12` under their source
//! package's name and version (Debian's advisories are per source package);
//! an Alpine 3.19 image's look up `Alpine:v3.19` under their origin.
//! Packages of an image whose release is unknown are not matched (and the
//! result says so): matching them against every release's records would be
//! wrong either way.

use serde::{Deserialize, Serialize};

use crate::analyzer::Analysis;
use crate::pkg::{Package, PackageKind};
use crate::version::Scheme;

pub mod cvss;
pub mod db;
pub mod osv;

pub use cvss::Level;
pub use db::{Database, Severity};

/// A package an advisory affects.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The advisory ID.
    pub id: String,
    /// Its aliases (CVE IDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The installed package's name.
    pub package: String,
    /// The installed version.
    pub version: String,
    /// The package's URL.
    pub purl: String,
    /// The name the advisory used (the source package for distributions).
    pub matched_name: String,
    /// The OSV ecosystem matched (`Debian:12`).
    pub ecosystem: String,
    /// The lowest fixed version above the installed one, if a fix exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// Severity.
    pub severity: Severity,
    /// One-line summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The layer that introduced the package.
    pub layer: usize,
    /// Where in the image the package was found (its copies elsewhere are
    /// findings of their own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// Findings, most severe first, and what could not be matched.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Matches {
    /// The findings.
    pub findings: Vec<Finding>,
    /// Packages or versions that could not be evaluated, and why.
    pub warnings: Vec<String>,
}

/// Where a package's advisories are filed and how its versions compare.
struct Key<'a> {
    ecosystem: String,
    name: &'a str,
    version: &'a str,
    scheme: Scheme,
}

fn key_of<'a>(p: &'a Package, os_id: &str, os_version: Option<&str>) -> Option<Key<'a>> {
    // Language ecosystems: one namespace for every image.
    let language = match p.kind {
        PackageKind::Cargo => Some(("crates.io", Scheme::SemVer)),
        PackageKind::Npm => Some(("npm", Scheme::SemVer)),
        PackageKind::PyPI => Some(("PyPI", Scheme::Pep440)),
        PackageKind::Go => Some(("Go", Scheme::SemVer)),
        PackageKind::Maven => Some(("Maven", Scheme::Maven)),
        PackageKind::Deb | PackageKind::Apk | PackageKind::Rpm => None,
    };
    if let Some((ecosystem, scheme)) = language {
        return Some(Key {
            ecosystem: ecosystem.to_owned(),
            name: &p.name,
            // Go's records write versions without the module's "v".
            version: if p.kind == PackageKind::Go {
                p.version.strip_prefix('v').unwrap_or(&p.version)
            } else {
                &p.version
            },
            scheme,
        });
    }
    let source = p.source.as_ref();
    let (name, version) = match source {
        Some(s) => (s.name.as_str(), s.version.as_str()),
        None => (p.name.as_str(), p.version.as_str()),
    };
    let release = os_version?;
    let (ecosystem, scheme) = match (p.kind, os_id) {
        (PackageKind::Deb, "debian") => {
            // Debian:12, whatever the point release (12.5).
            let major = release.split('.').next().unwrap_or(release);
            (format!("Debian:{major}"), Scheme::Dpkg)
        }
        (PackageKind::Deb, "ubuntu") => (format!("Ubuntu:{release}"), Scheme::Dpkg),
        // Rocky's and Alma's records name binary packages, epoch included.
        (PackageKind::Rpm, "rocky" | "almalinux") => {
            let major = release.split('.').next().unwrap_or(release);
            let distro = if os_id == "rocky" {
                "Rocky Linux"
            } else {
                "AlmaLinux"
            };
            return Some(Key {
                ecosystem: format!("{distro}:{major}"),
                name: &p.name,
                version: &p.version,
                scheme: Scheme::Rpm,
            });
        }
        (PackageKind::Apk, "alpine") => {
            let mut parts = release.split('.');
            let (major, minor) = (parts.next()?, parts.next()?);
            (format!("Alpine:v{major}.{minor}"), Scheme::Apk)
        }
        _ => return None,
    };
    Some(Key {
        ecosystem,
        name,
        version,
        scheme,
    })
}

/// Matches every package of an analysis against the database.
pub fn match_analysis(analysis: &Analysis, db: &Database) -> Matches {
    let mut out = Matches::default();
    let os_id = analysis
        .os
        .as_ref()
        .and_then(|o| o.id())
        .unwrap_or_default();
    let os_version = analysis.os.as_ref().and_then(|o| o.version_id());
    let mut unmatched = 0;
    let mut reported: std::collections::HashSet<(&str, &str, &str)> =
        std::collections::HashSet::new();
    for p in &analysis.packages {
        let Some(key) = key_of(p, os_id, os_version) else {
            unmatched += 1;
            continue;
        };
        let mut ecosystems = vec![key.ecosystem.clone()];
        if key.ecosystem.starts_with("Ubuntu:") {
            // Ubuntu's OSV ecosystems carry the support channel.
            ecosystems.push(format!("{}:LTS", key.ecosystem));
        }
        for ecosystem in &ecosystems {
            for (advisory, affected) in db.lookup(ecosystem, key.name) {
                match affects(affected, key.version, key.scheme) {
                    Ok(Some(fixed)) => {
                        // An advisory listing a package in two ranges or
                        // ecosystems is one finding.
                        if !reported.insert((
                            advisory.id.as_str(),
                            p.name.as_str(),
                            p.path.as_str(),
                        )) {
                            continue;
                        }
                        out.findings.push(Finding {
                            id: advisory.id.clone(),
                            aliases: advisory.aliases.clone(),
                            package: p.name.clone(),
                            version: p.version.clone(),
                            purl: p.purl.clone(),
                            matched_name: key.name.to_owned(),
                            ecosystem: ecosystem.clone(),
                            fixed,
                            severity: affected
                                .severity
                                .clone()
                                .unwrap_or_else(|| advisory.severity.clone()),
                            summary: advisory.summary.clone(),
                            layer: p.layer,
                            path: p.path.clone(),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => out
                        .warnings
                        .push(format!("{} ({}): {e}", advisory.id, p.name)),
                }
            }
        }
    }
    if unmatched > 0 {
        out.warnings.push(format!(
            "{unmatched} packages not matched: the image's distribution release is unknown or has no advisories here"
        ));
    }
    out.findings.sort_by(|a, b| {
        b.severity
            .level
            .cmp(&a.severity.level)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

/// Whether `version` is affected: `Ok(Some(fixed))` when it is (with the
/// lowest fix above it, if any), `Ok(None)` when not.
pub fn affects(
    affected: &db::AffectedPackage,
    version: &str,
    scheme: Scheme,
) -> Result<Option<Option<String>>, crate::version::VersionError> {
    if affected.versions.iter().any(|v| v == version) {
        return Ok(Some(lowest_fix_above(affected, version, scheme)));
    }
    for range in &affected.ranges {
        let scheme = if range.semver { Scheme::SemVer } else { scheme };
        if in_range(&range.events, version, scheme)? {
            return Ok(Some(lowest_fix_above(affected, version, scheme)));
        }
    }
    Ok(None)
}

/// The OSV evaluation of one range: walk its events in version order;
/// `introduced` at or below the version opens it, `fixed`/`limit` at or
/// below and `last_affected` below close it.
fn in_range(
    events: &[db::Event],
    version: &str,
    scheme: Scheme,
) -> Result<bool, crate::version::VersionError> {
    use db::Event::*;
    use std::cmp::Ordering::*;
    let cmp = |v: &str| -> Result<std::cmp::Ordering, crate::version::VersionError> {
        match v {
            // "0" is before every version; a limit of "*" is infinity.
            "0" => return Ok(if version == "0" { Equal } else { Greater }),
            "*" => return Ok(Less),
            _ => {}
        }
        scheme.compare(version, v)
    };
    let mut affected = false;
    // Sort by event version; compare errors surface below.
    let mut ordered: Vec<&db::Event> = events.iter().collect();
    ordered.sort_by(|a, b| match (event_version(a), event_version(b)) {
        (a, b) if a == b => Equal,
        ("0", _) | (_, "*") => Less,
        (_, "0") | ("*", _) => Greater,
        (a, b) => scheme.compare(a, b).unwrap_or(Equal),
    });
    for e in ordered {
        match e {
            Introduced(v) => {
                if cmp(v)? != Less {
                    affected = true;
                }
            }
            Fixed(v) | Limit(v) => {
                if cmp(v)? != Less {
                    affected = false;
                }
            }
            LastAffected(v) => {
                if cmp(v)? == Greater {
                    affected = false;
                }
            }
        }
    }
    Ok(affected)
}

fn lowest_fix_above(
    affected: &db::AffectedPackage,
    version: &str,
    scheme: Scheme,
) -> Option<String> {
    let mut best: Option<&str> = None;
    for range in &affected.ranges {
        let scheme = if range.semver { Scheme::SemVer } else { scheme };
        for e in &range.events {
            if let db::Event::Fixed(f) = e
                && scheme.compare(f, version) == Ok(std::cmp::Ordering::Greater)
                && best.is_none_or(|b| scheme.compare(f, b) == Ok(std::cmp::Ordering::Less))
            {
                best = Some(f);
            }
        }
    }
    best.map(str::to_owned)
}

/// The version an event names.
fn event_version(e: &db::Event) -> &str {
    match e {
        db::Event::Introduced(v)
        | db::Event::Fixed(v)
        | db::Event::LastAffected(v)
        | db::Event::Limit(v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::db::{AffectedPackage, Event, Range};
    use super::*;

    fn pkg(ranges: Vec<(bool, Vec<Event>)>, versions: &[&str]) -> AffectedPackage {
        AffectedPackage {
            ecosystem: "x".into(),
            name: "x".into(),
            ranges: ranges
                .into_iter()
                .map(|(semver, events)| Range { semver, events })
                .collect(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            severity: None,
        }
    }

    use Event::*;

    /// A language advisory fixed at `fixed`.
    fn advisory(id: &str, ecosystem: &str, name: &str, fixed: &str) -> db::Advisory {
        db::Advisory {
            id: id.into(),
            aliases: vec![],
            summary: None,
            severity: Severity {
                level: Level::High,
                score: None,
                source: None,
            },
            affected: vec![AffectedPackage {
                ecosystem: ecosystem.into(),
                name: name.into(),
                ranges: vec![Range {
                    semver: false,
                    events: vec![Introduced("0".into()), Fixed(fixed.into())],
                }],
                versions: vec![],
                severity: None,
            }],
        }
    }

    #[test]
    fn language_packages_match_in_their_ecosystem_without_a_distribution() {
        use crate::pkg::lang;
        let db = Database::from_advisories(
            vec![
                advisory("T-1", "PyPI", "typing-extensions", "4.16.0"),
                advisory("T-2", "npm", "@types/node", "20.11.31"),
                advisory("T-3", "crates.io", "serde", "1.0.0"),
                advisory("T-4", "npm", "typing-extensions", "9.0.0"),
            ],
            String::new(),
        );
        let (py, _) = lang::python_metadata(b"Name: typing_extensions\nVersion: 4.15.0\n", "m");
        let (js, _) = lang::npm_package(br#"{"name": "@types/node", "version": "20.11.30"}"#, "p");
        let (rs, _) = lang::cargo_lock(
            b"[[package]]\nname = \"serde\"\nversion = \"1.0.228\"\nsource = \"registry+x\"\n",
            "c",
        );
        let analysis = Analysis {
            packages: [py, js, rs].concat(),
            ..Analysis::default()
        };
        let m = match_analysis(&analysis, &db);
        let got: Vec<(&str, &str, &str)> = m
            .findings
            .iter()
            .map(|f| (f.id.as_str(), f.ecosystem.as_str(), f.package.as_str()))
            .collect();
        // No OS needed; serde is past its fix; PyPI's name is normalized and
        // an npm record for the same name does not apply to the Python package.
        assert_eq!(
            got,
            [
                ("T-2", "npm", "@types/node"),
                ("T-1", "PyPI", "typing-extensions")
            ]
        );
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn pypi_records_match_whatever_spelling_of_the_name_they_use() {
        use crate::pkg::lang;
        // GHSA-8q59-q68h-6hv4 names `PyYAML`; its dist-info says `PyYAML`
        // too, which the analyzer normalizes to `pyyaml`.
        let db = Database::from_advisories(
            vec![
                advisory("GHSA-8q59-q68h-6hv4", "PyPI", "PyYAML", "5.4"),
                advisory("T-5", "PyPI", "Zope.Interface", "9.0"),
            ],
            String::new(),
        );
        let (yaml, _) = lang::python_metadata(b"Name: PyYAML\nVersion: 5.3.1\n", "m");
        let (zope, _) = lang::python_metadata(b"Name: zope-interface\nVersion: 5.0\n", "m");
        let analysis = Analysis {
            packages: [yaml, zope].concat(),
            ..Analysis::default()
        };
        let m = match_analysis(&analysis, &db);
        let got: Vec<&str> = m.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(got, ["GHSA-8q59-q68h-6hv4", "T-5"], "{m:?}");
    }

    #[test]
    fn maven_libraries_match_group_and_artifact() {
        // GHSA-gwrp-pvrq-jmwv (CVE-2021-29425): commons-io before 2.7.
        let record = r#"{"id": "GHSA-gwrp-pvrq-jmwv", "aliases": ["CVE-2021-29425"],
            "affected": [{"package": {"ecosystem": "Maven", "name": "commons-io:commons-io"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.7"}]}]}],
            "database_specific": {"severity": "MODERATE"}}"#;
        let dir = std::env::temp_dir().join(format!("sightline-maven-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("GHSA-gwrp-pvrq-jmwv.json"), record).expect("write");
        let (db, _) = Database::import_osv(&dir, String::new()).expect("import");
        let _ = std::fs::remove_dir_all(&dir);
        let lib = |version: &str| Package {
            kind: PackageKind::Maven,
            name: "commons-io:commons-io".into(),
            version: version.into(),
            source: None,
            arch: None,
            purl: String::new(),
            layer: 0,
            path: "app.jar".into(),
        };
        let analysis = |v: &str| Analysis {
            packages: vec![lib(v)],
            ..Analysis::default()
        };
        let m = match_analysis(&analysis("2.6"), &db);
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].fixed.as_deref(), Some("2.7"));
        assert_eq!(m.findings[0].severity.level, Level::Medium);
        // 2.11.0 is past the fix (numerically, not as text).
        assert!(match_analysis(&analysis("2.11.0"), &db).findings.is_empty());
    }

    #[test]
    fn range_evaluation_follows_the_osv_algorithm() {
        let s = |v: &str| v.to_string();
        // Two affected stretches, events out of order as records may list them.
        let p = pkg(
            vec![(
                true,
                vec![
                    Fixed(s("1.2.0")),
                    Introduced(s("2.0.0")),
                    Introduced(s("1.0.0")),
                    Fixed(s("2.1.0")),
                ],
            )],
            &[],
        );
        let check = |v: &str| affects(&p, v, Scheme::SemVer).expect("versions compare");
        assert_eq!(check("0.9.0"), None);
        assert_eq!(check("1.0.0"), Some(Some(s("1.2.0"))));
        assert_eq!(check("1.1.9"), Some(Some(s("1.2.0"))));
        assert_eq!(check("1.2.0"), None);
        assert_eq!(check("2.0.5"), Some(Some(s("2.1.0"))));
        assert_eq!(check("2.1.0"), None);

        let p = pkg(
            vec![(false, vec![Introduced(s("0")), LastAffected(s("1:2.0-1"))])],
            &[],
        );
        assert_eq!(
            affects(&p, "1:2.0-1", Scheme::Dpkg).expect("dpkg"),
            Some(None)
        );
        assert_eq!(affects(&p, "1:2.0-1+b1", Scheme::Dpkg).expect("dpkg"), None);
        assert_eq!(
            affects(&p, "2.9-1", Scheme::Dpkg).expect("dpkg"),
            Some(None),
            "no epoch sorts below epoch 1"
        );

        let p = pkg(
            vec![(false, vec![Introduced(s("0")), Limit(s("*"))])],
            &["9.9"],
        );
        assert_eq!(
            affects(&p, "5.0", Scheme::Pep440).expect("pep440"),
            Some(None)
        );
        assert_eq!(
            affects(&p, "9.9", Scheme::Pep440).expect("listed"),
            Some(None)
        );

        let p = pkg(
            vec![(
                false,
                vec![Introduced(s("0")), Fixed(s("3.0.15-1~deb12u1"))],
            )],
            &[],
        );
        assert_eq!(
            affects(&p, "3.0.15-1~deb12u1", Scheme::Dpkg).expect("dpkg"),
            None
        );
        assert_eq!(
            affects(&p, "3.0.15-1", Scheme::Dpkg).expect("dpkg"),
            None,
            "~ sorts before the release"
        );
        assert_eq!(
            affects(&p, "3.0.14-1", Scheme::Dpkg).expect("dpkg"),
            Some(Some(s("3.0.15-1~deb12u1")))
        );
    }
}
