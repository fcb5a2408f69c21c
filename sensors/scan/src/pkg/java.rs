//! Java archives (`.jar`, `.war`, `.ear`): the Maven coordinates each
//! `META-INF/maven/<group>/<artifact>/pom.properties` records, in the archive
//! and in the archives nested in it (`BOOT-INF/lib/*.jar`,
//! `WEB-INF/lib/*.jar`), two levels deep. A zip is read from its central
//! directory, so an archive is held in memory while it is read: archives
//! over [`MAX_ARCHIVE`] and nested ones over [`MAX_NESTED`] are reported as
//! not read rather than growing memory. The packages match OSV's Maven
//! records as `group:artifact`.
//!
//! An archive without a `pom.properties` of its own (built by Gradle, Ant
//! or an OSGi tool) is named by its `META-INF/MANIFEST.MF` where that is
//! unambiguous: the version from `Implementation-Version`, else
//! `Bundle-Version`; the artifact from the file name when it reads
//! `<artifact>-<version>.jar`, else a title without spaces; the group from
//! `Implementation-Vendor-Id` (what Maven's archiver writes), or from a
//! `Bundle-SymbolicName` that ends with `.<artifact>` (the group is the
//! rest). Anything else would be a guess at coordinates, and a wrong group
//! matches no advisory while looking authoritative: not listed.

use std::io::{Cursor, Read};

use super::{Package, PackageKind};

/// Largest archive read.
pub const MAX_ARCHIVE: u64 = 32 << 20;
/// Largest nested archive read.
pub const MAX_NESTED: u64 = 8 << 20;
/// How deep nested archives are followed.
const MAX_DEPTH: usize = 2;
/// Most bytes inflated from the nested archives of one archive, all
/// levels together: a small archive of many highly compressed nested ones
/// cannot make the analysis inflate without end.
pub const MAX_INFLATED: u64 = 128 << 20;

/// Whether a path names a Java archive.
pub fn is_archive(path: &str) -> bool {
    let lower = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    lower.ends_with(".jar") || lower.ends_with(".war") || lower.ends_with(".ear")
}

/// The Maven packages in an archive's bytes, and what could not be read.
pub fn parse(data: &[u8], path: &str) -> (Vec<Package>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut budget = MAX_INFLATED;
    read_archive(data, path, 0, &mut budget, &mut out, &mut warnings);
    (out, warnings)
}

fn read_archive(
    data: &[u8],
    shown: &str,
    depth: usize,
    budget: &mut u64,
    out: &mut Vec<Package>,
    warnings: &mut Vec<String>,
) {
    let mut zip = match zip::ZipArchive::new(Cursor::new(data)) {
        Ok(z) => z,
        Err(e) => {
            warnings.push(format!("{shown}: not a readable Java archive: {e}"));
            return;
        }
    };
    let mut own_pom = false;
    let mut manifest = None;
    for i in 0..zip.len() {
        let mut entry = match zip.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("{shown}: entry {i}: {e}"));
                continue;
            }
        };
        let name = entry.name().to_owned();
        if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
            let mut text = String::new();
            match (&mut entry).take(64 << 10).read_to_string(&mut text) {
                Ok(_) => manifest = Some(text),
                Err(e) => warnings.push(format!("{shown}!{name}: {e}")),
            }
        } else if name.starts_with("META-INF/maven/") && name.ends_with("/pom.properties") {
            own_pom = true;
            let mut text = String::new();
            if let Err(e) = (&mut entry).take(64 << 10).read_to_string(&mut text) {
                warnings.push(format!("{shown}!{name}: {e}"));
                continue;
            }
            match coordinates(&text) {
                Some(coordinates) => out.push(maven(coordinates, shown)),
                None => warnings.push(format!(
                    "{shown}!{name}: no groupId, artifactId or version; skipped"
                )),
            }
        } else if is_archive(&name) && entry.is_file() {
            let nested = format!("{shown}!{name}");
            if depth >= MAX_DEPTH {
                continue;
            }
            if entry.size() > MAX_NESTED {
                warnings.push(format!(
                    "{nested}: nested archive of {} bytes is over the {MAX_NESTED}-byte limit; not read",
                    entry.size()
                ));
                continue;
            }
            if entry.size() > *budget {
                if *budget > 0 {
                    warnings.push(format!(
                        "{nested}: its nested archives inflate to more than {MAX_INFLATED} bytes; this one and the rest are not read"
                    ));
                    *budget = 0;
                }
                continue;
            }
            let mut inner = Vec::with_capacity(entry.size() as usize);
            let read = (&mut entry)
                .take(MAX_NESTED.min(*budget) + 1)
                .read_to_end(&mut inner);
            *budget = budget.saturating_sub(inner.len() as u64);
            if let Err(e) = read {
                warnings.push(format!("{nested}: {e}"));
                continue;
            }
            read_archive(&inner, &nested, depth + 1, budget, out, warnings);
        }
    }
    if !own_pom
        && let Some(text) = manifest
        && let Some(coordinates) = from_manifest(&text, shown)
    {
        out.push(maven(coordinates, shown));
    }
}

/// The package of Maven coordinates found in the archive at `shown`.
fn maven((group, artifact, version): (String, String, String), shown: &str) -> Package {
    Package {
        kind: PackageKind::Maven,
        name: format!("{group}:{artifact}"),
        version,
        source: None,
        arch: None,
        purl: String::new(),
        layer: 0,
        path: shown.to_owned(),
    }
}

/// The main section of a manifest: `Name: value` headers, long values
/// continued on lines that start with a space.
fn manifest_headers(text: &str) -> std::collections::HashMap<String, String> {
    let mut headers = std::collections::HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if let Some(more) = line.strip_prefix(' ') {
            if let Some(v) = last.as_ref().and_then(|k| headers.get_mut(k)) {
                let v: &mut String = v;
                v.push_str(more);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            headers.insert(k.clone(), v.trim().to_owned());
            last = Some(k);
        }
    }
    headers
}

/// Coordinates from a manifest (see the module's documentation), given the
/// archive's path for its file name.
fn from_manifest(text: &str, shown: &str) -> Option<(String, String, String)> {
    let h = manifest_headers(text);
    let get = |k: &str| h.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let version = get("implementation-version").or(get("bundle-version"))?;
    // `com.example.widget;singleton:=true`
    let symbolic = get("bundle-symbolicname")
        .map(|s| s.split(';').next().unwrap_or(s).trim())
        .filter(|s| !s.is_empty());
    // `…/lib/widget-1.2.3.jar`
    let file = shown.rsplit(['/', '!']).next().unwrap_or(shown);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let from_file = stem
        .strip_suffix(version)
        .and_then(|s| s.strip_suffix('-'))
        .filter(|s| !s.is_empty());
    let artifact = from_file.or(get("implementation-title"))?;
    let group = get("implementation-vendor-id")
        .map(str::to_owned)
        .or_else(|| {
            symbolic
                .and_then(|s| s.strip_suffix(artifact))
                .and_then(|g| g.strip_suffix('.'))
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
        })?;
    let clean = |s: &str| !s.contains([' ', ':', '/']);
    (clean(&group) && clean(artifact) && clean(version))
        .then(|| (group, artifact.to_owned(), version.to_owned()))
}

/// `groupId`, `artifactId`, `version` of a `pom.properties`.
fn coordinates(text: &str) -> Option<(String, String, String)> {
    let (mut g, mut a, mut v) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, val)) = line.split_once('=') {
            let val = val.trim().to_owned();
            match k.trim() {
                "groupId" => g = Some(val),
                "artifactId" => a = Some(val),
                "version" => v = Some(val),
                _ => {}
            }
        }
    }
    match (g, a, v) {
        (Some(g), Some(a), Some(v)) if !g.is_empty() && !a.is_empty() && !v.is_empty() => {
            Some((g, a, v))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_and_coordinates() {
        assert!(is_archive("opt/app/BOOT.JAR"));
        assert!(is_archive("srv/app.war"));
        assert!(!is_archive("srv/jar"));
        assert_eq!(
            coordinates(
                "#Generated by Maven\ngroupId=commons-io\nartifactId=commons-io\nversion=2.11.0\n"
            ),
            Some(("commons-io".into(), "commons-io".into(), "2.11.0".into()))
        );
        assert_eq!(coordinates("groupId=x\nversion=1\n"), None);
        let manifest = "Manifest-Version: 1.0\r\nImplementation-Title: Widget Library\r\nImplementation-Vendor-Id: com.example\r\nImplementation-Version: 1.2.3\r\n\r\nName: x\r\nImplementation-Version: 9\r\n";
        assert_eq!(
            from_manifest(manifest, "srv/lib/widget-1.2.3.jar"),
            Some(("com.example".into(), "widget".into(), "1.2.3".into())),
            "the artifact from the file name, the title has spaces"
        );
        assert_eq!(
            from_manifest(manifest, "srv/lib/widget.jar"),
            None,
            "a title with spaces is no artifact id"
        );
        let bundle = "Manifest-Version: 1.0\nBundle-SymbolicName: com.fasterxml.jackson.core.jac\n kson-databind;singleton:=true\nBundle-Version: 2.9.8\n";
        assert_eq!(
            from_manifest(bundle, "app.war!WEB-INF/lib/jackson-databind-2.9.8.jar"),
            Some((
                "com.fasterxml.jackson.core".into(),
                "jackson-databind".into(),
                "2.9.8".into()
            )),
            "continued lines, parameters, the group from the symbolic name"
        );
        assert_eq!(
            from_manifest(bundle, "app.war!WEB-INF/lib/databind.jar"),
            None,
            "no artifact the symbolic name agrees with: not guessed"
        );
        // Debian's guice-assistedinject: com.google.inject.assistedinject
        // names no artifact `guice-assistedinject`; its group would be a guess.
        assert_eq!(
            from_manifest(
                "Bundle-SymbolicName: com.google.inject.assistedinject\nBundle-Version: 4.2.3\n",
                "usr/share/java/guice-assistedinject-4.2.3.jar"
            ),
            None
        );
        assert_eq!(from_manifest("Manifest-Version: 1.0\n", "x.jar"), None);
        let (pkgs, warnings) = parse(b"PK\x03\x04 not really", "a.jar");
        assert!(pkgs.is_empty() && warnings[0].starts_with("a.jar: not a readable Java archive"));
    }

    /// A zip of `files`, each stored or deflated.
    fn zip_of(files: impl IntoIterator<Item = (String, Vec<u8>, bool)>) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, deflate) in files {
            let method = if deflate {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            };
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            w.start_file(name, options).expect("an entry");
            w.write_all(&data).expect("its data");
        }
        w.finish().expect("the zip").into_inner()
    }

    #[test]
    fn nested_archives_inflate_within_a_budget() {
        // Nested jars just under the nested limit, each a Maven artifact of
        // its own, that compress to almost nothing in the outer archive.
        let padding = vec![0u8; (MAX_NESTED - (64 << 10)) as usize];
        let nested = |i: usize| {
            let pom = format!("groupId=g\nartifactId=a{i}\nversion=1\n");
            zip_of([
                (
                    format!("META-INF/maven/g/a{i}/pom.properties"),
                    pom.into_bytes(),
                    false,
                ),
                ("pad.bin".to_owned(), padding.clone(), false),
            ])
        };
        let count = (MAX_INFLATED / MAX_NESTED) as usize + 4;
        // Made one at a time as the outer archive is written.
        let outer = zip_of((0..count).map(|i| (format!("BOOT-INF/lib/a{i}.jar"), nested(i), true)));
        assert!(outer.len() < 4 << 20, "{} bytes", outer.len());
        let (pkgs, warnings) = parse(&outer, "app.jar");
        // Those within the budget are read, the rest named as not read.
        let per = (MAX_NESTED - (64 << 10)) as usize;
        let fit = MAX_INFLATED as usize / per;
        assert!(
            (fit - 1..=fit).contains(&pkgs.len()),
            "{} of {count} read; {fit} fit",
            pkgs.len()
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("inflate to more than") && w.contains("are not read")),
            "{warnings:?}"
        );
    }
}
