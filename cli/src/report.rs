//! `--report`: sends a scan to a cluster's inventory through the
//! operator's ingestion API (`POST /api/v1/observations`), authenticated
//! with an activation key's token, so build-time images appear beside
//! what sensors find.

use anyhow::{Context as _, Result, bail};
use sightline_container_sensor::report::{image_facts, vulnerability_findings};
use sightline_container_sensor::runtime::ImageRef;
use sightline_report::client::{Client, Credentials, Error};
use sightline_report::details::ImageDetails;
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
    let client = Client::new(api, Credentials::Token(token.to_owned()), api_ca())?;
    let receipt = client.send(vec![observation], None).await?;
    if let Some(r) = receipt.refused.first() {
        bail!(
            "the operator refused the report ({}): {}",
            r.reason,
            r.message
        );
    }
    let Some(accepted) = receipt.accepted.first() else {
        bail!("the operator answered without accepting or refusing the report");
    };
    // The whole package list and every finding go to the detail store.
    let details = ImageDetails::new(image.clone(), Some(matches.findings.clone()));
    match client.send_details(&details).await {
        Ok(_) => {}
        Err(Error::Refused { status: 501, .. }) => {
            eprintln!("note: the operator keeps no detail store; only counts were recorded");
        }
        Err(e) => eprintln!(
            "warning: the report was recorded in {}, but its SBOM and findings were not: {e}",
            accepted.asset
        ),
    }
    Ok(accepted.asset.clone())
}

/// The CA trusted for the operator's API (`--api-ca`), read once at start.
static API_CA: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();

/// Reads `--api-ca`, so a missing file is an error before anything runs.
pub fn trust_api_ca(path: Option<&std::path::Path>) -> Result<()> {
    let pem = match path {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --api-ca {}", p.display()))?)
        }
        None => None,
    };
    let _ = API_CA.set(pem);
    Ok(())
}

/// The CA trusted for the operator's API, if `--api-ca` named one.
pub fn api_ca() -> Option<&'static [u8]> {
    API_CA.get().and_then(|c| c.as_deref())
}
