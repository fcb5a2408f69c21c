//! `--report`: sends a scan to a cluster's inventory through the
//! operator's ingestion API (`POST /api/v1/observations`), authenticated
//! with an activation key's token, so build-time images appear beside
//! what sensors find.

use anyhow::{Result, bail};
use sightline_container_sensor::report::{image_facts, vulnerability_findings};
use sightline_container_sensor::runtime::ImageRef;
use sightline_report::client::{Client, Credentials};
use sightline_report::{ImageObservation, Observation};
use sightline_scan::source::Image;
use sightline_scan::vuln::Matches;

/// Sends the scan of `image` (as `reference`) to the operator at `api`;
/// returns the Asset it went into.
pub async fn send(
    api: &str,
    token: &str,
    reference: &str,
    image: &Image,
    matches: &Matches,
) -> Result<String> {
    let image_ref = ImageRef {
        id: image.config_digest.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: Vec::new(),
    };
    let observation = Observation::ContainerImage(ImageObservation {
        identity: image.config_digest.clone(),
        facts: image_facts(&image_ref, image),
        vulnerabilities: Some(vulnerability_findings(matches)),
        runtime: None,
        reference: Some(reference.to_owned()),
    });
    let client = Client::new(api, Credentials::Token(token.to_owned()), None)?;
    let receipt = client.send(vec![observation], None).await?;
    if let Some(r) = receipt.refused.first() {
        bail!(
            "the operator refused the report ({}): {}",
            r.reason,
            r.message
        );
    }
    match receipt.accepted.first() {
        Some(a) => Ok(a.asset.clone()),
        None => bail!("the operator answered without accepting or refusing the report"),
    }
}
