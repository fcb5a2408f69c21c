//! `sightline sbom --asset` and `sightline vulns --asset`: what the
//! inventory knows about an image, from the operator's detail store,
//! read with the kubeconfig's token (the operator asks the API server
//! whether it may `get` Assets).
//!
//! The image is named by its Asset (`containerimage-…`), its image ID
//! (`sha256:…`), or a reference a sensor saw it under (`nginx:1.25`,
//! `registry/app@sha256:…`), looked up among the Assets the user may list.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use kube::api::{Api, ListParams};
use serde_json::Value;
use sightline_crds::{Asset, AssetKind};
use sightline_report::details::VulnerabilityList;

use crate::image::{SbomFormat, VulnsOutput, print_findings};
use crate::search::{Remote, bearer_token, get_api};

/// The API and token to read with.
async fn reader(api: Option<&str>) -> Result<(String, String, kube::Config)> {
    let Some(api) = api else {
        bail!(
            "--asset reads the operator's detail store: give its API with --api URL (or SIGHTLINE_API)"
        );
    };
    let config = kube::Config::infer()
        .await
        .context("reading the kubeconfig (is KUBECONFIG set?)")?;
    let Some(token) = bearer_token(&config) else {
        bail!(
            "the kubeconfig has no bearer token for the operator's API; set SIGHTLINE_TOKEN to one allowed to get assets"
        );
    };
    Ok((api.to_owned(), token, config))
}

fn is_image_id(s: &str) -> bool {
    sightline_report::is_digest(s)
}

/// The Asset `name` refers to.
async fn resolve(name: &str, config: kube::Config) -> Result<String> {
    let prefix = format!(
        "{}-",
        AssetKind::ContainerImage.as_str().to_ascii_lowercase()
    );
    if name.starts_with(&prefix) && !name.contains([':', '/', '@']) {
        return Ok(name.to_owned());
    }
    if is_image_id(name) {
        return Ok(sightline_crds::asset::asset_name(
            AssetKind::ContainerImage,
            name,
        ));
    }
    // A reference: the image Assets that were seen under it.
    let client = kube::Client::try_from(config).context("connecting to the cluster")?;
    let api: Api<Asset> = Api::all(client);
    let mut params = ListParams::default().limit(500);
    let mut found = Vec::new();
    loop {
        let page = api.list(&params).await.context("listing Assets")?;
        for a in &page.items {
            if seen_as(a, name) {
                found.extend(a.metadata.name.clone());
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(t) => params = params.continue_token(&t),
            None => break,
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no image in the inventory was seen as {name:?} (name an Asset, an image ID sha256:…, or a tag a sensor saw)"
        ),
        many => bail!(
            "{name:?} names {} images: {}; name one by its Asset",
            many.len(),
            many.join(", ")
        ),
    }
}

/// Whether image Asset `a` was seen under `reference`: one of its tags or
/// repository digests, or the reference a CI report scanned.
fn seen_as(a: &Asset, reference: &str) -> bool {
    let Some(status) = a
        .status
        .as_ref()
        .filter(|s| s.kind == Some(AssetKind::ContainerImage))
    else {
        return false;
    };
    let listed = |key: &str| {
        status
            .observed
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|t| t.as_str() == Some(reference)))
    };
    listed("repoTags")
        || listed("repoDigests")
        || status
            .sources
            .iter()
            .any(|s| s.reference.as_deref() == Some(reference))
}

/// `sightline sbom --asset NAME`.
pub async fn sbom(
    name: &str,
    api: Option<&str>,
    format: SbomFormat,
    out: &mut impl Write,
) -> Result<()> {
    let (api, token, config) = reader(api).await?;
    let asset = resolve(name, config).await?;
    let format = format
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let doc: Value = answer(
        get_api(
            &api,
            &format!("/api/v1/assets/{asset}/sbom"),
            &[("format", format)],
            &token,
        )
        .await?,
    )?;
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// `sightline vulns --asset NAME`.
pub async fn vulns(
    name: &str,
    api: Option<&str>,
    output: VulnsOutput,
    out: &mut impl Write,
) -> Result<()> {
    let (api, token, config) = reader(api).await?;
    let asset = resolve(name, config).await?;
    let list: VulnerabilityList = answer(
        get_api(
            &api,
            &format!("/api/v1/assets/{asset}/vulnerabilities"),
            &[],
            &token,
        )
        .await?,
    )?;
    match output {
        VulnsOutput::Json => {
            serde_json::to_writer_pretty(&mut *out, &list)?;
            writeln!(out)?;
        }
        VulnsOutput::Table => {
            let header = format!("{asset} (reported by {} at {})", list.source, list.reported);
            print_findings(&header, &list.findings, out)?;
            if !list.matched {
                eprintln!(
                    "note: {} did not match this image against a vulnerability database",
                    list.source
                );
            }
        }
    }
    Ok(())
}

fn answer<T>(r: Remote<T>) -> Result<T> {
    match r {
        Remote::Answer(t) => Ok(t),
        Remote::Unavailable(why) => bail!("the operator's API is unavailable: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_name_their_asset_without_a_lookup() {
        let id = format!("sha256:{}", "ab".repeat(32));
        assert!(is_image_id(&id));
        assert!(!is_image_id("nginx:1.25"));
        assert!(!is_image_id("sha256:AB"));
    }

    #[test]
    fn references_match_tags_digests_and_ci_references() {
        let a: Asset = serde_json::from_value(serde_json::json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
            "metadata": {"name": "containerimage-1"},
            "spec": {},
            "status": {
                "kind": "ContainerImage", "identity": "sha256:1",
                "observed": {"repoTags": ["nginx:1.25"], "repoDigests": ["nginx@sha256:9"]},
                "sources": [{"sensor": "ci/k", "lastSeen": "2026-01-01T00:00:00Z", "reference": "reg/app:2"}]
            }
        }))
        .unwrap();
        assert!(seen_as(&a, "nginx:1.25"));
        assert!(seen_as(&a, "nginx@sha256:9"));
        assert!(seen_as(&a, "reg/app:2"));
        assert!(!seen_as(&a, "nginx:1.26"));
    }
}
