//! The shared engine: a PostgreSQL server several operator replicas use
//! at once (the leader writes, every replica reads). Two connections, one
//! for writes (in transactions) and one for reads, each opened again when
//! the server drops it.
//!
//! The connection is not encrypted: run the server where the operator
//! reaches it over a trusted network (the same cluster, a NetworkPolicy).

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{FindingRecord, Put, Row, SCHEMA_VERSION, StoreError, schema, sql, stamp, time};

/// An advisory lock's key, held while replicas create the tables at once.
const SCHEMA_LOCK: i64 = 0x5349_4748_544c_494e; // "SIGHTLIN"

/// A PostgreSQL store.
pub struct Postgres {
    url: String,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The server's own message (a constraint, a missing table) says most.
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    StoreError::Engine {
        engine: "postgresql",
        message,
    }
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the detail store's PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The open connection in `slot`, connecting again if it is gone.
async fn client<'a>(
    url: &str,
    slot: &'a Mutex<Option<Client>>,
) -> Result<tokio::sync::MutexGuard<'a, Option<Client>>, StoreError> {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_none_or(Client::is_closed) {
        *guard = Some(connect(url).await?);
    }
    Ok(guard)
}

impl Postgres {
    /// Connects to `url` and creates the tables when missing.
    pub async fn open(url: &str) -> Result<Postgres, StoreError> {
        let mut c = connect(url).await?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg)?;
        for statement in schema("BYTEA") {
            tx.batch_execute(&statement).await.map_err(pg)?;
        }
        let found: Option<i64> = tx
            .query_one("SELECT max(version) FROM sightline_schema", &[])
            .await
            .map_err(pg)?
            .get(0);
        match found {
            None => {
                tx.execute(
                    "INSERT INTO sightline_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(pg)?;
            }
            Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema { found: v }),
            Some(_) => {}
        }
        tx.commit().await.map_err(pg)?;
        Ok(Postgres {
            url: url.to_owned(),
            writer: Mutex::new(Some(c)),
            reader: Mutex::new(None),
        })
    }

    pub(crate) async fn put(&self, p: &Put) -> Result<bool, StoreError> {
        let mut guard = client(&self.url, &self.writer).await?;
        let Some(c) = guard.as_mut() else {
            return Err(pg_gone());
        };
        let tx = c.transaction().await.map_err(pg)?;
        // Two replicas never write at once (only the leader does), but a
        // leader change may overlap one write: the row lock orders them.
        let previous = tx
            .query_opt(
                &format!("{} FOR UPDATE", sql::PREVIOUS),
                &[&p.asset, &p.source],
            )
            .await
            .map_err(pg)?
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
        let now = stamp(p.now_ms, previous.as_ref().map(|(_, at)| *at));
        let changed = previous.as_ref().is_none_or(|(hash, _)| *hash != p.hash);
        if changed {
            tx.execute(
                sql::UPSERT,
                &[
                    &p.asset,
                    &p.source,
                    &now,
                    &p.hash,
                    &p.packages,
                    &p.vulnerabilities,
                    &p.image,
                    &p.findings,
                ],
            )
            .await
            .map_err(pg)?;
            if let Some(keys) = &p.keys {
                let seen = tx.prepare(sql::SEEN).await.map_err(pg)?;
                for k in keys {
                    tx.execute(
                        &seen,
                        &[
                            &p.asset,
                            &p.source,
                            &k.id,
                            &k.package,
                            &k.version,
                            &k.severity,
                            &k.fixed,
                            &now,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                }
                tx.execute(sql::RESOLVE, &[&p.asset, &p.source, &now])
                    .await
                    .map_err(pg)?;
            }
        } else {
            tx.execute(sql::TOUCH, &[&p.asset, &p.source, &now])
                .await
                .map_err(pg)?;
            tx.execute(sql::TOUCH_OPEN, &[&p.asset, &p.source, &now])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(changed)
    }

    pub(crate) async fn latest(
        &self,
        asset: &str,
        source: Option<&str>,
    ) -> Result<Option<Row>, StoreError> {
        let guard = client(&self.url, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let row = c
            .query_opt(sql::LATEST, &[&asset, &source])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| Row {
            source: r.get(0),
            reported_ms: r.get(1),
            image: r.get(2),
            findings: r.get(3),
        }))
    }

    pub(crate) async fn history(&self, asset: &str) -> Result<Vec<FindingRecord>, StoreError> {
        let guard = client(&self.url, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c.query(sql::HISTORY, &[&asset]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| FindingRecord {
                source: r.get(0),
                id: r.get(1),
                package: r.get(2),
                version: r.get(3),
                severity: r.get(4),
                fixed: r.get(5),
                first_seen: time(r.get(6)),
                last_seen: time(r.get(7)),
                resolved: r.get::<_, Option<i64>>(8).map(time),
            })
            .collect())
    }

    pub(crate) async fn assets(&self) -> Result<Vec<String>, StoreError> {
        let guard = client(&self.url, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c.query(sql::ASSETS, &[]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn kept_by(
        &self,
        source: &str,
        asset: Option<&str>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let guard = client(&self.url, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c
            .query(sql::KEPT_BY, &[&source, &asset])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn forget(&self, asset: &str) -> Result<(), StoreError> {
        let mut guard = client(&self.url, &self.writer).await?;
        let c = guard.as_mut().ok_or_else(pg_gone)?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(sql::FORGET_DETAILS, &[&asset])
            .await
            .map_err(pg)?;
        tx.execute(sql::FORGET_HISTORY, &[&asset])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}

fn pg_gone() -> StoreError {
    StoreError::Engine {
        engine: "postgresql",
        message: "no connection".into(),
    }
}
