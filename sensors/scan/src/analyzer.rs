//! Streaming image analysis: layers go in one at a time, base first, as tar
//! streams (plain, gzip or zstd); what they leave behind in the image's
//! filesystem comes out.
//!
//! Nothing is extracted to disk and no layer is held in memory. While a
//! layer streams past, only the files analysis needs (os-release, package
//! databases) are read, each up to [`Limits::max_file_bytes`], and parsed on
//! the spot; what is kept per path is the parsed result, tagged with the
//! layer it came from. Whiteouts (`.wh.name`) and opaque directories
//! (`.wh..wh..opq`) then remove what lower layers left, exactly as overlayfs
//! would, so a package database deleted in a later layer yields no packages.
//! Symbolic links on the way to those files (`/etc/os-release` →
//! `../usr/lib/os-release`, `/lib` → `usr/lib`) are kept and resolved at the
//! end, inside the image's root.
//!
//! A layer's changes are applied only after the whole layer has been read
//! and its digests checked, so a truncated or tampered layer leaves the
//! analysis as it was before it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ScanError;
use crate::os::{self, OsRelease};
use crate::path::{is_within, join, link_target, normalize, split_last};
use crate::pkg::{self, Package, PackageKind, dpkg, golang, java, lang, rust_audit};

/// Bounds on what one image may cost, so hostile layers fail with a clear
/// error instead of exhausting memory or time.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest file read into memory for parsing (a package database).
    pub max_file_bytes: u64,
    /// Largest uncompressed layer.
    pub max_layer_bytes: u64,
    /// Largest ratio of uncompressed to compressed bytes a layer may reach
    /// once it is past [`Limits::expansion_floor`] (real layers compress
    /// 2–10x; a decompression bomb, thousands).
    pub max_expansion: u64,
    /// Uncompressed size below which the expansion ratio is not checked.
    pub expansion_floor: u64,
    /// Most tar entries in one layer.
    pub max_entries: u64,
    /// Most whiteouts kept from one layer; past it the rest are dropped
    /// with a warning (files they remove may then still be listed: more
    /// is reported, never less).
    pub max_whiteouts: u64,
    /// When the analysis must be done by: reading stops with an error past
    /// it, so no image holds a sensor for longer.
    pub deadline: Option<Deadline>,
}

/// A point in time an analysis must be done by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: std::time::Instant,
    budget: std::time::Duration,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: std::time::Duration) -> Deadline {
        let now = std::time::Instant::now();
        Deadline {
            at: now.checked_add(budget).unwrap_or(now),
            budget,
        }
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        std::time::Instant::now() > self.at
    }

    /// The time it was given.
    pub fn budget(&self) -> std::time::Duration {
        self.budget
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 << 20,
            max_layer_bytes: 64 << 30,
            max_expansion: 200,
            expansion_floor: 1 << 30,
            max_entries: 4_000_000,
            max_whiteouts: 100_000,
            deadline: None,
        }
    }
}

/// What a layer's descriptor says about it, checked while it streams.
#[derive(Clone, Debug, Default)]
pub struct LayerExpect {
    /// Digest of the blob as stored (compressed), `sha256:<hex>`.
    pub blob_digest: Option<String>,
    /// Size of the blob as stored.
    pub blob_size: Option<u64>,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Option<String>,
}

/// One analysed layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    /// Digest of the uncompressed tar (`sha256:…`), the layer's identity.
    pub diff_id: String,
    /// Digest of the blob as stored, when it differs (compressed layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_digest: Option<String>,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// Tar entries in the layer.
    pub entries: u64,
}

/// What analysis found in an image's filesystem.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// The distribution, when the image says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsRelease>,
    /// Installed packages, ordered by kind, name and version.
    pub packages: Vec<Package>,
    /// The layers, base first.
    pub layers: Vec<LayerInfo>,
    /// Parts that could not be read (a malformed database entry, a symlink
    /// loop); everything else was kept.
    pub warnings: Vec<String>,
}

/// Feeds layers in, base first, then [`Analyzer::finish`].
#[derive(Debug, Default)]
pub struct Analyzer {
    limits: Limits,
    files: BTreeMap<String, Kept>,
    layers: Vec<LayerInfo>,
    warnings: Vec<String>,
}

/// A file kept from some layer, already parsed.
#[derive(Clone, Debug)]
struct Kept {
    layer: usize,
    content: Content,
}

#[derive(Clone, Debug)]
enum Content {
    Os(OsRelease),
    Packages(Vec<Package>),
    Symlink(String),
    /// An interesting path holding something analysis could not use (a
    /// release file it could not read); it still hides lower layers' copy.
    Opaque,
}

/// A layer read and checked but not yet applied: what it changes that
/// matters to analysis (a few entries, however large the layer).
#[derive(Clone, Debug)]
pub struct StagedLayer {
    info: LayerInfo,
    ops: Vec<Op>,
    warnings: Vec<String>,
}

impl StagedLayer {
    /// Digests, size and entry count.
    pub fn info(&self) -> &LayerInfo {
        &self.info
    }
}

/// A change a layer makes, applied once the whole layer checked out.
#[derive(Clone, Debug)]
enum Op {
    /// A file or link analysis keeps.
    Put(String, Content),
    /// `.wh.name`: the path and everything below it are gone.
    Whiteout(String),
    /// `.wh..wh..opq`: everything lower layers put below the directory is gone.
    OpaqueDir(String),
    /// Some other non-directory: it replaces whatever lower layers had at
    /// the path, a directory's contents included.
    Replace(String),
    /// A directory: it merges with a lower directory, but replaces a lower
    /// file or link.
    Dir(String),
    /// A hard link to another path's content.
    Hardlink(String, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interest {
    OsRelease,
    ReleaseFile,
    Dpkg(dpkg::Layout),
    Apk,
    Rpm,
    /// An rpm database in a format not read (BerkeleyDB, NDB).
    RpmUnsupported(&'static str),
    Lang(lang::LangFile),
}

/// Files analysis reads, at their usual paths (links are followed at the end).
const FILES: &[(&str, Interest)] = &[
    ("etc/os-release", Interest::OsRelease),
    ("usr/lib/os-release", Interest::OsRelease),
    ("etc/debian_version", Interest::ReleaseFile),
    ("etc/alpine-release", Interest::ReleaseFile),
    ("etc/redhat-release", Interest::ReleaseFile),
    ("var/lib/dpkg/status", Interest::Dpkg(dpkg::Layout::Status)),
    ("lib/apk/db/installed", Interest::Apk),
    ("usr/lib/apk/db/installed", Interest::Apk),
    ("var/lib/rpm/rpmdb.sqlite", Interest::Rpm),
    ("usr/lib/sysimage/rpm/rpmdb.sqlite", Interest::Rpm),
    (
        "var/lib/rpm/Packages",
        Interest::RpmUnsupported("BerkeleyDB"),
    ),
    ("var/lib/rpm/Packages.db", Interest::RpmUnsupported("NDB")),
    (
        "usr/lib/sysimage/rpm/Packages.db",
        Interest::RpmUnsupported("NDB"),
    ),
];

const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d";

fn interest(path: &str) -> Option<Interest> {
    if let Some((_, i)) = FILES.iter().find(|(p, _)| *p == path) {
        return Some(*i);
    }
    let (dir, name) = split_last(path);
    if dir == DPKG_STATUS_D && !name.contains('.') {
        return Some(Interest::Dpkg(dpkg::Layout::StatusD));
    }
    lang::kind_of(path).map(Interest::Lang)
}

/// Whether a symbolic link at `path` could lie on the way to a file of
/// interest (the file itself, or one of its directories).
fn link_matters(path: &str) -> bool {
    FILES.iter().any(|(p, _)| is_within(p, path)) || is_within(DPKG_STATUS_D, path)
}

/// Whether a change at `path` can touch what analysis keeps: a file it
/// reads, a directory or link on the way to one, or anything in `status.d`.
/// Changes elsewhere are not staged, so a staged layer stays small however
/// many files it has.
fn relevant(path: &str) -> bool {
    interest(path).is_some() || link_matters(path) || is_within(path, DPKG_STATUS_D)
}

/// Keeps a layer's change only if it can matter to analysis.
fn stage(ops: &mut Vec<Op>, op: Op) {
    // Deletions are few and may hide language files anywhere: all are kept.
    let path = match &op {
        Op::Put(..) | Op::Whiteout(_) | Op::OpaqueDir(_) => None,
        Op::Replace(p) | Op::Dir(p) | Op::Hardlink(p, _) => Some(p),
    };
    if path.is_none_or(|p| relevant(p)) {
        ops.push(op);
    }
}

/// Byte counts and digests of a layer on both sides of decompression,
/// shared between the readers that stream it and the analyzer.
#[derive(Default)]
struct Meters {
    stored: u64,
    stored_hash: Option<Sha256>,
    stored_limit: Option<u64>,
    plain: u64,
    plain_hash: Sha256,
    tripped: Option<ScanError>,
}

/// Counts (and hashes) the stored bytes; refuses to read past the declared
/// size, so a blob that is longer than its manifest says fails early.
struct Stored<R> {
    inner: R,
    meters: Rc<RefCell<Meters>>,
    label: Rc<str>,
}

impl<R: Read> Read for Stored<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut m = self.meters.borrow_mut();
        m.stored += n as u64;
        if let Some(h) = &mut m.stored_hash {
            h.update(&buf[..n]);
        }
        if let Some(limit) = m.stored_limit
            && m.stored > limit
        {
            let err = ScanError::Mismatch {
                what: format!("layer {} blob size", self.label),
                expected: format!("{limit} bytes as the manifest declares"),
                actual: "more".to_owned(),
            };
            m.tripped.get_or_insert(err);
            return Err(io::Error::other("blob is longer than declared"));
        }
        Ok(n)
    }
}

/// Counts and hashes the uncompressed bytes and enforces the size and
/// expansion limits.
struct Plain<R> {
    inner: R,
    meters: Rc<RefCell<Meters>>,
    limits: Limits,
    label: Rc<str>,
}

impl<R: Read> Read for Plain<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut m = self.meters.borrow_mut();
        m.plain += n as u64;
        m.plain_hash.update(&buf[..n]);
        let tripped = if let Some(d) = self.limits.deadline.filter(Deadline::passed) {
            Some((
                "analysis time",
                format!("{} s", d.budget().as_secs()),
                "the analysis deadline",
            ))
        } else if m.plain > self.limits.max_layer_bytes {
            Some((
                "uncompressed size",
                bytes(self.limits.max_layer_bytes),
                "layer size limit",
            ))
        } else if m.plain > self.limits.expansion_floor
            && m.plain > m.stored.saturating_mul(self.limits.max_expansion)
        {
            Some((
                "expansion ratio",
                format!("{}x", self.limits.max_expansion),
                "a decompression bomb",
            ))
        } else {
            None
        };
        if let Some((what, limit, reason)) = tripped {
            m.tripped.get_or_insert(ScanError::Limit {
                layer: self.label.to_string(),
                what: what.to_owned(),
                limit,
                reason,
            });
            return Err(io::Error::other("layer limit exceeded"));
        }
        Ok(n)
    }
}

/// `12 MiB`-style sizes for messages.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut v = n;
    while v >= 1024 && v.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        v /= 1024;
        unit += 1;
    }
    format!("{v} {}", UNITS[unit])
}

/// `sha256:<hex>` of a finished hash.
pub(crate) fn digest_of(h: Sha256) -> String {
    let mut s = String::from("sha256:");
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Analyzer {
    /// An analyzer with the given limits.
    pub fn new(limits: Limits) -> Self {
        Analyzer {
            limits,
            ..Analyzer::default()
        }
    }

    /// Streams the next layer (base first) and applies what it changes.
    /// On error the analysis is as it was before this layer.
    pub fn add_layer(
        &mut self,
        reader: impl Read,
        expect: &LayerExpect,
    ) -> Result<&LayerInfo, ScanError> {
        let index = self.layers.len();
        let label = match expect.diff_id.as_ref().or(expect.blob_digest.as_ref()) {
            Some(d) => format!("{index} ({d})"),
            None => index.to_string(),
        };
        let staged = self.read_layer(reader, expect, &label)?;
        Ok(self.apply_layer(staged))
    }

    /// Streams a layer and checks it, without applying it yet: layers may
    /// arrive in any order (a `docker save` stream) and be applied base
    /// first afterwards with [`Analyzer::apply_layer`]. `label` names the
    /// layer in errors and warnings.
    pub fn read_layer(
        &self,
        reader: impl Read,
        expect: &LayerExpect,
        label: &str,
    ) -> Result<StagedLayer, ScanError> {
        let label: Rc<str> = label.into();
        let meters = Rc::new(RefCell::new(Meters {
            stored_hash: expect.blob_digest.as_ref().map(|_| Sha256::new()),
            stored_limit: expect.blob_size,
            ..Meters::default()
        }));
        let fail = |reason: String| ScanError::Layer {
            layer: label.to_string(),
            reason,
        };
        // Errors surfacing from the readers may be a limit the meters
        // tripped; that is the error to report.
        let read_err = |meters: &Rc<RefCell<Meters>>, e: io::Error, doing: &str| {
            meters
                .borrow_mut()
                .tripped
                .take()
                .unwrap_or_else(|| fail(format!("{doing}: {e}")))
        };

        let stored = Stored {
            inner: reader,
            meters: meters.clone(),
            label: label.clone(),
        };
        let mut buffered = BufReader::with_capacity(64 << 10, stored);
        let magic = match buffered.fill_buf() {
            Ok(m) => m.get(..6).unwrap_or(m).to_vec(),
            Err(e) => return Err(read_err(&meters, e, "reading")),
        };
        let compressed =
            magic.starts_with(&[0x1f, 0x8b]) || magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        if compressed {
            // The stored digest is the blob's identity in registries and
            // content stores; uncompressed, it is the diff_id computed anyway.
            let mut m = meters.borrow_mut();
            if m.stored_hash.is_none() {
                let mut h = Sha256::new();
                h.update(buffered.buffer());
                m.stored_hash = Some(h);
            }
        }
        let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            match zstd::Decoder::with_buffer(buffered) {
                Ok(d) => Box::new(d),
                Err(e) => return Err(fail(format!("starting zstd decompression: {e}"))),
            }
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            return Err(fail(
                "xz-compressed layers are not supported (OCI allows only gzip and zstd)".into(),
            ));
        } else if magic.starts_with(b"BZh") {
            return Err(fail(
                "bzip2-compressed layers are not supported (OCI allows only gzip and zstd)".into(),
            ));
        } else {
            Box::new(buffered)
        };
        let plain = Plain {
            inner: decoded,
            meters: meters.clone(),
            limits: self.limits.clone(),
            label: label.clone(),
        };

        let mut archive = tar::Archive::new(plain);
        let mut ops = Vec::new();
        let mut entries = 0u64;
        let mut whiteouts = 0u64;
        let mut warnings = Vec::new();
        {
            let iter = archive
                .entries()
                .map_err(|e| read_err(&meters, e, "reading the tar stream"))?;
            for entry in iter {
                let mut entry = entry.map_err(|e| read_err(&meters, e, "reading a tar header"))?;
                entries += 1;
                if entries > self.limits.max_entries {
                    return Err(ScanError::Limit {
                        layer: label.to_string(),
                        what: "entry count".into(),
                        limit: self.limits.max_entries.to_string(),
                        reason: "entry count limit",
                    });
                }
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let path = normalize(&raw).map_err(|reason| ScanError::UnsafePath {
                    layer: label.to_string(),
                    path: raw.clone(),
                    reason,
                })?;
                if path.is_empty() {
                    continue;
                }
                let (dir, name) = split_last(&path);
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    whiteouts += 1;
                    if whiteouts > self.limits.max_whiteouts {
                        if whiteouts == self.limits.max_whiteouts + 1 {
                            warnings.push(format!(
                                "layer {label}: more than {} whiteouts; the image is too large to analyse fully, and files the rest remove may still be listed",
                                self.limits.max_whiteouts
                            ));
                        }
                        continue;
                    }
                    if hidden == ".wh..opq" {
                        stage(&mut ops, Op::OpaqueDir(dir.to_owned()));
                    } else if !hidden.starts_with(".wh.") {
                        stage(&mut ops, Op::Whiteout(join(dir, hidden)));
                    }
                    // Other `.wh..wh.` names are aufs bookkeeping.
                    continue;
                }
                let kind = entry.header().entry_type();
                if kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let target = normalize(&target).map_err(|reason| ScanError::UnsafePath {
                        layer: label.to_string(),
                        path: format!("{raw} (hard link to {target})"),
                        reason,
                    })?;
                    stage(&mut ops, Op::Hardlink(path, target));
                } else if kind.is_symlink() {
                    if link_matters(&path) {
                        let target = entry
                            .link_name_bytes()
                            .map(|t| String::from_utf8_lossy(&t).into_owned())
                            .unwrap_or_default();
                        stage(&mut ops, Op::Put(path, Content::Symlink(target)));
                    } else {
                        stage(&mut ops, Op::Replace(path));
                    }
                } else if kind.is_file()
                    || kind == tar::EntryType::GNUSparse
                    || kind.is_contiguous()
                {
                    match interest(&path) {
                        Some(what) => {
                            let size = entry.size();
                            if size > self.limits.max_file_bytes {
                                return Err(ScanError::Limit {
                                    layer: label.to_string(),
                                    what: format!("'{path}' ({})", bytes(size)),
                                    limit: bytes(self.limits.max_file_bytes),
                                    reason: "files analysis reads are held in memory",
                                });
                            }
                            let mut data = Vec::with_capacity(size as usize);
                            (&mut entry)
                                .take(self.limits.max_file_bytes)
                                .read_to_end(&mut data)
                                .map_err(|e| read_err(&meters, e, &format!("reading '{path}'")))?;
                            let content = parse(what, &data, &path, &label, &mut warnings);
                            stage(&mut ops, Op::Put(path, content));
                        }
                        None if java::is_archive(&path) => {
                            let size = entry.size();
                            if size > java::MAX_ARCHIVE {
                                warnings.push(format!(
                                    "{label}: Java archive '{path}' ({}) is over the {} limit; its libraries are not listed",
                                    bytes(size),
                                    bytes(java::MAX_ARCHIVE)
                                ));
                                ops.push(Op::Replace(path));
                            } else {
                                let mut data = Vec::with_capacity(size as usize);
                                (&mut entry)
                                    .take(java::MAX_ARCHIVE)
                                    .read_to_end(&mut data)
                                    .map_err(|e| {
                                        read_err(&meters, e, &format!("reading '{path}'"))
                                    })?;
                                let (found, w) = java::parse(&data, &path);
                                warnings.extend(w);
                                // Even with nothing found: it replaces a lower layer's archive.
                                ops.push(Op::Put(path, Content::Packages(found)));
                            }
                        }
                        None if entry.header().mode().is_ok_and(|m| m & 0o111 != 0) => {
                            // An executable: a Go binary carries its modules,
                            // a Rust one built with cargo-auditable its crates.
                            let mut capture = rust_audit::Capture::new(&mut entry);
                            let mut body = BufReader::with_capacity(64 << 10, &mut capture);
                            let elf = body
                                .fill_buf()
                                .map_err(|e| read_err(&meters, e, &format!("reading '{path}'")))?
                                .starts_with(b"\x7fELF");
                            let go = if elf {
                                golang::scan(&mut body).map_err(|e| {
                                    read_err(&meters, e, &format!("reading '{path}'"))
                                })?
                            } else {
                                None
                            };
                            drop(body);
                            // Not Go: the scan read the whole file, so the
                            // capture has seen where audit data would be.
                            let rust = if elf && go.is_none() {
                                capture.finish()
                            } else {
                                None
                            };
                            match (go, rust) {
                                (Some(Ok(info)), _) => stage(
                                    &mut ops,
                                    Op::Put(
                                        path.clone(),
                                        Content::Packages(golang::packages(&info, &path)),
                                    ),
                                ),
                                (Some(Err(e)), _) => {
                                    warnings.push(format!(
                                        "{label}: Go binary '{path}': {}",
                                        match e {
                                            golang::GoError::Old =>
                                                "built before Go 1.18; its modules are not listed"
                                                    .to_owned(),
                                            golang::GoError::Malformed(what) =>
                                                format!("malformed build info ({what}); skipped"),
                                        }
                                    ));
                                    ops.push(Op::Replace(path));
                                }
                                (None, Some(Ok(crates))) => stage(
                                    &mut ops,
                                    Op::Put(
                                        path.clone(),
                                        Content::Packages(rust_audit::packages(crates, &path)),
                                    ),
                                ),
                                (None, Some(Err(e))) => {
                                    warnings.push(format!(
                                        "{label}: Rust binary '{path}': cargo-auditable data: {e}; skipped"
                                    ));
                                    ops.push(Op::Replace(path));
                                }
                                // Kept whatever the path: it may replace a binary of a lower layer.
                                (None, None) if elf => ops.push(Op::Replace(path)),
                                (None, None) => stage(&mut ops, Op::Replace(path)),
                            }
                        }
                        None => stage(&mut ops, Op::Replace(path)),
                    }
                } else if kind.is_dir() {
                    stage(&mut ops, Op::Dir(path));
                } else {
                    // Devices, FIFOs.
                    stage(&mut ops, Op::Replace(path));
                }
            }
        }
        // The tar end marker may be followed by padding; the digest covers
        // every byte.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink())
            .map_err(|e| read_err(&meters, e, "reading past the tar end"))?;
        drop(rest);

        let m = Rc::try_unwrap(meters)
            .map_err(|_| fail("internal: layer readers outlived the layer".into()))?
            .into_inner();
        let diff_id = digest_of(m.plain_hash);
        let blob_digest = m.stored_hash.map(digest_of);
        if let Some(size) = expect.blob_size
            && size != m.stored
        {
            return Err(ScanError::Mismatch {
                what: format!("layer {label} blob size"),
                expected: format!("{size} bytes as the manifest declares"),
                actual: format!("{} bytes", m.stored),
            });
        }
        if let (Some(want), Some(got)) = (&expect.blob_digest, &blob_digest)
            && want != got
        {
            return Err(ScanError::Mismatch {
                what: format!("layer {label} blob digest"),
                expected: want.clone(),
                actual: got.clone(),
            });
        }
        if let Some(want) = &expect.diff_id
            && *want != diff_id
        {
            return Err(ScanError::Mismatch {
                what: format!("layer {label} uncompressed digest (diff_id)"),
                expected: want.clone(),
                actual: diff_id,
            });
        }

        Ok(StagedLayer {
            info: LayerInfo {
                blob_digest: blob_digest.filter(|b| *b != diff_id),
                diff_id,
                size: m.plain,
                entries,
            },
            ops,
            warnings,
        })
    }

    /// Applies a layer read with [`Analyzer::read_layer`] on top of those
    /// applied so far.
    pub fn apply_layer(&mut self, staged: StagedLayer) -> &LayerInfo {
        let index = self.layers.len();
        for op in staged.ops {
            self.apply(index, op);
        }
        self.warnings.extend(staged.warnings);
        self.layers.push(staged.info);
        &self.layers[index]
    }

    fn apply(&mut self, layer: usize, op: Op) {
        match op {
            Op::Put(path, mut content) => {
                if let Content::Packages(found) = &mut content {
                    for p in found.iter_mut() {
                        p.layer = layer;
                    }
                }
                if let (
                    Content::Packages(new),
                    Some(Kept {
                        content: Content::Packages(old),
                        ..
                    }),
                ) = (&mut content, self.files.get(&path))
                {
                    // A rewritten database: packages it already listed keep
                    // the layer that introduced them.
                    let first: HashMap<(&str, &str, Option<&str>), usize> = old
                        .iter()
                        .map(|p| {
                            (
                                (p.name.as_str(), p.version.as_str(), p.arch.as_deref()),
                                p.layer,
                            )
                        })
                        .collect();
                    for p in new.iter_mut() {
                        if let Some(l) =
                            first.get(&(p.name.as_str(), p.version.as_str(), p.arch.as_deref()))
                        {
                            p.layer = *l;
                        }
                    }
                }
                // The file replaces what lower layers had at this path and,
                // if it was a directory, below it.
                self.remove_lower(&path, layer);
                self.files.insert(path, Kept { layer, content });
            }
            Op::Whiteout(path) => self.remove_lower(&path, layer),
            Op::OpaqueDir(dir) => {
                let below: Vec<String> = self
                    .files
                    .range(dir.clone()..)
                    .take_while(|(p, _)| p.starts_with(&dir))
                    .filter(|(p, k)| *p != &dir && is_within(p, &dir) && k.layer < layer)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in below {
                    self.files.remove(&p);
                }
            }
            Op::Replace(path) => self.remove_lower(&path, layer),
            Op::Dir(path) => {
                if self.files.get(&path).is_some_and(|k| k.layer < layer) {
                    self.files.remove(&path);
                }
            }
            Op::Hardlink(path, target) => match self.files.get(&target) {
                Some(k) => {
                    let content = k.content.clone();
                    self.files.insert(path, Kept { layer, content });
                }
                None => {
                    if interest(&path).is_some() {
                        self.warnings.push(format!(
                                "layer {layer}: '{path}' is a hard link to '{target}', which no layer provides; ignored"
                            ));
                    }
                }
            },
        }
    }

    /// Removes `path` and everything below it that lower layers provided.
    fn remove_lower(&mut self, path: &str, layer: usize) {
        let gone: Vec<String> = self
            .files
            .range(path.to_owned()..)
            .take_while(|(p, _)| p.starts_with(path))
            .filter(|(p, k)| is_within(p, path) && k.layer < layer)
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.files.remove(&p);
        }
    }

    /// Follows symbolic links along `path` (at most 40, as the kernel does)
    /// to what the image has there.
    fn resolve(&self, path: &str, warnings: &mut Vec<String>) -> Option<(String, &Kept)> {
        let mut path = path.to_owned();
        let mut hops = 0;
        'walk: loop {
            let mut end = 0;
            while end < path.len() {
                end = path[end + 1..]
                    .find('/')
                    .map_or(path.len(), |i| end + 1 + i);
                let prefix = &path[..end];
                if let Some(Kept {
                    content: Content::Symlink(target),
                    ..
                }) = self.files.get(prefix)
                {
                    hops += 1;
                    if hops > 40 {
                        warnings.push(format!(
                            "too many levels of symbolic links resolving '{path}'"
                        ));
                        return None;
                    }
                    let (to, escaped) = link_target(prefix, target);
                    if escaped {
                        warnings.push(format!(
                            "symbolic link '{prefix}' -> '{target}' climbs above the image root; resolved inside the image, as a container would"
                        ));
                    }
                    let rest = path[end..].trim_start_matches('/');
                    path = if rest.is_empty() { to } else { join(&to, rest) };
                    continue 'walk;
                }
            }
            return self.files.get(&path).map(|k| (path, k));
        }
    }

    /// What the image's filesystem holds once every layer is applied.
    pub fn finish(self) -> Analysis {
        let mut warnings = Vec::new();
        let mut os = None;
        for (path, interest) in FILES {
            if os.is_some() {
                break;
            }
            if matches!(interest, Interest::OsRelease | Interest::ReleaseFile)
                && let Some((
                    _,
                    Kept {
                        content: Content::Os(found),
                        ..
                    },
                )) = self.resolve(path, &mut warnings)
            {
                os = Some(found.clone());
            }
        }

        let mut packages = Vec::new();
        let mut seen = Vec::new();
        for (path, interest) in FILES {
            if !matches!(interest, Interest::Dpkg(_) | Interest::Apk | Interest::Rpm) {
                continue;
            }
            if let Some((
                real,
                Kept {
                    content: Content::Packages(found),
                    ..
                },
            )) = self.resolve(path, &mut warnings)
                && !seen.contains(&real)
            {
                packages.extend(found.iter().cloned());
                seen.push(real);
            }
        }
        for (path, kept) in self
            .files
            .range(DPKG_STATUS_D.to_owned()..)
            .take_while(|(p, _)| p.starts_with(DPKG_STATUS_D))
        {
            if let Content::Packages(found) = &kept.content
                && split_last(path).0 == DPKG_STATUS_D
            {
                packages.extend(found.iter().cloned());
            }
        }

        // Language packages at every path they are found: a second copy of
        // a vulnerable library elsewhere in the image is a finding of its
        // own. A lockfile's entry (`package-lock.json`, `Cargo.lock`) says
        // what was meant to be installed: it counts only where no installed
        // copy of the same package was found.
        let mut installed = std::collections::HashSet::new();
        let mut located = std::collections::HashSet::new();
        let mut locked = Vec::new();
        for kept in self.files.values() {
            if let Content::Packages(found) = &kept.content
                && found.first().is_some_and(|p| !p.kind.is_distro())
            {
                for p in found {
                    if is_lockfile(&p.path) {
                        locked.push(p);
                        continue;
                    }
                    installed.insert((p.kind, p.name.as_str(), p.version.as_str()));
                    if located.insert((p.kind, &p.name, &p.version, &p.path)) {
                        packages.push(p.clone());
                    }
                }
            }
        }
        for p in locked {
            if !installed.contains(&(p.kind, p.name.as_str(), p.version.as_str()))
                && located.insert((p.kind, &p.name, &p.version, &p.path))
            {
                packages.push(p.clone());
            }
        }

        let id = os
            .as_ref()
            .and_then(OsRelease::id)
            .unwrap_or_default()
            .to_owned();
        let version = os
            .as_ref()
            .and_then(OsRelease::version_id)
            .map(str::to_owned);
        for p in &mut packages {
            let namespace = match p.kind {
                PackageKind::Deb if id == "ubuntu" => "ubuntu",
                PackageKind::Deb => "debian",
                PackageKind::Apk => "alpine",
                PackageKind::Rpm if id.is_empty() => "unknown",
                PackageKind::Rpm => id.as_str(),
                PackageKind::Cargo
                | PackageKind::Npm
                | PackageKind::PyPI
                | PackageKind::Go
                | PackageKind::Maven => "",
            };
            let distro = version
                .as_ref()
                .filter(|_| p.kind.is_distro() && id == namespace)
                .map(|v| format!("{id}-{v}"));
            p.set_purl(namespace, distro.as_deref());
        }
        packages.sort_by(|a, b| {
            (a.kind, &a.name, &a.version, &a.arch, &a.path)
                .cmp(&(b.kind, &b.name, &b.version, &b.arch, &b.path))
        });

        let mut all_warnings = self.warnings;
        all_warnings.extend(warnings);
        Analysis {
            os,
            packages,
            layers: self.layers,
            warnings: all_warnings,
        }
    }
}

/// Whether a package was read from a lockfile rather than found installed.
fn is_lockfile(path: &str) -> bool {
    matches!(
        split_last(path).1,
        "package-lock.json" | "npm-shrinkwrap.json" | "Cargo.lock"
    )
}

fn parse(
    what: Interest,
    data: &[u8],
    path: &str,
    label: &str,
    warnings: &mut Vec<String>,
) -> Content {
    match what {
        Interest::OsRelease => Content::Os(os::parse_os_release(data, path)),
        Interest::ReleaseFile => match os::parse_release_file(data, path) {
            Some(os) => Content::Os(os),
            None => {
                warnings.push(format!(
                    "layer {label}: '{path}' does not name a known distribution; ignored"
                ));
                Content::Opaque
            }
        },
        Interest::Dpkg(layout) => {
            let (found, w) = dpkg::parse(data, path, 0, layout);
            warnings.extend(w);
            Content::Packages(found)
        }
        Interest::Rpm => {
            let (found, w) = pkg::rpm::parse_sqlite(data, path);
            warnings.extend(w);
            Content::Packages(found)
        }
        Interest::RpmUnsupported(format) => {
            warnings.push(format!(
                "layer {label}: '{path}' is an rpm database in {format} format, which is not read; this image's rpm packages are not listed"
            ));
            Content::Opaque
        }
        Interest::Lang(file) => {
            let (found, w) = file.parse(data, path);
            warnings.extend(w);
            Content::Packages(found)
        }
        Interest::Apk => {
            let (found, w) = pkg::apk::parse(data, path, 0);
            warnings.extend(w);
            Content::Packages(found)
        }
    }
}
