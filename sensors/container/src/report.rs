//! Reports from what the sensor found: one `ContainerImage` observation
//! per image (by config digest), one `Container` per container, and the
//! node itself, sent to the operator's ingestion API, which writes the
//! Assets. The sensor holds no permission on Assets: the operator takes
//! its Sensor, node and key from its token, never from the report.

use sightline_crds::asset::{TOP_VULNERABILITIES, VulnerabilityFindings, VulnerabilityRef};
use sightline_crds::{AssetKind, asset::asset_name};
use sightline_report::client::{Client, Credentials, Error};
use sightline_report::details::ImageDetails;
use sightline_report::facts::{ContainerFacts, ImageFacts, PackageCounts};
use sightline_report::{Listing, Observation, Receipt};
use sightline_scan::source::Image;
use sightline_scan::vuln::{Level, Matches};
use tracing::warn;

use crate::config::Config;
use crate::runtime::{ContainerRef, ImageRef};

/// Most layer digests listed in `layers`.
const MAX_LAYERS_LISTED: usize = 64;
/// Most tags or digests listed.
const MAX_NAMES_LISTED: usize = 32;
/// Most analysis warnings listed.
const MAX_WARNINGS_LISTED: usize = 10;

/// An image's facts, wherever the image was found: OS, package counts,
/// layers, tags and digests, platform and warnings.
pub fn image_facts(image_ref: &ImageRef, image: &Image) -> ImageFacts {
    let a = &image.analysis;
    let mut packages = PackageCounts {
        total: a.packages.len() as u64,
        ..PackageCounts::default()
    };
    for p in &a.packages {
        *packages
            .by_type
            .entry(p.kind.purl_type().to_owned())
            .or_default() += 1;
    }
    ImageFacts {
        image_id: Some(image_ref.id.clone()),
        repo_tags: bounded(&image_ref.repo_tags),
        repo_digests: bounded(&image_ref.repo_digests),
        packages,
        layers: a
            .layers
            .iter()
            .take(MAX_LAYERS_LISTED)
            .map(|l| l.diff_id.clone())
            .collect(),
        layer_count: a.layers.len() as u64,
        size: a.layers.iter().map(|l| l.size).sum(),
        os_release: a
            .os
            .as_ref()
            .map(|os| os.fields.clone().into_iter().collect()),
        architecture: image.architecture.clone(),
        os: image.os.clone(),
        created: image.created.clone(),
        analysis_warnings: a
            .warnings
            .iter()
            .take(MAX_WARNINGS_LISTED)
            .cloned()
            .collect(),
        registry: None,
        analysis_failure: None,
    }
}

/// At most [`MAX_NAMES_LISTED`] names.
pub fn bounded(names: &[String]) -> Vec<String> {
    names.iter().take(MAX_NAMES_LISTED).cloned().collect()
}

/// `findings.vulnerabilities`: counts by severity and the worst
/// [`TOP_VULNERABILITIES`] (the matches come most severe first).
pub fn vulnerability_findings(m: &Matches) -> VulnerabilityFindings {
    let mut f = VulnerabilityFindings::default();
    for finding in &m.findings {
        match finding.severity.level {
            Level::Critical => f.critical += 1,
            Level::High => f.high += 1,
            Level::Medium => f.medium += 1,
            Level::Low | Level::None => f.low += 1,
            Level::Unknown => f.unknown += 1,
        }
    }
    f.top = m
        .findings
        .iter()
        .take(TOP_VULNERABILITIES)
        .map(|x| VulnerabilityRef {
            id: x.id.clone(),
            package: x.package.clone(),
            installed: x.version.clone(),
            fixed: x.fixed.clone(),
            severity: x.severity.level.as_str().to_owned(),
        })
        .collect();
    f
}

/// A container's facts.
pub fn container_facts(c: &ContainerRef, node: &str, runtime: &str) -> ContainerFacts {
    let label = |k: &str| c.labels.get(k).cloned();
    ContainerFacts {
        container_id: c.id.clone(),
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        image_asset: Some(asset_name(AssetKind::ContainerImage, &c.image_id)),
        state: c.state.clone(),
        node: node.to_owned(),
        runtime: runtime.to_owned(),
        started: c.started.clone(),
        // Set by the kubelet on the containers of pods.
        pod: label("io.kubernetes.pod.name"),
        namespace: label("io.kubernetes.pod.namespace"),
        container: label("io.kubernetes.container.name"),
    }
}

/// Sends a sensor's reports to the operator.
#[derive(Clone, Debug)]
pub struct Reporter {
    client: Client,
}

/// The operator's API is not configured.
#[derive(Debug, thiserror::Error)]
#[error(
    "SIGHTLINE_API_URL is not set (the operator's DaemonSet sets it): the sensor has nowhere to report"
)]
pub struct NoApi;

impl Reporter {
    /// A reporter for the container sensor `cfg` describes.
    pub fn new(cfg: &Config) -> anyhow::Result<Reporter> {
        let url = cfg.api_url.as_deref().ok_or(NoApi)?;
        Self::to(url, &cfg.token_file, cfg.api_ca.as_deref())
    }

    /// A reporter to the operator at `url`, with the token in `token_file`,
    /// trusting only `ca` (PEM) for the API's certificate when given.
    pub fn to(
        url: &str,
        token_file: &std::path::Path,
        ca: Option<&[u8]>,
    ) -> anyhow::Result<Reporter> {
        let client = Client::new(url, Credentials::TokenFile(token_file.to_owned()), ca)?;
        Ok(Reporter { client })
    }

    /// Sends `observations` (and the node's `listing`); logs each refused
    /// observation. Returns the receipt.
    pub async fn send(
        &self,
        observations: Vec<Observation>,
        listing: Option<Listing>,
    ) -> Result<Receipt, Error> {
        let receipt = self.client.send(observations, listing).await?;
        for r in &receipt.refused {
            warn!(index = r.index, reason = %r.reason, "the operator refused an observation: {}", r.message);
        }
        Ok(receipt)
    }

    /// Sends an image's details (its observation was accepted and the
    /// receipt said the operator keeps details); logs a refusal. Returns
    /// whether the operator kept them.
    pub async fn send_details(&self, details: &ImageDetails) -> bool {
        match self.client.send_details(details).await {
            Ok(kept) => {
                tracing::debug!(asset = %kept.asset, packages = kept.packages, "the operator kept the image's details");
                true
            }
            Err(e) => {
                warn!(image = %details.identity, reason = e.reason(), error = %e, "cannot send the image's details; trying again at the next refresh");
                false
            }
        }
    }

    /// Says which vulnerability database the sensor matches with; a
    /// failure is logged (the next refresh says it again).
    pub async fn send_database(&self, state: sightline_report::DatabaseState) {
        match self.client.send_database(state).await {
            Ok(None) => {}
            Ok(Some(r)) => {
                warn!(reason = %r.reason, "the operator refused the database state: {}", r.message)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot say which database is in use; saying it again at the next refresh")
            }
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_scan::vuln::{Finding, Severity};

    fn finding(id: &str, level: Level) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec![],
            package: "p".into(),
            version: "1".into(),
            purl: String::new(),
            matched_name: "p".into(),
            ecosystem: "Debian:12".into(),
            fixed: Some("2".into()),
            severity: Severity {
                level,
                score: None,
                source: None,
            },
            summary: None,
            layer: 0,
            path: String::new(),
        }
    }

    #[test]
    fn counts_and_a_bounded_top_list() {
        let mut m = Matches::default();
        m.findings.push(finding("A", Level::Critical));
        for i in 0..30 {
            m.findings.push(finding(&format!("L{i}"), Level::Low));
        }
        m.findings.push(finding("U", Level::Unknown));
        let f = vulnerability_findings(&m);
        assert_eq!(
            (f.critical, f.high, f.medium, f.low, f.unknown),
            (1, 0, 0, 30, 1)
        );
        assert_eq!(f.top.len(), TOP_VULNERABILITIES);
        assert_eq!(f.top[0].id, "A");
        assert_eq!(f.top[0].severity, "critical");
    }

    #[test]
    fn container_facts_include_the_pod() {
        let c = ContainerRef {
            id: "abc".into(),
            name: "k8s_app_web-1_shop_uid_0".into(),
            image: "nginx:1.25".into(),
            image_id: "sha256:1".into(),
            state: "running".into(),
            labels: [
                ("io.kubernetes.pod.name".to_owned(), "web-1".to_owned()),
                ("io.kubernetes.pod.namespace".to_owned(), "shop".to_owned()),
            ]
            .into_iter()
            .collect(),
            started: Some("2026-11-26T10:00:00Z".into()),
        };
        let o = container_facts(&c, "node-1", "docker");
        assert_eq!(o.pod.as_deref(), Some("web-1"));
        assert_eq!(o.namespace.as_deref(), Some("shop"));
        assert_eq!(
            o.image_asset,
            Some(asset_name(AssetKind::ContainerImage, "sha256:1"))
        );
        assert!(o.container.is_none());
    }
}
