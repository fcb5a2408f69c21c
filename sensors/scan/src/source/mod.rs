//! Where images come from: a `docker save` archive, or blobs by digest
//! ([`blobs`]: an OCI image layout directory, containerd's content store,
//! later registries). Each
//! source finds the image's config and layers, checks every digest and
//! size its manifest declares, and streams the layers through an
//! [`Analyzer`](crate::Analyzer).

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::analyzer::{Analysis, bytes};
use crate::error::ScanError;

pub mod blobs;
pub mod docker_archive;
pub mod oci_layout;

/// Manifests, indexes and configs larger than this are refused.
pub const MAX_DOCUMENT_BYTES: u64 = 8 << 20;

/// An analysed image.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Digest of the image config (`sha256:…`), Docker's image ID.
    pub config_digest: String,
    /// Digest of the manifest, when the source has one (OCI layout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Tags the source records (`debian:12`).
    pub repo_tags: Vec<String>,
    /// `architecture` from the config (`amd64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `os` from the config (`linux`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// `created` from the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What the layers hold.
    pub analysis: Analysis,
}

/// The parts of an image config (OCI image spec, `config.json`) analysis uses.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// Parses a config whose manifest lists `layers` layers.
    pub(crate) fn parse(data: &[u8], what: &str, layers: usize) -> Result<Self, ScanError> {
        let config: ImageConfig = parse_json(data, what)?;
        if config.rootfs.diff_ids.len() != layers {
            return Err(ScanError::manifest(
                what,
                format!(
                    "lists {} layer digests but the manifest lists {layers} layers",
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        Ok(config)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// An OCI content descriptor: what a blob is, its digest and size.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// `application/vnd.oci.image.manifest.v1+json`, …
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (`org.opencontainers.image.ref.name`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The platform, in an index's entries.
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor of `media_type` with `digest` and `size`.
    pub fn new(media_type: impl Into<String>, digest: impl Into<String>, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An OS and architecture (`linux/amd64`, `linux/arm64/v8`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// `architecture` (`amd64`, `arm64`).
    pub architecture: String,
    /// `os` (`linux`).
    pub os: String,
    /// `variant` (`v8`), if any.
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program runs on, in OCI's names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.to_owned(),
            os: std::env::consts::OS.to_owned(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform {
                    os: os.to_owned(),
                    architecture: arch.to_owned(),
                    variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
                })
            }
            _ => Err(format!(
                "'{s}' is not a platform; expected os/arch[/variant] such as linux/amd64"
            )),
        }
    }

    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Media types of image indexes (multi-platform images).
pub const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Media types of image manifests.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Reads a small JSON document (manifest, index, config) of at most
/// [`MAX_DOCUMENT_BYTES`], returning its bytes and `sha256:` digest.
pub(crate) fn read_document(mut r: impl Read, what: &str) -> Result<(Vec<u8>, String), ScanError> {
    let mut data = Vec::new();
    (&mut r)
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(crate::error::io_err(format!("reading {what}")))?;
    if data.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ScanError::manifest(
            what,
            format!(
                "larger than {}; refusing to parse it",
                bytes(MAX_DOCUMENT_BYTES)
            ),
        ));
    }
    let digest = digest_of_bytes(&data);
    Ok((data, digest))
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn digest_of_bytes(data: &[u8]) -> String {
    crate::analyzer::digest_of(Sha256::new_with_prefix(data))
}

/// Parses a JSON document, naming it in the error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    data: &[u8],
    what: &str,
) -> Result<T, ScanError> {
    serde_json::from_slice(data)
        .map_err(|e| ScanError::manifest(what, format!("malformed JSON: {e}")))
}

/// Picks the manifest for `platform` from an image index.
pub(crate) fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor, ScanError> {
    manifests
        .iter()
        .filter(|d| MANIFEST_TYPES.contains(&d.media_type.as_str()))
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| {
            let have: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                .collect();
            ScanError::manifest(
                what,
                format!(
                    "no manifest for platform {platform}; the index has [{}]",
                    have.join(", ")
                ),
            )
        })
}
