//! Images held as content-addressed blobs: an index or manifest, a config
//! and layers, each fetched by digest. An OCI image layout, containerd's
//! content store and a registry all work this way; each implements
//! [`Blobs`] and shares the walk here, which follows indexes down to one
//! platform's manifest, checks every document's size and digest, and
//! streams the layers through an [`Analyzer`] with what the manifest and
//! config declare about them, so a lying store fails the analysis.

use std::io::Read;

use serde::Deserialize;

use super::{
    Descriptor, INDEX_TYPES, Image, ImageConfig, MANIFEST_TYPES, Platform, parse_json,
    pick_platform, read_document,
};
use crate::analyzer::{Analyzer, LayerExpect, Limits};
use crate::error::ScanError;

/// Layer media types analysis can read (plain, gzip and zstd tars, OCI and
/// Docker spellings, including non-distributable ones).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// How deep indexes may nest before the walk gives up.
const MAX_INDEX_DEPTH: usize = 4;

/// A store of blobs addressed by digest.
pub trait Blobs {
    /// Opens the blob `desc` describes for streaming; `what` names it in
    /// errors. Sizes and digests are checked by the caller. (A registry
    /// serves manifests and other blobs at different paths: the media type
    /// tells which.)
    fn open(&self, desc: &Descriptor, what: &str) -> Result<Box<dyn Read + '_>, ScanError>;
}

/// An image index (`index.json`, a manifest list).
#[derive(Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// One platform's manifest, found from an index or manifest descriptor.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
}

impl Resolved {
    /// The image's ID: its config digest.
    pub fn config_digest(&self) -> &str {
        &self.manifest.config.digest
    }
}

/// Follows `top` (a manifest, or an index of them, possibly nested) to the
/// manifest for `platform`. Reads only the small documents.
pub fn resolve(
    blobs: &impl Blobs,
    top: &Descriptor,
    platform: &Platform,
) -> Result<Resolved, ScanError> {
    let mut desc = top.clone();
    for _ in 0..MAX_INDEX_DEPTH {
        if !INDEX_TYPES.contains(&desc.media_type.as_str()) {
            break;
        }
        let what = format!("image index {}", desc.digest);
        let data = read_blob(blobs, &desc, &what)?;
        let nested: Index = parse_json(&data, &what)?;
        desc = pick_platform(&nested.manifests, platform, &what)?.clone();
    }
    let what = format!("manifest {}", desc.digest);
    if INDEX_TYPES.contains(&desc.media_type.as_str()) {
        return Err(ScanError::manifest(
            what,
            format!("indexes nest deeper than {MAX_INDEX_DEPTH} levels"),
        ));
    }
    let data = read_blob(blobs, &desc, &what)?;
    let manifest: Manifest = parse_json(&data, &what)?;
    if let Some(t) = manifest
        .media_type
        .as_deref()
        .or(Some(desc.media_type.as_str()))
        .filter(|t| !t.is_empty())
        && !MANIFEST_TYPES.contains(&t)
    {
        return Err(ScanError::manifest(
            what,
            format!("has media type '{t}', not an image manifest"),
        ));
    }
    Ok(Resolved {
        descriptor: desc,
        manifest,
    })
}

/// Analyses the image `top` names: resolves it to `platform`'s manifest,
/// reads the config, and streams every layer through the analyzer.
pub fn analyze(
    blobs: &impl Blobs,
    top: &Descriptor,
    platform: &Platform,
    repo_tags: Vec<String>,
    limits: &Limits,
) -> Result<Image, ScanError> {
    let resolved = resolve(blobs, top, platform)?;
    analyze_resolved(blobs, &resolved, repo_tags, limits)
}

/// Analyses an image whose manifest is already resolved.
pub fn analyze_resolved(
    blobs: &impl Blobs,
    resolved: &Resolved,
    repo_tags: Vec<String>,
    limits: &Limits,
) -> Result<Image, ScanError> {
    let manifest = &resolved.manifest;
    let what = format!("manifest {}", resolved.descriptor.digest);
    let config_what = format!("image config {}", manifest.config.digest);
    let config_data = read_blob(blobs, &manifest.config, &config_what)?;
    let config = ImageConfig::parse(&config_data, &config_what, manifest.layers.len())?;

    let mut analyzer = Analyzer::new(limits.clone());
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(ScanError::manifest(
                &what,
                format!(
                    "layer {} has media type '{}', which is not an image layer",
                    layer.digest, layer.media_type
                ),
            ));
        }
        let reader = blobs.open(layer, &format!("layer {}", layer.digest))?;
        let expect = LayerExpect {
            blob_digest: Some(layer.digest.clone()),
            blob_size: Some(layer.size),
            diff_id: Some(diff_id.clone()),
        };
        analyzer.add_layer(std::io::BufReader::with_capacity(64 << 10, reader), &expect)?;
    }
    Ok(Image {
        config_digest: manifest.config.digest.clone(),
        manifest_digest: Some(resolved.descriptor.digest.clone()),
        repo_tags,
        architecture: config.architecture,
        os: config.os,
        created: config.created,
        analysis: analyzer.finish(),
    })
}

/// Reads a small blob (index, manifest, config), checking its size and
/// digest against its descriptor.
pub fn read_blob(blobs: &impl Blobs, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ScanError> {
    let reader = blobs.open(desc, what)?;
    let (data, digest) = read_document(reader.take(desc.size.saturating_add(1)), what)?;
    if data.len() as u64 != desc.size {
        return Err(ScanError::Mismatch {
            what: format!("{what} size"),
            expected: format!("{} bytes as its descriptor declares", desc.size),
            actual: if data.len() as u64 > desc.size {
                "more".to_owned()
            } else {
                format!("{} bytes", data.len())
            },
        });
    }
    if digest != desc.digest {
        return Err(ScanError::Mismatch {
            what: format!("{what} digest"),
            expected: desc.digest.clone(),
            actual: digest,
        });
    }
    Ok(data)
}

/// The hex part of a `sha256:` digest, refusing anything else: digests are
/// joined into paths and URLs, so anything but 64 lowercase hex digits
/// could name something else, and only sha256 is verified here.
pub fn sha256_hex<'a>(digest: &'a str, what: &str) -> Result<&'a str, ScanError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(ScanError::manifest(
            what,
            format!("'{digest}' is not a sha256 digest (sha256: and 64 lowercase hex digits)"),
        )),
    }
}
