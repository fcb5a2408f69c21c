//! The detail store's two engines run the same checks: a SQLite file, and
//! a real PostgreSQL server started for the test. Each keeps details per
//! Asset and source, keeps findings' history exact, touches rather than
//! rewrites repeated details, forgets Assets, and refuses a store a newer
//! operator wrote.

use anyhow::{Result, ensure};
use sightline_operator::store::{FindingRecord, NodeRuntime, Store, StoreError};
use sightline_report::details::ImageDetails;
use sightline_scan::Analysis;
use sightline_scan::pkg::{Package, PackageKind};
use sightline_scan::source::Image;
use sightline_scan::vuln::{Finding, Level, Severity};

fn image(n: u8, packages: usize) -> Image {
    let digest = format!("sha256:{}", format!("{n:02x}").repeat(32));
    Image {
        config_digest: digest.clone(),
        manifest_digest: None,
        repo_tags: vec![format!("app:{n}")],
        architecture: Some("amd64".into()),
        os: Some("linux".into()),
        created: None,
        analysis: Analysis {
            os: None,
            packages: (0..packages)
                .map(|i| Package {
                    kind: PackageKind::Npm,
                    name: format!("pkg-{i}"),
                    version: "1.0.0".into(),
                    source: None,
                    arch: None,
                    purl: format!("pkg:npm/pkg-{i}@1.0.0"),
                    layer: 0,
                    path: format!("app/node_modules/pkg-{i}/package.json"),
                })
                .collect(),
            layers: vec![sightline_scan::LayerInfo {
                diff_id: digest,
                blob_digest: None,
                size: 10,
                entries: 1,
            }],
            warnings: vec![],
        },
    }
}

fn finding(id: &str) -> Finding {
    Finding {
        id: id.into(),
        aliases: vec![],
        package: "pkg-1".into(),
        version: "1.0.0".into(),
        purl: "pkg:npm/pkg-1@1.0.0".into(),
        matched_name: "pkg-1".into(),
        ecosystem: "npm".into(),
        fixed: None,
        severity: Severity {
            level: Level::Medium,
            score: None,
            source: None,
        },
        summary: None,
        layer: 0,
        path: String::new(),
    }
}

fn at(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000 + s).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn record(history: &[FindingRecord], id: &str) -> Result<FindingRecord> {
    history
        .iter()
        .find(|r| r.id == id)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no {id} in {history:?}"))
}

/// The checks every engine passes.
async fn behaves(store: &Store) -> Result<()> {
    let img = image(1, 300);
    let asset = ImageDetails::new(img.clone(), None).asset_name();
    let with = |ids: &[&str]| {
        ImageDetails::new(img.clone(), Some(ids.iter().map(|i| finding(i)).collect()))
    };
    ensure!(store.latest(&asset, None).await?.is_none());
    ensure!(
        store
            .put(&asset, "ns/nodes", at(0), &with(&["A", "B"]))
            .await?
    );
    // Another source's details sit beside, never over, the first's.
    ensure!(
        store
            .put(&asset, "ci/k", at(5), &ImageDetails::new(img.clone(), None))
            .await?
    );
    let latest = store
        .latest(&asset, None)
        .await?
        .ok_or(anyhow::anyhow!("none"))?;
    ensure!(latest.source == "ci/k" && latest.vulnerabilities.is_none());
    let nodes = store
        .latest(&asset, Some("ns/nodes"))
        .await?
        .ok_or(anyhow::anyhow!("none"))?;
    ensure!(nodes.image.analysis.packages == img.analysis.packages);
    ensure!(nodes.vulnerabilities.as_ref().map(Vec::len) == Some(2));
    ensure!(nodes.reported == at(0));

    // B goes away; C arrives; A stays open.
    ensure!(
        store
            .put(&asset, "ns/nodes", at(10), &with(&["A", "C"]))
            .await?
    );
    let h = store.history(&asset).await?;
    let (a, b, c) = (record(&h, "A")?, record(&h, "B")?, record(&h, "C")?);
    ensure!(
        a.first_seen == at(0) && a.last_seen == at(10) && a.resolved.is_none(),
        "{a:?}"
    );
    ensure!(b.resolved == Some(at(10)) && b.last_seen == at(0), "{b:?}");
    ensure!(c.first_seen == at(10) && c.resolved.is_none(), "{c:?}");
    ensure!(
        h.last().map(|r| r.id.as_str()) == Some("B"),
        "open ones first: {h:?}"
    );

    // The same details again only move the times, even at the same instant.
    ensure!(
        !store
            .put(&asset, "ns/nodes", at(10), &with(&["A", "C"]))
            .await?
    );
    let again = store.history(&asset).await?;
    let a2 = record(&again, "A")?;
    ensure!(a2.last_seen > at(10) && a2.first_seen == at(0), "{a2:?}");
    ensure!(record(&again, "B")?.resolved == Some(at(10)));

    // B comes back: open again, first seen kept.
    ensure!(
        store
            .put(&asset, "ns/nodes", at(20), &with(&["A", "B", "C"]))
            .await?
    );
    let b3 = record(&store.history(&asset).await?, "B")?;
    ensure!(b3.resolved.is_none() && b3.first_seen == at(0), "{b3:?}");

    let other = ImageDetails::new(image(2, 5), None);
    store
        .put(&other.asset_name(), "ns/nodes", at(30), &other)
        .await?;
    let mut assets = store.assets().await?;
    assets.sort();
    let mut expected = vec![asset.clone(), other.asset_name()];
    expected.sort();
    ensure!(assets == expected, "{assets:?}");
    holds(store, &asset).await?;
    store.forget(&asset).await?;
    ensure!(store.latest(&asset, None).await?.is_none());
    ensure!(store.history(&asset).await?.is_empty());
    ensure!(store.holders(&asset, "ns/nodes", 8).await?.count == 0);
    ensure!(store.latest(&other.asset_name(), None).await?.is_some());
    Ok(())
}

fn on(node: &str, runtime: &str) -> NodeRuntime {
    NodeRuntime {
        source: "ns/nodes".into(),
        node: node.into(),
        runtime: runtime.into(),
    }
}

/// Which nodes hold `asset`: counted by node, latest first, released by
/// a listing, forgotten when silent.
async fn holds(store: &Store, asset: &str) -> Result<()> {
    for n in ["n1", "n2", "n3"] {
        ensure!(store.hold(asset, &on(n, "containerd")).await?, "{n} is new");
        // Held in order: the next takes it up in a later millisecond.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    ensure!(!store.hold(asset, &on("n2", "containerd")).await?);
    ensure!(store.hold(asset, &on("n2", "docker")).await?);
    ensure!(store.hold("other", &on("n1", "containerd")).await?);
    let h = store.holders(asset, "ns/nodes", 2).await?;
    ensure!(h.count == 3, "{h:?}");
    ensure!(
        h.recent
            == vec![
                ("n2".to_owned(), "containerd".to_owned()),
                ("n3".to_owned(), "containerd".to_owned())
            ],
        "{h:?}"
    );
    ensure!(store.holders(asset, "ns/other", 2).await?.count == 0);
    let mut held = store.held_on(&on("n1", "containerd")).await?;
    held.sort();
    ensure!(
        held == vec![asset.to_owned(), "other".to_owned()],
        "{held:?}"
    );

    // n1's listing no longer has it; n2 keeps it through one runtime.
    let before = jiff::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    store
        .release(&on("n1", "containerd"), vec![asset.to_owned()], true)
        .await?;
    store
        .release(&on("n2", "docker"), vec![asset.to_owned()], true)
        .await?;
    ensure!(store.holders(asset, "ns/nodes", 8).await?.count == 2);
    ensure!(store.held_on(&on("n1", "containerd")).await? == vec!["other".to_owned()]);

    // n2 and n3 sent no listing since `before`; n1 and n2's docker did.
    let mut silent = store.silent(before).await?;
    silent.sort_by(|a, b| a.node.cmp(&b.node));
    ensure!(
        silent == vec![on("n2", "containerd"), on("n3", "containerd")],
        "{silent:?}"
    );
    for at in silent {
        let held = store.held_on(&at).await?;
        store.release(&at, held, false).await?;
    }
    ensure!(store.holders(asset, "ns/nodes", 8).await?.count == 0);
    ensure!(store.silent(before).await?.is_empty());
    ensure!(store.holders("other", "ns/nodes", 8).await?.count == 1);
    Ok(())
}

#[tokio::test]
async fn sqlite_behaves_and_persists() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a/b/details.db");
    let location = path.to_string_lossy().into_owned();
    {
        let store = Store::open(&location).await?;
        ensure!(store.engine() == "sqlite" && !store.shared());
        behaves(&store).await?;
    }
    // Reopened, the file holds what was left.
    let store = Store::open(&location).await?;
    let left = ImageDetails::new(image(2, 5), None).asset_name();
    ensure!(store.latest(&left, None).await?.is_some());
    drop(store);

    // A store a newer operator wrote is refused, not misread.
    let c = rusqlite::Connection::open(&path)?;
    c.execute("UPDATE sightline_schema SET version = 99", [])?;
    drop(c);
    match Store::open(&location).await {
        Err(StoreError::NewerSchema { found: 99 }) => Ok(()),
        other => anyhow::bail!("a newer schema was opened: {other:?}"),
    }
}

#[tokio::test]
async fn postgresql_behaves_and_refuses_a_newer_schema() -> Result<()> {
    let pg = sightline_testenv::postgres::Postgres::start()?;
    let url = pg.url();
    {
        let store = Store::open(&url).await?;
        ensure!(store.engine() == "postgresql" && store.shared());
        behaves(&store).await?;
    }
    // Two replicas opening the store at once both succeed.
    let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
    a?;
    b?;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .execute("UPDATE sightline_schema SET version = 99", &[])
        .await?;
    match Store::open(&url).await {
        Err(StoreError::NewerSchema { found: 99 }) => {}
        other => anyhow::bail!("a newer schema was opened: {other:?}"),
    }
    // A wrong password is a clear error that does not repeat it.
    let wrong = url.replace("sightline-test-password", "wrong-password");
    match Store::open(&wrong).await {
        Err(e) => ensure!(
            !e.to_string().contains("wrong-password"),
            "the password leaked: {e}"
        ),
        Ok(_) => anyhow::bail!("a wrong password was accepted"),
    }
    drop(pg);
    Ok(())
}

/// What opening `url` said, for refusals.
async fn refusal(url: &str, ca: Option<&std::path::Path>) -> String {
    match Store::open_with_ca(url, ca).await {
        Ok(_) => format!("{url}: opened"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn postgresql_over_tls_checks_the_servers_certificate() -> Result<()> {
    let ca = sightline_testenv::certs::Ca::new()?;
    let pg = sightline_testenv::postgres::Postgres::start_tls(&ca)?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let url = pg.url();

    // libpq's way: verify-full with the CA in the URL; the store works.
    let full = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    let store = Store::open(&full).await?;
    behaves(&store).await?;
    // Or the CA from --detail-store-ca, with TLS required.
    Store::open_with_ca(&format!("{url}?sslmode=require"), Some(&ca_file)).await?;

    // A certificate from another CA, or one the public roots do not know,
    // is refused, whether TLS was required or only preferred.
    let other = sightline_testenv::certs::Ca::new()?;
    let other_file = dir.path().join("other.crt");
    std::fs::write(&other_file, other.cert_pem())?;
    for (how, u, ca) in [
        (
            "required",
            format!("{url}?sslmode=require"),
            Some(other_file.as_path()),
        ),
        ("preferred", url.clone(), None),
    ] {
        let said = refusal(&u, ca).await;
        ensure!(said.contains("certificate"), "TLS {how}: {said}");
        ensure!(
            !said.contains("sightline-test-password"),
            "the password leaked: {said}"
        );
    }
    // Without encryption the server (hostssl only) lets nobody in.
    let said = refusal(&format!("{url}?sslmode=disable"), Some(&ca_file)).await;
    ensure!(
        said.contains("no encryption") || said.contains("pg_hba.conf"),
        "{said}"
    );
    // A CA file that is missing or holds no certificate is named.
    let said = refusal(&url, Some(&dir.path().join("missing.crt"))).await;
    ensure!(said.contains("missing.crt"), "{said}");
    std::fs::write(dir.path().join("empty.crt"), "not a certificate")?;
    let said = refusal(&url, Some(&dir.path().join("empty.crt"))).await;
    ensure!(said.contains("holds no certificate"), "{said}");
    drop(pg);
    Ok(())
}
