//! The shared engine: a PostgreSQL server several operator replicas use
//! at once (the leader writes, every replica reads). Two connections, one
//! for writes (in transactions) and one for reads, each opened again when
//! the server drops it.
//!
//! The connection is encrypted with TLS as libpq's URL parameters say:
//! `sslmode=require` (or `verify-ca`, `verify-full`) insists on it,
//! `prefer` (the default) uses it whenever the server offers it, and
//! `disable` does without (only on a network you trust). Whenever TLS is
//! used the server's certificate is verified, chain and name (libpq's
//! `verify-full`), against the CA in `sslrootcert=FILE` or
//! `--detail-store-ca`, else the public roots.

use std::path::Path;

use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    FindingRecord, Holders, NodeRuntime, Put, Row, SCHEMA_VERSION, StoreError, schema, sql, stamp,
    time,
};

/// An advisory lock's key, held while replicas create the tables at once.
const SCHEMA_LOCK: i64 = 0x5349_4748_544c_494e; // "SIGHTLIN"

/// A PostgreSQL store.
pub struct Postgres {
    target: Target,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
}

/// Where and how to connect.
struct Target {
    config: Config,
    /// `None`: `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
}

fn location_error(message: String) -> StoreError {
    StoreError::Engine {
        engine: "postgresql",
        message,
    }
}

impl Target {
    /// Reads a libpq-style URL; `sslrootcert` (a file) is taken out and
    /// becomes the only CA trusted, as `ca` does when the URL names none.
    fn parse(url: &str, ca: Option<&Path>) -> Result<Target, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut root = ca.map(Path::to_path_buf);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", file)) => root = Some(file.into()),
                // Certificates are always checked in full when TLS is used.
                Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
                _ => kept.push(pair),
            }
        }
        let plain = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // The URL holds a password: errors never repeat it.
        let config: Config = plain
            .parse()
            .map_err(|e| location_error(format!("the detail store's URL: {e}")))?;
        if config.get_ssl_mode() == SslMode::Disable {
            tracing::warn!("sslmode=disable: the detail store's connection is not encrypted");
            return Ok(Target { config, tls: None });
        }
        let mut roots = rustls::RootCertStore::empty();
        match &root {
            Some(file) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let pem = std::fs::read(file).map_err(|e| {
                    location_error(format!("reading the CA {}: {e}", file.display()))
                })?;
                for der in CertificateDer::pem_slice_iter(&pem) {
                    let der =
                        der.map_err(|e| location_error(format!("the CA {}: {e}", file.display())))?;
                    roots
                        .add(der)
                        .map_err(|e| location_error(format!("the CA {}: {e}", file.display())))?;
                }
                if roots.is_empty() {
                    return Err(location_error(format!(
                        "the CA {} holds no certificate",
                        file.display()
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| location_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Target {
            config,
            tls: Some(MakeRustlsConnect::new(tls)),
        })
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The server's own message (a constraint, a missing table) says most.
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        // With the cause: "error performing TLS handshake" alone says
        // nothing of the certificate that was refused.
        None => {
            let mut m = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                m = format!("{m}: {c}");
                cause = c.source();
            }
            m
        }
    };
    StoreError::Engine {
        engine: "postgresql",
        message,
    }
}

async fn connect(target: &Target) -> Result<Client, StoreError> {
    let ended = |e: tokio_postgres::Error| {
        tracing::warn!(error = %e, "the detail store's PostgreSQL connection ended");
    };
    let client = match &target.tls {
        Some(tls) => {
            let (client, connection) = target.config.connect(tls.clone()).await.map_err(pg)?;
            tokio::spawn(async move { connection.await.map_err(ended) });
            client
        }
        None => {
            let (client, connection) = target.config.connect(NoTls).await.map_err(pg)?;
            tokio::spawn(async move { connection.await.map_err(ended) });
            client
        }
    };
    Ok(client)
}

/// The open connection in `slot`, connecting again if it is gone.
async fn client<'a>(
    target: &Target,
    slot: &'a Mutex<Option<Client>>,
) -> Result<tokio::sync::MutexGuard<'a, Option<Client>>, StoreError> {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_none_or(Client::is_closed) {
        *guard = Some(connect(target).await?);
    }
    Ok(guard)
}

impl Postgres {
    /// Connects to `url` (with `ca`, when the URL names no
    /// `sslrootcert`, the only CA trusted) and creates the tables when
    /// missing.
    pub async fn open(url: &str, ca: Option<&Path>) -> Result<Postgres, StoreError> {
        let target = Target::parse(url, ca)?;
        let mut c = connect(&target).await?;
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
            target,
            writer: Mutex::new(Some(c)),
            reader: Mutex::new(None),
        })
    }

    pub(crate) async fn put(&self, p: &Put) -> Result<bool, StoreError> {
        let mut guard = client(&self.target, &self.writer).await?;
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
        let guard = client(&self.target, &self.reader).await?;
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
        let guard = client(&self.target, &self.reader).await?;
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
        let guard = client(&self.target, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c.query(sql::ASSETS, &[]).await.map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn kept_by(
        &self,
        source: &str,
        asset: Option<&str>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let guard = client(&self.target, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c
            .query(sql::KEPT_BY, &[&source, &asset])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn forget(&self, asset: &str) -> Result<(), StoreError> {
        let mut guard = client(&self.target, &self.writer).await?;
        let c = guard.as_mut().ok_or_else(pg_gone)?;
        let tx = c.transaction().await.map_err(pg)?;
        tx.execute(sql::FORGET_DETAILS, &[&asset])
            .await
            .map_err(pg)?;
        tx.execute(sql::FORGET_HISTORY, &[&asset])
            .await
            .map_err(pg)?;
        tx.execute(sql::FORGET_HOLDINGS, &[&asset])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    pub(crate) async fn hold(
        &self,
        asset: &str,
        at: &NodeRuntime,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut guard = client(&self.target, &self.writer).await?;
        let c = guard.as_mut().ok_or_else(pg_gone)?;
        let tx = c.transaction().await.map_err(pg)?;
        let new = tx
            .execute(
                sql::HOLD,
                &[&asset, &at.source, &at.node, &at.runtime, &now],
            )
            .await
            .map_err(pg)?
            > 0;
        if new {
            tx.execute(sql::FIRST_HEARD, &[&at.source, &at.node, &at.runtime, &now])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    pub(crate) async fn holders(
        &self,
        asset: &str,
        source: &str,
        recent: i64,
    ) -> Result<Holders, StoreError> {
        let guard = client(&self.target, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let count: i64 = c
            .query_one(sql::HOLDER_COUNT, &[&asset, &source])
            .await
            .map_err(pg)?
            .get(0);
        let rows = c
            .query(sql::HOLDERS_RECENT, &[&asset, &source, &recent])
            .await
            .map_err(pg)?;
        Ok(Holders {
            count,
            recent: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        })
    }

    pub(crate) async fn held_on(&self, at: &NodeRuntime) -> Result<Vec<String>, StoreError> {
        let guard = client(&self.target, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c
            .query(sql::HELD_ON, &[&at.source, &at.node, &at.runtime])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(crate) async fn release(
        &self,
        at: &NodeRuntime,
        assets: &[String],
        listed: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut guard = client(&self.target, &self.writer).await?;
        let c = guard.as_mut().ok_or_else(pg_gone)?;
        let tx = c.transaction().await.map_err(pg)?;
        let release = tx.prepare(sql::RELEASE).await.map_err(pg)?;
        for asset in assets {
            tx.execute(&release, &[&at.source, &at.node, &at.runtime, asset])
                .await
                .map_err(pg)?;
        }
        match listed {
            Some(now) => {
                tx.execute(sql::LISTED, &[&at.source, &at.node, &at.runtime, &now])
                    .await
            }
            None => {
                tx.execute(sql::UNLIST, &[&at.source, &at.node, &at.runtime])
                    .await
            }
        }
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    pub(crate) async fn silent(&self, before: i64) -> Result<Vec<NodeRuntime>, StoreError> {
        let guard = client(&self.target, &self.reader).await?;
        let c = guard.as_ref().ok_or_else(pg_gone)?;
        let rows = c.query(sql::SILENT, &[&before]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| NodeRuntime {
                source: r.get(0),
                node: r.get(1),
                runtime: r.get(2),
            })
            .collect())
    }
}

fn pg_gone() -> StoreError {
    StoreError::Engine {
        engine: "postgresql",
        message: "no connection".into(),
    }
}
