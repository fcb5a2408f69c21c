//! `sightline db import|info` and `sightline vulns` as a user runs them: a
//! database built from OSV records (the scanner's test records, real IDs and
//! ranges), an image made by a real dockerd and exported with `docker
//! save`, and the errors a user meets.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use sightline_testenv::docker::Docker;

fn sightline(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .env_remove("SIGHTLINE_DB")
        .args(args)
        .output()
        .context("running sightline")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn osv_records() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensors/scan/tests/data/osv")
}

#[test]
fn import_then_list_an_images_vulnerabilities() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("vulns.db");
    let db_s = db.display().to_string();
    let out = sightline(&[
        "db",
        "import",
        &osv_records().display().to_string(),
        "-o",
        &db_s,
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("10 advisories from 10 files"), "{said}");
    assert!(said.contains("Alpine:v3.19"), "{said}");
    let out = sightline(&["db", "info", &db_s])?;
    assert!(
        text(&out.stdout).contains("10 advisories"),
        "{}",
        text(&out.stdout)
    );

    // An Alpine 3.19.0 image with an older OpenSSL build, made by dockerd.
    let docker = Docker::start()?;
    docker.import_files(
        "cli-test/alpine:old",
        &[
            ("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.0\nPRETTY_NAME=\"Alpine Linux v3.19\"\n"),
            (
                "lib/apk/db/installed",
                b"P:libcrypto3\nV:3.1.4-r2\nA:x86_64\no:openssl\n\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n",
            ),
        ],
    )?;
    let archive = docker.save("cli-test/alpine:old")?;
    let image = format!("docker-archive:{}", archive.display());

    let out = sightline(&["vulns", &image, "--db", &db_s])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "cli-test/alpine:old (Alpine Linux v3.19, 2 packages)"
    );
    assert!(lines[1].starts_with("SEVERITY  ID"), "{table}");
    let rows: Vec<Vec<&str>> = lines[2..5]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            [
                "unknown",
                "ALPINE-CVE-2023-6129",
                "libcrypto3",
                "3.1.4-r2",
                "3.1.4-r3"
            ],
            [
                "unknown",
                "ALPINE-CVE-2023-6237",
                "libcrypto3",
                "3.1.4-r2",
                "3.1.4-r4"
            ],
            [
                "unknown",
                "ALPINE-CVE-2024-0727",
                "libcrypto3",
                "3.1.4-r2",
                "3.1.4-r5"
            ],
        ]
    );
    assert_eq!(lines[5], "3 findings: 3 unknown");

    let out = sightline(&["vulns", &image, "--db", &db_s, "-o", "json"])?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["findings"][0]["matchedName"], "openssl");
    assert_eq!(
        json["findings"][0]["purl"],
        "pkg:apk/alpine/libcrypto3@3.1.4-r2?arch=x86_64&distro=alpine-3.19.0"
    );

    // `docker save IMAGE | sightline vulns docker-archive:-`: one pass, no seeking.
    let out = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["vulns", "docker-archive:-", "--db", &db_s])
        .stdin(std::fs::File::open(&archive)?)
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), table, "the same result from a pipe");

    // What users get wrong.
    let out = sightline(&["vulns", "debian:12", "--db", &db_s])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("name an image as docker-archive:PATH[:TAG]"),
        "{}",
        text(&out.stderr)
    );
    let missing = dir.path().join("none.db").display().to_string();
    let out = sightline(&["vulns", &image, "--db", &missing])?;
    assert!(
        text(&out.stderr).contains("build it with `sightline db import"),
        "{}",
        text(&out.stderr)
    );
    let out = sightline(&[
        "vulns",
        &format!("docker-archive:{}:no/such:tag", archive.display()),
        "--db",
        &db_s,
    ])?;
    assert!(
        text(&out.stderr).contains("has no image tagged 'no/such:tag'"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}
