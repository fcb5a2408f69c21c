//! The parts of the OSV schema (ossf.github.io/osv-schema) matching reads.

use serde::Deserialize;

/// One OSV record.
#[derive(Debug, Deserialize)]
pub struct Record {
    /// `DSA-5523-1`, `GHSA-…`, `DEBIAN-CVE-2023-38545`.
    pub id: String,
    /// Other IDs of the same vulnerability (CVE IDs).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// IDs this record is derived from.
    #[serde(default)]
    pub upstream: Vec<String>,
    /// One-line summary.
    #[serde(default)]
    pub summary: Option<String>,
    /// Longer text; only its first line is kept when there is no summary.
    #[serde(default)]
    pub details: Option<String>,
    /// Set when the record was withdrawn: it then matches nothing.
    #[serde(default)]
    pub withdrawn: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub published: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub modified: Option<String>,
    /// CVSS vectors and the like.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// What it affects.
    #[serde(default)]
    pub affected: Vec<Affected>,
    /// Database-specific extras (GHSA puts a `severity` word here).
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// `{"type": "CVSS_V3", "score": "CVSS:3.1/…"}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Severity {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The vector, or a word for `Ubuntu`.
    pub score: String,
}

/// One affected package.
#[derive(Debug, Deserialize)]
pub struct Affected {
    /// The package; records without one (GIT-only) cannot be matched.
    #[serde(default)]
    pub package: Option<Package>,
    /// Affected version ranges.
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Affected versions, enumerated.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Per-package severity, overriding the record's.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Ecosystem extras (`urgency` for Debian).
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    /// Database extras.
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// `{"ecosystem": "Debian:12", "name": "curl"}`.
#[derive(Debug, Deserialize)]
pub struct Package {
    /// `Debian:12`, `Alpine:v3.19`, `PyPI`, `npm`, …
    pub ecosystem: String,
    /// The package name in that ecosystem (Debian and Alpine: the source package).
    pub name: String,
}

/// A range of affected versions.
#[derive(Debug, Deserialize)]
pub struct Range {
    /// `ECOSYSTEM`, `SEMVER` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its events.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One event of a range: exactly one of the fields is set.
#[derive(Debug, Deserialize)]
pub struct Event {
    /// Affected from this version on (`0`: from the beginning).
    #[serde(default)]
    pub introduced: Option<String>,
    /// Not affected from this version on.
    #[serde(default)]
    pub fixed: Option<String>,
    /// Affected up to and including this version.
    #[serde(default)]
    pub last_affected: Option<String>,
    /// Not affected from this version on (an upper bound of the range).
    #[serde(default)]
    pub limit: Option<String>,
}
