//! Language packages: `Cargo.lock`, npm's `package-lock.json` and
//! `node_modules/<name>/package.json`, and Python's `*.dist-info/METADATA`
//! and `*.egg-info/PKG-INFO`.

use serde::Deserialize;

use super::{Package, PackageKind, warn};

fn package(kind: PackageKind, name: String, version: String, path: &str) -> Package {
    Package {
        kind,
        name,
        version,
        source: None,
        arch: None,
        purl: String::new(),
        layer: 0,
        path: path.to_owned(),
    }
}

/// A `[[package]]` table being read: its line, name, version and source.
#[derive(Default)]
struct CrateEntry {
    line: usize,
    name: Option<String>,
    version: Option<String>,
    source: Option<String>,
}

/// `Cargo.lock`: every `[[package]]` that came from a registry (workspace
/// members and path dependencies are the project itself).
pub fn cargo_lock(text: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    // (start line, name, version, source)
    let mut current: Option<CrateEntry> = None;
    let finish = |p: Option<CrateEntry>, out: &mut Vec<Package>, warnings: &mut Vec<String>| {
        let Some(p) = p else { return };
        match (p.name, p.version) {
            (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => {
                if p.source
                    .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"))
                {
                    out.push(package(PackageKind::Cargo, n, v, path));
                }
            }
            _ => warnings.push(warn(path, p.line, "[[package]] lacks name or version")),
        }
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line == "[[package]]" {
            finish(current.take(), &mut out, &mut warnings);
            current = Some(CrateEntry {
                line: i + 1,
                ..CrateEntry::default()
            });
        } else if line.starts_with('[') {
            finish(current.take(), &mut out, &mut warnings);
        } else if let Some(p) = current.as_mut()
            && let Some((key, value)) = line.split_once('=')
        {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "name" => p.name = Some(value),
                "version" => p.version = Some(value),
                "source" => p.source = Some(value),
                _ => {}
            }
        }
    }
    finish(current.take(), &mut out, &mut warnings);
    (out, warnings)
}

#[derive(Deserialize)]
struct NpmLock {
    #[serde(default, rename = "lockfileVersion")]
    lockfile_version: Option<u32>,
    #[serde(default)]
    packages: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    dependencies: Option<serde_json::Map<String, serde_json::Value>>,
}

/// npm's `package-lock.json`, lockfile versions 1 (`dependencies`, nested)
/// and 2–3 (`packages` keyed by `node_modules/…` path). Links to local
/// directories and the root project are left out, and so are packages
/// restricted to some platforms (`os`, `cpu`: esbuild's and swc's
/// per-platform binaries): npm installs only the host's, so only its
/// `node_modules/…/package.json` says which one is there.
pub fn npm_lock(text: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
    let lock: NpmLock = match serde_json::from_slice(text) {
        Ok(l) => l,
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("{path}: not a package-lock.json: {e}")],
            );
        }
    };
    let mut out = Vec::new();
    if let Some(packages) = lock.packages {
        for (key, v) in packages {
            let Some(i) = key.rfind("node_modules/") else {
                continue;
            };
            let name = &key[i + "node_modules/".len()..];
            if v.get("link").and_then(serde_json::Value::as_bool) == Some(true) {
                continue;
            }
            if v.get("os").is_some() || v.get("cpu").is_some() {
                continue;
            }
            if let Some(version) = v.get("version").and_then(serde_json::Value::as_str) {
                out.push(package(
                    PackageKind::Npm,
                    name.to_owned(),
                    version.to_owned(),
                    path,
                ));
            }
        }
    } else if let Some(deps) = lock.dependencies {
        // Version 1: dependencies nest under dependencies.
        let mut stack: Vec<(String, serde_json::Value)> = deps.into_iter().collect();
        while let Some((name, v)) = stack.pop() {
            if let Some(version) = v.get("version").and_then(serde_json::Value::as_str)
                && !version.starts_with("file:")
            {
                out.push(package(PackageKind::Npm, name, version.to_owned(), path));
            }
            if let Some(nested) = v.get("dependencies").and_then(serde_json::Value::as_object) {
                stack.extend(nested.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    } else if lock.lockfile_version.is_some() {
        // A lockfile of a project without dependencies.
    }
    (out, Vec::new())
}

/// One installed npm package's `package.json`.
pub fn npm_package(text: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
    let v: serde_json::Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return (Vec::new(), vec![format!("{path}: not a package.json: {e}")]),
    };
    match (
        v.get("name").and_then(|n| n.as_str()),
        v.get("version").and_then(|n| n.as_str()),
    ) {
        (Some(n), Some(ver)) if !n.is_empty() && !ver.is_empty() => (
            vec![package(
                PackageKind::Npm,
                n.to_owned(),
                ver.to_owned(),
                path,
            )],
            Vec::new(),
        ),
        _ => (
            Vec::new(),
            vec![format!(
                "{path}: package.json without name or version; skipped"
            )],
        ),
    }
}

/// Python core metadata (`METADATA`, `PKG-INFO`): the `Name` and `Version`
/// headers, before the first blank line.
pub fn python_metadata(text: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
    let text = String::from_utf8_lossy(text);
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k {
                "Name" => name = Some(v.trim().to_owned()),
                "Version" => version = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    // A name of separators only (`Name: ---`) normalizes to nothing.
    let name = name.map(|n| normalize_python(&n)).filter(|n| !n.is_empty());
    match (name, version) {
        (Some(n), Some(v)) if !v.is_empty() => {
            (vec![package(PackageKind::PyPI, n, v, path)], Vec::new())
        }
        _ => (Vec::new(), vec![warn(path, 1, "no Name or Version header")]),
    }
}

/// PEP 503 normalization: lowercase, runs of `-`, `_` and `.` become `-`
/// (how PyPI, OSV and package URLs name Python packages).
pub fn normalize_python(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Which language file a path is, if any.
pub fn kind_of(path: &str) -> Option<LangFile> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    match name {
        "Cargo.lock" => Some(LangFile::CargoLock),
        "package-lock.json" if !dir.split('/').any(|p| p == "node_modules") => {
            Some(LangFile::NpmLock)
        }
        "package.json" => {
            // node_modules/<name>/package.json or node_modules/@scope/<name>/package.json
            let parts: Vec<&str> = dir.rsplit('/').take(3).collect();
            let installed = matches!(parts.as_slice(), [_, "node_modules", ..])
                || matches!(parts.as_slice(), [_, scope, "node_modules"] if scope.starts_with('@'));
            installed.then_some(LangFile::NpmPackage)
        }
        "METADATA" if dir.ends_with(".dist-info") => Some(LangFile::PythonMetadata),
        "PKG-INFO" if dir.ends_with(".egg-info") => Some(LangFile::PythonMetadata),
        // distutils writes a package's metadata as one file,
        // `<name>-<version>-py3.11.egg-info`, beside the modules.
        _ if name.ends_with(".egg-info")
            && (dir.ends_with("site-packages") || dir.ends_with("dist-packages")) =>
        {
            Some(LangFile::PythonMetadata)
        }
        _ => None,
    }
}

/// A language file analysis reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LangFile {
    /// `Cargo.lock`.
    CargoLock,
    /// `package-lock.json` (outside `node_modules`).
    NpmLock,
    /// `node_modules/<name>/package.json`.
    NpmPackage,
    /// `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, or a single-file
    /// `*.egg-info` in `site-packages` or `dist-packages`.
    PythonMetadata,
}

impl LangFile {
    /// Parses the file.
    pub fn parse(self, text: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
        match self {
            LangFile::CargoLock => cargo_lock(text, path),
            LangFile::NpmLock => npm_lock(text, path),
            LangFile::NpmPackage => npm_package(text, path),
            LangFile::PythonMetadata => python_metadata(text, path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_files() {
        assert_eq!(kind_of("app/Cargo.lock"), Some(LangFile::CargoLock));
        assert_eq!(kind_of("srv/package-lock.json"), Some(LangFile::NpmLock));
        assert_eq!(kind_of("srv/node_modules/x/package-lock.json"), None);
        assert_eq!(
            kind_of("srv/node_modules/is-number/package.json"),
            Some(LangFile::NpmPackage)
        );
        assert_eq!(
            kind_of("srv/node_modules/@types/node/package.json"),
            Some(LangFile::NpmPackage)
        );
        assert_eq!(kind_of("srv/package.json"), None);
        assert_eq!(kind_of("srv/node_modules/x/lib/package.json"), None);
        assert_eq!(
            kind_of("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"),
            Some(LangFile::PythonMetadata)
        );
        assert_eq!(
            kind_of("x/foo.egg-info/PKG-INFO"),
            Some(LangFile::PythonMetadata)
        );
        assert_eq!(kind_of("x/METADATA"), None);
        assert_eq!(
            kind_of("usr/lib/python3/dist-packages/legacy-0.9.egg-info"),
            Some(LangFile::PythonMetadata)
        );
        assert_eq!(
            kind_of("usr/local/lib/python3.11/site-packages/old-1.0-py3.11.egg-info"),
            Some(LangFile::PythonMetadata)
        );
        assert_eq!(kind_of("srv/notes.egg-info"), None);
    }

    #[test]
    fn python_names_are_normalized() {
        assert_eq!(normalize_python("typing_extensions"), "typing-extensions");
        assert_eq!(normalize_python("Zope.Interface"), "zope-interface");
        assert_eq!(normalize_python("a--b__c"), "a-b-c");
    }

    #[test]
    fn a_python_name_of_separators_only_is_no_package() {
        // Found by the `lang` fuzz target.
        let (packages, warnings) = python_metadata(b"Name: ---\nVersion: 1.0\n", "m/METADATA");
        assert!(packages.is_empty(), "{packages:?}");
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn cargo_lock_keeps_registry_packages() {
        let text = br#"# This file is automatically @generated by Cargo.
version = 4

[[package]]
name = "itoa"
version = "1.0.15"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "abc"

[[package]]
name = "my-app"
version = "0.1.0"
dependencies = [
 "itoa",
]

[[package]]
name = "broken"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;
        let (pkgs, warnings) = cargo_lock(text, "Cargo.lock");
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(got, [("itoa", "1.0.15")]);
        assert_eq!(
            warnings,
            ["Cargo.lock:17: [[package]] lacks name or version; entry skipped"]
        );
    }

    #[test]
    fn npm_lock_leaves_platform_packages_to_node_modules() {
        let lock = br#"{"lockfileVersion": 3, "packages": {
            "": {"name": "app", "version": "1.0.0"},
            "node_modules/esbuild": {"version": "0.21.5", "optionalDependencies": {}},
            "node_modules/@esbuild/darwin-arm64": {"version": "0.21.5", "optional": true, "os": ["darwin"], "cpu": ["arm64"]},
            "node_modules/@esbuild/linux-x64": {"version": "0.21.5", "optional": true, "os": ["linux"], "cpu": ["x64"]},
            "node_modules/fsevents": {"version": "2.3.3", "optional": true, "os": ["darwin"]},
            "node_modules/plain-optional": {"version": "1.0.0", "optional": true}
        }}"#;
        let (found, warnings) = npm_lock(lock, "app/package-lock.json");
        assert!(warnings.is_empty(), "{warnings:?}");
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["esbuild", "plain-optional"]);
    }

    #[test]
    fn npm_lock_v1_nests() {
        let text = br#"{"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0", "dependencies": {"b": {"version": "2.0.0"}}}, "local": {"version": "file:../local"}}}"#;
        let (mut pkgs, _) = npm_lock(text, "package-lock.json");
        pkgs.sort_by(|a, b| a.name.cmp(&b.name));
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(got, [("a", "1.0.0"), ("b", "2.0.0")]);
        let (pkgs, warnings) = npm_lock(b"{not json", "p");
        assert!(pkgs.is_empty() && warnings[0].starts_with("p: not a package-lock.json"));
    }
}
