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
        // The old spelling of --output-file, still accepted.
        "-o",
        &db_s,
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("15 advisories from 15 files"), "{said}");
    assert!(said.contains("Alpine:v3.19"), "{said}");
    let out = sightline(&["db", "info", &db_s])?;
    assert!(
        text(&out.stdout).contains("15 advisories"),
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

    // Straight from the engine: docker:IMAGE.
    let from_engine = |host: &str| -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_sightline"))
            .env("DOCKER_HOST", host)
            .args(["vulns", "docker:cli-test/alpine:old", "--db", &db_s])
            .output()?)
    };
    let out = from_engine(&format!("unix://{}", docker.socket().display()))?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        table,
        "the same result from the Docker API"
    );
    let out = from_engine("unix:///nonexistent/docker.sock")?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/docker.sock"),
        "{}",
        text(&out.stderr)
    );

    // SBOMs of the same image: CycloneDX validated against its official
    // schema, SPDX checked for what the SPDX 2.3 specification requires.
    let out = sightline(&["sbom", &image, "-o", "cyclonedx-json"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bom: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let schema_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/schema");
    let load = |name: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(
            schema_dir.join(name),
        )?)?)
    };
    let validator = jsonschema::options()
        .with_resource(
            "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json",
            jsonschema::Resource::from_contents(load("spdx.SNAPSHOT.schema.json")?)?,
        )
        .with_resource(
            "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json",
            jsonschema::Resource::from_contents(load("jsf-0.82.SNAPSHOT.schema.json")?)?,
        )
        .build(&load("bom-1.5.SNAPSHOT.schema.json")?)
        .map_err(|e| anyhow::anyhow!("the CycloneDX schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&bom)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut broken = bom.clone();
    broken["components"][1]["type"] = "gadget".into();
    assert!(
        !validator.is_valid(&broken),
        "the validator does reject a bad component type"
    );
    let libcrypto = bom["components"]
        .as_array()
        .context("components")?
        .iter()
        .find(|c| c["name"] == "libcrypto3")
        .context("libcrypto3 in the BOM")?;
    assert_eq!(
        libcrypto["purl"],
        "pkg:apk/alpine/libcrypto3@3.1.4-r2?arch=x86_64&distro=alpine-3.19.0"
    );
    assert_eq!(bom["components"][0]["type"], "operating-system");
    assert_eq!(bom["metadata"]["component"]["name"], "cli-test/alpine:old");

    // `--format` is the old spelling; `--output-file` writes the document.
    let written = tempfile::NamedTempFile::new()?;
    let out = sightline(&[
        "sbom",
        &image,
        "--format",
        "spdx-json",
        "--output-file",
        &written.path().display().to_string(),
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "the document goes to the file only");
    let out = std::process::Output {
        stdout: std::fs::read(written.path())?,
        ..out
    };
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    let created = doc["creationInfo"]["created"].as_str().context("created")?;
    assert!(
        created.len() == 20 && created.ends_with('Z'),
        "YYYY-MM-DDThh:mm:ssZ: {created}"
    );
    let packages = doc["packages"].as_array().context("packages")?;
    assert_eq!(packages.len(), 4, "image, OS, two packages");
    let ids: std::collections::HashSet<&str> = packages
        .iter()
        .filter_map(|p| p["SPDXID"].as_str())
        .collect();
    assert_eq!(ids.len(), 4, "unique SPDX IDs");
    for r in doc["relationships"].as_array().context("relationships")? {
        for end in ["spdxElementId", "relatedSpdxElement"] {
            let id = r[end].as_str().context("relationship end")?;
            assert!(
                id == "SPDXRef-DOCUMENT" || ids.contains(id),
                "dangling relationship {r}"
            );
        }
    }

    // What users get wrong.
    // (Not a reference at all: a well-formed one would be looked up in a
    // registry, and tests reach nothing but loopback.)
    let out = sightline(&["vulns", "Debian 12", "--db", &db_s])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not an image reference")
            && text(&out.stderr).contains("docker-archive:PATH[:TAG]"),
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
