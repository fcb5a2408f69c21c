//! `docker save` archives: a tar holding `manifest.json`, the image config
//! and one tar per layer (`<id>/layer.tar` in the legacy layout,
//! `blobs/sha256/<hex>` since Docker 25). Read in a single pass, so an
//! archive can come from a pipe or straight from the Docker API's image
//! export: each layer is analysed as it streams past and staged, and once
//! `manifest.json` (usually last) says which layers make the image and in
//! what order, the staged layers are checked against the config's
//! `diff_ids` and applied base first. Nothing is extracted or buffered
//! beyond the small JSON documents.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use super::{Image, ImageConfig, MAX_DOCUMENT_BYTES, parse_json, read_document};
use crate::analyzer::{Analyzer, LayerExpect, Limits, StagedLayer, bytes};
use crate::error::{ScanError, io_err};
use crate::path::{link_target, normalize};

/// Most members an archive may have (a real one has a few per layer).
const MAX_ARCHIVE_ENTRIES: u64 = 100_000;
/// Most bytes of JSON documents (configs, manifests) kept from one archive.
const MAX_DOCUMENTS_TOTAL: u64 = 64 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Analyses the image in a `docker save` archive file (`-` reads standard
/// input). With several images in the archive, `tag` picks one
/// (`debian:12`).
pub fn analyze(path: &Path, tag: Option<&str>, limits: &Limits) -> Result<Image, ScanError> {
    if path == Path::new("-") {
        let stdin = std::io::stdin().lock();
        return analyze_stream(stdin, "standard input", tag, limits);
    }
    let shown = path.display().to_string();
    let file = File::open(path).map_err(io_err(format!("opening {shown}")))?;
    analyze_stream(
        BufReader::with_capacity(64 << 10, file),
        &shown,
        tag,
        limits,
    )
}

/// Analyses a `docker save` archive read front to back from `reader`;
/// `shown` names it in errors.
pub fn analyze_stream(
    reader: impl Read,
    shown: &str,
    tag: Option<&str>,
    limits: &Limits,
) -> Result<Image, ScanError> {
    let mut analyzer = Analyzer::new(limits.clone());
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut doc_total = 0u64;
    let mut staged: HashMap<String, StagedLayer> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let bad = |e: std::io::Error| ScanError::Layer {
        layer: shown.to_owned(),
        reason: format!("not a readable docker-archive tar: {e}"),
    };

    let mut archive = tar::Archive::new(reader);
    let mut count = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        count += 1;
        if count > MAX_ARCHIVE_ENTRIES {
            return Err(ScanError::manifest(
                shown,
                format!("has more than {MAX_ARCHIVE_ENTRIES} members"),
            ));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = normalize(&raw).map_err(|reason| ScanError::UnsafePath {
            layer: shown.to_owned(),
            path: raw.clone(),
            reason,
        })?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // Docker links repeated layers to their first copy.
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let target = if kind.is_hard_link() {
                normalize(&target).unwrap_or_default()
            } else {
                link_target(&name, &target).0
            };
            links.insert(name, target);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let mut body = BufReader::with_capacity(64 << 10, entry);
        let starts_json = body
            .fill_buf()
            .map_err(bad)?
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        let base = name.rsplit('/').next().unwrap_or_default();
        if starts_json && size <= MAX_DOCUMENT_BYTES {
            doc_total += size;
            if doc_total > MAX_DOCUMENTS_TOTAL {
                return Err(ScanError::manifest(
                    shown,
                    format!(
                        "holds more than {} of JSON documents",
                        bytes(MAX_DOCUMENTS_TOTAL)
                    ),
                ));
            }
            let (data, _) = read_document(body, &format!("{shown}: {name}"))?;
            docs.insert(name, data);
        } else if base == "layer.tar" || name.starts_with("blobs/") || name.ends_with(".tar") {
            let label = format!("{shown}: {name}");
            let layer = analyzer.read_layer(body, &LayerExpect::default(), &label)?;
            staged.insert(name, layer);
        }
        // Anything else (VERSION files, legacy per-layer `json`) is not needed.
    }

    let resolve = |name: &str| -> String {
        let mut name = normalize(name).unwrap_or_default();
        for _ in 0..8 {
            match links.get(&name) {
                Some(t) => name = t.clone(),
                None => break,
            }
        }
        name
    };
    let what = format!("{shown}: manifest.json");
    let data = docs.get("manifest.json").ok_or_else(|| {
        ScanError::manifest(
            shown,
            "has no manifest.json; is it a `docker save` archive?",
        )
    })?;
    let entries: Vec<ManifestEntry> = parse_json(data, &what)?;
    let entry = pick(&entries, tag, &what)?;

    let config_what = format!("{shown}: image config {}", entry.config);
    let config_data = docs.get(&resolve(&entry.config)).ok_or_else(|| {
        ScanError::manifest(
            &what,
            format!(
                "names config '{}', which the archive does not contain",
                entry.config
            ),
        )
    })?;
    let config_digest = super::digest_of_bytes(config_data);
    let config = ImageConfig::parse(config_data, &config_what, entry.layers.len())?;
    for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let layer_name = resolve(layer);
        let found = staged.get(&layer_name).ok_or_else(|| {
            ScanError::manifest(
                &what,
                format!("names layer '{layer}', which the archive does not contain"),
            )
        })?;
        if found.info().diff_id != *diff_id {
            return Err(ScanError::Mismatch {
                what: format!("{shown}: layer {layer} (diff_id)"),
                expected: diff_id.clone(),
                actual: found.info().diff_id.clone(),
            });
        }
        analyzer.apply_layer(found.clone());
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

/// The manifest entry for `tag`, or the only one.
fn pick<'a>(
    entries: &'a [ManifestEntry],
    tag: Option<&str>,
    what: &str,
) -> Result<&'a ManifestEntry, ScanError> {
    let tags = || {
        let all: Vec<&str> = entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten())
            .map(String::as_str)
            .collect();
        if all.is_empty() {
            "no tags".to_owned()
        } else {
            all.join(", ")
        }
    };
    match (tag, entries) {
        (_, []) => Err(ScanError::manifest(what, "lists no image")),
        (None, [one]) => Ok(one),
        (None, many) => Err(ScanError::manifest(
            what,
            format!("holds {} images; name one by tag ({})", many.len(), tags()),
        )),
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
                    what,
                    format!("has no image tagged '{tag}' (it has {})", tags()),
                )
            }),
    }
}
