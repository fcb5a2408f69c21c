//! `docker save` archives: a tar holding `manifest.json`, the image config
//! and one uncompressed tar per layer (`<id>/layer.tar` in the legacy
//! layout, `blobs/sha256/<hex>` since Docker 25). The archive is indexed in
//! one pass, then each layer is streamed straight from its offset in the
//! file: nothing is extracted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::{Image, ImageConfig, parse_json, read_document};
use crate::analyzer::{Analyzer, LayerExpect, Limits};
use crate::error::{ScanError, io_err};
use crate::path::{link_target, normalize};

/// Most entries an archive may have (a real one has a few per layer).
const MAX_ARCHIVE_ENTRIES: usize = 100_000;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Analyses the image in a `docker save` archive. With several images in
/// the archive, `tag` picks one (`debian:12`).
pub fn analyze(path: &Path, tag: Option<&str>, limits: &Limits) -> Result<Image, ScanError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(io_err(format!("opening {shown}")))?;
    let members = index(&file, &shown)?;
    let open = |name: &str| -> Result<(u64, u64), ScanError> {
        let mut name = normalize(name).map_err(|reason| ScanError::UnsafePath {
            layer: shown.clone(),
            path: name.to_owned(),
            reason,
        })?;
        for _ in 0..8 {
            match members.get(&name) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => name = link_target(&name, target).0,
                None => break,
            }
        }
        Err(ScanError::manifest(
            format!("{shown}: manifest.json"),
            format!("names '{name}', which the archive does not contain"),
        ))
    };
    let section = |name: &str| -> Result<std::io::Take<BufReader<File>>, ScanError> {
        let (offset, size) = open(name)?;
        let mut f = file
            .try_clone()
            .map_err(io_err(format!("reopening {shown}")))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(io_err(format!("seeking in {shown}")))?;
        Ok(BufReader::with_capacity(64 << 10, f).take(size))
    };

    let what = format!("{shown}: manifest.json");
    let (data, _) = read_document(section("manifest.json")?, &what)?;
    let entries: Vec<ManifestEntry> = parse_json(&data, &what)?;
    let entry = match (tag, entries.len()) {
        (_, 0) => return Err(ScanError::manifest(what, "lists no image")),
        (None, 1) => &entries[0],
        (None, _) => {
            return Err(ScanError::manifest(
                what,
                format!(
                    "holds {} images; name one by tag ({})",
                    entries.len(),
                    all_tags(&entries)
                ),
            ));
        }
        (Some(tag), _) => entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == tag || t.rsplit_once('/').is_some_and(|(_, short)| short == tag))
            })
            .ok_or_else(|| {
                ScanError::manifest(
                    &what,
                    format!(
                        "has no image tagged '{tag}' (it has {})",
                        all_tags(&entries)
                    ),
                )
            })?,
    };

    let config_what = format!("{shown}: image config {}", entry.config);
    let (config_data, config_digest) = read_document(section(&entry.config)?, &config_what)?;
    let config = ImageConfig::parse(&config_data, &config_what, entry.layers.len())?;

    let mut analyzer = Analyzer::new(limits.clone());
    for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let expect = LayerExpect {
            diff_id: Some(diff_id.clone()),
            ..LayerExpect::default()
        };
        analyzer.add_layer(section(layer)?, &expect)?;
    }
    Ok(Image {
        config_digest,
        manifest_digest: None,
        repo_tags: entry.repo_tags.clone().unwrap_or_default(),
        architecture: config.architecture,
        os: config.os,
        created: config.created,
        analysis: analyzer.finish(),
    })
}

fn all_tags(entries: &[ManifestEntry]) -> String {
    let tags: Vec<&str> = entries
        .iter()
        .flat_map(|e| e.repo_tags.iter().flatten())
        .map(String::as_str)
        .collect();
    if tags.is_empty() {
        "no tags".to_owned()
    } else {
        tags.join(", ")
    }
}

/// Where each member's data starts in the archive.
fn index(file: &File, shown: &str) -> Result<HashMap<String, Member>, ScanError> {
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut members = HashMap::new();
    let bad = |e: std::io::Error| ScanError::Layer {
        layer: shown.to_owned(),
        reason: format!("not a readable docker-archive tar: {e}"),
    };
    for entry in archive.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if members.len() >= MAX_ARCHIVE_ENTRIES {
            return Err(ScanError::manifest(
                shown,
                format!("has more than {MAX_ARCHIVE_ENTRIES} members"),
            ));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Ok(name) = normalize(&raw) else {
            return Err(ScanError::UnsafePath {
                layer: shown.to_owned(),
                path: raw,
                reason: "is not a path inside the archive",
            });
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            // Hard link names are archive-relative; symlinks are relative
            // to the link's directory.
            let target = if kind.is_hard_link() {
                format!("/{target}")
            } else {
                target
            };
            members.insert(name, Member::Link(target));
        } else if kind.is_file() {
            members.insert(
                name,
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            );
        }
    }
    Ok(members)
}
