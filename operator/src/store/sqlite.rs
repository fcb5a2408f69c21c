//! The embedded engine: one SQLite file in the operator's volume, in WAL
//! mode (readers never wait for the writer), with a bounded page cache
//! so the operator's memory does not grow with what is stored. Calls
//! block; [`super::Store`] runs them on the blocking pool.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::{
    FindingRecord, Holders, NodeRuntime, Put, Row, SCHEMA_VERSION, StoreError, schema, sql, stamp,
    time,
};

/// Page cache per connection, in KiB (SQLite's negative `cache_size`).
const CACHE_KIB: i64 = 8 * 1024;

/// A SQLite store: a connection that writes and one that reads.
pub struct Sqlite {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

pub(crate) fn error(message: impl Into<String>) -> StoreError {
    StoreError::Engine {
        engine: "sqlite",
        message: message.into(),
    }
}

fn sqlite(e: rusqlite::Error) -> StoreError {
    error(e.to_string())
}

/// `$1`…`$n` bound by name: SQLite numbers `$n` parameters by first
/// appearance, not by their digits.
const NAMES: [&str; 8] = ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"];

fn named<'a>(values: &'a [&'a dyn ToSql]) -> Vec<(&'static str, &'a dyn ToSql)> {
    NAMES.iter().copied().zip(values.iter().copied()).collect()
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let c =
        Connection::open(path).map_err(|e| error(format!("opening {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite)?;
    c.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA cache_size = -{CACHE_KIB}; PRAGMA mmap_size = 0; PRAGMA foreign_keys = ON;"
    ))
    .map_err(sqlite)?;
    Ok(c)
}

impl Sqlite {
    /// Opens the file at `path` (creating it and its tables).
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| error(format!("creating {}: {e}", dir.display())))?;
        }
        let mut writer = connect(path)?;
        let tx = writer.transaction().map_err(sqlite)?;
        for statement in schema("BLOB") {
            tx.execute(&statement, []).map_err(sqlite)?;
        }
        let found: Option<i64> = tx
            .query_row("SELECT max(version) FROM sightline_schema", [], |r| {
                r.get(0)
            })
            .map_err(sqlite)?;
        match found {
            None => {
                tx.execute(
                    "INSERT INTO sightline_schema (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(sqlite)?;
            }
            Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema { found: v }),
            Some(_) => {}
        }
        tx.commit().map_err(sqlite)?;
        let reader = connect(path)?;
        Ok(Sqlite {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    pub(crate) fn put(&self, p: &Put) -> Result<bool, StoreError> {
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction().map_err(sqlite)?;
        let previous: Option<(String, i64)> = tx
            .query_row(
                sql::PREVIOUS,
                named(&[&p.asset, &p.source]).as_slice(),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sqlite)?;
        let now = stamp(p.now_ms, previous.as_ref().map(|(_, at)| *at));
        let changed = previous.as_ref().is_none_or(|(hash, _)| *hash != p.hash);
        if changed {
            tx.execute(
                sql::UPSERT,
                named(&[
                    &p.asset,
                    &p.source,
                    &now,
                    &p.hash,
                    &p.packages,
                    &p.vulnerabilities,
                    &p.image,
                    &p.findings,
                ])
                .as_slice(),
            )
            .map_err(sqlite)?;
            if let Some(keys) = &p.keys {
                let mut seen = tx.prepare_cached(sql::SEEN).map_err(sqlite)?;
                for k in keys {
                    seen.execute(
                        named(&[
                            &p.asset,
                            &p.source,
                            &k.id,
                            &k.package,
                            &k.version,
                            &k.severity,
                            &k.fixed,
                            &now,
                        ])
                        .as_slice(),
                    )
                    .map_err(sqlite)?;
                }
                drop(seen);
                tx.execute(sql::RESOLVE, named(&[&p.asset, &p.source, &now]).as_slice())
                    .map_err(sqlite)?;
            }
        } else {
            let values: [&dyn ToSql; 3] = [&p.asset, &p.source, &now];
            let args = named(&values);
            tx.execute(sql::TOUCH, args.as_slice()).map_err(sqlite)?;
            tx.execute(sql::TOUCH_OPEN, args.as_slice())
                .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)?;
        Ok(changed)
    }

    pub(crate) fn latest(
        &self,
        asset: &str,
        source: Option<&str>,
    ) -> Result<Option<Row>, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        c.query_row(sql::LATEST, named(&[&asset, &source]).as_slice(), |r| {
            Ok(Row {
                source: r.get(0)?,
                reported_ms: r.get(1)?,
                image: r.get(2)?,
                findings: r.get(3)?,
            })
        })
        .optional()
        .map_err(sqlite)
    }

    pub(crate) fn history(&self, asset: &str) -> Result<Vec<FindingRecord>, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = c.prepare_cached(sql::HISTORY).map_err(sqlite)?;
        let rows = q
            .query_map(named(&[&asset]).as_slice(), |r| {
                Ok(FindingRecord {
                    source: r.get(0)?,
                    id: r.get(1)?,
                    package: r.get(2)?,
                    version: r.get(3)?,
                    severity: r.get(4)?,
                    fixed: r.get(5)?,
                    first_seen: time(r.get(6)?),
                    last_seen: time(r.get(7)?),
                    resolved: r.get::<_, Option<i64>>(8)?.map(time),
                })
            })
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }

    pub(crate) fn assets(&self) -> Result<Vec<String>, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = c.prepare_cached(sql::ASSETS).map_err(sqlite)?;
        let rows = q
            .query_map(params_from_iter(std::iter::empty::<i64>()), |r| r.get(0))
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }

    pub(crate) fn kept_by(
        &self,
        source: &str,
        asset: Option<&str>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = c.prepare_cached(sql::KEPT_BY).map_err(sqlite)?;
        let rows = q
            .query_map(named(&[&source, &asset]).as_slice(), |r| r.get(0))
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }

    pub(crate) fn forget(&self, asset: &str) -> Result<(), StoreError> {
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction().map_err(sqlite)?;
        tx.execute(sql::FORGET_DETAILS, named(&[&asset]).as_slice())
            .map_err(sqlite)?;
        tx.execute(sql::FORGET_HISTORY, named(&[&asset]).as_slice())
            .map_err(sqlite)?;
        tx.execute(sql::FORGET_HOLDINGS, named(&[&asset]).as_slice())
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)
    }

    pub(crate) fn hold(&self, asset: &str, at: &NodeRuntime, now: i64) -> Result<bool, StoreError> {
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction().map_err(sqlite)?;
        let new = tx
            .execute(
                sql::HOLD,
                named(&[&asset, &at.source, &at.node, &at.runtime, &now]).as_slice(),
            )
            .map_err(sqlite)?
            > 0;
        if new {
            tx.execute(
                sql::FIRST_HEARD,
                named(&[&at.source, &at.node, &at.runtime, &now]).as_slice(),
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)?;
        Ok(new)
    }

    pub(crate) fn holders(
        &self,
        asset: &str,
        source: &str,
        recent: i64,
    ) -> Result<Holders, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let count = c
            .query_row(
                sql::HOLDER_COUNT,
                named(&[&asset, &source]).as_slice(),
                |r| r.get(0),
            )
            .map_err(sqlite)?;
        let mut q = c.prepare_cached(sql::HOLDERS_RECENT).map_err(sqlite)?;
        let rows = q
            .query_map(named(&[&asset, &source, &recent]).as_slice(), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(sqlite)?;
        Ok(Holders {
            count,
            recent: rows.collect::<Result<_, _>>().map_err(sqlite)?,
        })
    }

    pub(crate) fn held_on(&self, at: &NodeRuntime) -> Result<Vec<String>, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = c.prepare_cached(sql::HELD_ON).map_err(sqlite)?;
        let rows = q
            .query_map(
                named(&[&at.source, &at.node, &at.runtime]).as_slice(),
                |r| r.get(0),
            )
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }

    pub(crate) fn release(
        &self,
        at: &NodeRuntime,
        assets: &[String],
        listed: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut c = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction().map_err(sqlite)?;
        {
            let mut release = tx.prepare_cached(sql::RELEASE).map_err(sqlite)?;
            for asset in assets {
                release
                    .execute(named(&[&at.source, &at.node, &at.runtime, asset]).as_slice())
                    .map_err(sqlite)?;
            }
        }
        match listed {
            Some(now) => tx.execute(
                sql::LISTED,
                named(&[&at.source, &at.node, &at.runtime, &now]).as_slice(),
            ),
            None => tx.execute(
                sql::UNLIST,
                named(&[&at.source, &at.node, &at.runtime]).as_slice(),
            ),
        }
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)
    }

    pub(crate) fn silent(&self, before: i64) -> Result<Vec<NodeRuntime>, StoreError> {
        let c = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = c.prepare_cached(sql::SILENT).map_err(sqlite)?;
        let rows = q
            .query_map(named(&[&before]).as_slice(), |r| {
                Ok(NodeRuntime {
                    source: r.get(0)?,
                    node: r.get(1)?,
                    runtime: r.get(2)?,
                })
            })
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }
}
