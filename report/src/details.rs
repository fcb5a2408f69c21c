//! An image's details: its whole analysis (every package, with its layer
//! and file) and every vulnerability matched, sent to the operator after
//! the image's observation was accepted (`POST /api/v1/details`). The
//! operator keeps them in its detail store, outside etcd, and serves the
//! SBOM and findings from there; the Asset keeps only counts and the
//! worst findings.
//!
//! The bounds are wider than a report's (a large image has thousands of
//! packages) but still bounds: [`MAX_DETAILS_BYTES`], [`MAX_PACKAGES`],
//! [`MAX_FINDINGS`], and every string, list and nesting inside an entry as
//! in a report.

use serde::{Deserialize, Serialize};
use sightline_scan::source::Image;
use sightline_scan::vuln::Finding;

use crate::{Invalid, bounded, invalid, is_digest};

/// Where details go, relative to the operator's API.
pub const DETAILS_PATH: &str = "/api/v1/details";
/// Largest details body accepted, in bytes.
pub const MAX_DETAILS_BYTES: usize = 32 << 20;
/// Most packages in one image's details.
pub const MAX_PACKAGES: usize = 50_000;
/// Most findings in one image's details.
pub const MAX_FINDINGS: usize = 50_000;

/// One image's details.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageDetails {
    /// The config digest, as in the image's observation.
    pub identity: String,
    /// The analysis: packages, layers, operating system, tags.
    pub image: Image,
    /// Every finding, most severe first, when the sensor matched the image
    /// against a vulnerability database; absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<Vec<Finding>>,
}

/// The operator's answer to details it kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DetailsReceipt {
    /// The Asset they belong to.
    pub asset: String,
    /// Packages kept.
    pub packages: usize,
    /// Findings kept, when matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<usize>,
}

/// `GET /api/v1/assets/{name}/vulnerabilities`: every finding one source
/// sent for the image last.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityList {
    /// The Asset.
    pub asset: String,
    /// The source whose details these are.
    pub source: String,
    /// When it sent them (RFC 3339).
    pub reported: String,
    /// Whether the source matched the image against a database at all
    /// (false: no findings because nothing was matched).
    pub matched: bool,
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
}

/// `GET /api/v1/assets/{name}/findings`: every finding any source ever
/// reported for the Asset, open ones first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FindingHistory {
    /// The Asset.
    pub asset: String,
    /// The findings.
    pub findings: Vec<HistoryEntry>,
}

/// One finding's history for one source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Who reported it.
    pub source: String,
    /// The advisory.
    pub id: String,
    /// The package.
    pub package: String,
    /// The installed version.
    pub version: String,
    /// Severity level (`critical`, `high`, …).
    pub severity: String,
    /// The fixed version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// First reported (RFC 3339).
    pub first_seen: String,
    /// Last reported (RFC 3339).
    pub last_seen: String,
    /// When a report from the same source no longer had it (RFC 3339);
    /// absent while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
}

/// SBOM formats the operator serves (`?format=`).
pub const SBOM_FORMATS: [&str; 2] = ["cyclonedx-json", "spdx-json"];

impl ImageDetails {
    /// Details of `image` and its findings.
    pub fn new(image: Image, vulnerabilities: Option<Vec<Finding>>) -> ImageDetails {
        ImageDetails {
            identity: image.config_digest.clone(),
            image,
            vulnerabilities,
        }
    }

    /// The Asset these details belong to.
    pub fn asset_name(&self) -> String {
        sightline_crds::asset::asset_name(sightline_crds::AssetKind::ContainerImage, &self.identity)
    }

    /// Parses and checks a request body: at most [`MAX_DETAILS_BYTES`], the
    /// contract's shape, and [`ImageDetails::check`].
    pub fn from_body(body: &[u8]) -> Result<ImageDetails, Invalid> {
        if body.len() > MAX_DETAILS_BYTES {
            return Err(invalid(
                "body",
                format!(
                    "{} bytes; details may have at most {MAX_DETAILS_BYTES}",
                    body.len()
                ),
            ));
        }
        let details: ImageDetails =
            serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))?;
        details.check()?;
        Ok(details)
    }

    /// Checks the bounds: the identity's form and that the analysis is of
    /// that image, how many packages and findings, and every string, list
    /// and nesting inside each of them and the rest of the image.
    pub fn check(&self) -> Result<(), Invalid> {
        if !is_digest(&self.identity) {
            return Err(invalid(
                "identity",
                "must be sha256: and 64 lowercase hex digits",
            ));
        }
        if self.image.config_digest != self.identity {
            return Err(invalid(
                "image.configDigest",
                format!(
                    "is {}, but the details are of {}",
                    self.image.config_digest, self.identity
                ),
            ));
        }
        let packages = &self.image.analysis.packages;
        // Directories scanned as one layer name layer 0.
        let layers = self.image.analysis.layers.len().max(1);
        if packages.len() > MAX_PACKAGES {
            return Err(invalid(
                "image.analysis.packages",
                format!("{} packages; at most {MAX_PACKAGES}", packages.len()),
            ));
        }
        for (i, p) in packages.iter().enumerate() {
            let at = format!("image.analysis.packages[{i}]");
            bounded(&to_value(p, &at)?, &at, 1)?;
        }
        if let Some(findings) = &self.vulnerabilities {
            if findings.len() > MAX_FINDINGS {
                return Err(invalid(
                    "vulnerabilities",
                    format!("{} findings; at most {MAX_FINDINGS}", findings.len()),
                ));
            }
            for (i, f) in findings.iter().enumerate() {
                let at = format!("vulnerabilities[{i}]");
                bounded(&to_value(f, &at)?, &at, 1)?;
                if f.layer >= layers {
                    return Err(invalid(
                        format!("{at}.layer"),
                        "names no layer of the image",
                    ));
                }
            }
        }
        // The rest of the image, packages aside, is held to a report's bounds.
        let mut rest = self.image.clone();
        rest.analysis.packages = Vec::new();
        bounded(&to_value(&rest, "image")?, "image", 0)?;
        if let Some((i, _)) = packages.iter().enumerate().find(|(_, p)| p.layer >= layers) {
            return Err(invalid(
                format!("image.analysis.packages[{i}].layer"),
                "names no layer of the image",
            ));
        }
        Ok(())
    }
}

fn to_value<T: Serialize>(v: &T, at: &str) -> Result<serde_json::Value, Invalid> {
    serde_json::to_value(v).map_err(|e| invalid(at, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_scan::Analysis;
    use sightline_scan::pkg::{Package, PackageKind};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn package(name: &str) -> Package {
        Package {
            kind: PackageKind::Deb,
            name: name.into(),
            version: "1.0-1".into(),
            source: None,
            arch: Some("amd64".into()),
            purl: format!("pkg:deb/debian/{name}@1.0-1?arch=amd64"),
            layer: 0,
            path: "var/lib/dpkg/status".into(),
        }
    }

    fn image(packages: Vec<Package>) -> Image {
        Image {
            config_digest: DIGEST.into(),
            manifest_digest: None,
            repo_tags: vec!["debian:12".into()],
            architecture: Some("amd64".into()),
            os: Some("linux".into()),
            created: None,
            analysis: Analysis {
                os: None,
                packages,
                layers: vec![sightline_scan::LayerInfo {
                    diff_id: DIGEST.into(),
                    blob_digest: None,
                    size: 1,
                    entries: 1,
                }],
                warnings: vec![],
            },
        }
    }

    #[test]
    fn details_round_trip_and_name_their_asset() {
        let d = ImageDetails::new(image(vec![package("bash"), package("zlib1g")]), None);
        let body = serde_json::to_vec(&d).unwrap();
        let back = ImageDetails::from_body(&body).unwrap();
        assert_eq!(back.image.analysis.packages, d.image.analysis.packages);
        assert_eq!(back.asset_name(), d.asset_name());
        assert!(back.asset_name().starts_with("containerimage-"));
    }

    #[test]
    fn details_of_another_image_are_refused() {
        let mut d = ImageDetails::new(image(vec![]), None);
        d.identity = DIGEST.replace('0', "1");
        let e = d.check().unwrap_err();
        assert_eq!(e.field, "image.configDigest");
        d.identity = "sha256:short".into();
        assert_eq!(d.check().unwrap_err().field, "identity");
    }

    #[test]
    fn bounds_name_the_entry_past_them() {
        let mut long = package("bash");
        long.version = "1".repeat(crate::MAX_STRING + 1);
        let d = ImageDetails::new(image(vec![package("a"), long]), None);
        let e = d.check().unwrap_err();
        assert!(e.field.starts_with("image.analysis.packages[1]"), "{e}");
        let many = (0..=MAX_PACKAGES)
            .map(|i| package(&format!("p{i}")))
            .collect();
        let e = ImageDetails::new(image(many), None).check().unwrap_err();
        assert_eq!(e.field, "image.analysis.packages");
        let mut stray = package("a");
        stray.layer = 7;
        let e = ImageDetails::new(image(vec![stray]), None)
            .check()
            .unwrap_err();
        assert_eq!(e.field, "image.analysis.packages[0].layer");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(ImageDetails::new(image(vec![]), None)).unwrap();
        v["owner"] = "someone else".into();
        let e = ImageDetails::from_body(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.message.contains("owner"), "{e}");
    }
}
