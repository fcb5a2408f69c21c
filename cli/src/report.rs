//! `--report`: sends a scan to a cluster's inventory through the
//! operator's `POST /api/v1/reports`, authenticated with an activation
//! key's token, so build-time images appear beside what sensors find.

use anyhow::{Context, Result, bail};
use sightline_container_sensor::report::{image_facts, vulnerability_findings};
use sightline_container_sensor::runtime::ImageRef;
use sightline_scan::source::Image;
use sightline_scan::vuln::Matches;

/// Posts the scan of `image` (as `reference`) to the operator at `api`.
pub async fn send(
    api: &str,
    token: &str,
    reference: &str,
    image: &Image,
    matches: &Matches,
) -> Result<()> {
    let image_ref = ImageRef {
        id: image.config_digest.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: Vec::new(),
    };
    let observed = image_facts(&image_ref, image);
    let body = serde_json::json!({
        "reference": reference,
        "configDigest": image.config_digest,
        "observed": observed,
        "vulnerabilities": vulnerability_findings(matches),
    });
    let url = format!("{}/api/v1/reports", api.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("POST {url}: {status}: {text}");
    }
    Ok(())
}
