//! The detail store: each image's whole analysis (its SBOM) and every
//! finding, kept outside etcd, and the history of each finding (when it
//! was first and last seen, and when it went away).
//!
//! Two engines hold the same schema:
//! - SQLite ([`sqlite`]), a file in the operator's volume: the default,
//!   for one replica;
//! - PostgreSQL ([`postgres`]), for several replicas sharing one store.
//!
//! Details are kept per Asset and per source (the Sensor or key that sent
//! them), so no source overwrites another's. What is stored is compressed
//! JSON of the report contract's own types; a source sending the same
//! details again (another node of the same Sensor, a periodic refresh)
//! costs one small update, not a rewrite.

pub mod postgres;
pub mod sqlite;

use sha2::{Digest, Sha256};
use sightline_report::details::ImageDetails;
use sightline_scan::source::Image;
use sightline_scan::vuln::Finding;

/// The schema version this operator writes; a store of a newer version is
/// refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, connection, SQL).
    #[error("the detail store ({engine}): {message}")]
    Engine {
        /// `sqlite` or `postgresql`.
        engine: &'static str,
        /// Why.
        message: String,
    },
    /// What is stored cannot be read back.
    #[error("the detail store holds unreadable details for {asset}: {message}")]
    Corrupt {
        /// The Asset.
        asset: String,
        /// Why.
        message: String,
    },
    /// The store was written by a newer operator.
    #[error(
        "the detail store has schema version {found}; this operator knows up to {SCHEMA_VERSION}"
    )]
    NewerSchema {
        /// The store's version.
        found: i64,
    },
    /// The location cannot be used (its scheme, never the rest, which may
    /// hold a password).
    #[error(
        "the detail store location (scheme {0:?}) is neither a file path nor a postgres:// URL"
    )]
    Location(String),
}

/// Details as stored for one Asset and source.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Who sent them.
    pub source: String,
    /// When they were last sent.
    pub reported: jiff::Timestamp,
    /// The analysis.
    pub image: Image,
    /// Every finding, when the source matched the image.
    pub vulnerabilities: Option<Vec<Finding>>,
}

/// One finding's history for one source.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingRecord {
    /// Who reported it.
    pub source: String,
    /// The advisory.
    pub id: String,
    /// The package.
    pub package: String,
    /// The installed version.
    pub version: String,
    /// Its severity level (`critical`, …).
    pub severity: String,
    /// The fixed version, when known.
    pub fixed: Option<String>,
    /// First reported.
    pub first_seen: jiff::Timestamp,
    /// Last reported.
    pub last_seen: jiff::Timestamp,
    /// When a report from the same source no longer had it.
    pub resolved: Option<jiff::Timestamp>,
}

/// One write, engine-neutral: what [`Store::put`] hands an engine.
pub(crate) struct Put {
    pub asset: String,
    pub source: String,
    pub now_ms: i64,
    /// SHA-256 of the details: the same details again are only touched.
    pub hash: String,
    pub packages: i64,
    pub vulnerabilities: Option<i64>,
    /// zstd-compressed JSON of the image.
    pub image: Vec<u8>,
    /// zstd-compressed JSON of the findings.
    pub findings: Option<Vec<u8>>,
    /// The findings' keys, for their history.
    pub keys: Option<Vec<FindingKey>>,
}

/// What identifies a finding in its history, and what may change.
pub(crate) struct FindingKey {
    pub id: String,
    pub package: String,
    pub version: String,
    pub severity: String,
    pub fixed: Option<String>,
}

/// A row as an engine reads it back.
pub(crate) struct Row {
    pub source: String,
    pub reported_ms: i64,
    pub image: Vec<u8>,
    pub findings: Option<Vec<u8>>,
}

/// One runtime of a node Sensor on one node: what a full listing covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeRuntime {
    /// The Sensor, `<namespace>/<name>`.
    pub source: String,
    /// The node.
    pub node: String,
    /// The runtime (`containerd`, `docker`), or '' when none was named.
    pub runtime: String,
}

/// On how many nodes a source holds an asset, and the latest few.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holders {
    /// How many nodes.
    pub count: i64,
    /// The nodes that took it up last, newest first, with their runtime.
    pub recent: Vec<(String, String)>,
}

/// The store, whichever engine holds it.
#[derive(Clone)]
pub enum Store {
    /// A file.
    Sqlite(std::sync::Arc<sqlite::Sqlite>),
    /// A server.
    Postgres(std::sync::Arc<postgres::Postgres>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.engine())
    }
}

/// Compression level: fast, and JSON of package lists shrinks ~10×.
const ZSTD_LEVEL: i32 = 3;
/// Largest decompressed JSON read back (a bound against a corrupt row).
const MAX_DECOMPRESSED: usize = 256 << 20;

impl Store {
    /// Opens (and creates or migrates) the store at `location`: a
    /// `postgres://` or `postgresql://` URL, else a SQLite file path.
    pub async fn open(location: &str) -> Result<Store, StoreError> {
        Store::open_with_ca(location, None).await
    }

    /// As [`Store::open`]; a PostgreSQL server's certificate is checked
    /// against `ca` (PEM file) when the URL names no `sslrootcert`.
    pub async fn open_with_ca(
        location: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Store, StoreError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Ok(Store::Postgres(std::sync::Arc::new(
                postgres::Postgres::open(location, ca).await?,
            )))
        } else if location.is_empty() || location.contains("://") {
            let scheme = location.split("://").next().unwrap_or_default();
            Err(StoreError::Location(scheme.to_owned()))
        } else {
            let path = std::path::PathBuf::from(location);
            let db = tokio::task::spawn_blocking(move || sqlite::Sqlite::open(&path))
                .await
                .map_err(|e| sqlite::error(e.to_string()))??;
            Ok(Store::Sqlite(std::sync::Arc::new(db)))
        }
    }

    /// `sqlite` or `postgresql`.
    pub fn engine(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgresql",
        }
    }

    /// Whether every replica may serve reads (a shared server), rather
    /// than only the one holding the file.
    pub fn shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Keeps `details` as `source`'s for `asset`, at `now`; updates the
    /// findings' history. Returns whether anything changed (false: the
    /// same details again, only their times were touched).
    pub async fn put(
        &self,
        asset: &str,
        source: &str,
        now: jiff::Timestamp,
        details: &ImageDetails,
    ) -> Result<bool, StoreError> {
        let put = encode(asset, source, now, details)?;
        match self {
            Store::Sqlite(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.put(&put))
                    .await
                    .map_err(|e| sqlite::error(e.to_string()))?
            }
            Store::Postgres(db) => db.put(&put).await,
        }
    }

    /// The latest details of `asset`, from `source` when given, else from
    /// whichever source sent them last.
    pub async fn latest(
        &self,
        asset: &str,
        source: Option<&str>,
    ) -> Result<Option<Stored>, StoreError> {
        let row = match self {
            Store::Sqlite(db) => {
                let db = db.clone();
                let (asset, source) = (asset.to_owned(), source.map(str::to_owned));
                tokio::task::spawn_blocking(move || db.latest(&asset, source.as_deref()))
                    .await
                    .map_err(|e| sqlite::error(e.to_string()))??
            }
            Store::Postgres(db) => db.latest(asset, source).await?,
        };
        row.map(|r| decode(asset, r)).transpose()
    }

    /// Every finding ever reported for `asset`, open ones first, then by
    /// when they were last seen.
    pub async fn history(&self, asset: &str) -> Result<Vec<FindingRecord>, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let db = db.clone();
                let asset = asset.to_owned();
                tokio::task::spawn_blocking(move || db.history(&asset))
                    .await
                    .map_err(|e| sqlite::error(e.to_string()))?
            }
            Store::Postgres(db) => db.history(asset).await,
        }
    }

    /// Whether `source`'s details of `asset` are kept.
    pub async fn has(&self, asset: &str, source: &str) -> Result<bool, StoreError> {
        Ok(self.kept_by(source, Some(asset)).await?.contains(asset))
    }

    /// The Assets whose details from `source` are kept (only `asset`, when
    /// given).
    pub async fn kept_by(
        &self,
        source: &str,
        asset: Option<&str>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let db = db.clone();
                let (source, asset) = (source.to_owned(), asset.map(str::to_owned));
                tokio::task::spawn_blocking(move || db.kept_by(&source, asset.as_deref()))
                    .await
                    .map_err(|e| sqlite::error(e.to_string()))?
            }
            Store::Postgres(db) => db.kept_by(source, asset).await,
        }
    }

    /// The Assets anything is stored for.
    pub async fn assets(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.assets())
                    .await
                    .map_err(|e| sqlite::error(e.to_string()))?
            }
            Store::Postgres(db) => db.assets().await,
        }
    }

    /// Records that `at` holds `asset`; returns whether that is new.
    pub async fn hold(&self, asset: &str, at: &NodeRuntime) -> Result<bool, StoreError> {
        let now = jiff::Timestamp::now().as_millisecond();
        match self {
            Store::Sqlite(db) => {
                let (asset, at) = (asset.to_owned(), at.clone());
                blocking(db, move |db| db.hold(&asset, &at, now)).await
            }
            Store::Postgres(db) => db.hold(asset, at, now).await,
        }
    }

    /// Who of `source` holds `asset`: the count, and the latest `recent`.
    pub async fn holders(
        &self,
        asset: &str,
        source: &str,
        recent: usize,
    ) -> Result<Holders, StoreError> {
        let recent = i64::try_from(recent).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(db) => {
                let (asset, source) = (asset.to_owned(), source.to_owned());
                blocking(db, move |db| db.holders(&asset, &source, recent)).await
            }
            Store::Postgres(db) => db.holders(asset, source, recent).await,
        }
    }

    /// The assets `at` holds.
    pub async fn held_on(&self, at: &NodeRuntime) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let at = at.clone();
                blocking(db, move |db| db.held_on(&at)).await
            }
            Store::Postgres(db) => db.held_on(at).await,
        }
    }

    /// `at` no longer holds `assets`. With `listed`, `at` just sent its
    /// full listing (it is alive); without, it is forgotten altogether
    /// (it went silent).
    pub async fn release(
        &self,
        at: &NodeRuntime,
        assets: Vec<String>,
        listed: bool,
    ) -> Result<(), StoreError> {
        let now = listed.then(|| jiff::Timestamp::now().as_millisecond());
        match self {
            Store::Sqlite(db) => {
                let at = at.clone();
                blocking(db, move |db| db.release(&at, &assets, now)).await
            }
            Store::Postgres(db) => db.release(at, &assets, now).await,
        }
    }

    /// The node runtimes that sent no listing since `before`.
    pub async fn silent(&self, before: jiff::Timestamp) -> Result<Vec<NodeRuntime>, StoreError> {
        let before = before.as_millisecond();
        match self {
            Store::Sqlite(db) => blocking(db, move |db| db.silent(before)).await,
            Store::Postgres(db) => db.silent(before).await,
        }
    }

    /// Drops everything stored for `asset` (it left the inventory).
    pub async fn forget(&self, asset: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(db) => {
                let db = db.clone();
                let asset = asset.to_owned();
                tokio::task::spawn_blocking(move || db.forget(&asset))
                    .await
                    .map_err(|e| sqlite::error(e.to_string()))?
            }
            Store::Postgres(db) => db.forget(asset).await,
        }
    }
}

/// Runs `f` on the blocking pool: SQLite calls block.
async fn blocking<T: Send + 'static>(
    db: &std::sync::Arc<sqlite::Sqlite>,
    f: impl FnOnce(&sqlite::Sqlite) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| sqlite::error(e.to_string()))?
}

fn encode(
    asset: &str,
    source: &str,
    now: jiff::Timestamp,
    d: &ImageDetails,
) -> Result<Put, StoreError> {
    let image = to_json(&d.image)?;
    let findings = d.vulnerabilities.as_ref().map(to_json).transpose()?;
    let mut hash = Sha256::new_with_prefix(&image);
    if let Some(f) = &findings {
        hash.update(b"\0findings\0");
        hash.update(f);
    }
    let hash: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let compress = |b: &[u8]| {
        zstd::bulk::compress(b, ZSTD_LEVEL).map_err(|e| StoreError::Engine {
            engine: "zstd",
            message: e.to_string(),
        })
    };
    let keys = d.vulnerabilities.as_ref().map(|fs| {
        fs.iter()
            .map(|f| FindingKey {
                id: f.id.clone(),
                package: f.package.clone(),
                version: f.version.clone(),
                severity: level_name(f),
                fixed: f.fixed.clone(),
            })
            .collect()
    });
    Ok(Put {
        asset: asset.to_owned(),
        source: source.to_owned(),
        now_ms: now.as_millisecond(),
        hash,
        packages: d.image.analysis.packages.len() as i64,
        vulnerabilities: d.vulnerabilities.as_ref().map(|f| f.len() as i64),
        image: compress(&image)?,
        findings: findings.as_deref().map(compress).transpose()?,
        keys,
    })
}

fn level_name(f: &Finding) -> String {
    serde_json::to_value(f.severity.level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn decode(asset: &str, row: Row) -> Result<Stored, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        asset: asset.to_owned(),
        message,
    };
    let inflate =
        |b: &[u8]| zstd::bulk::decompress(b, MAX_DECOMPRESSED).map_err(|e| corrupt(e.to_string()));
    let image: Image =
        serde_json::from_slice(&inflate(&row.image)?).map_err(|e| corrupt(e.to_string()))?;
    let vulnerabilities = match row.findings {
        Some(b) => Some(serde_json::from_slice(&inflate(&b)?).map_err(|e| corrupt(e.to_string()))?),
        None => None,
    };
    Ok(Stored {
        source: row.source,
        reported: time(row.reported_ms),
        image,
        vulnerabilities,
    })
}

/// A stored time (milliseconds since the epoch).
pub(crate) fn time(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Engine {
        engine: "json",
        message: e.to_string(),
    })
}

/// The tables, in either engine's dialect: `{blob}` is the binary type.
pub(crate) fn schema(blob: &str) -> Vec<String> {
    [
        "CREATE TABLE IF NOT EXISTS sightline_schema (version BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS image_details (
            asset TEXT NOT NULL,
            source TEXT NOT NULL,
            reported_ms BIGINT NOT NULL,
            hash TEXT NOT NULL,
            packages BIGINT NOT NULL,
            vulnerabilities BIGINT,
            image {blob} NOT NULL,
            findings {blob},
            PRIMARY KEY (asset, source))",
        "CREATE TABLE IF NOT EXISTS finding_history (
            asset TEXT NOT NULL,
            source TEXT NOT NULL,
            id TEXT NOT NULL,
            package TEXT NOT NULL,
            version TEXT NOT NULL,
            severity TEXT NOT NULL,
            fixed TEXT,
            first_seen_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL,
            resolved_ms BIGINT,
            PRIMARY KEY (asset, source, id, package, version))",
        // Which nodes of a node Sensor hold an image: the Asset carries a
        // count and the latest few, this the whole list, so it survives a
        // restart or a new leader. `runtime` is '' when none was named.
        "CREATE TABLE IF NOT EXISTS image_holdings (
            asset TEXT NOT NULL,
            source TEXT NOT NULL,
            node TEXT NOT NULL,
            runtime TEXT NOT NULL,
            since_ms BIGINT NOT NULL,
            PRIMARY KEY (source, node, runtime, asset))",
        "CREATE INDEX IF NOT EXISTS image_holdings_by_asset
            ON image_holdings (asset, source, since_ms)",
        // When each node's runtime last sent its full listing: a node
        // silent for longer than the holdings' expiry has left.
        "CREATE TABLE IF NOT EXISTS node_listings (
            source TEXT NOT NULL,
            node TEXT NOT NULL,
            runtime TEXT NOT NULL,
            listed_ms BIGINT NOT NULL,
            PRIMARY KEY (source, node, runtime))",
    ]
    .iter()
    .map(|s| s.replace("{blob}", blob))
    .collect()
}

/// The statements both engines run, with `$n` parameters (SQLite reads
/// `$1` as a named parameter numbered by first appearance, so each
/// statement names its parameters in order).
pub(crate) mod sql {
    /// `$1` asset, `$2` source → hash, reported_ms.
    pub const PREVIOUS: &str =
        "SELECT hash, reported_ms FROM image_details WHERE asset = $1 AND source = $2";
    /// `$1` asset, `$2` source, `$3` now.
    pub const TOUCH: &str =
        "UPDATE image_details SET reported_ms = $3 WHERE asset = $1 AND source = $2";
    /// `$1` asset, `$2` source, `$3` now.
    pub const TOUCH_OPEN: &str = "UPDATE finding_history SET last_seen_ms = $3
        WHERE asset = $1 AND source = $2 AND resolved_ms IS NULL";
    /// `$1`…`$8`: asset, source, now, hash, packages, vulnerabilities, image, findings.
    pub const UPSERT: &str = "INSERT INTO image_details
        (asset, source, reported_ms, hash, packages, vulnerabilities, image, findings)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (asset, source) DO UPDATE SET
            reported_ms = excluded.reported_ms, hash = excluded.hash,
            packages = excluded.packages, vulnerabilities = excluded.vulnerabilities,
            image = excluded.image, findings = excluded.findings";
    /// `$1`…`$8`: asset, source, id, package, version, severity, fixed, now.
    pub const SEEN: &str = "INSERT INTO finding_history
        (asset, source, id, package, version, severity, fixed, first_seen_ms, last_seen_ms, resolved_ms)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL)
        ON CONFLICT (asset, source, id, package, version) DO UPDATE SET
            severity = excluded.severity, fixed = excluded.fixed,
            last_seen_ms = excluded.last_seen_ms, resolved_ms = NULL";
    /// `$1` asset, `$2` source, `$3` now: what this report no longer has.
    pub const RESOLVE: &str = "UPDATE finding_history SET resolved_ms = $3
        WHERE asset = $1 AND source = $2 AND resolved_ms IS NULL AND last_seen_ms < $3";
    /// `$1` asset, `$2` source (or NULL for any).
    pub const LATEST: &str = "SELECT source, reported_ms, image, findings FROM image_details
        WHERE asset = $1 AND (CAST($2 AS TEXT) IS NULL OR source = $2)
        ORDER BY reported_ms DESC, source LIMIT 1";
    /// `$1` asset.
    pub const HISTORY: &str = "SELECT source, id, package, version, severity, fixed,
            first_seen_ms, last_seen_ms, resolved_ms
        FROM finding_history WHERE asset = $1
        ORDER BY resolved_ms IS NOT NULL, last_seen_ms DESC, id, package, version, source";
    /// Every Asset with details.
    pub const ASSETS: &str = "SELECT DISTINCT asset FROM image_details";
    /// `$1` source, `$2` asset (or NULL for every one).
    pub const KEPT_BY: &str = "SELECT asset FROM image_details
        WHERE source = $1 AND (CAST($2 AS TEXT) IS NULL OR asset = $2)";
    /// `$1` asset.
    pub const FORGET_DETAILS: &str = "DELETE FROM image_details WHERE asset = $1";
    /// `$1` asset.
    pub const FORGET_HISTORY: &str = "DELETE FROM finding_history WHERE asset = $1";
    /// `$1` asset.
    pub const FORGET_HOLDINGS: &str = "DELETE FROM image_holdings WHERE asset = $1";
    /// `$1`…`$5`: asset, source, node, runtime, now; changes a row only
    /// when the node did not hold the asset yet.
    pub const HOLD: &str = "INSERT INTO image_holdings (asset, source, node, runtime, since_ms)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (source, node, runtime, asset) DO NOTHING";
    /// `$1` source, `$2` node, `$3` runtime, `$4` now: a node first heard of.
    pub const FIRST_HEARD: &str = "INSERT INTO node_listings (source, node, runtime, listed_ms)
        VALUES ($1, $2, $3, $4) ON CONFLICT (source, node, runtime) DO NOTHING";
    /// `$1` source, `$2` node, `$3` runtime, `$4` now: a full listing came.
    pub const LISTED: &str = "INSERT INTO node_listings (source, node, runtime, listed_ms)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (source, node, runtime) DO UPDATE SET listed_ms = excluded.listed_ms";
    /// `$1` asset, `$2` source → on how many nodes.
    pub const HOLDER_COUNT: &str =
        "SELECT count(DISTINCT node) FROM image_holdings WHERE asset = $1 AND source = $2";
    /// `$1` asset, `$2` source, `$3` how many → the nodes that took it up
    /// last, newest first, with a runtime each.
    pub const HOLDERS_RECENT: &str = "SELECT node, min(runtime), max(since_ms) AS since
        FROM image_holdings WHERE asset = $1 AND source = $2
        GROUP BY node ORDER BY since DESC, node LIMIT $3";
    /// `$1` source, `$2` node, `$3` runtime → the assets it holds.
    pub const HELD_ON: &str =
        "SELECT asset FROM image_holdings WHERE source = $1 AND node = $2 AND runtime = $3";
    /// `$1` source, `$2` node, `$3` runtime, `$4` asset.
    pub const RELEASE: &str = "DELETE FROM image_holdings
        WHERE source = $1 AND node = $2 AND runtime = $3 AND asset = $4";
    /// `$1` a time → the node runtimes not listed since.
    pub const SILENT: &str = "SELECT source, node, runtime FROM node_listings WHERE listed_ms < $1";
    /// `$1` source, `$2` node, `$3` runtime.
    pub const UNLIST: &str =
        "DELETE FROM node_listings WHERE source = $1 AND node = $2 AND runtime = $3";
}

/// The time a write is stamped with: now, but always after the previous
/// write of the same Asset and source, so "seen in this write" is exact.
pub(crate) fn stamp(now_ms: i64, previous_ms: Option<i64>) -> i64 {
    previous_ms.map_or(now_ms, |p| now_ms.max(p + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_stamped_after_the_previous_one() {
        assert_eq!(stamp(10, None), 10);
        assert_eq!(stamp(10, Some(3)), 10);
        assert_eq!(stamp(10, Some(10)), 11);
        assert_eq!(stamp(10, Some(40)), 41);
    }

    #[test]
    fn both_dialects_get_the_same_tables() {
        let a = schema("BLOB");
        let b = schema("BYTEA");
        assert_eq!(a.len(), b.len());
        assert!(a[1].contains("image BLOB NOT NULL"));
        assert!(b[1].contains("image BYTEA NOT NULL"));
    }
}
