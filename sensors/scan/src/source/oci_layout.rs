//! OCI image layout directories (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), as `skopeo copy … oci:DIR` and `buildah push`
//! write them. Every blob is checked against the size and digest its
//! descriptor declares while it streams.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    Descriptor, INDEX_TYPES, Image, ImageConfig, MANIFEST_TYPES, Platform, parse_json,
    pick_platform, read_document,
};
use crate::analyzer::{Analyzer, LayerExpect, Limits};
use crate::error::{ScanError, io_err};

/// The annotation naming a manifest in `index.json` (`skopeo copy … oci:DIR:NAME`).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

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

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Analyses an image in an OCI layout. `reference` picks a manifest by its
/// `org.opencontainers.image.ref.name` when the layout holds several;
/// `platform` picks from a multi-platform index.
pub fn analyze(
    dir: &Path,
    reference: Option<&str>,
    platform: &Platform,
    limits: &Limits,
) -> Result<Image, ScanError> {
    let shown = dir.display().to_string();
    let index_path = dir.join("index.json");
    let what = format!("{shown}/index.json");
    let file = File::open(&index_path).map_err(io_err(format!(
        "opening {what} (is {shown} an OCI layout?)"
    )))?;
    let (data, _) = read_document(file, &what)?;
    let index: Index = parse_json(&data, &what)?;
    let top = match reference {
        Some(r) => index
            .manifests
            .iter()
            .find(|d| ref_name(d) == Some(r))
            .ok_or_else(|| {
                let refs: Vec<&str> = index.manifests.iter().filter_map(ref_name).collect();
                ScanError::manifest(
                    &what,
                    format!("has no manifest named '{r}' (it has [{}])", refs.join(", ")),
                )
            })?,
        None => match index.manifests.as_slice() {
            [] => return Err(ScanError::manifest(&what, "lists no manifest")),
            [one] => one,
            many => {
                let refs: Vec<&str> = many.iter().filter_map(ref_name).collect();
                return Err(ScanError::manifest(
                    &what,
                    format!(
                        "lists {} manifests; name one ([{}])",
                        many.len(),
                        refs.join(", ")
                    ),
                ));
            }
        },
    };
    let repo_tags = ref_name(top)
        .map(|r| vec![r.to_owned()])
        .unwrap_or_default();

    // Follow nested indexes down to one platform's manifest.
    let mut desc = top.clone();
    for _ in 0..4 {
        if !INDEX_TYPES.contains(&desc.media_type.as_str()) {
            break;
        }
        let what = format!("image index {}", desc.digest);
        let data = read_blob(dir, &desc, &what)?;
        let nested: Index = parse_json(&data, &what)?;
        desc = pick_platform(&nested.manifests, platform, &what)?.clone();
    }
    let what = format!("manifest {}", desc.digest);
    let data = read_blob(dir, &desc, &what)?;
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
    let config_what = format!("image config {}", manifest.config.digest);
    let config_data = read_blob(dir, &manifest.config, &config_what)?;
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
        let path = blob_path(dir, &layer.digest, &what)?;
        let file = File::open(&path).map_err(io_err(format!(
            "opening layer {} (the manifest names it, but {} is missing or unreadable)",
            layer.digest,
            path.display()
        )))?;
        let expect = LayerExpect {
            blob_digest: Some(layer.digest.clone()),
            blob_size: Some(layer.size),
            diff_id: Some(diff_id.clone()),
        };
        analyzer.add_layer(BufReader::with_capacity(64 << 10, file), &expect)?;
    }
    Ok(Image {
        config_digest: manifest.config.digest.clone(),
        manifest_digest: Some(desc.digest.clone()),
        repo_tags,
        architecture: config.architecture,
        os: config.os,
        created: config.created,
        analysis: analyzer.finish(),
    })
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations.get(REF_NAME).map(String::as_str)
}

/// `blobs/sha256/<hex>` for a digest, refusing anything but `sha256:` and
/// 64 lowercase hex digits: the digest is joined into a path, so anything
/// else could name another file, and only sha256 is verified here.
fn blob_path(dir: &Path, digest: &str, what: &str) -> Result<PathBuf, ScanError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(dir.join("blobs/sha256").join(hex))
        }
        _ => Err(ScanError::manifest(
            what,
            format!("'{digest}' is not a sha256 digest (sha256: and 64 lowercase hex digits)"),
        )),
    }
}

/// Reads a small blob, checking its size and digest.
fn read_blob(dir: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ScanError> {
    let path = blob_path(dir, &desc.digest, what)?;
    let file = File::open(&path).map_err(io_err(format!(
        "opening {what} (missing blob {})",
        path.display()
    )))?;
    let (data, digest) = read_document(file.take(desc.size.saturating_add(1)), what)?;
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
