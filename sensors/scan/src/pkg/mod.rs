//! Installed packages: what each package database says, in one shape.

use serde::{Deserialize, Serialize};

pub mod apk;
pub mod dpkg;
pub mod golang;
pub mod java;
pub mod lang;
pub mod rpm;
pub mod rust_audit;

/// Which package manager installed a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// Debian and Ubuntu (`/var/lib/dpkg`).
    Deb,
    /// Alpine (`/lib/apk/db/installed`).
    Apk,
    /// RPM-based distributions (`rpmdb.sqlite`).
    Rpm,
    /// Rust crates (`Cargo.lock`).
    Cargo,
    /// npm packages (`package-lock.json`, `node_modules`).
    Npm,
    /// Python packages (`*.dist-info`, `*.egg-info`).
    #[serde(rename = "pypi")]
    PyPI,
    /// Go modules linked into a binary (from its build info).
    Go,
    /// Java libraries (Maven coordinates in `.jar` archives).
    Maven,
}

impl PackageKind {
    /// The package-URL type.
    pub fn purl_type(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Apk => "apk",
            PackageKind::Rpm => "rpm",
            PackageKind::Cargo => "cargo",
            PackageKind::Npm => "npm",
            PackageKind::PyPI => "pypi",
            PackageKind::Go => "golang",
            PackageKind::Maven => "maven",
        }
    }

    /// Whether the package comes from a distribution (matched per release)
    /// rather than a language ecosystem.
    pub fn is_distro(self) -> bool {
        matches!(self, PackageKind::Deb | PackageKind::Apk | PackageKind::Rpm)
    }
}

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    /// Which package manager.
    pub kind: PackageKind,
    /// Its name.
    pub name: String,
    /// Its version as the package manager writes it.
    pub version: String,
    /// The source package it was built from, where the format records one
    /// (Debian `Source:`, Alpine origin). Advisories name source packages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePackage>,
    /// Architecture, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Package URL (`pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12`);
    /// filled in once the image's distribution is known.
    pub purl: String,
    /// The layer (0 = base) that introduced this name at this version.
    pub layer: usize,
    /// The database file that lists it.
    pub path: String,
}

/// A source package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePackage {
    /// Its name.
    pub name: String,
    /// Its version (Debian binNMUs differ from the binary's).
    pub version: String,
}

impl Package {
    /// Sets `purl` for a distribution namespace (`debian`, `alpine`) and an
    /// optional `distro` qualifier (`debian-12`, `alpine-3.19.1`).
    pub(crate) fn set_purl(&mut self, namespace: &str, distro: Option<&str>) {
        let mut purl = if namespace.is_empty() {
            // npm scopes and Go module paths are the namespace:
            // pkg:npm/%40types/node@20.11.30, pkg:golang/golang.org/x/net@v0.23.0
            match self.name.rsplit_once('/') {
                // Maven: group:artifact → pkg:maven/group/artifact@version
                _ if self.kind == PackageKind::Maven && self.name.contains(':') => {
                    let (group, artifact) = self.name.split_once(':').unwrap_or_default();
                    format!(
                        "pkg:maven/{}/{}@{}",
                        encode(group),
                        encode(artifact),
                        encode(&self.version)
                    )
                }
                Some((path, name)) if self.kind == PackageKind::Go => format!(
                    "pkg:golang/{}/{}@{}",
                    path.split('/').map(encode).collect::<Vec<_>>().join("/"),
                    encode(name),
                    encode(&self.version)
                ),
                _ => match self.name.split_once('/') {
                    Some((scope, name)) if self.kind == PackageKind::Npm => format!(
                        "pkg:npm/{}/{}@{}",
                        encode(scope),
                        encode(name),
                        encode(&self.version)
                    ),
                    _ => format!(
                        "pkg:{}/{}@{}",
                        self.kind.purl_type(),
                        encode(&self.name),
                        encode(&self.version)
                    ),
                },
            }
        } else {
            format!(
                "pkg:{}/{}/{}@{}",
                self.kind.purl_type(),
                encode(namespace),
                encode(&self.name),
                encode(&self.version)
            )
        };
        let mut qualifiers: Vec<(&str, &str)> = Vec::new();
        // rpm: the epoch is a qualifier, not part of the version.
        let epoch = match (self.kind, self.version.split_once(':')) {
            (PackageKind::Rpm, Some((e, v))) if e.bytes().all(|b| b.is_ascii_digit()) => {
                purl = purl.replace(
                    &format!("@{}", encode(&self.version)),
                    &format!("@{}", encode(v)),
                );
                Some(e.to_owned())
            }
            _ => None,
        };
        if let Some(e) = &epoch {
            qualifiers.push(("epoch", e));
        }
        if let Some(arch) = &self.arch {
            qualifiers.push(("arch", arch));
        }
        if let Some(distro) = distro {
            qualifiers.push(("distro", distro));
        }
        // The package-URL specification orders qualifiers by key.
        qualifiers.sort_by_key(|(k, _)| *k);
        for (i, (k, v)) in qualifiers.iter().enumerate() {
            purl.push(if i == 0 { '?' } else { '&' });
            purl.push_str(k);
            purl.push('=');
            purl.push_str(&encode(v));
        }
        self.purl = purl;
    }
}

/// Percent-encodes everything but unreserved characters, as the
/// package-URL specification asks of names, versions and qualifier values.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A problem in one part of a package database, skipped while the rest is
/// kept.
pub(crate) fn warn(path: &str, line: usize, what: impl std::fmt::Display) -> String {
    format!("{path}:{line}: {what}; entry skipped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_encodes_epochs_and_plus() {
        let mut p = Package {
            kind: PackageKind::Deb,
            name: "libstdc++6".into(),
            version: "1:12.2.0-14+deb12u1".into(),
            source: None,
            arch: Some("amd64".into()),
            purl: String::new(),
            layer: 0,
            path: "var/lib/dpkg/status".into(),
        };
        p.set_purl("debian", Some("debian-12"));
        assert_eq!(
            p.purl,
            "pkg:deb/debian/libstdc%2B%2B6@1%3A12.2.0-14%2Bdeb12u1?arch=amd64&distro=debian-12"
        );
    }
}
