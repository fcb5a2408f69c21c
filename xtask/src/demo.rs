//! What the demo's workload carries and what it is scanned against: the
//! "legacy app" is a Debian 12 root filesystem plus an application layer
//! with old npm and PyPI libraries (their manifests, as installed), and
//! `xtask/demo/advisories/` holds real advisories that affect them (GitHub
//! Security Advisories in OSV form; sources and licence in `SOURCES.md`),
//! imported into the operator as a signed bundle.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sightline_testenv::archive::{Layer, LayerTar};

/// The advisories the demo imports, relative to the repository.
pub const ADVISORIES: &str = "xtask/demo/advisories";

/// Where the app lives in its image.
const APP: &str = "srv/legacy-app";

/// The libraries the application layer installs: (ecosystem, name,
/// version). Each is older than the fix of an advisory in [`ADVISORIES`].
pub const LIBRARIES: &[(&str, &str, &str)] = &[
    ("npm", "lodash", "4.17.11"),
    ("npm", "minimist", "1.2.5"),
    ("PyPI", "PyYAML", "5.3.1"),
];

/// The application layer's files: the app's own `package.json`, and each
/// library's manifest where its package manager installs it.
fn app_files() -> Vec<(String, String)> {
    let mut files = vec![(
        format!("{APP}/package.json"),
        serde_json::json!({
            "name": "legacy-app",
            "version": "1.0.0",
            "private": true,
            "dependencies": {"lodash": "4.17.11", "minimist": "1.2.5"},
        })
        .to_string(),
    )];
    for (ecosystem, name, version) in LIBRARIES {
        match *ecosystem {
            "npm" => files.push((
                format!("{APP}/node_modules/{name}/package.json"),
                serde_json::json!({"name": name, "version": version, "license": "MIT"}).to_string(),
            )),
            _ => files.push((
                format!("usr/lib/python3/dist-packages/{name}-{version}.dist-info/METADATA"),
                format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: MIT\n"),
            )),
        }
    }
    files
}

/// Writes the application layer into `dir`.
pub fn app_layer(dir: &Path) -> Result<Layer> {
    let mut tar = LayerTar::create(&dir.join("legacy-app-layer.tar"))?;
    let mut made = std::collections::BTreeSet::new();
    for (path, data) in app_files() {
        let mut parent = String::new();
        for part in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if made.insert(parent.clone()) {
                tar.dir(&parent, 0o755)?;
            }
        }
        tar.file(&path, data.as_bytes(), 0o644)?;
    }
    Ok(tar.finish()?)
}

/// The advisories' directory in this checkout.
pub fn advisories() -> PathBuf {
    crate::root().join(ADVISORIES)
}

/// The demo's bundle signing key (made once, kept with the cluster):
/// the key file and its public key.
pub fn signing_key(cli: &Path, dir: &Path) -> Result<(PathBuf, String)> {
    let key = dir.join("demo-bundle-signing.pem");
    let public = dir.join("demo-bundle-signing.pub");
    if !public.is_file() {
        let out = std::process::Command::new(cli)
            .args(["bundle", "keygen", "--output-file"])
            .arg(&key)
            .output()
            .context("running sightline bundle keygen")?;
        anyhow::ensure!(
            out.status.success(),
            "sightline bundle keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("ed25519:"))
            .map(str::to_owned)
            .context("sightline bundle keygen printed no public key")?;
        std::fs::write(&public, line)?;
    }
    Ok((key, std::fs::read_to_string(&public)?.trim().to_owned()))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use sightline_scan::Limits;
    use sightline_scan::source::docker_archive;
    use sightline_scan::vuln::{Database, Level, match_analysis};

    #[test]
    fn the_demo_app_has_real_findings_in_the_demo_advisories() {
        let dir = tempfile::tempdir().unwrap();
        let layer = app_layer(dir.path()).unwrap();
        let archive = dir.path().join("app.tar");
        sightline_testenv::archive::docker_archive(
            &["sightline.local/legacy-app:1.0"],
            &[layer],
            &sightline_testenv::archive::RunConfig::default(),
            &archive,
        )
        .unwrap();
        let image = docker_archive::analyze(&archive, None, &Limits::default()).unwrap();
        let (db, report) = Database::import_osv(&advisories(), "demo".into()).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let found = match_analysis(&image.analysis, &db);
        let mut got: Vec<(String, String, String)> = found
            .findings
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    f.package.clone(),
                    format!("{:?}", f.severity.level),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "GHSA-35jh-r3h4-6jhm".into(),
                    "lodash".into(),
                    format!("{:?}", Level::High)
                ),
                (
                    "GHSA-8q59-q68h-6hv4".into(),
                    "pyyaml".into(),
                    format!("{:?}", Level::Critical)
                ),
                (
                    "GHSA-jf85-cpcp-j695".into(),
                    "lodash".into(),
                    format!("{:?}", Level::Critical)
                ),
                (
                    "GHSA-xvch-5gv4-984h".into(),
                    "minimist".into(),
                    format!("{:?}", Level::Critical)
                ),
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn every_demo_advisory_names_its_source_and_licence() {
        let sources = std::fs::read_to_string(advisories().join("SOURCES.md")).unwrap();
        let mut records = 0;
        for entry in std::fs::read_dir(advisories()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            records += 1;
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let line = sources
                .lines()
                .find(|l| l.contains(&format!("`{id}`")))
                .unwrap_or_else(|| panic!("SOURCES.md does not list {id}"));
            assert!(
                line.contains("https://github.com/github/advisory-database/blob/")
                    && line.contains("CC-BY-4.0"),
                "{id}: {line}"
            );
        }
        assert!(records >= 4, "{records} records");
    }
}
