//! The image's operating system: `os-release(5)`, or the distribution's own
//! release file when an image has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an image says about its distribution.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsRelease {
    /// The os-release fields (`ID`, `VERSION_ID`, `PRETTY_NAME`, …) as the
    /// file gives them; for the fallback files, the `ID` and `VERSION_ID`
    /// read from them.
    pub fields: BTreeMap<String, String>,
    /// The file it was read from.
    pub path: String,
}

impl OsRelease {
    /// `ID` (`debian`, `alpine`, `rhel`), lowercase.
    pub fn id(&self) -> Option<&str> {
        self.fields.get("ID").map(String::as_str)
    }

    /// `VERSION_ID` (`12`, `3.19.1`).
    pub fn version_id(&self) -> Option<&str> {
        self.fields.get("VERSION_ID").map(String::as_str)
    }

    /// `PRETTY_NAME`, or `ID VERSION_ID`.
    pub fn pretty_name(&self) -> String {
        match (self.fields.get("PRETTY_NAME"), self.id(), self.version_id()) {
            (Some(p), _, _) => p.clone(),
            (None, Some(id), Some(v)) => format!("{id} {v}"),
            (None, Some(id), None) => id.to_owned(),
            (None, None, _) => "unknown".to_owned(),
        }
    }
}

/// Parses `os-release(5)`: `KEY=value` lines, values optionally in single or
/// double quotes (with backslash escapes in double quotes), `#` comments.
/// Lines that are not assignments are ignored, as systemd does.
pub fn parse_os_release(text: &[u8], path: &str) -> OsRelease {
    let text = String::from_utf8_lossy(text);
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        fields.insert(key.to_owned(), unquote(value.trim()));
    }
    OsRelease {
        fields,
        path: path.to_owned(),
    }
}

fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        out
    } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.to_owned()
    } else {
        v.to_owned()
    }
}

/// Reads a distribution's own release file, for images without os-release:
/// `/etc/debian_version` (`12.5`, or `bookworm/sid` on testing),
/// `/etc/alpine-release` (`3.19.1`), `/etc/redhat-release`
/// (`Rocky Linux release 9.3 (Blue Onyx)`).
pub fn parse_release_file(text: &[u8], path: &str) -> Option<OsRelease> {
    let text = String::from_utf8_lossy(text);
    let first = text.lines().next()?.trim();
    if first.is_empty() {
        return None;
    }
    let (id, version) = match path {
        "etc/debian_version" => {
            // Only the major version names an OSV ecosystem (Debian:12).
            let major = first.split('.').next().unwrap_or(first);
            ("debian".to_owned(), major.to_owned())
        }
        "etc/alpine-release" => ("alpine".to_owned(), first.to_owned()),
        "etc/redhat-release" => {
            let (name, rest) = first.split_once(" release ")?;
            let version = rest.split_whitespace().next()?.to_owned();
            let id = match name {
                "Red Hat Enterprise Linux" | "Red Hat Enterprise Linux Server" => "rhel",
                "Rocky Linux" => "rocky",
                "AlmaLinux" => "almalinux",
                "CentOS Linux" | "CentOS Stream" => "centos",
                "Fedora" => "fedora",
                _ => return None,
            };
            (id.to_owned(), version)
        }
        _ => return None,
    };
    let mut fields = BTreeMap::new();
    fields.insert("ID".to_owned(), id);
    fields.insert("VERSION_ID".to_owned(), version);
    Some(OsRelease {
        fields,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoting() {
        let text = br#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME='Debian GNU/Linux'
VERSION_ID="12"
# a comment
ID=debian
HOME_URL="https://www.debian.org/ \"quoted\""
not an assignment
"#;
        let os = parse_os_release(text, "usr/lib/os-release");
        assert_eq!(os.id(), Some("debian"));
        assert_eq!(os.version_id(), Some("12"));
        assert_eq!(os.pretty_name(), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os.fields["NAME"], "Debian GNU/Linux");
        assert_eq!(os.fields["HOME_URL"], "https://www.debian.org/ \"quoted\"");
        assert_eq!(os.fields.len(), 5);
    }

    #[test]
    fn release_files() {
        let d = parse_release_file(b"12.5\n", "etc/debian_version").map(|o| o.fields);
        assert_eq!(
            d.as_ref()
                .and_then(|f| f.get("VERSION_ID"))
                .map(String::as_str),
            Some("12")
        );
        let r = parse_release_file(
            b"Rocky Linux release 9.3 (Blue Onyx)\n",
            "etc/redhat-release",
        );
        assert_eq!(r.as_ref().and_then(OsRelease::id), Some("rocky"));
        assert_eq!(r.as_ref().and_then(OsRelease::version_id), Some("9.3"));
        assert!(parse_release_file(b"", "etc/alpine-release").is_none());
    }
}
