//! Vulnerability matching of real images against OSV records with real
//! IDs and affected ranges (tests/data/osv): the debootstrap image's own
//! layer, and an apk database; exact findings, fixed versions, no false
//! positive past a fix (epochs and `~` included), releases kept apart.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use sightline_scan::vuln::db::{Database, DbError};
use sightline_scan::vuln::{Level, match_analysis};
use sightline_scan::{Analysis, Analyzer, LayerExpect, Limits};
use sightline_testenv::images::debian_rootfs;

fn data(sub: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/osv")
        .join(sub)
}

fn db_of(sub: &str) -> Result<Database> {
    let (db, report) = Database::import_osv(&data(sub), "2026-11-26T00:00:00Z".into())?;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    Ok(db)
}

fn analyze_layer(layer: &Path) -> Result<Analysis> {
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(layer)?, &LayerExpect::default())?;
    Ok(a.finish())
}

#[test]
fn debian_image_matches_source_packages_of_its_release_only() -> Result<()> {
    let analysis = analyze_layer(&debian_rootfs()?)?;
    let db = db_of("debian")?;
    let m = match_analysis(&analysis, &db);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);

    // Unfixed in bookworm: every binary package built from tar and
    // util-linux (bsdutils has its own epoch; matching uses the source
    // version, which has none).
    let mut want: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for p in &analysis.packages {
        let src = p.source.as_ref().map(|s| s.name.as_str());
        let id = match src {
            Some("tar") => "DEBIAN-CVE-2005-2541",
            Some("util-linux") => "DEBIAN-CVE-2022-0563",
            _ => continue,
        };
        want.insert((id.to_owned(), p.name.clone(), None));
    }
    assert!(
        want.iter().any(|w| w.1 == "bsdutils"),
        "util-linux binaries: {want:?}"
    );
    assert!(want.iter().any(|w| w.1 == "tar"));
    let got: BTreeSet<(String, String, Option<String>)> = m
        .findings
        .iter()
        .map(|f| (f.id.clone(), f.package.clone(), f.fixed.clone()))
        .collect();
    // Not: curl (fixed in deb12u6 and deb12u9, installed later; the
    // Debian:11 entry of DEBIAN-CVE-2024-9681 is unfixed but for bullseye),
    // shadow (fixed exactly at the installed 1:4.13+dfsg1-1+deb12u1 or
    // later), openssl (3.0.15-1~deb12u1 < the installed ~deb12u build).
    assert_eq!(got, want);
    let curl = analysis
        .packages
        .iter()
        .find(|p| p.name == "curl")
        .context("curl")?;
    assert!(
        curl.version.starts_with("7.88.1-10+deb12u"),
        "{}",
        curl.version
    );
    let f = &m.findings[0];
    assert_eq!(f.ecosystem, "Debian:12");
    assert_eq!(
        f.severity.level,
        Level::Unknown,
        "Debian records carry no CVSS"
    );
    assert!(
        f.aliases.iter().any(|a| a.starts_with("CVE-")),
        "{:?}",
        f.aliases
    );
    Ok(())
}

/// A layer holding an Alpine release and an apk database.
fn alpine_layer(dir: &Path, release: &str, openssl: &str) -> Result<std::path::PathBuf> {
    let installed = format!(
        "P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n\n\
         P:libcrypto3\nV:{openssl}\nA:x86_64\no:openssl\n\n\
         P:libssl3\nV:{openssl}\nA:x86_64\no:openssl\n\n\
         P:busybox\nV:1.36.1-r15\nA:x86_64\no:busybox\n"
    );
    let os = format!("ID=alpine\nVERSION_ID={release}\n");
    let path = dir.join(format!("alpine-{release}-{openssl}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path)?);
    for (name, text) in [
        ("etc/os-release", os.as_str()),
        ("lib/apk/db/installed", installed.as_str()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name)?;
        h.set_size(text.len() as u64);
        h.set_cksum();
        b.append(&h, text.as_bytes())?;
    }
    b.finish()?;
    Ok(path)
}

#[test]
fn alpine_origins_fixed_versions_and_releases() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = db_of("alpine")?;

    let old = analyze_layer(&alpine_layer(dir.path(), "3.19.0", "3.1.4-r2")?)?;
    let m = match_analysis(&old, &db);
    let got: Vec<(&str, &str, Option<&str>)> = m
        .findings
        .iter()
        .map(|f| (f.id.as_str(), f.package.as_str(), f.fixed.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("ALPINE-CVE-2023-6129", "libcrypto3", Some("3.1.4-r3")),
            ("ALPINE-CVE-2023-6237", "libcrypto3", Some("3.1.4-r4")),
            ("ALPINE-CVE-2024-0727", "libcrypto3", Some("3.1.4-r5")),
            ("ALPINE-CVE-2023-6129", "libssl3", Some("3.1.4-r3")),
            ("ALPINE-CVE-2023-6237", "libssl3", Some("3.1.4-r4")),
            ("ALPINE-CVE-2024-0727", "libssl3", Some("3.1.4-r5")),
        ]
    );
    assert!(
        m.findings
            .iter()
            .all(|f| f.ecosystem == "Alpine:v3.19" && f.matched_name == "openssl")
    );

    // At the last fix: nothing. busybox's record is for v3.16 only.
    let new = analyze_layer(&alpine_layer(dir.path(), "3.19.1", "3.1.4-r5")?)?;
    assert!(match_analysis(&new, &db).findings.is_empty());
    // Another release: the v3.19 records do not apply.
    let other = analyze_layer(&alpine_layer(dir.path(), "3.18.6", "3.1.4-r2")?)?;
    assert!(match_analysis(&other, &db).findings.is_empty());
    Ok(())
}

#[test]
fn database_file_round_trip_zip_import_and_bad_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The OSV dumps' format: a zip of records, plus one malformed member.
    let zip_path = dir.path().join("all.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path)?);
        let opts = zip::write::SimpleFileOptions::default();
        for sub in ["debian", "alpine"] {
            for entry in std::fs::read_dir(data(sub))? {
                let path = entry?.path();
                zip.start_file(path.file_name().context("name")?.to_string_lossy(), opts)?;
                std::io::Write::write_all(&mut zip, &std::fs::read(&path)?)?;
            }
        }
        zip.start_file("BROKEN-1.json", opts)?;
        std::io::Write::write_all(&mut zip, b"{\"id\": \"BROKEN-1\", \"affected\": [")?;
        zip.finish()?;
    }
    let (db, report) = Database::import_osv(&zip_path, "2026-11-26T00:00:00Z".into())?;
    assert_eq!(report.kept, 10);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].contains("all.zip:BROKEN-1.json: not an OSV record"),
        "{:?}",
        report.errors
    );
    assert_eq!(db.meta.ecosystems.get("Debian:12"), Some(&6));
    assert_eq!(db.meta.ecosystems.get("Debian:11"), Some(&3));

    let file = dir.path().join("vulns.db");
    db.write(&file)?;
    let back = Database::read(&file)?;
    assert_eq!(back.meta, db.meta);
    let ids = |d: &Database| {
        d.advisories()
            .iter()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&back), ids(&db));

    // Damaged files: each a clear error.
    let bytes = std::fs::read(&file)?;
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
    let e = Database::read(&cut).expect_err("truncated");
    assert!(matches!(e, DbError::Format { .. }), "{e}");
    let wrong = dir.path().join("wrong.db");
    std::fs::write(&wrong, b"{\"not\": \"a database\"}\n")?;
    let e = Database::read(&wrong).expect_err("not a db");
    assert!(
        e.to_string()
            .contains("not a Sightline vulnerability database"),
        "{e}"
    );
    std::fs::write(&wrong, b"sightline-vulndb 9\n")?;
    let e = Database::read(&wrong).expect_err("newer");
    assert!(
        e.to_string()
            .contains("format 9 is newer than this program reads (1)"),
        "{e}"
    );
    let e = Database::import_osv(dir.path().join("nothing-here").as_path(), String::new())
        .expect_err("missing");
    assert!(e.to_string().contains("nothing-here"), "{e}");
    Ok(())
}

/// A layer of `(path, content, mode)` entries.
fn layer_of(path: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(path)?);
    for (name, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(name)?;
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append(&h, *data)?;
    }
    b.finish()?;
    Ok(())
}

#[test]
fn language_packages_match_their_ecosystems_advisories() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A real Go binary linking golang.org/x/text v0.3.7, and etcd (whose
    // gorilla/websocket v1.4.2 is past its advisory's fix).
    let text_app = sightline_testenv::binaries::go_program(
        &dir.path().join("textapp"),
        "module example.com/textapp\n\ngo 1.21\n\nrequire golang.org/x/text v0.3.7\n",
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"golang.org/x/text/language\"\n)\n\n\
         func main() {\n\tt, _, _ := language.ParseAcceptLanguage(\"en-US\")\n\tfmt.Println(t)\n}\n",
    )?;
    let etcd = sightline_testenv::Binaries::ensure()?.etcd;
    let cargo_lock = "version = 3\n\n\
        [[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n\
        [[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n\
        [[package]]\nname = \"smallvec\"\nversion = \"1.16.6\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
    let package_lock = r#"{"name": "web", "lockfileVersion": 3, "packages": {
        "": {"name": "web", "version": "1.0.0"},
        "node_modules/lodash": {"version": "4.17.20"},
        "node_modules/legacy": {"version": "1.0.0"},
        "node_modules/legacy/node_modules/lodash": {"version": "4.17.21"}}}"#;
    let requests = "Metadata-Version: 2.1\nName: Requests\nVersion: 2.30.0\n";
    let toolbelt = "Metadata-Version: 2.1\nName: requests-toolbelt\nVersion: 1.0.0\n";
    let layer = dir.path().join("lang.tar");
    layer_of(
        &layer,
        &[
            ("srv/app/Cargo.lock", cargo_lock.as_bytes(), 0o644),
            ("srv/web/package-lock.json", package_lock.as_bytes(), 0o644),
            (
                "usr/lib/python3/dist-packages/requests-2.30.0.dist-info/METADATA",
                requests.as_bytes(),
                0o644,
            ),
            (
                "usr/lib/python3/dist-packages/requests_toolbelt-1.0.0.dist-info/METADATA",
                toolbelt.as_bytes(),
                0o644,
            ),
            ("usr/local/bin/textapp", &std::fs::read(&text_app)?, 0o755),
            ("usr/local/bin/etcd", &std::fs::read(&etcd)?, 0o755),
        ],
    )?;
    let analysis = analyze_layer(&layer)?;
    assert!(analysis.warnings.is_empty(), "{:?}", analysis.warnings);
    let m = match_analysis(&analysis, &db_of("lang")?);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let got: BTreeSet<(&str, &str, &str, Option<&str>, Level)> = m
        .findings
        .iter()
        .map(|f| {
            (
                f.id.as_str(),
                f.package.as_str(),
                f.version.as_str(),
                f.fixed.as_deref(),
                f.severity.level,
            )
        })
        .collect();
    // Not: smallvec 1.16.6, the nested lodash 4.17.21, requests-toolbelt
    // (another package despite the prefix), etcd's websocket v1.4.2.
    assert_eq!(
        got,
        BTreeSet::from([
            (
                "GHSA-35jh-r3h4-6jhm",
                "lodash",
                "4.17.20",
                Some("4.17.21"),
                Level::High
            ),
            (
                "GHSA-j8r2-6x86-q33q",
                "requests",
                "2.30.0",
                Some("2.31.0"),
                Level::Medium
            ),
            (
                "GO-2022-1059",
                "golang.org/x/text",
                "v0.3.7",
                Some("0.3.8"),
                Level::Unknown
            ),
            (
                "RUSTSEC-2021-0003",
                "smallvec",
                "1.6.0",
                Some("1.6.1"),
                Level::Critical
            ),
        ])
    );
    assert!(
        analysis
            .packages
            .iter()
            .any(|p| p.name == "github.com/gorilla/websocket" && p.version == "v1.4.2"),
        "etcd links the websocket module the advisory's fix is older than"
    );
    Ok(())
}

#[test]
fn every_installed_copy_of_a_package_is_listed_and_matched() -> Result<()> {
    // Two apps each ship lodash 4.17.20; the first's lockfile names it
    // too, and names minimist, which is not installed anywhere.
    let dir = tempfile::tempdir()?;
    let lock = r#"{"name": "a", "lockfileVersion": 3, "packages": {
        "": {"name": "a", "version": "1.0.0"},
        "node_modules/lodash": {"version": "4.17.20"},
        "node_modules/minimist": {"version": "1.2.5"}}}"#;
    let lodash = r#"{"name": "lodash", "version": "4.17.20"}"#;
    let layer = dir.path().join("copies.tar");
    layer_of(
        &layer,
        &[
            ("srv/a/package-lock.json", lock.as_bytes(), 0o644),
            (
                "srv/a/node_modules/lodash/package.json",
                lodash.as_bytes(),
                0o644,
            ),
            (
                "srv/b/node_modules/lodash/package.json",
                lodash.as_bytes(),
                0o644,
            ),
        ],
    )?;
    let analysis = analyze_layer(&layer)?;
    let npm: Vec<(&str, &str)> = analysis
        .packages
        .iter()
        .filter(|p| p.purl.starts_with("pkg:npm/"))
        .map(|p| (p.name.as_str(), p.path.as_str()))
        .collect();
    assert_eq!(
        npm,
        [
            ("lodash", "srv/a/node_modules/lodash/package.json"),
            ("lodash", "srv/b/node_modules/lodash/package.json"),
            // Only the lockfile knows it: listed from there.
            ("minimist", "srv/a/package-lock.json"),
        ]
    );
    let m = match_analysis(&analysis, &db_of("lang")?);
    let lodash: Vec<(&str, &str)> = m
        .findings
        .iter()
        .filter(|f| f.package == "lodash")
        .map(|f| (f.id.as_str(), f.path.as_str()))
        .collect();
    assert_eq!(
        lodash,
        [
            (
                "GHSA-35jh-r3h4-6jhm",
                "srv/a/node_modules/lodash/package.json"
            ),
            (
                "GHSA-35jh-r3h4-6jhm",
                "srv/b/node_modules/lodash/package.json"
            ),
        ],
        "each copy is a finding of its own"
    );
    Ok(())
}

#[test]
fn a_single_file_egg_info_is_a_python_package() -> Result<()> {
    // distutils (and old setuptools) install metadata as one file.
    let dir = tempfile::tempdir()?;
    let layer = dir.path().join("egg.tar");
    let pkg_info = "Metadata-Version: 1.1\nName: Legacy_Dist\nVersion: 0.9.2\n";
    layer_of(
        &layer,
        &[
            (
                "usr/lib/python3/dist-packages/Legacy_Dist-0.9.2.egg-info",
                pkg_info.as_bytes(),
                0o644,
            ),
            // Not metadata: a file of that name anywhere else.
            ("srv/readme.egg-info", b"Name: nope\nVersion: 1\n", 0o644),
        ],
    )?;
    let analysis = analyze_layer(&layer)?;
    let found: Vec<(&str, &str, &str)> = analysis
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [(
            "legacy-dist",
            "0.9.2",
            "usr/lib/python3/dist-packages/Legacy_Dist-0.9.2.egg-info"
        )]
    );
    assert_eq!(analysis.packages[0].purl, "pkg:pypi/legacy-dist@0.9.2");
    Ok(())
}
