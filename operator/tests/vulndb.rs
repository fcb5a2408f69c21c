//! The vulnerability database endpoint as container sensors use it: the
//! real operator serving a database file, the sensor's fetcher with a
//! ServiceAccount token, ETags, a replaced database, a broken file that must
//! not be served, and callers without a token or without access.

mod support;

use std::path::Path;

use anyhow::{Context, Result};
use sightline_container_sensor::vulndb::Fetcher;
use sightline_scan::vuln::Database;
use support::{Env, service_account_token};

fn import(dir: &Path, subdirs: &[&str], out: &Path) -> Result<usize> {
    let staging = dir.join(format!("osv-{}", subdirs.join("-")));
    std::fs::create_dir_all(&staging)?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensors/scan/tests/data/osv");
    for sub in subdirs {
        for e in std::fs::read_dir(data.join(sub))? {
            let p = e?.path();
            std::fs::copy(&p, staging.join(p.file_name().context("name")?))?;
        }
    }
    let (db, _) = Database::import_osv(&staging, "2026-11-26T00:00:00Z".into())?;
    db.write(out)?;
    Ok(db.meta.advisories)
}

fn status(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_the_vulnerability_database_to_sensors() -> Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let served = dir.path().join("vulns.db");
    assert_eq!(import(dir.path(), &["debian"], &served)?, 6);
    let op = env.operator_with("a", &["--vuln-db", &served.display().to_string()])?;
    op.wait_serving().await.with_context(|| env.dump())?;

    let token = service_account_token(&env, "sensor", true).await?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token)?;
    let url = format!("http://127.0.0.1:{}/api/v1/vulndb", op.port);
    let mut fetcher = Fetcher::new(url, token_file, dir.path().join("sensor-copy.db"), None);

    let first = fetcher
        .refresh()
        .await?
        .context("the first fetch brings a database")?;
    assert_eq!(first.meta.advisories, 6);
    assert!(fetcher.cache().is_file());
    assert!(
        fetcher.refresh().await?.is_none(),
        "unchanged: 304, nothing downloaded"
    );

    // A new database (written aside and renamed, as `db import` does).
    assert_eq!(import(dir.path(), &["debian", "alpine"], &served)?, 10);
    let second = fetcher
        .refresh()
        .await?
        .context("a changed database is fetched")?;
    assert_eq!(second.meta.advisories, 10);

    // A broken file in its place is not served: the last good one is.
    std::fs::write(&served, b"sightline-vulndb 1\nnot zstd at all")?;
    assert!(
        fetcher.refresh().await?.is_none(),
        "still the good database's ETag"
    );

    // Callers without a token, or whose token may not list Assets.
    assert_eq!(status(&op.get("/api/v1/vulndb")?), 401);
    let nobody = service_account_token(&env, "nobody", false).await?;
    let raw = op.get_as("/api/v1/vulndb", Some(&nobody))?;
    assert_eq!(status(&raw), 403, "{raw}");
    Ok(())
}
