//! dpkg's database: `/var/lib/dpkg/status` (one paragraph per package, with
//! a `Status:` field) and distroless images' `/var/lib/dpkg/status.d/<name>`
//! (one file per package, no `Status:`).

use super::{Package, PackageKind, SourcePackage, warn};

/// Which of dpkg's two layouts a file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `/var/lib/dpkg/status`: only paragraphs whose `Status:` says the
    /// package is installed count.
    Status,
    /// `/var/lib/dpkg/status.d/*`: every paragraph is an installed package.
    StatusD,
}

/// The installed packages a dpkg database file lists, and a warning for each
/// paragraph that could not be read (the others are kept).
pub fn parse(text: &[u8], path: &str, layer: usize, layout: Layout) -> (Vec<Package>, Vec<String>) {
    let mut warnings = Vec::new();
    let text = match std::str::from_utf8(text) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(e) => {
            warnings.push(format!(
                "{path}: not valid UTF-8 at byte {}; read with replacement characters",
                e.valid_up_to()
            ));
            String::from_utf8_lossy(text)
        }
    };
    let mut packages = Vec::new();
    let mut para = Paragraph::default();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            para.finish(path, layer, layout, &mut packages, &mut warnings);
            continue;
        }
        if para.start == 0 {
            para.start = lineno;
        }
        if line.starts_with([' ', '\t']) {
            // A continuation of a multi-line field (Description, Conffiles).
            if para.fields == 0 {
                para.bad
                    .get_or_insert((lineno, "continuation line before any field"));
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            para.bad
                .get_or_insert((lineno, "line is neither 'Field: value' nor a continuation"));
            continue;
        };
        para.fields += 1;
        let value = value.trim();
        match name {
            "Package" => para.package = Some(value.to_owned()),
            "Version" => para.version = Some(value.to_owned()),
            "Status" => para.status = Some(value.to_owned()),
            "Source" => para.source = Some(value.to_owned()),
            "Architecture" => para.arch = Some(value.to_owned()),
            _ => {}
        }
    }
    para.finish(path, layer, layout, &mut packages, &mut warnings);
    (packages, warnings)
}

#[derive(Default)]
struct Paragraph {
    start: usize,
    fields: usize,
    bad: Option<(usize, &'static str)>,
    package: Option<String>,
    version: Option<String>,
    status: Option<String>,
    source: Option<String>,
    arch: Option<String>,
}

impl Paragraph {
    fn finish(
        &mut self,
        path: &str,
        layer: usize,
        layout: Layout,
        packages: &mut Vec<Package>,
        warnings: &mut Vec<String>,
    ) {
        let p = std::mem::take(self);
        if p.start == 0 {
            return;
        }
        if let Some((line, what)) = p.bad {
            warnings.push(warn(path, line, what));
            return;
        }
        if layout == Layout::Status {
            // "want flag status": only fully installed packages are on disk
            // as that version ("config-files" means removed).
            match p.status.as_deref().map(|s| s.split_whitespace().nth(2)) {
                Some(Some(
                    "installed" | "half-configured" | "unpacked" | "triggers-awaited"
                    | "triggers-pending",
                )) => {}
                Some(Some(_)) => return,
                Some(None) => {
                    warnings.push(warn(
                        path,
                        p.start,
                        "malformed Status field (want 'want flag status')",
                    ));
                    return;
                }
                None => {
                    warnings.push(warn(path, p.start, "paragraph has no Status field"));
                    return;
                }
            }
        }
        let (Some(name), Some(version)) = (p.package, p.version) else {
            warnings.push(warn(path, p.start, "paragraph lacks Package or Version"));
            return;
        };
        if name.is_empty() || version.is_empty() || name.contains(char::is_whitespace) {
            warnings.push(warn(
                path,
                p.start,
                format!("invalid package '{name}' version '{version}'"),
            ));
            return;
        }
        // "Source: name" or "Source: name (version)"; absent means the source
        // package has the binary's name and version.
        let source = match p.source.as_deref() {
            None | Some("") => SourcePackage {
                name: name.clone(),
                version: version.clone(),
            },
            Some(s) => match s.split_once('(') {
                Some((n, v)) => SourcePackage {
                    name: n.trim().to_owned(),
                    version: v.trim_end_matches(')').trim().to_owned(),
                },
                None => SourcePackage {
                    name: s.to_owned(),
                    version: version.clone(),
                },
            },
        };
        packages.push(Package {
            kind: PackageKind::Deb,
            name,
            version,
            source: Some(source),
            arch: p.arch,
            purl: String::new(),
            layer,
            path: path.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries.
 .
 More text.

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14+deb12u1

Package: oldpkg
Status: deinstall ok config-files
Version: 1.0-1

Package: broken
Status: install ok installed

garbage line
Package: x
Version: 1

Package: tzdata
Status: install ok installed
Version: 2024a-0+deb12u1
";

    #[test]
    fn reads_installed_packages_and_their_sources() {
        let (pkgs, warnings) = parse(STATUS.as_bytes(), "var/lib/dpkg/status", 2, Layout::Status);
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| {
                let s = p
                    .source
                    .as_ref()
                    .map(|s| format!("{}@{}", s.name, s.version));
                (p.name.as_str(), p.version.as_str(), s.unwrap_or_default())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("libc6", "2.36-9+deb12u4", "glibc@2.36-9+deb12u4".to_owned()),
                (
                    "libgcc-s1",
                    "12.2.0-14+deb12u1",
                    "gcc-12@12.2.0-14".to_owned()
                ),
                (
                    "tzdata",
                    "2024a-0+deb12u1",
                    "tzdata@2024a-0+deb12u1".to_owned()
                ),
            ]
        );
        assert!(pkgs.iter().all(|p| p.layer == 2));
        assert_eq!(
            warnings,
            [
                "var/lib/dpkg/status:22: paragraph lacks Package or Version; entry skipped",
                "var/lib/dpkg/status:25: line is neither 'Field: value' nor a continuation; entry skipped",
            ]
        );
    }

    #[test]
    fn status_d_needs_no_status_field() {
        let text = "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n";
        let (pkgs, warnings) = parse(
            text.as_bytes(),
            "var/lib/dpkg/status.d/base",
            0,
            Layout::StatusD,
        );
        assert!(warnings.is_empty());
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].name, "base-files");
    }

    #[test]
    fn invalid_utf8_is_reported_not_fatal() {
        let mut text =
            b"Package: a\nStatus: install ok installed\nVersion: 1\nDescription: caf\xe9\n"
                .to_vec();
        text.extend_from_slice(b"\n");
        let (pkgs, warnings) = parse(&text, "s", 0, Layout::Status);
        assert_eq!(pkgs.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("not valid UTF-8"), "{warnings:?}");
    }
}
