//! Signed bundles: the vulnerability database (and, when given, the asset
//! catalog and the sensor images' digests) in one versioned file that an
//! air-gapped cluster can take in and check.
//!
//! A bundle is a tar archive whose first member is `manifest.json` (what
//! the bundle holds: each member's name, size and sha256, the database's
//! schema and age), whose second is `manifest.sig`, the Ed25519 signature
//! of the manifest (base64), and whose other members follow in the
//! manifest's order. A reader checks the signature against the keys it
//! pins before it believes anything in the manifest, then checks each
//! member's size and sha256 as it streams past: a bundle is accepted
//! whole or not at all. `tar tf` lists one.
//!
//! Keys are written `ed25519:BASE64` (the 32-byte public key); a signing
//! key is a PEM file holding its PKCS#8 document.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vuln::db::{self, Database};

/// The bundle format this program reads and writes.
pub const FORMAT: u32 = 1;
/// The manifest's member name.
pub const MANIFEST: &str = "manifest.json";
/// The signature's member name.
pub const SIGNATURE: &str = "manifest.sig";
/// The environment variable sensors read their trusted keys from.
pub const KEYS_ENV: &str = "SIGHTLINE_BUNDLE_KEYS";
/// The media type bundles are sent and served as.
pub const MEDIA_TYPE: &str = "application/vnd.sightline.bundle.v1+tar";
/// The vulnerability database's member name.
pub const DATABASE: &str = "vulns.db";
/// The signed bytes start with this, so a signature over a bundle
/// manifest means nothing anywhere else.
const CONTEXT: &[u8] = b"sightline-bundle-v1\n";
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
const MAX_SIGNATURE_BYTES: u64 = 1024;
const MAX_MEMBERS: usize = 32;
/// Largest member accepted.
pub const MAX_MEMBER_BYTES: u64 = 4 << 30;
const PEM_LABEL: &str = "SIGHTLINE BUNDLE SIGNING KEY";

/// Why a bundle or a key was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Not a bundle, or not one this program reads.
    #[error("not a Sightline bundle: {0}")]
    NotABundle(String),
    /// Signed by a key that is not pinned.
    #[error(
        "signed by key {key_id}, which is not among the trusted keys ({trusted}); pin its public key to accept it"
    )]
    UnknownKey {
        /// The signer's key ID.
        key_id: String,
        /// The trusted keys' IDs.
        trusted: String,
    },
    /// The signature does not match the manifest.
    #[error("the manifest's signature does not verify with key {key_id}: the bundle was altered")]
    BadSignature {
        /// The key tried.
        key_id: String,
    },
    /// The manifest is unusable.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A member differs from what the manifest says.
    #[error("member {name}: {reason}")]
    Member {
        /// The member.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The database's schema is not the one this program reads.
    #[error(
        "the database has schema {found}, this program reads schema {supported}; use a bundle made for this version"
    )]
    Schema {
        /// The bundle's.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// A key could not be read.
    #[error("key: {0}")]
    Key(String),
    /// The database inside is unusable.
    #[error(transparent)]
    Database(#[from] db::DbError),
}

impl BundleError {
    /// A short, stable word for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Io { .. } => "io",
            BundleError::NotABundle(_) => "not_a_bundle",
            BundleError::UnknownKey { .. } => "unknown_key",
            BundleError::BadSignature { .. } => "bad_signature",
            BundleError::Manifest(_) => "manifest",
            BundleError::Member { .. } => "member",
            BundleError::Schema { .. } => "schema",
            BundleError::Key(_) => "key",
            BundleError::Database(_) => "database",
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BundleError {
    let what = what.into();
    move |source| BundleError::Io { what, source }
}

/// A trusted public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A short name for the key: the first 8 bytes of its sha256, in hex.
    pub fn key_id(&self) -> String {
        hex(&Sha256::digest(self.0)[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ed25519:{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl FromStr for PublicKey {
    type Err = BundleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b64 = s.trim().strip_prefix("ed25519:").ok_or_else(|| {
            BundleError::Key(format!(
                "{s:?} is not a public key (expected ed25519:BASE64, as `sightline bundle keygen` prints)"
            ))
        })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| BundleError::Key(format!("{s:?}: {e}")))?;
        let raw: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            BundleError::Key(format!(
                "{s:?}: an Ed25519 public key is 32 bytes, not {}",
                v.len()
            ))
        })?;
        Ok(PublicKey(raw))
    }
}

/// Parses a list of keys separated by commas or whitespace (an
/// environment variable's form).
pub fn parse_keys(list: &str) -> Result<Vec<PublicKey>, BundleError> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// A key that signs bundles.
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// A new key, and its PEM file's text.
    pub fn generate() -> Result<(SigningKey, String), BundleError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| BundleError::Key("the system's random source failed".into()))?;
        let pem = pem_encode(doc.as_ref());
        Ok((SigningKey::from_pkcs8(doc.as_ref())?, pem))
    }

    /// Reads a PEM file written by [`SigningKey::generate`].
    pub fn from_pem(text: &str) -> Result<SigningKey, BundleError> {
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let end = format!("-----END {PEM_LABEL}-----");
        let body = text
            .trim()
            .strip_prefix(&begin)
            .and_then(|t| t.strip_suffix(&end))
            .ok_or_else(|| {
                BundleError::Key(format!(
                    "not a signing key (expected a {PEM_LABEL} PEM block)"
                ))
            })?;
        let der: String = body.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .map_err(|e| BundleError::Key(format!("the PEM block is not base64: {e}")))?;
        SigningKey::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, BundleError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(SigningKey)
            .map_err(|e| BundleError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))
    }

    /// A key from a fixed seed: for fuzzing and tests only (a real key
    /// comes from [`SigningKey::generate`]).
    #[doc(hidden)]
    pub fn from_seed(seed: &[u8; 32]) -> Result<SigningKey, BundleError> {
        let public = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| BundleError::Key(e.to_string()))?;
        Ok(SigningKey(public))
    }

    /// The signature of a manifest's bytes, as `manifest.sig` holds it.
    pub fn sign_manifest(&self, manifest: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(self.0.sign(&signed_bytes(manifest)).as_ref())
    }

    /// Its public key, to pin where bundles are read.
    pub fn public(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(raw)
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

/// What a bundle says it holds (signed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The bundle format ([`FORMAT`]).
    pub format: u32,
    /// When it was made (RFC 3339).
    pub created: String,
    /// The signing key's ID.
    pub key_id: String,
    /// The vulnerability database.
    pub database: DatabaseInfo,
    /// The asset catalog's version, when the bundle carries one
    /// (`catalog/*.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<String>,
    /// Images to mirror with the bundle: a name (`operator`, `sensor`) to
    /// a digest-pinned reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The members after the signature, in order.
    pub members: Vec<Member>,
}

/// The database's summary in a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseInfo {
    /// Its schema ([`db::FORMAT`] when made).
    pub schema: u32,
    /// When it was built.
    pub built: String,
    /// How many advisories.
    pub advisories: usize,
    /// The newest record's modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Its name in the archive.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, hex.
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signed_bytes(manifest: &[u8]) -> Vec<u8> {
    [CONTEXT, manifest].concat()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != MANIFEST
        && name != SIGNATURE
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

/// What goes into a bundle besides the database.
#[derive(Default)]
pub struct Extras<'a> {
    /// Other members: name in the bundle, file.
    pub files: Vec<(String, &'a Path)>,
    /// The catalog's version, when `files` hold one.
    pub catalog_version: Option<String>,
    /// Images to record.
    pub images: BTreeMap<String, String>,
}

/// Writes a bundle of the database at `database` and `extras`, signed with
/// `key`, to `out` (through a side file, so `out` is whole or absent).
pub fn write(
    out: &Path,
    key: &SigningKey,
    database: &Path,
    extras: Extras<'_>,
    created: String,
) -> Result<Manifest, BundleError> {
    let db = Database::read(database)?;
    let mut files: Vec<(String, &Path)> = vec![(DATABASE.to_owned(), database)];
    files.extend(extras.files);
    let mut names = BTreeSet::new();
    let mut members = Vec::new();
    for (name, path) in &files {
        if !valid_name(name) || !names.insert(name.clone()) {
            return Err(BundleError::Manifest(format!(
                "{name:?} cannot be a member's name"
            )));
        }
        let shown = path.display().to_string();
        let mut f = File::open(path).map_err(io_err(format!("reading {shown}")))?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut f, &mut hasher).map_err(io_err(format!("reading {shown}")))?;
        members.push(Member {
            name: name.clone(),
            size,
            sha256: hex(&hasher.finalize()),
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        created,
        key_id: key.public().key_id(),
        database: DatabaseInfo {
            schema: db::FORMAT,
            built: db.meta.built.clone(),
            advisories: db.meta.advisories,
            newest: db.meta.newest.clone(),
        },
        catalog_version: extras.catalog_version,
        images: extras.images,
        members,
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest(e.to_string()))?;
    let signature = key.sign_manifest(&manifest_json);
    let shown = out.display().to_string();
    let tmp = out.with_extension("partial");
    let result = (|| -> io::Result<()> {
        let mut tar = tar::Builder::new(BufWriter::new(File::create(&tmp)?));
        tar.mode(tar::HeaderMode::Deterministic);
        let mut append = |name: &str, size: u64, data: &mut dyn Read| -> io::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, data)
        };
        append(
            MANIFEST,
            manifest_json.len() as u64,
            &mut &manifest_json[..],
        )?;
        append(SIGNATURE, signature.len() as u64, &mut signature.as_bytes())?;
        for ((name, path), m) in files.iter().zip(&manifest.members) {
            let mut f = File::open(path)?;
            append(name, m.size, &mut (&mut f).take(m.size))?;
        }
        let w = tar.into_inner()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(BundleError::Io {
            what: format!("writing {shown}"),
            source: e,
        });
    }
    Ok(manifest)
}

/// Counts and hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

fn read_small(entry: &mut impl Read, name: &str, max: u64) -> Result<Vec<u8>, BundleError> {
    let mut data = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut data)
        .map_err(io_err(format!("reading {name}")))?;
    if data.len() as u64 > max {
        return Err(BundleError::NotABundle(format!(
            "{name} is larger than {max} bytes"
        )));
    }
    Ok(data)
}

/// Checks a bundle read from `input` against the trusted `keys`, handing
/// each member to `sink` as it streams past. `sink` sees a member before
/// its hash is checked: keep what it writes aside until this returns `Ok`.
pub fn verify<R: Read>(
    input: R,
    keys: &[PublicKey],
    mut sink: impl FnMut(&Member, &mut dyn Read) -> io::Result<()>,
) -> Result<Manifest, BundleError> {
    if keys.is_empty() {
        return Err(BundleError::Key(
            "no trusted key to check the bundle with".into(),
        ));
    }
    let mut archive = tar::Archive::new(input);
    let mut entries = archive
        .entries()
        .map_err(|e| BundleError::NotABundle(e.to_string()))?;
    let mut next = |want: &str| -> Result<tar::Entry<'_, R>, BundleError> {
        let entry = entries
            .next()
            .ok_or_else(|| BundleError::NotABundle(format!("no {want}")))?
            .map_err(|e| BundleError::NotABundle(e.to_string()))?;
        let name = entry.path_bytes().into_owned();
        if name != want.as_bytes() || entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BundleError::NotABundle(format!(
                "expected the file {want}, found {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        Ok(entry)
    };
    let manifest_json = read_small(&mut next(MANIFEST)?, MANIFEST, MAX_MANIFEST_BYTES)?;
    let signature = read_small(&mut next(SIGNATURE)?, SIGNATURE, MAX_SIGNATURE_BYTES)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim_ascii())
        .map_err(|e| BundleError::NotABundle(format!("{SIGNATURE} is not base64: {e}")))?;
    // Nothing in the manifest is believed before the signature verifies,
    // so the key is found by trying each trusted one.
    let signed = signed_bytes(&manifest_json);
    let Some(key) = keys.iter().find(|k| {
        UnparsedPublicKey::new(&ED25519, k.0)
            .verify(&signed, &signature)
            .is_ok()
    }) else {
        // Name the key the bundle claims, to help whoever pins keys.
        let claimed = serde_json::from_slice::<serde_json::Value>(&manifest_json)
            .ok()
            .and_then(|v| v.get("keyId").and_then(|k| k.as_str()).map(str::to_owned))
            .filter(|k| k.len() <= 64)
            .unwrap_or_else(|| "(unnamed)".into());
        let trusted: Vec<String> = keys.iter().map(PublicKey::key_id).collect();
        return Err(if trusted.contains(&claimed) {
            BundleError::BadSignature { key_id: claimed }
        } else {
            BundleError::UnknownKey {
                key_id: claimed,
                trusted: trusted.join(", "),
            }
        });
    };
    let manifest: Manifest =
        serde_json::from_slice(&manifest_json).map_err(|e| BundleError::Manifest(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Manifest(format!(
            "bundle format {} (this program reads {FORMAT})",
            manifest.format
        )));
    }
    if manifest.key_id != key.key_id() {
        return Err(BundleError::Manifest(format!(
            "names key {} but was signed by {}",
            manifest.key_id,
            key.key_id()
        )));
    }
    if manifest.database.schema != db::FORMAT {
        return Err(BundleError::Schema {
            found: manifest.database.schema,
            supported: db::FORMAT,
        });
    }
    let mut names = BTreeSet::new();
    if manifest.members.len() > MAX_MEMBERS
        || !manifest.members.iter().all(|m| {
            valid_name(&m.name)
                && names.insert(m.name.as_str())
                && m.size <= MAX_MEMBER_BYTES
                && m.sha256.len() == 64
        })
        || !names.contains(DATABASE)
    {
        return Err(BundleError::Manifest(
            "the member list is unusable (too long, a bad or repeated name, no database)".into(),
        ));
    }
    for member in &manifest.members {
        let entry = next(&member.name).map_err(|e| BundleError::Member {
            name: member.name.clone(),
            reason: e.to_string(),
        })?;
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size != member.size {
            return Err(BundleError::Member {
                name: member.name.clone(),
                reason: format!("{size} bytes, the manifest says {}", member.size),
            });
        }
        let mut hashing = Hashing {
            inner: entry,
            hasher: Sha256::new(),
            read: 0,
        };
        sink(member, &mut hashing).map_err(io_err(format!("taking {}", member.name)))?;
        io::copy(&mut hashing, &mut io::sink())
            .map_err(io_err(format!("reading {}", member.name)))?;
        let got = hex(&hashing.hasher.finalize());
        if hashing.read != member.size || got != member.sha256 {
            return Err(BundleError::Member {
                name: member.name.clone(),
                reason: format!(
                    "sha256 {got} over {} bytes, the manifest says {} over {}",
                    hashing.read, member.sha256, member.size
                ),
            });
        }
    }
    if let Some(extra) = entries.next() {
        let name = extra
            .map(|e| String::from_utf8_lossy(&e.path_bytes()).into_owned())
            .unwrap_or_else(|e| e.to_string());
        return Err(BundleError::NotABundle(format!(
            "{name:?} follows the members the manifest lists"
        )));
    }
    Ok(manifest)
}

/// Checks the bundle at `bundle` and writes its database to `dest`
/// (through a side file, renamed over `dest` only once the bundle checked
/// out and the database reads): a refused bundle leaves `dest` as it was.
pub fn extract_database(
    bundle: &Path,
    keys: &[PublicKey],
    dest: &Path,
) -> Result<(Manifest, Database), BundleError> {
    let shown = bundle.display().to_string();
    let file = File::open(bundle).map_err(io_err(format!("opening {shown}")))?;
    let tmp = dest.with_extension("unverified");
    let checked = (|| {
        let manifest = verify(BufReader::new(file), keys, |member, data| {
            if member.name == DATABASE {
                let mut out = BufWriter::new(File::create(&tmp)?);
                io::copy(data, &mut out)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            Ok(())
        })?;
        let db = Database::read(&tmp)?;
        std::fs::rename(&tmp, dest).map_err(io_err(format!("writing {}", dest.display())))?;
        Ok((manifest, db))
    })();
    if checked.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    checked
}

/// Whether the file at `path` looks like a bundle (a tar whose first member
/// is the manifest), as opposed to a bare database.
pub fn looks_like_bundle(head: &[u8]) -> bool {
    head.len() >= 512 && head.starts_with(MANIFEST.as_bytes()) && head[MANIFEST.len()] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> std::path::PathBuf {
        let a: db::Advisory = serde_json::from_value(serde_json::json!({
            "id": "GHSA-test",
            "severity": {"level": "high"},
            "affected": [{"ecosystem": "npm", "name": "left-pad", "ranges": [
                {"semver": true, "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}
            ]}]
        }))
        .expect("advisory");
        let db = Database::from_advisories(vec![a], "2026-12-07T00:00:00Z".into());
        let path = dir.join("vulns.db");
        db.write(&path).expect("write");
        path
    }

    fn bundle(dir: &Path, key: &SigningKey) -> std::path::PathBuf {
        let db = database(dir);
        let extra = dir.join("images.txt");
        std::fs::write(&extra, b"hello").expect("extra");
        let out = dir.join("b.bundle");
        write(
            &out,
            key,
            &db,
            Extras {
                files: vec![("notes/images.txt".into(), extra.as_path())],
                catalog_version: None,
                images: [("sensor".to_owned(), "r/s@sha256:00".to_owned())].into(),
            },
            "2026-12-07T00:00:00Z".into(),
        )
        .expect("bundle");
        out
    }

    fn check(path: &Path, keys: &[PublicKey]) -> Result<Manifest, BundleError> {
        verify(File::open(path).expect("open"), keys, |_, _| Ok(()))
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_named() {
        let (key, pem) = SigningKey::generate().expect("key");
        let again = SigningKey::from_pem(&pem).expect("pem");
        assert_eq!(key.public(), again.public());
        let shown = key.public().to_string();
        assert_eq!(shown.parse::<PublicKey>().expect("parse"), key.public());
        assert_eq!(
            parse_keys(&format!(" {shown},{shown} "))
                .expect("list")
                .len(),
            2
        );
        assert!(
            matches!("ed25519:AAAA".parse::<PublicKey>(), Err(BundleError::Key(m)) if m.contains("32 bytes"))
        );
        assert!("rsa:AAAA".parse::<PublicKey>().is_err());
        assert!(SigningKey::from_pem("-----BEGIN SIGHTLINE BUNDLE SIGNING KEY-----\nAAAA\n-----END SIGHTLINE BUNDLE SIGNING KEY-----").is_err());
    }

    #[test]
    fn a_signed_bundle_verifies_and_yields_its_database() {
        let dir = tempfile::tempdir().expect("dir");
        let (key, _) = SigningKey::generate().expect("key");
        let path = bundle(dir.path(), &key);
        let (other, _) = SigningKey::generate().expect("key");
        let keys = [other.public(), key.public()];
        let manifest = check(&path, &keys).expect("verifies");
        assert_eq!(manifest.database.advisories, 1);
        assert_eq!(manifest.members.len(), 2);
        let dest = dir.path().join("out.db");
        let (_, db) = extract_database(&path, &keys, &dest).expect("extract");
        assert_eq!(db.lookup("npm", "left-pad").count(), 1);
        let mut head = vec![0u8; 512];
        File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .expect("head");
        assert!(looks_like_bundle(&head));
        assert!(!looks_like_bundle(b"sightline-vulndb 1\n"));
    }

    #[test]
    fn another_key_a_changed_byte_or_a_changed_manifest_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (key, _) = SigningKey::generate().expect("key");
        let path = bundle(dir.path(), &key);
        let (other, _) = SigningKey::generate().expect("key");
        assert!(matches!(
            check(&path, &[other.public()]),
            Err(BundleError::UnknownKey { key_id, .. }) if key_id == key.public().key_id()
        ));
        assert!(matches!(check(&path, &[]), Err(BundleError::Key(_))));

        let original = std::fs::read(&path).expect("read");
        let find = |needle: &[u8]| {
            original
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("found")
        };
        // A byte of the database member.
        let mut altered = original.clone();
        let at = find(db::MAGIC.as_bytes()) + 3;
        altered[at] ^= 1;
        let target = dir.path().join("altered.bundle");
        std::fs::write(&target, &altered).expect("write");
        let dest = dir.path().join("never.db");
        let e = extract_database(&target, &[key.public()], &dest).expect_err("refused");
        assert!(matches!(e, BundleError::Member { .. }), "{e}");
        assert!(!dest.exists() && !dest.with_extension("unverified").exists());

        // The manifest's advisory count.
        let mut altered = original.clone();
        let at = find(b"\"advisories\": 1");
        altered[at + 14] = b'9';
        std::fs::write(&target, &altered).expect("write");
        assert!(matches!(
            check(&target, &[key.public()]),
            Err(BundleError::BadSignature { .. })
        ));

        // Cut short.
        std::fs::write(&target, &original[..original.len() / 2]).expect("write");
        assert!(check(&target, &[key.public()]).is_err());
        // A database of another schema, signed.
        let manifest = serde_json::to_vec(&serde_json::json!({
            "format": FORMAT, "created": "x", "keyId": key.public().key_id(),
            "database": {"schema": db::FORMAT + 1, "built": "x", "advisories": 1},
            "members": [],
        }))
        .expect("json");
        let sig = key.sign_manifest(&manifest);
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [(MANIFEST, &manifest[..]), (SIGNATURE, sig.as_bytes())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, name, data).expect("append");
        }
        std::fs::write(&target, tar.into_inner().expect("tar")).expect("write");
        assert!(matches!(
            check(&target, &[key.public()]),
            Err(BundleError::Schema { found, .. }) if found == db::FORMAT + 1
        ));
        // Not a bundle at all.
        std::fs::write(&target, b"sightline-vulndb 1\n").expect("write");
        assert!(check(&target, &[key.public()]).is_err());
    }
}
