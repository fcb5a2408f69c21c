//! Image references as people write them (`nginx:1.25`,
//! `registry.example.com:5000/team/app@sha256:…`), normalized the way
//! Docker does: a first component with a `.` or `:`, or `localhost`, is a
//! registry; otherwise the image is on Docker Hub, under `library/` when it
//! has no namespace.

use std::fmt;

/// Docker Hub's name in references, and the host its API is served on.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// `team/app`, `library/nginx`.
    pub repository: String,
    /// The tag, when given (`latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// The manifest digest, when given (`sha256:…`).
    pub digest: Option<String>,
}

/// Why a reference could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{reference}' is not an image reference: {reason}")]
pub struct BadReference {
    /// What was given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn valid_path_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && !c.starts_with(['.', '_', '-'])
        && !c.ends_with(['.', '_', '-'])
}

impl Reference {
    /// Parses `[registry/]repository[:tag][@digest]`.
    pub fn parse(text: &str) -> Result<Reference, BadReference> {
        let bad = |reason| BadReference {
            reference: text.to_owned(),
            reason,
        };
        let text_trim = text.trim();
        if text_trim.is_empty() || text_trim.len() > 512 {
            return Err(bad("it is empty or longer than 512 characters"));
        }
        let (rest, digest) = match text_trim.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest is not sha256:<hex>"))?;
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad("the digest is not sha256: and 64 lowercase hex digits"));
                }
                (r, Some(d.to_owned()))
            }
            None => (text_trim, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                || t.starts_with(['.', '-']))
        {
            return Err(bad("the tag has characters a tag may not have"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !repository.split('/').all(valid_path_component) {
            return Err(bad(
                "the repository name must be lowercase letters, digits and . _ - between slashes",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What the registry is asked for: the digest if given, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host the registry's API is served on (Docker Hub's differs from
    /// its name in references).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, how repo tags and digests are written.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn normalizes_like_docker() {
        let n = r("nginx");
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str(), n.tag.as_deref()),
            ("docker.io", "library/nginx", Some("latest"))
        );
        assert_eq!(n.api_host(), "registry-1.docker.io");
        assert_eq!(r("bitnami/redis:7").repository, "bitnami/redis");
        let l = r("localhost:5000/team/app:1.2");
        assert_eq!(
            (l.registry.as_str(), l.repository.as_str(), l.tag.as_deref()),
            ("localhost:5000", "team/app", Some("1.2"))
        );
        let d = r(&format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64)));
        assert_eq!(d.tag, None);
        assert_eq!(d.manifest_reference(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(
            r("registry.example.com/app:v1").to_string(),
            "registry.example.com/app:v1"
        );
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for bad in [
            "",
            "UPPER/case",
            "app:",
            "app@sha256:abc",
            "a//b",
            "app:ta g",
            "-lead/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
