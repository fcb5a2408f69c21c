//! An image in a registry, analysed: its manifest (or each platform's,
//! for an index) resolved through the registry, its layers streamed from
//! the registry into the analyzer — never held whole, never written to
//! disk — with every size and digest the manifests declare checked.

use std::io::{self, Cursor, Read};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sightline_scan::Limits;
use sightline_scan::ScanError;
use sightline_scan::source::blobs::{self, Blobs, Resolved};
use sightline_scan::source::{Descriptor, INDEX_TYPES, Image, MANIFEST_TYPES, Platform};

use crate::client::{Client, RegistryError};

/// Which platforms of a multi-platform image to analyse.
#[derive(Clone, Debug, Default)]
pub enum Platforms {
    /// Every Linux platform the index lists (attestation entries skipped).
    #[default]
    All,
    /// Only these.
    Only(Vec<Platform>),
}

/// One platform's image of a reference.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    /// The platform (from the index, or the config for a single manifest).
    pub platform: Option<Platform>,
    /// The platform's manifest.
    pub manifest: Descriptor,
    /// What analysis found.
    pub image: Image,
}

/// The registry's blobs of one repository, read from a blocking thread.
pub struct RepoBlobs {
    client: Arc<Client>,
    repo: String,
    handle: tokio::runtime::Handle,
}

impl RepoBlobs {
    /// Blobs of `repo` through `client`; `handle` runs the requests.
    pub fn new(client: Arc<Client>, repo: &str, handle: tokio::runtime::Handle) -> Self {
        RepoBlobs {
            client,
            repo: repo.to_owned(),
            handle,
        }
    }
}

fn scan_err(what: &str, e: RegistryError) -> ScanError {
    ScanError::Io {
        what: what.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

impl Blobs for RepoBlobs {
    fn open(&self, desc: &Descriptor, what: &str) -> Result<Box<dyn Read + '_>, ScanError> {
        blobs::sha256_hex(&desc.digest, what)?;
        let kind = desc.media_type.as_str();
        if INDEX_TYPES.contains(&kind) || MANIFEST_TYPES.contains(&kind) {
            let (_, body) = self
                .handle
                .block_on(self.client.manifest(&self.repo, &desc.digest))
                .map_err(|e| scan_err(what, e))?;
            return Ok(Box::new(Cursor::new(body)));
        }
        let stream = self
            .handle
            .block_on(self.client.blob(&self.repo, &desc.digest))
            .map_err(|e| scan_err(what, e))?;
        Ok(Box::new(StreamReader {
            handle: self.handle.clone(),
            stream: Box::pin(stream),
            current: bytes::Bytes::new(),
        }))
    }
}

/// Reads an async byte stream from a blocking thread, a chunk at a time.
struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: std::pin::Pin<Box<dyn Stream<Item = io::Result<bytes::Bytes>> + Send>>,
    current: bytes::Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(c)) => self.current = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The platform manifests `top` stands for: itself, or the index's
/// entries that `platforms` selects (Linux only; `unknown/unknown`
/// attestation entries are not images).
pub fn platform_manifests(
    store: &RepoBlobs,
    top: &Descriptor,
    platforms: &Platforms,
) -> Result<Vec<(Option<Platform>, Resolved)>, ScanError> {
    if !INDEX_TYPES.contains(&top.media_type.as_str()) {
        let resolved = blobs::resolve(store, top, &Platform::host())?;
        return Ok(vec![(None, resolved)]);
    }
    let data = blobs::read_blob(store, top, &format!("image index {}", top.digest))?;
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let index: Index = serde_json::from_slice(&data).map_err(|e| ScanError::Manifest {
        what: format!("image index {}", top.digest),
        reason: format!("malformed JSON: {e}"),
    })?;
    let mut out = Vec::new();
    for entry in index.manifests {
        let Some(p) = entry.platform.clone() else {
            continue;
        };
        if p.os != "linux" {
            continue;
        }
        let wanted = match platforms {
            Platforms::All => true,
            Platforms::Only(list) => list.iter().any(|w| {
                w.to_string() == p.to_string()
                    || (w.os == p.os && w.architecture == p.architecture && w.variant.is_none())
            }),
        };
        if wanted {
            let resolved = blobs::resolve(store, &entry, &p)?;
            out.push((Some(p), resolved));
        }
    }
    if out.is_empty() {
        return Err(ScanError::Manifest {
            what: format!("image index {}", top.digest),
            reason: "lists no Linux image for the platforms asked for".into(),
        });
    }
    Ok(out)
}

/// Analyses every selected platform of `top`, tagged `tags`.
pub fn analyze(
    store: &RepoBlobs,
    top: &Descriptor,
    platforms: &Platforms,
    tags: Vec<String>,
    limits: &Limits,
) -> Result<Vec<PlatformImage>, ScanError> {
    platform_manifests(store, top, platforms)?
        .into_iter()
        .map(|(platform, resolved)| {
            let image = blobs::analyze_resolved(store, &resolved, tags.clone(), limits)?;
            Ok(PlatformImage {
                platform,
                manifest: resolved.descriptor,
                image,
            })
        })
        .collect()
}
