//! OCI image layout directories (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), as `skopeo copy … oci:DIR` and `buildah push`
//! write them. Every blob is checked against the size and digest its
//! descriptor declares while it streams.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::blobs::{self, Blobs, Index, sha256_hex};
use super::{Descriptor, Image, Platform, parse_json, read_document};
use crate::analyzer::Limits;
use crate::error::{ScanError, io_err};

/// The annotation naming a manifest in `index.json` (`skopeo copy … oci:DIR:NAME`).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The blobs of a layout directory, `blobs/sha256/<hex>`.
struct Layout<'a>(&'a Path);

impl Blobs for Layout<'_> {
    fn open(&self, desc: &Descriptor, what: &str) -> Result<Box<dyn Read + '_>, ScanError> {
        let path = blob_path(self.0, &desc.digest, what)?;
        let file = File::open(&path).map_err(io_err(format!(
            "opening {what} (the manifest names it, but {} is missing or unreadable)",
            path.display()
        )))?;
        Ok(Box::new(BufReader::with_capacity(64 << 10, file)))
    }
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

    blobs::analyze(&Layout(dir), top, platform, repo_tags, limits)
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations.get(REF_NAME).map(String::as_str)
}

/// `blobs/sha256/<hex>` for a digest (only sha256 digests name a path).
fn blob_path(dir: &Path, digest: &str, what: &str) -> Result<PathBuf, ScanError> {
    Ok(dir.join("blobs/sha256").join(sha256_hex(digest, what)?))
}
