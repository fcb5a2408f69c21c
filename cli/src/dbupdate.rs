//! `sightline db update`: downloads the OSV dumps (`{mirror}/{ecosystem}/all.zip`)
//! of the ecosystems the scanner matches and builds the database from them.
//!
//! Each dump is downloaded to `{dir}/{ecosystem}.zip.part` beside a small
//! JSON note of what is being downloaded (URL, ETag, size, MD5). An
//! interrupted download resumes from where it stopped with a `Range`
//! request, as long as the server still has the same object (same ETag);
//! otherwise it starts over. A finished download is checked against the
//! size and the MD5 the server announced (Google Cloud Storage's
//! `x-goog-hash`) before it is kept, and kept dumps are asked for again
//! with `If-None-Match`, so an unchanged dump costs one small request.
//! The database is written only when every dump arrived and checked out:
//! a failed update leaves the previous database in place.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use md5::Digest;
use reqwest::header;
use serde::{Deserialize, Serialize};
use sightline_scan::vuln::db::Database;

/// The public OSV dumps.
pub const DEFAULT_MIRROR: &str = "https://osv-vulnerabilities.storage.googleapis.com";

/// The OSV ecosystems the scanner matches.
pub const DEFAULT_ECOSYSTEMS: &[&str] = &[
    "AlmaLinux",
    "Alpine",
    "Debian",
    "Rocky Linux",
    "Ubuntu",
    "crates.io",
    "Go",
    "Maven",
    "npm",
    "PyPI",
];

/// Largest dump accepted (the largest, Debian's, is a few hundred MiB).
const MAX_DUMP_BYTES: u64 = 8 << 30;

/// What is known about a dump being or having been downloaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Note {
    url: String,
    etag: Option<String>,
    size: Option<u64>,
    /// Hex MD5 the server announced.
    md5: Option<String>,
}

/// How a dump was obtained.
#[derive(Debug, PartialEq)]
enum How {
    Unchanged,
    Downloaded,
    Resumed { from: u64 },
}

/// One ecosystem's dump, on disk and checked.
struct Dump {
    ecosystem: String,
    path: PathBuf,
    how: How,
    size: u64,
    md5_checked: bool,
}

/// `sightline db update`.
pub async fn update(
    ecosystems: &[String],
    mirror: &str,
    dir: &Path,
    output: &Path,
    out: &mut impl Write,
) -> Result<()> {
    if ecosystems.is_empty() {
        bail!("no ecosystem to download (name some with --ecosystem)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let mut dumps = Vec::new();
    for ecosystem in ecosystems {
        let dump = fetch(&http, mirror, ecosystem, dir)
            .await
            .with_context(|| format!("downloading the {ecosystem} OSV dump"))?;
        let how = match dump.how {
            How::Unchanged => "unchanged".to_owned(),
            How::Downloaded => "downloaded".to_owned(),
            How::Resumed { from } => format!("resumed at {}", mib(from)),
        };
        let check = if dump.md5_checked {
            "size and MD5 checked"
        } else {
            "size checked; the server announced no MD5"
        };
        writeln!(
            out,
            "{:<12} {:>10}  {how} ({check})",
            dump.ecosystem,
            mib(dump.size)
        )?;
        dumps.push(dump);
    }
    let paths: Vec<PathBuf> = dumps.iter().map(|d| d.path.clone()).collect();
    let built = jiff::Timestamp::now().to_string();
    let (db, report) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        Database::import_osv_all(&refs, built)
    })
    .await
    .context("building the database")??;
    if let Some(parent) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    db.write(output)?;
    writeln!(
        out,
        "{}: {} advisories ({} withdrawn, {} with nothing matchable, {} unreadable)",
        output.display(),
        db.meta.advisories,
        report.withdrawn,
        report.unmatchable,
        report.errors.len()
    )?;
    for e in report.errors.iter().take(20) {
        eprintln!("warning: {e}");
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The dump's URL: the ecosystem is one path segment (`Rocky%20Linux`).
fn dump_url(mirror: &str, ecosystem: &str) -> Result<String> {
    let mut url =
        reqwest::Url::parse(mirror).with_context(|| format!("--mirror {mirror:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--mirror {mirror:?} must be an http or https URL");
    }
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--mirror {mirror:?} cannot have paths"))?
        .pop_if_empty()
        .push(ecosystem)
        .push("all.zip");
    Ok(url.to_string())
}

/// The file name an ecosystem's dump is kept under.
fn file_stem(ecosystem: &str) -> String {
    ecosystem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn read_note(path: &Path) -> Option<Note> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_note(path: &Path, note: &Note) -> Result<()> {
    std::fs::write(path, serde_json::to_vec(note)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The MD5 in `x-goog-hash: crc32c=…,md5=…` (base64), as hex.
fn announced_md5(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all("x-goog-hash")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| part.trim().strip_prefix("md5="))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|raw| raw.len() == 16)
        .map(|raw| hex(&raw))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(headers: &header::HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.parse().ok()?;
    Some((start, total.parse().ok()))
}

fn etag(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Downloads (or resumes, or confirms) one ecosystem's dump.
async fn fetch(http: &reqwest::Client, mirror: &str, ecosystem: &str, dir: &Path) -> Result<Dump> {
    let url = dump_url(mirror, ecosystem)?;
    let stem = file_stem(ecosystem);
    let done = dir.join(format!("{stem}.zip"));
    let done_note = dir.join(format!("{stem}.zip.json"));
    let part = dir.join(format!("{stem}.zip.part"));
    let part_note = dir.join(format!("{stem}.zip.part.json"));

    let kept = read_note(&done_note).filter(|n| {
        n.url == url && std::fs::metadata(&done).is_ok_and(|m| Some(m.len()) == n.size)
    });
    let partial = read_note(&part_note).and_then(|n| {
        let len = std::fs::metadata(&part).ok()?.len();
        (n.url == url && n.etag.is_some() && len > 0 && n.size.is_some_and(|s| len < s))
            .then_some((n, len))
    });

    let mut req = http.get(&url);
    if let Some((note, len)) = &partial {
        req = req.header(header::RANGE, format!("bytes={len}-"));
        if let Some(tag) = &note.etag {
            req = req.header(header::IF_RANGE, tag);
        }
    } else if let Some(tag) = kept.as_ref().and_then(|n| n.etag.as_ref()) {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED
        && let Some(note) = kept
    {
        return Ok(Dump {
            ecosystem: ecosystem.to_owned(),
            path: done,
            how: How::Unchanged,
            size: note.size.unwrap_or_default(),
            md5_checked: note.md5.is_some(),
        });
    }
    // A 206 continues our partial download only if it is the same object
    // and starts where our copy ends; anything else starts over.
    let resumed = match (&partial, status) {
        (Some((note, len)), reqwest::StatusCode::PARTIAL_CONTENT) => {
            let same = etag(resp.headers()) == note.etag
                && content_range(resp.headers()) == Some((*len, note.size));
            if !same {
                bail!(
                    "GET {url}: the server resumed a different object or range (ETag {:?}, Content-Range {:?}); \
                     remove {} and run again",
                    etag(resp.headers()),
                    resp.headers().get(header::CONTENT_RANGE),
                    part.display()
                );
            }
            Some((note.clone(), *len))
        }
        (_, s) if s == reqwest::StatusCode::OK => None,
        (_, s) => {
            let body = resp.text().await.unwrap_or_default();
            bail!(
                "GET {url}: {s}: {}",
                body.chars().take(200).collect::<String>().trim()
            );
        }
    };
    let (note, start) = match resumed {
        Some((note, len)) => (note, len),
        None => {
            let note = Note {
                url: url.clone(),
                etag: etag(resp.headers()),
                size: resp.content_length(),
                md5: announced_md5(resp.headers()),
            };
            if note.size.is_some_and(|s| s > MAX_DUMP_BYTES) {
                bail!("GET {url}: the dump is larger than {}", mib(MAX_DUMP_BYTES));
            }
            write_note(&part_note, &note)?;
            (note, 0)
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    let bar = progress(ecosystem, note.size, start);
    let mut written = start;
    let mut resp = resp;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let _ = file.flush();
                if let Some(b) = &bar {
                    b.abandon();
                }
                bail!(
                    "GET {url}: interrupted after {} of {}: {e}; run again to resume",
                    mib(written),
                    note.size.map_or("?".into(), mib)
                );
            }
        };
        written += chunk.len() as u64;
        if written > note.size.unwrap_or(MAX_DUMP_BYTES) {
            drop(file);
            discard(&part, &part_note);
            bail!(
                "GET {url}: the server sent more than the {} it announced",
                mib(note.size.unwrap_or(MAX_DUMP_BYTES))
            );
        }
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", part.display()))?;
        if let Some(b) = &bar {
            b.set_position(written);
        }
    }
    file.sync_all()
        .with_context(|| format!("writing {}", part.display()))?;
    drop(file);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(size) = note.size
        && written != size
    {
        bail!(
            "GET {url}: the connection closed after {} of {}; run again to resume",
            mib(written),
            mib(size)
        );
    }
    if let Some(expected) = &note.md5 {
        let check = part.clone();
        let got = tokio::task::spawn_blocking(move || md5_of(&check))
            .await
            .context("hashing the download")??;
        if &got != expected {
            discard(&part, &part_note);
            bail!(
                "GET {url}: the download's MD5 is {got}, the server announced {expected}; \
                 the download was removed, run again"
            );
        }
    }
    std::fs::rename(&part, &done).with_context(|| format!("keeping {}", done.display()))?;
    write_note(
        &done_note,
        &Note {
            size: Some(written),
            ..note.clone()
        },
    )?;
    let _ = std::fs::remove_file(&part_note);
    Ok(Dump {
        ecosystem: ecosystem.to_owned(),
        path: done,
        how: if start > 0 {
            How::Resumed { from: start }
        } else {
            How::Downloaded
        },
        size: written,
        md5_checked: note.md5.is_some(),
    })
}

fn discard(part: &Path, note: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(note);
}

fn md5_of(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// A byte progress bar on a terminal; nothing in logs.
fn progress(ecosystem: &str, size: Option<u64>, start: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    let bar = match size {
        Some(s) => indicatif::ProgressBar::new(s),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(ecosystem.to_owned());
    bar.set_position(start);
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_put_the_ecosystem_in_one_segment() {
        assert_eq!(
            dump_url("https://osv.example/", "Rocky Linux")
                .ok()
                .as_deref(),
            Some("https://osv.example/Rocky%20Linux/all.zip")
        );
        assert_eq!(
            dump_url("http://127.0.0.1:9/mirror", "crates.io")
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:9/mirror/crates.io/all.zip")
        );
        assert!(dump_url("file:///etc", "Debian").is_err());
        assert!(dump_url("not a url", "Debian").is_err());
        assert_eq!(file_stem("Rocky Linux"), "Rocky_Linux");
        assert_eq!(file_stem("../x"), ".._x");
    }

    #[test]
    fn md5_comes_from_x_goog_hash() {
        let mut h = header::HeaderMap::new();
        h.append(
            "x-goog-hash",
            header::HeaderValue::from_static("crc32c=n03x6A=="),
        );
        h.append(
            "x-goog-hash",
            header::HeaderValue::from_static("md5=Ojk9c3dhfxgoKVVHYwFbHQ=="),
        );
        assert_eq!(
            announced_md5(&h).as_deref(),
            Some("3a393d7377617f182829554763015b1d")
        );
        let mut h = header::HeaderMap::new();
        h.insert(
            "x-goog-hash",
            header::HeaderValue::from_static("crc32c=n03x6A==, md5=bm90IDE2IGJ5dGVz"),
        );
        assert_eq!(announced_md5(&h), None, "not 16 bytes");
    }

    #[test]
    fn content_ranges_parse() {
        let mut h = header::HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            header::HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(content_range(&h), Some((100, Some(200))));
        h.insert(
            header::CONTENT_RANGE,
            header::HeaderValue::from_static("bytes 100-199/*"),
        );
        assert_eq!(content_range(&h), Some((100, None)));
    }
}
