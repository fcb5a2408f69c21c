//! Version comparison per ecosystem, exactly as each ecosystem defines it.
//! A vulnerability matches only when the installed version falls in an
//! affected range, so these comparators decide false positives and misses.

use std::cmp::Ordering;
use std::fmt;

pub mod apk;
pub mod dpkg;
pub mod maven;
pub mod pep440;
pub mod rpm;
pub mod semver;

/// How an ecosystem orders its versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Debian and Ubuntu packages (dpkg: epochs, `~`).
    Dpkg,
    /// Alpine packages (apk-tools).
    Apk,
    /// RPM packages (`rpmvercmp`, epochs).
    Rpm,
    /// Semantic Versioning 2.0.0: crates.io, npm, Go modules.
    SemVer,
    /// Python packages (PEP 440).
    Pep440,
    /// Maven artifacts (the POM reference's version order).
    Maven,
}

impl Scheme {
    /// The scheme of an OSV ecosystem name (`Debian:12` → dpkg).
    pub fn for_osv_ecosystem(ecosystem: &str) -> Option<Scheme> {
        let base = ecosystem.split(':').next().unwrap_or_default();
        Some(match base {
            "Debian" | "Ubuntu" => Scheme::Dpkg,
            "Alpine" => Scheme::Apk,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "openSUSE" | "SUSE" | "Mageia" => Scheme::Rpm,
            "crates.io" | "npm" | "Go" => Scheme::SemVer,
            "PyPI" => Scheme::Pep440,
            "Maven" => Scheme::Maven,
            _ => return None,
        })
    }

    /// Compares `a` with `b`.
    pub fn compare(self, a: &str, b: &str) -> Result<Ordering, VersionError> {
        match self {
            Scheme::Dpkg => dpkg::compare(a, b),
            Scheme::Apk => apk::compare(a, b),
            Scheme::Rpm => rpm::compare(a, b),
            Scheme::SemVer => semver::compare(a, b),
            Scheme::Pep440 => pep440::compare(a, b),
            Scheme::Maven => maven::compare(a, b),
        }
    }
}

/// A version its scheme cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionError {
    /// The scheme.
    pub scheme: &'static str,
    /// The version as given.
    pub version: String,
    /// What is wrong with it.
    pub reason: String,
}

impl VersionError {
    pub(crate) fn new(scheme: &'static str, version: &str, reason: &str) -> Self {
        Self {
            scheme,
            version: version.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a {} version: {}",
            self.version, self.scheme, self.reason
        )
    }
}

impl std::error::Error for VersionError {}
