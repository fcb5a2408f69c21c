//! `sightline db update` against a mirror on loopback that behaves like the
//! OSV bucket (ETag, `x-goog-hash` MD5, `Range`, `If-Range`,
//! `If-None-Match`), serving zips of the scanner's test records (real IDs
//! and ranges): a first update, an unchanged second one, a download cut
//! halfway that resumes, a corrupt download refused, and a missing dump.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use md5::Digest;

/// One request the mirror answered.
#[derive(Clone, Debug)]
struct Seen {
    ecosystem: String,
    range: Option<String>,
    status: u16,
    bytes_sent: usize,
}

#[derive(Default)]
struct Mirror {
    dumps: BTreeMap<String, Vec<u8>>,
    /// Ecosystems whose next full download stops halfway.
    cut: Vec<String>,
    /// Ecosystems whose announced MD5 is wrong.
    lie_about_md5: Vec<String>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Mirror>>;

fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Mirror> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(
    State(mirror): State<Shared>,
    UrlPath((ecosystem, file)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut m = lock(&mirror);
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = header(header::RANGE);
    let Some(dump) = m
        .dumps
        .get(&ecosystem)
        .filter(|_| file == "all.zip")
        .cloned()
    else {
        m.seen.push(Seen {
            ecosystem,
            range,
            status: 404,
            bytes_sent: 0,
        });
        return (StatusCode::NOT_FOUND, "No such object").into_response();
    };
    let etag = format!(
        "\"{}\"",
        md5::Md5::digest(&dump)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut md5 = md5::Md5::digest(&dump).to_vec();
    if m.lie_about_md5.contains(&ecosystem) {
        md5[0] ^= 0xff;
    }
    let goog_hash = format!(
        "crc32c=AAAAAA==,md5={}",
        base64::engine::general_purpose::STANDARD.encode(&md5)
    );
    if header(header::IF_NONE_MATCH).as_deref() == Some(etag.as_str()) {
        m.seen.push(Seen {
            ecosystem,
            range,
            status: 304,
            bytes_sent: 0,
        });
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| header(header::IF_RANGE).is_none_or(|t| t == etag))
        .filter(|n| *n < dump.len());
    let total = dump.len();
    let (status, body_start) = match start {
        Some(n) => (StatusCode::PARTIAL_CONTENT, n),
        None => (StatusCode::OK, 0),
    };
    let cut = start.is_none() && {
        let before = m.cut.len();
        m.cut.retain(|e| e != &ecosystem);
        m.cut.len() != before
    };
    let body = dump[body_start..].to_vec();
    let sent = if cut { body.len() / 2 } else { body.len() };
    m.seen.push(Seen {
        ecosystem,
        range,
        status: status.as_u16(),
        bytes_sent: sent,
    });
    let mut resp = Response::builder()
        .status(status)
        .header(header::ETAG, &etag)
        .header("x-goog-hash", goog_hash)
        .header(header::CONTENT_LENGTH, body.len());
    if start.is_some() {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {body_start}-{}/{total}", total - 1),
        );
    }
    let body = if cut {
        // Half the body, then the connection breaks.
        let half = bytes::Bytes::from(body[..sent].to_vec());
        let chunks = futures::stream::iter(vec![Ok(half), Err(std::io::Error::other("cut"))]);
        // The half is on the wire before the break.
        Body::from_stream(futures::StreamExt::then(chunks, |c| async move {
            if c.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            c
        }))
    } else {
        Body::from(body)
    };
    resp.body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A zip of the test records under `dir`, with enough incompressible
/// padding that halfway is well inside the file.
fn zip_of(dir: &Path) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for p in names {
        let name = p.file_name().context("file name")?.to_string_lossy();
        zip.start_file(name.as_ref(), opts)?;
        zip.write_all(&std::fs::read(&p)?)?;
    }
    // Not a record (not .json): read past by the import.
    zip.start_file("padding.bin", opts)?;
    let mut x: u32 = 0x9e37_79b9;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    zip.write_all(&noise)?;
    zip.finish()?;
    Ok(out.into_inner())
}

fn records(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sensors/scan/tests/data/osv")
        .join(sub)
}

struct Fixture {
    mirror: Shared,
    url: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Result<Fixture> {
        let mut m = Mirror::default();
        m.dumps.insert("Alpine".into(), zip_of(&records("alpine"))?);
        m.dumps.insert("Debian".into(), zip_of(&records("debian"))?);
        let mirror: Shared = Arc::new(Mutex::new(m));
        let app = axum::Router::new()
            .route("/osv/{ecosystem}/{file}", axum::routing::get(serve))
            .with_state(mirror.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/osv", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Fixture {
            mirror,
            url,
            dir: tempfile::tempdir()?,
        })
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("vulns.db")
    }

    async fn update(&self, ecosystems: &[&str]) -> Result<Output> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sightline"));
        cmd.env_remove("SIGHTLINE_DB")
            .args(["db", "update", "--mirror", &self.url])
            .arg("--download-dir")
            .arg(self.dir.path().join("osv"))
            .arg("--output-file")
            .arg(self.db());
        for e in ecosystems {
            cmd.args(["--ecosystem", e]);
        }
        cmd.output().await.context("running sightline db update")
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut lock(&self.mirror).seen)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn downloads_then_asks_only_whether_dumps_changed() -> Result<()> {
    let f = Fixture::start().await?;
    let out = f.update(&["Alpine", "Debian"]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("Alpine") && said.contains("size and MD5 checked"),
        "{said}"
    );
    assert!(said.contains("10 advisories"), "{said}");
    let seen = f.seen();
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [200, 200]
    );
    let first = std::fs::read(f.db())?;
    let db = sightline_scan::vuln::db::Database::read(&f.db())?;
    assert_eq!(db.meta.advisories, 10);
    assert!(db.lookup("Alpine:v3.19", "openssl").count() > 0);
    assert!(db.lookup("Debian:12", "openssl").count() > 0);

    // Nothing changed: two 304s, no body, the same advisories.
    let out = f.update(&["Alpine", "Debian"]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );
    let seen = f.seen();
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [304, 304]
    );
    let again = sightline_scan::vuln::db::Database::read(&f.db())?;
    let ids = |d: &sightline_scan::vuln::db::Database| {
        d.advisories()
            .iter()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&db));
    assert!(!first.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_cut_download_resumes_where_it_stopped() -> Result<()> {
    let f = Fixture::start().await?;
    lock(&f.mirror).cut.push("Debian".into());
    let out = f.update(&["Alpine", "Debian"]).await?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("Debian") && err.contains("run again to resume"),
        "{err}"
    );
    assert!(!f.db().exists(), "no database from a partial update");
    let seen = f.seen();
    let sent_first = seen
        .iter()
        .find(|s| s.ecosystem == "Debian")
        .map(|s| s.bytes_sent)
        .context("Debian requested")?;

    let out = f.update(&["Alpine", "Debian"]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("resumed at"),
        "{}",
        text(&out.stdout)
    );
    let seen = f.seen();
    let debian = seen
        .iter()
        .find(|s| s.ecosystem == "Debian")
        .context("Debian requested again")?;
    assert_eq!(debian.status, 206, "{seen:?}");
    assert_eq!(
        debian.range.as_deref(),
        Some(format!("bytes={sent_first}-").as_str())
    );
    let total = lock(&f.mirror).dumps["Debian"].len();
    assert_eq!(sent_first + debian.bytes_sent, total, "each byte sent once");
    let db = sightline_scan::vuln::db::Database::read(&f.db())?;
    assert_eq!(db.meta.advisories, 10);
    Ok(())
}

#[tokio::test]
async fn a_download_that_fails_its_md5_is_refused_and_the_old_database_kept() -> Result<()> {
    let f = Fixture::start().await?;
    let out = f.update(&["Alpine"]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = std::fs::read(f.db())?;

    // The dump changes, and what arrives does not match the announced MD5.
    {
        let mut m = lock(&f.mirror);
        m.dumps.insert("Alpine".into(), zip_of(&records("lang"))?);
        m.lie_about_md5.push("Alpine".into());
    }
    let out = f.update(&["Alpine"]).await?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("Alpine") && err.contains("MD5"), "{err}");
    assert_eq!(
        std::fs::read(f.db())?,
        before,
        "the previous database stays"
    );
    assert!(
        !f.dir.path().join("osv/Alpine.zip.part").exists(),
        "a corrupt download is not kept for resuming"
    );

    // A mirror without the dump: the error names the ecosystem and the URL.
    let out = f.update(&["Wolfi"]).await?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("Wolfi") && err.contains("/osv/Wolfi/all.zip") && err.contains("404"),
        "{err}"
    );
    assert_eq!(std::fs::read(f.db())?, before);
    Ok(())
}
