//! What the inventory knows about an image, found by the reference a pod
//! names it by: the tag or digest is normalized the way container runtimes
//! report them (`debian:12` is `docker.io/library/debian:12`), and matched
//! against the `repoTags` and `repoDigests` sensors observed and the image
//! ID. Used by admission control, which must answer in milliseconds.

use serde::Serialize;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry and repository (`docker.io/library/debian`).
    pub repository: String,
    /// Tag, when named (`latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// Digest, when pinned (`sha256:…`).
    pub digest: Option<String>,
}

/// Longest reference accepted (Kubernetes and registries allow far less).
const MAX_REFERENCE: usize = 4096;

impl Reference {
    /// Parses `s` as Docker and CRI do; `None` when it is not a reference.
    pub fn parse(s: &str) -> Option<Reference> {
        let s = s.trim();
        if s.is_empty() || s.len() > MAX_REFERENCE || s.contains(char::is_whitespace) {
            return None;
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) if d.contains(':') => (r, Some(d.to_ascii_lowercase())),
            Some(_) => return None,
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a port may precede it).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_owned())),
            None => (rest, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") {
            return None;
        }
        let (domain, path) = match name.split_once('/') {
            Some((d, p)) if d.contains(['.', ':']) || d == "localhost" => (d.to_owned(), p),
            _ => ("docker.io".to_owned(), name),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_owned()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (t, _) => t,
        };
        Some(Reference {
            repository: format!("{domain}/{}", path.to_ascii_lowercase()),
            tag,
            digest,
        })
    }

    /// The keys the inventory's image map is looked up by, most specific
    /// first: `repo@digest` and the bare digest when pinned, else `repo:tag`.
    pub fn keys(&self) -> Vec<String> {
        match (&self.digest, &self.tag) {
            (Some(d), _) => vec![format!("{}@{d}", self.repository), d.clone()],
            (None, Some(t)) => vec![format!("{}:{t}", self.repository)],
            (None, None) => Vec::new(),
        }
    }
}

/// The keys an image Asset is found by: each tag and registry digest it was
/// seen with (normalized), each digest alone, and its image ID.
pub fn keys_of(tags: &[&str], digests: &[&str], image_id: Option<&str>) -> Vec<String> {
    let mut keys = Vec::new();
    for t in tags {
        if let Some(r) = Reference::parse(t) {
            keys.extend(r.keys());
        }
    }
    for d in digests {
        if let Some(r) = Reference::parse(d) {
            keys.extend(r.keys());
        }
    }
    if let Some(id) = image_id {
        keys.push(id.to_ascii_lowercase());
    }
    keys.sort();
    keys.dedup();
    keys
}

/// What admission control reads of an image Asset.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    /// The Asset's name.
    pub name: String,
    /// Its display name (a tag, usually).
    pub display_name: Option<String>,
    /// Vulnerability counts: critical, high, medium, low, unknown.
    pub counts: [i64; 5],
    /// The worst vulnerabilities the Asset keeps (at most 20), worst first.
    pub top: Vec<TopVulnerability>,
    /// The Asset's lifecycle stage (its OS's).
    pub lifecycle: Option<String>,
    /// When a sensor last reported it (Unix seconds).
    pub last_seen: Option<i64>,
}

/// One of the worst vulnerabilities of an image.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopVulnerability {
    /// Advisory ID.
    pub id: String,
    /// Package.
    pub package: String,
    /// Installed version.
    pub installed: String,
    /// The version that fixes it, if one exists.
    pub fixed: Option<String>,
    /// `critical`, `high`, `medium`, `low` or `unknown`.
    pub severity: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn references_are_normalized_as_runtimes_report_them() {
        assert_eq!(r("debian:12").keys(), ["docker.io/library/debian:12"]);
        assert_eq!(r("debian").keys(), ["docker.io/library/debian:latest"]);
        assert_eq!(
            r("index.docker.io/team/App:1").keys(),
            ["docker.io/team/app:1"]
        );
        assert_eq!(
            r("sightline.local/legacy-app:1.0").keys(),
            ["sightline.local/legacy-app:1.0"]
        );
        assert_eq!(
            r("localhost:5000/app").keys(),
            ["localhost:5000/app:latest"]
        );
        assert_eq!(
            r("registry:5000/team/app:2.1").keys(),
            ["registry:5000/team/app:2.1"]
        );
        assert_eq!(
            r("quay.io/app:v1@sha256:ABC").keys(),
            ["quay.io/app@sha256:abc", "sha256:abc"]
        );
        for bad in ["", "a b", "app:", "app@nodigest", ":1"] {
            assert_eq!(Reference::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Reference::parse(&"a".repeat(5000)), None);
    }

    fn image_asset(tags: serde_json::Value) -> sightline_crds::Asset {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
            "metadata": {"name": "containerimage-1"}, "spec": {},
            "status": {
                "kind": "ContainerImage", "identity": "sha256:aa",
                "tags": tags,
                "observed": {"repoTags": ["docker.io/library/debian:12"]},
                "findings": {"vulnerabilities": {"critical": 1, "high": 0, "medium": 0, "low": 0, "unknown": 0,
                    "top": [{"id": "CVE-1", "package": "zlib", "installed": "1", "fixed": "2", "severity": "critical"}]}},
            },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_index_finds_images_and_judges_queries_as_they_change() {
        let mut index = crate::index::Index::new();
        index.upsert(&image_asset(serde_json::json!({})));
        let found = index.images("debian:12");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].counts, [1, 0, 0, 0, 0]);
        assert_eq!(found[0].top[0].fixed.as_deref(), Some("2"));
        assert_eq!(index.images("sha256:AA").len(), 1, "by image ID");
        assert!(index.images("debian:11").is_empty());
        let query = "kind:ContainerImage AND tags.team:payments";
        assert_eq!(
            index.matches(query, 0, "containerimage-1").ok(),
            Some(false)
        );
        // New strings in the index: the compiled query is not reused.
        index.upsert(&image_asset(serde_json::json!({"team": "payments"})));
        assert_eq!(index.matches(query, 0, "containerimage-1").ok(), Some(true));
        assert!(index.matches("kind:", 0, "containerimage-1").is_err());
        let (names, total) = index
            .image_names("findings.vulnerabilities.critical>0", 0, 10)
            .unwrap();
        assert_eq!(
            names,
            ["docker.io/library/debian:12", "sha256:aa"],
            "every name it is known by"
        );
        assert_eq!(total, 2);
        let (names, total) = index
            .image_names("findings.vulnerabilities.critical>0", 0, 1)
            .unwrap();
        assert_eq!((names.len(), total), (1, 2), "capped, and counted");
        let none = index.image_names("findings.vulnerabilities.critical>5", 0, 10);
        assert_eq!(none.unwrap(), (Vec::<String>::new(), 0));
        assert!(index.image_names("kind:", 0, 10).is_err());
        index.remove("containerimage-1");
        assert!(index.images("debian:12").is_empty());
        assert!(
            index
                .image_names("kind:ContainerImage", 0, 10)
                .unwrap()
                .0
                .is_empty()
        );
        assert_eq!(
            index.matches(query, 0, "containerimage-1").ok(),
            Some(false)
        );
    }

    #[test]
    fn an_image_is_found_by_any_name_it_was_seen_with() {
        let keys = keys_of(
            &["docker.io/library/debian:12"],
            &["docker.io/library/debian@sha256:0123"],
            Some("sha256:FFFF"),
        );
        assert_eq!(
            keys,
            [
                "docker.io/library/debian:12",
                "docker.io/library/debian@sha256:0123",
                "sha256:0123",
                "sha256:ffff",
            ]
        );
        for pod_image in ["debian:12", "debian@sha256:0123", "docker.io/debian:12"] {
            let found = r(pod_image).keys().iter().any(|k| keys.contains(k));
            assert!(found, "{pod_image}");
        }
        assert!(!r("debian:11").keys().iter().any(|k| keys.contains(k)));
    }
}
