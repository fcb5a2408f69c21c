//! rpm's SQLite database as rpm itself writes it: packages built with
//! rpmbuild and recorded with `rpm --justdb` (Debian's rpm 4.18, whose
//! default backend is SQLite), then read from an image layer; the expected
//! list is what `rpm -qa` says about the same database.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use sightline_scan::{Analyzer, LayerExpect, Limits};
use sightline_testenv::docker::{check_packages, checked};

fn spec(dir: &Path, name: &str, epoch: Option<u32>, version: &str, release: &str) -> Result<()> {
    let epoch = epoch.map(|e| format!("Epoch: {e}\n")).unwrap_or_default();
    std::fs::write(
        dir.join("SPECS").join(format!("{name}.spec")),
        format!(
            "Name: {name}\nVersion: {version}\nRelease: {release}\n{epoch}Summary: test\nLicense: MIT\nBuildArch: noarch\n%description\nA test package.\n%files\n"
        ),
    )?;
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("--define")
        .arg(format!("_topdir {}", dir.display()))
        .arg("-bb")
        .arg(dir.join("SPECS").join(format!("{name}.spec")));
    checked(cmd, "rpmbuild")?;
    Ok(())
}

fn layer(path: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(path)?);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(name)?;
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *data)?;
    }
    b.finish()?;
    Ok(())
}

#[test]
fn rpm_sqlite_database_matches_rpm_qa() -> Result<()> {
    check_packages()?;
    let dir = tempfile::tempdir()?;
    let top = dir.path();
    std::fs::create_dir_all(top.join("SPECS"))?;
    spec(top, "hello-sightline", Some(2), "1.2.3", "4.el9")?;
    spec(top, "libdemo", None, "0.9", "1.el9")?;
    let db = top.join("db");
    let rpm = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new("rpm");
        cmd.arg("--dbpath").arg(&db).args(args);
        Ok(checked(cmd, "rpm")?)
    };
    rpm(&["--initdb"])?;
    for entry in std::fs::read_dir(top.join("RPMS/noarch"))? {
        let p = entry?.path().display().to_string();
        rpm(&["-i", "--justdb", "--nodeps", &p])?;
    }
    let want: BTreeSet<(String, String, String)> = rpm(&[
        "-qa",
        "--qf",
        "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
    ])?
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        let evr = f.get(1)?.strip_prefix("0:").unwrap_or(f.get(1)?).to_owned();
        Some((f.first()?.to_string(), evr, f.get(2)?.to_string()))
    })
    .collect();
    assert_eq!(want.len(), 2, "{want:?}");

    let sqlite = std::fs::read(db.join("rpmdb.sqlite"))?;
    let os = b"NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"9.3\"\n";
    let tar = top.join("layer.tar");
    layer(
        &tar,
        &[
            ("etc/os-release", os),
            ("var/lib/rpm/rpmdb.sqlite", &sqlite),
        ],
    )?;
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(&tar)?, &LayerExpect::default())?;
    let analysis = a.finish();
    assert!(analysis.warnings.is_empty(), "{:?}", analysis.warnings);
    let got: BTreeSet<(String, String, String)> = analysis
        .packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone(),
                p.arch.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let hello = &analysis.packages[0];
    assert_eq!(
        hello.purl,
        "pkg:rpm/rocky/hello-sightline@1.2.3-4.el9?arch=noarch&distro=rocky-9.3&epoch=2"
    );
    assert_eq!(
        hello.source.as_ref().map(|s| s.name.as_str()),
        Some("hello-sightline")
    );

    // A BerkeleyDB database is named as unread, not mistaken for "no packages".
    layer(
        &tar,
        &[("var/lib/rpm/Packages", b"\0\x06\x15\x61 not read")],
    )?;
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(&tar)?, &LayerExpect::default())?;
    let analysis = a.finish();
    assert!(analysis.packages.is_empty());
    assert!(
        analysis
            .warnings
            .iter()
            .any(|w| w.contains("BerkeleyDB format, which is not read")),
        "{:?}",
        analysis.warnings
    );
    Ok(())
}
