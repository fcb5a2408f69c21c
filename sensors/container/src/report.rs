//! Assets from what the sensor found: one `ContainerImage` per image (by
//! config digest) and one `Container` per container, each written with
//! server-side apply under this sensor's own field manager, so several
//! nodes and sensors can report the same image without overwriting each
//! other's facts. Only the sensor's own parts are written: the source
//! entry, `observed`, `findings`; the operator's inventory controller does
//! the rest.

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sightline_crds::asset::{TOP_VULNERABILITIES, VulnerabilityFindings, VulnerabilityRef};
use sightline_crds::{Asset, AssetKind, asset::asset_name};
use sightline_scan::source::Image;
use sightline_scan::vuln::{Level, Matches};

use crate::config::Config;
use crate::runtime::{ContainerRef, ImageRef};

/// Most layer digests listed in `observed.layers`.
const MAX_LAYERS_LISTED: usize = 64;
/// Most tags or digests listed.
const MAX_NAMES_LISTED: usize = 32;

/// `observed` of an image's Asset, as a node's runtime holds it: the
/// image's facts and, under `nodes`, this node and its runtime.
pub fn image_observed(image_ref: &ImageRef, image: &Image, node: &str, runtime: &str) -> Value {
    let mut observed = image_facts(image_ref, image);
    // A map, so each node's sensor owns its own key.
    observed["nodes"] = json!({ node: runtime });
    observed
}

/// `observed` of an image's Asset, wherever the image was found: OS,
/// package counts, layers, tags and digests, platform and warnings.
pub fn image_facts(image_ref: &ImageRef, image: &Image) -> Value {
    let a = &image.analysis;
    let mut packages = serde_json::Map::new();
    packages.insert("total".into(), json!(a.packages.len()));
    let mut by_kind: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for p in &a.packages {
        *by_kind.entry(p.kind.purl_type()).or_default() += 1;
    }
    for (kind, n) in by_kind {
        packages.insert(kind.into(), json!(n));
    }
    let mut observed = json!({
        "imageId": image_ref.id,
        "repoTags": image_ref.repo_tags.iter().take(MAX_NAMES_LISTED).collect::<Vec<_>>(),
        "repoDigests": image_ref.repo_digests.iter().take(MAX_NAMES_LISTED).collect::<Vec<_>>(),
        "packages": packages,
        "layers": a.layers.iter().take(MAX_LAYERS_LISTED).map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        "layerCount": a.layers.len(),
        "size": a.layers.iter().map(|l| l.size).sum::<u64>(),
    });
    if let Some(os) = &a.os {
        observed["osRelease"] = json!(os.fields);
    }
    for (key, value) in [
        ("architecture", &image.architecture),
        ("os", &image.os),
        ("created", &image.created),
    ] {
        if let Some(v) = value {
            observed[key] = json!(v);
        }
    }
    if !a.warnings.is_empty() {
        observed["analysisWarnings"] = json!(a.warnings.iter().take(10).collect::<Vec<_>>());
    }
    observed
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

/// `observed` of a container's Asset.
pub fn container_observed(c: &ContainerRef, node: &str, runtime: &str) -> Value {
    let mut observed = json!({
        "containerId": c.id,
        "name": c.name,
        "image": c.image,
        "imageId": c.image_id,
        "imageAsset": asset_name(AssetKind::ContainerImage, &c.image_id),
        "state": c.state,
        "node": node,
        "runtime": runtime,
    });
    if let Some(s) = &c.started {
        observed["started"] = json!(s);
    }
    // Set by the kubelet on the containers of pods.
    for (label, key) in [
        ("io.kubernetes.pod.name", "pod"),
        ("io.kubernetes.pod.namespace", "namespace"),
        ("io.kubernetes.container.name", "container"),
    ] {
        if let Some(v) = c.labels.get(label) {
            observed[key] = json!(v);
        }
    }
    observed
}

/// Writes Assets for one sensor (on one node, for node sensors).
#[derive(Clone)]
pub struct Reporter {
    api: Api<Asset>,
    params: PatchParams,
    sensor: String,
    sensor_type: &'static str,
    key: Option<String>,
}

impl Reporter {
    /// A reporter for the container sensor `cfg` describes.
    pub fn new(client: kube::Client, cfg: &Config) -> Reporter {
        Self::for_sensor(
            client,
            &cfg.field_manager(),
            &cfg.sensor,
            "container",
            cfg.activation_key.clone(),
        )
    }

    /// A reporter writing under `field_manager` for the Sensor `sensor`
    /// (`<namespace>/<name>`) of type `sensor_type`.
    pub fn for_sensor(
        client: kube::Client,
        field_manager: &str,
        sensor: &str,
        sensor_type: &'static str,
        key: Option<String>,
    ) -> Reporter {
        Reporter {
            api: Api::all(client),
            // Forced: several nodes of one Sensor share its source entry.
            params: PatchParams::apply(field_manager).force(),
            sensor: sensor.to_owned(),
            sensor_type,
            key,
        }
    }

    /// Creates the Asset if needed and applies this sensor's parts of its
    /// status. Returns the Asset's name.
    pub async fn report(
        &self,
        kind: AssetKind,
        identity: &str,
        observed: Value,
        findings: Option<VulnerabilityFindings>,
    ) -> Result<String, kube::Error> {
        let name = asset_name(kind, identity);
        let mut source = json!({
            "sensor": self.sensor,
            "type": self.sensor_type,
            "lastSeen": jiff::Timestamp::now().to_string(),
        });
        if let Some(k) = &self.key {
            source["activationKey"] = json!(k);
        }
        let mut status = json!({
            "kind": kind.as_str(),
            "identity": identity,
            "sources": [source],
            "observed": observed,
            "managed": true,
        });
        if let Some(f) = findings {
            status["findings"] = json!({ "vulnerabilities": f });
        }
        let body =
            json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Asset", "status": status});
        // Most reports refresh an Asset that exists: one request. The object
        // is created only when the status patch finds none.
        match self
            .api
            .patch_status(&name, &self.params, &Patch::Apply(&body))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let object = json!({
                    "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
                    "metadata": {"name": name}, "spec": {},
                });
                self.api
                    .patch(&name, &self.params, &Patch::Apply(&object))
                    .await?;
                self.api
                    .patch_status(&name, &self.params, &Patch::Apply(&body))
                    .await?;
            }
            other => {
                other?;
            }
        }
        Ok(name)
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
        let o = container_observed(&c, "node-1", "docker");
        assert_eq!(o["pod"], "web-1");
        assert_eq!(o["namespace"], "shop");
        assert_eq!(
            o["imageAsset"],
            asset_name(AssetKind::ContainerImage, "sha256:1")
        );
        assert!(o.get("container").is_none());
    }
}
