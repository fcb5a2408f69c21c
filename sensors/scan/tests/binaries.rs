//! Go binaries in an image: the etcd the test environment builds from Go
//! modules, put in a layer as an executable, must yield exactly the modules
//! and Go version `go version -m` (the Go toolchain's own reader) reports.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result};
use sightline_scan::pkg::PackageKind;
use sightline_scan::{Analyzer, LayerExpect, Limits};
use sightline_testenv::Binaries;
use sightline_testenv::binaries::go_command;

#[test]
fn go_modules_match_go_version_m() -> Result<()> {
    let etcd = Binaries::ensure()?.etcd;
    // The Go toolchain's view.
    let out = Command::new(go_command())
        .args(["version", "-m"])
        .arg(&etcd)
        .output()?;
    anyhow::ensure!(out.status.success(), "go version -m failed");
    let text = String::from_utf8(out.stdout)?;
    let go = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .context("go version")?;
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    want.insert(("stdlib".into(), format!("v{}", go.trim_start_matches("go"))));
    let mut last: Option<(String, String)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.trim_start().split('\t').collect();
        match f.as_slice() {
            ["dep", m, v, ..] => {
                if let Some(d) = last.replace((m.to_string(), v.to_string())) {
                    want.insert(d);
                }
            }
            ["=>", m, v, ..] => last = Some((m.to_string(), v.to_string())),
            ["mod", m, v, ..] if *v != "(devel)" => {
                want.insert((m.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    if let Some(d) = last {
        want.insert(d);
    }
    assert!(want.len() > 20, "{want:?}");

    // A layer with the binary as an executable, and a shell script beside it.
    let dir = tempfile::tempdir()?;
    let layer = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layer)?);
        b.append_path_with_name(&etcd, "usr/local/bin/etcd")?;
        let script = b"#!/bin/sh\necho hi\n";
        let mut h = tar::Header::new_gnu();
        h.set_path("usr/local/bin/hello")?;
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, &script[..])?;
        b.finish()?;
    }
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(&layer)?, &LayerExpect::default())?;
    let analysis = a.finish();
    let got: BTreeSet<(String, String)> = analysis
        .packages
        .iter()
        .filter(|p| p.kind == PackageKind::Go)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    assert_eq!(got, want);
    let net = analysis
        .packages
        .iter()
        .find(|p| p.name == "golang.org/x/net")
        .context("golang.org/x/net")?;
    assert_eq!(
        net.purl,
        format!("pkg:golang/golang.org/x/net@{}", net.version)
    );
    assert_eq!(net.path, "usr/local/bin/etcd");
    assert!(analysis.warnings.is_empty(), "{:?}", analysis.warnings);
    Ok(())
}

/// `group:artifact` and version of every pom.properties in a jar, by unzip.
fn unzip_coordinates(jar: &std::path::Path) -> Result<BTreeSet<(String, String)>> {
    let out = Command::new("unzip")
        .arg("-p")
        .arg(jar)
        .arg("META-INF/maven/*/*/pom.properties")
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let get = |k: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_owned))
            .collect()
    };
    let (g, a, v) = (get("groupId"), get("artifactId"), get("version"));
    Ok(g.iter()
        .zip(&a)
        .zip(&v)
        .map(|((g, a), v)| (format!("{g}:{a}"), v.clone()))
        .collect())
}

#[test]
fn java_archives_and_nested_jars() -> Result<()> {
    sightline_testenv::docker::check_packages()?;
    let io = std::path::Path::new("/usr/share/java/commons-io.jar");
    let cli = std::path::Path::new("/usr/share/java/commons-cli.jar");
    let mut want = unzip_coordinates(io)?;
    want.extend(unzip_coordinates(cli)?);
    assert_eq!(want.len(), 2, "{want:?}");
    want.insert(("com.example:app".into(), "1.0.0".into()));

    let dir = tempfile::tempdir()?;
    // A Spring Boot style application: its own coordinates, a library nested.
    let fat = dir.path().join("app.jar");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&fat)?);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("META-INF/maven/com.example/app/pom.properties", stored)?;
        zip.write_all(b"groupId=com.example\nartifactId=app\nversion=1.0.0\n")?;
        zip.start_file("BOOT-INF/lib/commons-cli.jar", stored)?;
        zip.write_all(&std::fs::read(cli)?)?;
        zip.finish()?;
    }
    let layer = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layer)?);
        b.append_path_with_name(&fat, "opt/app/app.jar")?;
        b.append_path_with_name(std::fs::canonicalize(io)?, "usr/share/java/commons-io.jar")?;
        b.finish()?;
    }
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(&layer)?, &LayerExpect::default())?;
    let analysis = a.finish();
    let got: BTreeSet<(String, String)> = analysis
        .packages
        .iter()
        .filter(|p| p.kind == PackageKind::Maven)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    assert_eq!(got, want);
    let nested = analysis
        .packages
        .iter()
        .find(|p| p.name == "commons-cli:commons-cli")
        .context("commons-cli")?;
    assert_eq!(nested.path, "opt/app/app.jar!BOOT-INF/lib/commons-cli.jar");
    assert_eq!(
        nested.purl,
        format!("pkg:maven/commons-cli/commons-cli@{}", nested.version)
    );
    assert!(analysis.warnings.is_empty(), "{:?}", analysis.warnings);
    Ok(())
}

/// A jar whose only record of itself is its manifest.
fn manifest_jar(manifest: &str) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("META-INF/MANIFEST.MF", opts)?;
    zip.write_all(manifest.as_bytes())?;
    zip.start_file("com/example/Widget.class", opts)?;
    zip.write_all(b"\xca\xfe\xba\xbe")?;
    zip.finish()?;
    Ok(out.into_inner())
}

#[test]
fn jars_known_only_by_their_manifest_loose_and_in_a_war() -> Result<()> {
    sightline_testenv::docker::check_packages()?;
    let io = std::path::Path::new("/usr/share/java/commons-io.jar");
    let dir = tempfile::tempdir()?;
    // Gradle-built: Maven's archiver entries, no pom.properties.
    let widget = manifest_jar(
        "Manifest-Version: 1.0\r\nImplementation-Title: widget\r\n\
         Implementation-Vendor-Id: com.example\r\nImplementation-Version: 1.2.3\r\n\r\n",
    )?;
    // An OSGi bundle, its symbolic name wrapped at 72 bytes.
    let databind = manifest_jar(
        "Manifest-Version: 1.0\nBundle-SymbolicName: com.fasterxml.jackson.core.jackson-da\n tabind\nBundle-Version: 2.9.8\n\n",
    )?;
    let war = dir.path().join("shop.war");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&war)?);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        // The WAR's own manifest names nothing usable: not listed.
        zip.start_file("META-INF/MANIFEST.MF", stored)?;
        zip.write_all(b"Manifest-Version: 1.0\nCreated-By: test\n")?;
        zip.start_file("WEB-INF/lib/widget-1.2.3.jar", stored)?;
        zip.write_all(&widget)?;
        // A jar with a pom.properties is named by it, once.
        zip.start_file("WEB-INF/lib/commons-io.jar", stored)?;
        zip.write_all(&std::fs::read(io)?)?;
        zip.finish()?;
    }
    let loose = dir.path().join("databind.jar");
    std::fs::write(&loose, &databind)?;
    let layer = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layer)?);
        b.append_path_with_name(&war, "srv/shop.war")?;
        b.append_path_with_name(&loose, "opt/lib/jackson-databind-2.9.8.jar")?;
        b.finish()?;
    }
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(&layer)?, &LayerExpect::default())?;
    let analysis = a.finish();
    let got: BTreeSet<(String, String, String)> = analysis
        .packages
        .iter()
        .filter(|p| p.kind == PackageKind::Maven)
        .map(|p| (p.name.clone(), p.version.clone(), p.path.clone()))
        .collect();
    let io_version = unzip_coordinates(io)?
        .into_iter()
        .next()
        .context("commons-io's coordinates")?
        .1;
    let want: BTreeSet<(String, String, String)> = [
        (
            "com.example:widget",
            "1.2.3",
            "srv/shop.war!WEB-INF/lib/widget-1.2.3.jar",
        ),
        (
            "commons-io:commons-io",
            io_version.as_str(),
            "srv/shop.war!WEB-INF/lib/commons-io.jar",
        ),
        (
            "com.fasterxml.jackson.core:jackson-databind",
            "2.9.8",
            "opt/lib/jackson-databind-2.9.8.jar",
        ),
    ]
    .iter()
    .map(|(n, v, p)| (n.to_string(), v.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
    Ok(())
}

/// Registry crates `cargo tree` says a crate links (normal dependencies,
/// so not its build dependencies).
fn cargo_tree(dir: &std::path::Path) -> Result<BTreeSet<(String, String)>> {
    let out = Command::new("cargo")
        .current_dir(dir)
        .args([
            "tree", "--edges", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        // "itoa v1.0.19"; local crates carry their path, "(*)" marks repeats.
        .filter(|l| !l.contains('('))
        .filter_map(|l| l.split_once(" v"))
        .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
        .collect())
}

#[test]
fn rust_crates_of_cargo_auditable_binaries_match_cargo_tree() -> Result<()> {
    let tools = sightline_testenv::binaries::cargo_auditable()?;
    let dir = tempfile::tempdir()?;
    let app = dir.path().join("audited-app");
    std::fs::create_dir_all(app.join("src"))?;
    std::fs::write(
        app.join("Cargo.toml"),
        "[package]\nname = \"audited-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nitoa = \"=1.0.19\"\nmemchr = \"=2.8.3\"\n\n\
         [build-dependencies]\nautocfg = \"=1.5.1\"\n\n[workspace]\n",
    )?;
    std::fs::write(
        app.join("build.rs"),
        "fn main() { let _ = autocfg::new(); }\n",
    )?;
    std::fs::write(
        app.join("src/main.rs"),
        "fn main() {\n    let mut b = itoa::Buffer::new();\n    \
         println!(\"{} {:?}\", b.format(42), memchr::memchr(b'2', b\"42\"));\n}\n",
    )?;
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("cargo")
        .current_dir(&app)
        .env("PATH", &path)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .args(["auditable", "build", "--release", "--quiet"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cargo auditable build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = cargo_tree(&app)?;
    assert_eq!(
        want,
        BTreeSet::from([
            ("itoa".to_owned(), "1.0.19".to_owned()),
            ("memchr".to_owned(), "2.8.3".to_owned()),
        ])
    );
    let binary = dir.path().join("target/release/audited-app");
    // The same binary stripped of its symbols, as images often ship them.
    let stripped = dir.path().join("audited-app.stripped");
    std::fs::copy(&binary, &stripped)?;
    let status = Command::new("strip").arg(&stripped).status()?;
    anyhow::ensure!(status.success(), "strip failed");

    // Each in an image of its own: analysis lists a crate version once per
    // image, whichever files hold it.
    for (file, at) in [
        (&binary, "usr/local/bin/audited-app"),
        (&stripped, "usr/bin/audited-app"),
    ] {
        let layer = dir.path().join("layer.tar");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&layer)?);
            b.append_path_with_name(file, at)?;
            b.finish()?;
        }
        let mut a = Analyzer::new(Limits::default());
        a.add_layer(std::fs::File::open(&layer)?, &LayerExpect::default())?;
        let analysis = a.finish();
        let got: BTreeSet<(String, String)> = analysis
            .packages
            .iter()
            .filter(|p| p.kind == PackageKind::Cargo && p.path == at)
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        assert_eq!(got, want, "{at}");
        let itoa = analysis
            .packages
            .iter()
            .find(|p| p.name == "itoa")
            .context("itoa")?;
        assert_eq!(itoa.purl, "pkg:cargo/itoa@1.0.19");
        assert!(analysis.warnings.is_empty(), "{:?}", analysis.warnings);
    }
    Ok(())
}
