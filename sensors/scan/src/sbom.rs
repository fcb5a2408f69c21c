//! SBOM documents of an analysed image: CycloneDX 1.5 JSON and SPDX 2.3
//! JSON, each package with its name, version and package URL, and the
//! layer and file it was found in.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::source::Image;

/// Who made the document.
#[derive(Clone, Debug)]
pub struct Tool {
    /// The tool's name (`sightline`).
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The image's display name: its first tag, else its config digest.
fn image_name(image: &Image) -> String {
    image
        .repo_tags
        .first()
        .cloned()
        .unwrap_or_else(|| image.config_digest.clone())
}

/// A UUID (version 4 layout) derived from the image and the time, so two
/// documents made at different times differ and the same run is repeatable.
fn uuid_for(image: &Image, timestamp: &str) -> String {
    let h = Sha256::new_with_prefix(image.config_digest.as_bytes())
        .chain_update(timestamp.as_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// CycloneDX 1.5 (JSON): the image as the metadata component, its
/// operating system and packages as components.
pub fn cyclonedx(image: &Image, tool: &Tool, timestamp: &str) -> Value {
    let a = &image.analysis;
    let mut components = Vec::new();
    if let Some(os) = &a.os {
        components.push(json!({
            "type": "operating-system",
            "bom-ref": "os",
            "name": os.id().unwrap_or("unknown"),
            "version": os.version_id().unwrap_or_default(),
            "description": os.pretty_name(),
        }));
    }
    for p in &a.packages {
        let mut properties = vec![
            json!({"name": "sightline:package:type", "value": p.kind.purl_type()}),
            json!({"name": "sightline:layer:index", "value": p.layer.to_string()}),
            json!({"name": "sightline:location", "value": p.path}),
        ];
        if let Some(layer) = a.layers.get(p.layer) {
            properties.push(json!({"name": "sightline:layer:diffID", "value": layer.diff_id}));
        }
        if let Some(src) = &p.source {
            properties.push(json!({"name": "sightline:package:source", "value": src.name}));
            properties
                .push(json!({"name": "sightline:package:source-version", "value": src.version}));
        }
        components.push(json!({
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": properties,
        }));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_for(image, timestamp)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": tool.name, "version": tool.version}]},
            "component": {
                "type": "container",
                "bom-ref": image.config_digest,
                "name": image_name(image),
                "version": image.config_digest,
            },
        },
        "components": components,
    })
}

/// SPDX 2.3 (JSON): the image as the described package, containing one
/// package per installed package, each with its package URL.
pub fn spdx(image: &Image, tool: &Tool, timestamp: &str) -> Value {
    let a = &image.analysis;
    let name = image_name(image);
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "versionInfo": image.config_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": image.config_digest.trim_start_matches("sha256:")}],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    if let Some(os) = &a.os {
        packages.push(json!({
            "SPDXID": "SPDXRef-OperatingSystem",
            "name": os.id().unwrap_or("unknown"),
            "versionInfo": os.version_id().unwrap_or_default(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "description": os.pretty_name(),
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": "SPDXRef-OperatingSystem",
        }));
    }
    for (i, p) in a.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{i}", p.kind.purl_type());
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
            "sourceInfo": format!("found in {} (layer {})", p.path, p.layer),
        });
        if let Some(src) = &p.source {
            pkg["comment"] = json!(format!("source package {} {}", src.name, src.version));
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!(
            "https://sightline.dev/spdx/{}/{}",
            image.config_digest.trim_start_matches("sha256:"),
            uuid_for(image, timestamp)
        ),
        "creationInfo": {
            "created": timestamp,
            "creators": [format!("Tool: {}-{}", tool.name, tool.version)],
        },
        "packages": packages,
        "relationships": relationships,
    })
}
