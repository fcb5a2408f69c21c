//! `sightline bundle keygen|export|verify` as an air-gapped user runs them:
//! a key, a bundle of a database built from the scanner's test records and
//! of the catalog, checked with the right key and refused with another.
//! (`bundle import` against the real operator: operator/tests/vulndb.rs.)

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};

fn sightline(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .env_remove("SIGHTLINE_DB")
        .env_remove("SIGHTLINE_BUNDLE_KEYS")
        .args(args)
        .output()
        .context("running sightline")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `ed25519:…` line keygen printed.
fn public_key(out: &Output) -> Result<String> {
    text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ed25519:"))
        .map(str::to_owned)
        .context("keygen printed no public key")
}

#[test]
fn export_then_verify_with_the_right_key_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name).display().to_string();
    let records = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensors/scan/tests/data/osv");
    let out = sightline(&[
        "db",
        "import",
        &records.display().to_string(),
        "--output-file",
        &p("vulns.db"),
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sightline(&["bundle", "keygen", "--output-file", &p("signing.pem")])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = public_key(&out)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p("signing.pem"))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = sightline(&["bundle", "keygen", "--output-file", &p("signing.pem")])?;
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    let other = public_key(&sightline(&[
        "bundle",
        "keygen",
        "--output-file",
        &p("other.pem"),
    ])?)?;

    let digest = "a".repeat(64);
    let image = format!("sensor=registry.example/sightline/sensor@sha256:{digest}");
    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/catalog");
    let out = sightline(&[
        "bundle",
        "export",
        "--db",
        &p("vulns.db"),
        "--key",
        &p("signing.pem"),
        "--catalog",
        &catalog.display().to_string(),
        "--image",
        &image,
        "--output-file",
        &p("airgap.bundle"),
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sightline(&[
        "bundle",
        "verify",
        &p("airgap.bundle"),
        "--public-key",
        &key,
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for want in [
        "15 advisories",
        "catalog/taxonomy.yaml",
        "catalog    version",
        &image.replace('=', ": "),
    ] {
        assert!(said.contains(want), "{want:?} missing from {said}");
    }

    let out = sightline(&[
        "bundle",
        "verify",
        &p("airgap.bundle"),
        "--public-key",
        &other,
    ])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not among the trusted keys"),
        "{}",
        text(&out.stderr)
    );

    // An image not pinned by digest is a usage error, before anything is written.
    let out = sightline(&[
        "bundle",
        "export",
        "--db",
        &p("vulns.db"),
        "--key",
        &p("signing.pem"),
        "--image",
        "sensor=registry.example/sightline/sensor:latest",
        "--output-file",
        &p("never.bundle"),
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pinned by digest"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("never.bundle").exists());
    Ok(())
}
