//! Sightline's vulnerability database: OSV records compiled into one
//! versioned, compressed file that sensors stream into memory.
//!
//! File layout: the line `sightline-vulndb 1`, then one zstd frame of JSON
//! lines: a [`Meta`] line, then one [`Advisory`] per line. Only what
//! matching needs is kept (IDs, aliases, a one-line summary, the computed
//! severity, and per package the ranges with their scheme), so the file is a
//! fraction of the OSV dump's size, and a file's sha256 names its content
//! (an ETag for distribution).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cvss::{self, Level};
use super::osv;
use crate::version::Scheme;

/// The first line of every database file, with the format version.
pub const MAGIC: &str = "sightline-vulndb";
/// The format this program reads and writes.
pub const FORMAT: u32 = 1;
/// OSV records larger than this are refused on import.
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// Why a database could not be built, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a database this program can read.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The import found no usable record.
    #[error("{0}")]
    Empty(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DbError {
    let what = what.into();
    move |source| DbError::Io { what, source }
}

/// What a database holds, on its first line.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// When it was built (RFC 3339).
    pub built: String,
    /// Advisories kept.
    pub advisories: usize,
    /// Affected packages per ecosystem (`Debian:12` → 1234).
    pub ecosystems: BTreeMap<String, usize>,
    /// The newest `modified` time among the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
}

/// A severity: level, and the score and vector it came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Severity {
    /// The level.
    pub level: Level,
    /// The CVSS base score, when computed from a vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The vector or word it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Severity {
    const UNKNOWN: Severity = Severity {
        level: Level::Unknown,
        score: None,
        source: None,
    };
}

/// A package name as the index keys it: PyPI's as PEP 503 normalizes
/// them (records write `PyYAML` or `Jinja2`, installed metadata may write
/// `pyyaml` or `jinja2`, and both mean the same project).
fn index_name(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        crate::pkg::lang::normalize_python(name)
    } else {
        name.to_owned()
    }
}

/// One advisory, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Advisory {
    /// Its ID.
    pub id: String,
    /// CVE and other aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// One line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The record's severity.
    pub severity: Severity,
    /// Affected packages.
    pub affected: Vec<AffectedPackage>,
}

/// One affected package of an advisory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AffectedPackage {
    /// OSV ecosystem (`Debian:12`).
    pub ecosystem: String,
    /// Package name in it.
    pub name: String,
    /// Ranges; each a list of events in the record's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    /// Enumerated affected versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// A per-package severity overriding the advisory's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// A range: SemVer or the ecosystem's own ordering.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Range {
    /// `true` for OSV `SEMVER` ranges.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub semver: bool,
    /// The events.
    pub events: Vec<Event>,
}

/// A range event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Affected from here (`0`: from the start).
    Introduced(String),
    /// Fixed here.
    Fixed(String),
    /// Affected up to and including here.
    LastAffected(String),
    /// Nothing at or above here is affected.
    Limit(String),
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    /// Files read.
    pub files: usize,
    /// Records kept.
    pub kept: usize,
    /// Withdrawn records skipped.
    pub withdrawn: usize,
    /// Records with nothing matchable (only GIT ranges, or ecosystems without
    /// a comparator).
    pub unmatchable: usize,
    /// Files that could not be read, each with the reason.
    pub errors: Vec<String>,
}

/// A database in memory, indexed by (ecosystem, package).
#[derive(Debug, Default)]
pub struct Database {
    /// What it holds.
    pub meta: Meta,
    advisories: Vec<Advisory>,
    index: HashMap<(String, String), Vec<(u32, u32)>>,
}

impl Database {
    /// Builds a database from advisories.
    pub fn from_advisories(advisories: Vec<Advisory>, built: String) -> Database {
        let mut meta = Meta {
            built,
            advisories: advisories.len(),
            ..Meta::default()
        };
        for a in &advisories {
            for p in &a.affected {
                *meta.ecosystems.entry(p.ecosystem.clone()).or_default() += 1;
            }
        }
        let mut db = Database {
            meta,
            advisories,
            index: HashMap::new(),
        };
        db.reindex();
        db
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, a) in self.advisories.iter().enumerate() {
            for (j, p) in a.affected.iter().enumerate() {
                self.index
                    .entry((p.ecosystem.clone(), index_name(&p.ecosystem, &p.name)))
                    .or_default()
                    .push((i as u32, j as u32));
            }
        }
    }

    /// The advisories naming a package in an ecosystem (PyPI names compared
    /// as PEP 503 normalizes them), each with the
    /// affected-package entry that names it.
    pub fn lookup<'a>(
        &'a self,
        ecosystem: &str,
        name: &str,
    ) -> impl Iterator<Item = (&'a Advisory, &'a AffectedPackage)> + 'a {
        self.index
            .get(&(ecosystem.to_owned(), index_name(ecosystem, name)))
            .into_iter()
            .flatten()
            .map(|(i, j)| {
                let a = &self.advisories[*i as usize];
                (a, &a.affected[*j as usize])
            })
    }

    /// All advisories.
    pub fn advisories(&self) -> &[Advisory] {
        &self.advisories
    }

    /// Imports OSV records from a directory (read recursively) or a `.zip`
    /// of them (the OSV dumps' `all.zip`). Unreadable files are reported in
    /// the [`ImportReport`], not fatal; an import that keeps nothing fails.
    pub fn import_osv(path: &Path, built: String) -> Result<(Database, ImportReport), DbError> {
        Database::import_osv_all(&[path], built)
    }

    /// Imports OSV records from several directories or zips (one dump per
    /// ecosystem) into one database, as [`Database::import_osv`] does one.
    pub fn import_osv_all(
        paths: &[&Path],
        built: String,
    ) -> Result<(Database, ImportReport), DbError> {
        let mut report = ImportReport::default();
        let mut advisories = Vec::new();
        let mut newest: Option<String> = None;
        let mut take = |name: &str, data: &[u8], report: &mut ImportReport| {
            report.files += 1;
            let record: osv::Record = match serde_json::from_slice(data) {
                Ok(r) => r,
                Err(e) => {
                    report
                        .errors
                        .push(format!("{name}: not an OSV record: {e}"));
                    return;
                }
            };
            if let Some(m) = &record.modified
                && newest.as_ref().is_none_or(|n| m > n)
            {
                newest = Some(m.clone());
            }
            match compile(record) {
                Compiled::Kept(a) => {
                    report.kept += 1;
                    advisories.push(a);
                }
                Compiled::Withdrawn => report.withdrawn += 1,
                Compiled::Unmatchable => report.unmatchable += 1,
            }
        };
        for path in paths {
            read_osv_source(path, &mut report, &mut take)?;
        }
        let shown = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if advisories.is_empty() {
            return Err(DbError::Empty(format!(
                "{shown}: no usable OSV record among {} files ({} withdrawn, {} unmatchable, {} unreadable{})",
                report.files,
                report.withdrawn,
                report.unmatchable,
                report.errors.len(),
                report
                    .errors
                    .first()
                    .map(|e| format!("; first: {e}"))
                    .unwrap_or_default()
            )));
        }
        advisories.sort_by(|a, b| a.id.cmp(&b.id));
        // One record can be in several dumps (an advisory naming packages of
        // two ecosystems): keep it once, or each match would be reported twice.
        advisories.dedup_by(|a, b| a.id == b.id);
        let mut db = Database::from_advisories(advisories, built);
        db.meta.newest = newest;
        Ok((db, report))
    }

    /// Writes the database file.
    pub fn write(&self, path: &Path) -> Result<(), DbError> {
        let shown = path.display().to_string();
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("partial");
            let mut out = BufWriter::new(File::create(&tmp)?);
            writeln!(out, "{MAGIC} {FORMAT}")?;
            let mut z = zstd::Encoder::new(out, 9)?;
            serde_json::to_writer(&mut z, &self.meta)?;
            z.write_all(b"\n")?;
            for a in &self.advisories {
                serde_json::to_writer(&mut z, a)?;
                z.write_all(b"\n")?;
            }
            z.finish()?
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            // Readers never see a half-written file.
            std::fs::rename(&tmp, path)
        };
        write().map_err(io_err(format!("writing {shown}")))
    }

    /// Reads a database file.
    pub fn read(path: &Path) -> Result<Database, DbError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(io_err(format!("opening {shown}")))?;
        Database::read_from(file, &shown)
    }

    /// Reads a database from `input`, named `shown` in errors.
    pub fn read_from(input: impl Read, shown: &str) -> Result<Database, DbError> {
        let shown = shown.to_owned();
        let format = |reason: String| DbError::Format {
            path: shown.clone(),
            reason,
        };
        let mut r = BufReader::new(input);
        let mut first = String::new();
        (&mut r)
            .take(64)
            .read_line(&mut first)
            .map_err(io_err(format!("reading {shown}")))?;
        let version = first
            .trim_end()
            .strip_prefix(MAGIC)
            .map(str::trim)
            .ok_or_else(|| {
                format(
                    "not a Sightline vulnerability database (build one with `sightline db import`)"
                        .into(),
                )
            })?;
        match version.parse::<u32>() {
            Ok(FORMAT) => {}
            Ok(v) if v > FORMAT => {
                return Err(format(format!(
                    "format {v} is newer than this program reads ({FORMAT}); upgrade Sightline"
                )));
            }
            _ => return Err(format(format!("unknown format '{version}'"))),
        }
        let z = zstd::Decoder::new(r).map_err(io_err(format!("reading {shown}")))?;
        let mut lines = BufReader::new(z).lines();
        let meta_line = lines
            .next()
            .ok_or_else(|| format("truncated: no metadata".into()))?
            .map_err(|e| format(format!("corrupt: {e}")))?;
        let meta: Meta = serde_json::from_str(&meta_line)
            .map_err(|e| format(format!("corrupt metadata: {e}")))?;
        // The count is the file's word: reserve no more than a real database needs.
        let mut advisories = Vec::with_capacity(meta.advisories.min(1 << 20));
        for (n, line) in lines.enumerate() {
            let line = line.map_err(|e| format(format!("corrupt after {n} advisories: {e}")))?;
            let a: Advisory = serde_json::from_str(&line)
                .map_err(|e| format(format!("advisory {}: {e}", n + 1)))?;
            advisories.push(a);
        }
        if advisories.len() != meta.advisories {
            return Err(format(format!(
                "truncated: {} of {} advisories",
                advisories.len(),
                meta.advisories
            )));
        }
        let mut db = Database {
            meta,
            advisories,
            index: HashMap::new(),
        };
        db.reindex();
        Ok(db)
    }
}

fn read_limited(r: std::io::Result<impl Read>, name: &str) -> Result<Vec<u8>, String> {
    let r = r.map_err(|e| format!("{name}: {e}"))?;
    let mut data = Vec::new();
    r.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("{name}: {e}"))?;
    if data.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!("{name}: larger than 16 MiB; skipped"));
    }
    Ok(data)
}

enum Compiled {
    Kept(Advisory),
    Withdrawn,
    Unmatchable,
}

/// Keeps what matching needs from an OSV record.
fn compile(record: osv::Record) -> Compiled {
    if record.withdrawn.is_some() {
        return Compiled::Withdrawn;
    }
    let severity = severity_of(&record.severity, record.database_specific.as_ref());
    let mut affected = Vec::new();
    for a in record.affected {
        let Some(package) = a.package else { continue };
        if Scheme::for_osv_ecosystem(&package.ecosystem).is_none() {
            continue;
        }
        let ranges: Vec<Range> = a
            .ranges
            .into_iter()
            .filter(|r| r.kind == "ECOSYSTEM" || r.kind == "SEMVER")
            .map(|r| Range {
                semver: r.kind == "SEMVER",
                events: r
                    .events
                    .into_iter()
                    .filter_map(|e| {
                        e.introduced
                            .map(Event::Introduced)
                            .or(e.fixed.map(Event::Fixed))
                            .or(e.last_affected.map(Event::LastAffected))
                            .or(e.limit.map(Event::Limit))
                    })
                    .collect(),
            })
            .filter(|r| !r.events.is_empty())
            .collect();
        if ranges.is_empty() && a.versions.is_empty() {
            continue;
        }
        let own = severity_of(&a.severity, a.database_specific.as_ref());
        affected.push(AffectedPackage {
            ecosystem: package.ecosystem,
            name: package.name,
            ranges,
            versions: a.versions,
            severity: (own.level != Level::Unknown).then_some(own),
        });
    }
    if affected.is_empty() {
        return Compiled::Unmatchable;
    }
    let summary = record
        .summary
        .or_else(|| {
            record
                .details
                .and_then(|d| d.lines().find(|l| !l.trim().is_empty()).map(str::to_owned))
        })
        .map(|s| {
            let s = s.trim();
            match s.char_indices().nth(200) {
                Some((i, _)) => format!("{}…", &s[..i]),
                None => s.to_owned(),
            }
        });
    let mut aliases = record.aliases;
    for u in record.upstream {
        if !aliases.contains(&u) {
            aliases.push(u);
        }
    }
    Compiled::Kept(Advisory {
        id: record.id,
        aliases,
        summary,
        severity,
        affected,
    })
}

/// The best severity a record gives: a CVSS v3 vector, else v2, else a word
/// (`database_specific.severity`, Ubuntu's priority); CVSS v4 vectors are
/// kept but not scored.
fn severity_of(list: &[osv::Severity], database_specific: Option<&serde_json::Value>) -> Severity {
    let find = |kind: &str| list.iter().find(|s| s.kind == kind);
    if let Some(s) = find("CVSS_V3")
        && let Ok(score) = cvss::v3_score(&s.score)
    {
        return Severity {
            level: Level::of_v3(score),
            score: Some(score),
            source: Some(s.score.clone()),
        };
    }
    if let Some(s) = find("CVSS_V2")
        && let Ok(score) = cvss::v2_score(&s.score)
    {
        return Severity {
            level: Level::of_v2(score),
            score: Some(score),
            source: Some(s.score.clone()),
        };
    }
    let word = find("Ubuntu").map(|s| s.score.as_str()).or_else(|| {
        database_specific
            .and_then(|d| d.get("severity"))
            .and_then(serde_json::Value::as_str)
    });
    if let Some(level) = word.and_then(Level::from_word) {
        return Severity {
            level,
            score: None,
            source: word.map(str::to_owned),
        };
    }
    match find("CVSS_V4") {
        Some(s) => Severity {
            source: Some(s.score.clone()),
            ..Severity::UNKNOWN
        },
        None => Severity::UNKNOWN,
    }
}

/// Feeds every OSV record file of a directory (read recursively) or a zip
/// to `take`; unreadable members are noted in `report`.
fn read_osv_source(
    path: &Path,
    report: &mut ImportReport,
    take: &mut impl FnMut(&str, &[u8], &mut ImportReport),
) -> Result<(), DbError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(io_err(format!("reading {shown}")))?;
    if meta.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(io_err(format!("listing {}", dir.display())))?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    let name = p.display().to_string();
                    match read_limited(File::open(&p), &name) {
                        Ok(data) => take(&name, &data, report),
                        Err(e) => report.errors.push(e),
                    }
                }
            }
        }
    } else {
        let file = File::open(path).map_err(io_err(format!("opening {shown}")))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| DbError::Format {
            path: shown.clone(),
            reason: format!("neither a directory nor a readable zip of OSV records: {e}"),
        })?;
        for i in 0..zip.len() {
            let entry = match zip.by_index(i) {
                Ok(e) => e,
                Err(e) => {
                    report.errors.push(format!("{shown}: member {i}: {e}"));
                    continue;
                }
            };
            if !entry.is_file() || !entry.name().ends_with(".json") {
                continue;
            }
            let name = format!("{shown}:{}", entry.name());
            match read_limited(Ok(entry), &name) {
                Ok(data) => take(&name, &data, report),
                Err(e) => report.errors.push(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(json: &str) -> Severity {
        let r: osv::Record = serde_json::from_str(json).expect("record");
        severity_of(&r.severity, r.database_specific.as_ref())
    }

    #[test]
    fn severity_from_vectors_words_or_unknown() {
        let s = sev(
            r#"{"id":"x","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}]}"#,
        );
        assert_eq!((s.level, s.score), (Level::Critical, Some(10.0)));
        let s = sev(
            r#"{"id":"x","severity":[{"type":"CVSS_V2","score":"AV:N/AC:L/Au:N/C:P/I:P/A:P"}]}"#,
        );
        assert_eq!((s.level, s.score), (Level::High, Some(7.5)));
        let s = sev(r#"{"id":"x","database_specific":{"severity":"MODERATE"}}"#);
        assert_eq!((s.level, s.score), (Level::Medium, None));
        let s = sev(r#"{"id":"x","severity":[{"type":"Ubuntu","score":"low"}]}"#);
        assert_eq!(s.level, Level::Low);
        let s = sev(
            r#"{"id":"x","severity":[{"type":"CVSS_V4","score":"CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]}"#,
        );
        assert_eq!(s.level, Level::Unknown);
        assert!(s.source.is_some(), "the v4 vector is kept");
        // A malformed vector falls through to unknown rather than failing.
        let s = sev(r#"{"id":"x","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:Q"}]}"#);
        assert_eq!(s.level, Level::Unknown);
    }

    #[test]
    fn withdrawn_git_only_and_unknown_ecosystems_are_not_kept() {
        let rec = |json: &str| compile(serde_json::from_str(json).expect("record"));
        assert!(matches!(
            rec(
                r#"{"id":"x","withdrawn":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"a"},"versions":["1.0.0"]}]}"#
            ),
            Compiled::Withdrawn
        ));
        assert!(matches!(
            rec(
                r#"{"id":"x","affected":[{"ranges":[{"type":"GIT","repo":"r","events":[{"introduced":"0"}]}]}]}"#
            ),
            Compiled::Unmatchable
        ));
        assert!(matches!(
            rec(
                r#"{"id":"x","affected":[{"package":{"ecosystem":"Hex","name":"a"},"versions":["1.0.0"]}]}"#
            ),
            Compiled::Unmatchable
        ));
        let Compiled::Kept(a) = rec(
            r#"{"id":"x","aliases":["CVE-1"],"upstream":["CVE-1","CVE-2"],"details":"\n first line \nsecond","affected":[{"package":{"ecosystem":"PyPI","name":"a"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2"}]}]}]}"#,
        ) else {
            panic!("kept");
        };
        assert_eq!(a.aliases, ["CVE-1", "CVE-2"]);
        assert_eq!(a.summary.as_deref(), Some("first line"));
    }
}
