//! Registry credentials and the `WWW-Authenticate` challenge flow.
//!
//! A registry answers an unauthenticated request with 401 and a
//! challenge: `Basic realm="…"` (send the credentials with every request)
//! or `Bearer realm="https://auth/token",service="…",scope="…"` (ask the
//! realm for a token, with the credentials if any, and send the token).
//! Credentials come from a docker config (`~/.docker/config.json`, a
//! `kubernetes.io/dockerconfigjson` Secret) or a username and password (a
//! `kubernetes.io/basic-auth` Secret).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

/// A username and password (or identity token as the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        write!(f, "Credentials({})", self.username)
    }
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A docker config that is not one.
    #[error("{path} is not a docker config: {reason}")]
    DockerConfig {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The host a docker config key names: `https://index.docker.io/v1/` →
/// `index.docker.io`, `registry:5000` → `registry:5000`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials a docker config holds for `registry` (`host[:port]`;
/// Docker Hub's several spellings are one).
pub fn from_docker_config(
    text: &[u8],
    path: &str,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let bad = |reason: String| AuthError::DockerConfig {
        path: path.to_owned(),
        reason,
    };
    let cfg: DockerConfigFile = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    let Some((key, entry)) = cfg.auths.iter().find(|(k, _)| {
        let h = key_host(k);
        h == registry || (hub(h) && hub(registry))
    }) else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths.{key}.auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("auths.{key}.auth is not UTF-8")))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| bad(format!("auths.{key}.auth is not user:password")))?;
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    match (&entry.username, &entry.password, &entry.identity_token) {
        (Some(u), Some(p), _) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        (_, _, Some(t)) => Ok(Some(Credentials {
            username: "<token>".into(),
            password: t.clone(),
        })),
        _ => Err(bad(format!(
            "auths.{key} has neither auth nor username and password"
        ))),
    }
}

/// Credentials from a mounted Secret directory: `.dockerconfigjson`
/// (`kubernetes.io/dockerconfigjson`) or `username` and `password`
/// (`kubernetes.io/basic-auth`). `None` when it holds neither.
pub fn from_secret_dir(dir: &Path, registry: &str) -> Result<Option<Credentials>, AuthError> {
    let read = |name: &str| -> Result<Option<Vec<u8>>, AuthError> {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AuthError::Read {
                path: p.display().to_string(),
                source,
            }),
        }
    };
    if let Some(cfg) = read(".dockerconfigjson")? {
        return from_docker_config(
            &cfg,
            &dir.join(".dockerconfigjson").display().to_string(),
            registry,
        );
    }
    match (read("username")?, read("password")?) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: String::from_utf8_lossy(&u)
                .trim_end_matches('\n')
                .to_owned(),
            password: String::from_utf8_lossy(&p)
                .trim_end_matches('\n')
                .to_owned(),
        })),
        _ => Ok(None),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercase).
    pub scheme: String,
    /// Its parameters (`realm`, `service`, `scope`).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme k="v", k2="v2"` (quoted values may hold commas and
    /// escaped quotes; unquoted values end at a comma).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.split_once(' ') {
            Some((s, r)) => (s, r),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String =
                std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
            if key.trim().is_empty() {
                break;
            }
            if chars.next() != Some('=') {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            }
            params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#,
        )
        .expect("parsed");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example.com/token");
        assert_eq!(c.params["scope"], "repository:team/app:pull,push");
        let b = Challenge::parse(r#"Basic realm="Registry Realm""#).expect("parsed");
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
        assert_eq!(Challenge::parse(""), None);
    }

    #[test]
    fn docker_configs() {
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        let cfg = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}}, "127.0.0.1:5000": {{"username": "u", "password": "p"}}}}}}"#
        );
        let hub = from_docker_config(cfg.as_bytes(), "cfg", "docker.io")
            .expect("ok")
            .expect("creds");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("ci", "s3cret")
        );
        let local = from_docker_config(cfg.as_bytes(), "cfg", "127.0.0.1:5000")
            .expect("ok")
            .expect("creds");
        assert_eq!(local.username, "u");
        assert!(
            from_docker_config(cfg.as_bytes(), "cfg", "other:1")
                .expect("ok")
                .is_none()
        );
        let e = from_docker_config(br#"{"auths": {"x": {"auth": "%%%"}}}"#, "cfg", "x")
            .expect_err("bad");
        assert!(e.to_string().contains("auths.x.auth is not base64"), "{e}");
        assert_eq!(format!("{hub:?}"), "Credentials(ci)");
    }
}
