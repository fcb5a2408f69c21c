//! `sightline scan image`, the CI sensor, as a pipeline runs it: images
//! from an archive and from a real registry, every gate and its exit
//! code, each output format checked by an independent reader (SARIF and
//! CycloneDX by their JSON schemas, SPDX by the SPDX project's own
//! validator, JUnit parsed back), and `--report` into a real cluster's
//! inventory through the operator, with an activation key's token.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sightline_crds::asset::asset_name;
use sightline_crds::{ActivationKey, Asset, AssetKind};
use sightline_testenv::archive::{Layer, LayerTar, RunConfig, docker_archive};
use sightline_testenv::process::{Proc, free_port};
use sightline_testenv::registry::{Auth, Registry};
use sightline_testenv::{ControlPlane, Options, helpers};

fn sightline(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sightline"));
    cmd.args(args).env("CI", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An Alpine 3.22 image (supported today) holding language packages with
/// real advisories: smallvec 1.6.0 (critical), lodash 4.17.20 (high),
/// requests 2.30.0 (medium).
fn app_image(dir: &Path) -> Result<(PathBuf, String)> {
    let mut layer = LayerTar::create(&dir.join("app.layer.tar"))?;
    layer
        .dir("etc", 0o755)?
        .file("etc/os-release", b"ID=alpine\nVERSION_ID=3.22.1\nPRETTY_NAME=\"Alpine Linux v3.22\"\n", 0o644)?
        .file(
            "srv/app/Cargo.lock",
            b"version = 3\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
            0o644,
        )?
        .file(
            "srv/web/package-lock.json",
            br#"{"name": "web", "lockfileVersion": 3, "packages": {"": {"name": "web"}, "node_modules/lodash": {"version": "4.17.20"}}}"#,
            0o644,
        )?
        .file(
            "usr/lib/python3/site-packages/requests-2.30.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.30.0\n",
            0o644,
        )?;
    let archive = dir.join("app.tar");
    let id = docker_archive(
        &["ci/app:1.0"],
        &[layer.finish()?],
        &RunConfig::default(),
        &archive,
    )?;
    Ok((archive, id))
}

fn osv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensors/scan/tests/data/osv")
}

fn import_db(dir: &Path) -> Result<PathBuf> {
    let db = dir.join("vulns.db");
    let out = sightline(
        &[
            "db",
            "import",
            &osv().display().to_string(),
            "--output-file",
            &db.display().to_string(),
        ],
        &[],
    )?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    Ok(db)
}

#[test]
fn gates_exit_codes_and_formats() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = import_db(dir.path())?;
    let db_s = db.display().to_string();
    let (archive, _) = app_image(dir.path())?;
    let image = format!("docker-archive:{}", archive.display());
    let scan = |extra: &[&str]| -> Result<Output> {
        let mut args = vec!["scan", "image", &image, "--db", &db_s];
        args.extend(extra);
        sightline(&args, &[])
    };
    let code = |o: &Output| o.status.code().unwrap_or(-1);

    // No gate: passes, and the table lists the three findings.
    let o = scan(&[])?;
    ensure!(code(&o) == 0, "{}", text(&o.stderr));
    let table = text(&o.stdout);
    for id in [
        "RUSTSEC-2021-0003",
        "GHSA-35jh-r3h4-6jhm",
        "GHSA-j8r2-6x86-q33q",
    ] {
        ensure!(table.contains(id), "{table}");
    }
    ensure!(table.contains("gate: passed"), "{table}");
    // Plain progress lines in CI, not a spinner.
    ensure!(
        text(&o.stderr).contains("] analysing docker-archive:"),
        "{}",
        text(&o.stderr)
    );

    for (flags, want) in [
        (&["--fail-on", "critical"][..], 1),
        (
            &["--fail-on", "critical", "--ignore", "RUSTSEC-2021-0003"][..],
            0,
        ),
        // Ignored by its CVE alias: the high lodash finding still fails.
        (&["--fail-on", "high", "--ignore", "CVE-2021-25900"][..], 1),
        (
            &[
                "--fail-on",
                "medium",
                "--ignore",
                "RUSTSEC-2021-0003",
                "--ignore",
                "GHSA-35jh-r3h4-6jhm",
            ][..],
            1,
        ),
        (&["--fail-on", "high", "--ignore-unfixed"][..], 1),
        // Alpine 3.22 is supported today.
        (&["--fail-on-eol"][..], 0),
    ] {
        let o = scan(flags)?;
        ensure!(
            code(&o) == want,
            "{flags:?}: exit {} (want {want}): {}{}",
            code(&o),
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    let o = scan(&["--fail-on", "critical"])?;
    ensure!(
        text(&o.stderr).contains("gate failed: 1 finding at or above critical (RUSTSEC-2021-0003)"),
        "{}",
        text(&o.stderr)
    );

    // A policy file, and flags adding to it.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "failOn: high\nignore: [RUSTSEC-2021-0003, GHSA-35jh-r3h4-6jhm]\n",
    )?;
    let p = policy.display().to_string();
    ensure!(code(&scan(&["--policy", &p])?) == 0);
    ensure!(code(&scan(&["--policy", &p, "--fail-on", "medium"])?) == 1);
    std::fs::write(&policy, "failOn: everything\n")?;
    let o = scan(&["--policy", &p])?;
    ensure!(
        code(&o) == 2 && text(&o.stderr).contains("policy file"),
        "{}",
        text(&o.stderr)
    );

    // Wrong use and impossible scans.
    let o = sightline(&["scan", "image", "UPPER/Case:1", "--db", &db_s], &[])?;
    ensure!(code(&o) == 2, "{}", text(&o.stderr));
    let o = sightline(
        &["scan", "image", &image, "--db", "/nonexistent/vulns.db"],
        &[],
    )?;
    ensure!(
        code(&o) == 3 && text(&o.stderr).contains("vulnerability database"),
        "{}",
        text(&o.stderr)
    );
    let port = free_port()?;
    let o = sightline(
        &[
            "scan",
            "image",
            &format!("127.0.0.1:{port}/nothing:1"),
            "--db",
            &db_s,
        ],
        &[],
    )?;
    ensure!(code(&o) == 3, "{}", text(&o.stderr));

    // An end-of-life OS: the debootstrap Debian 12 image.
    let debian = dir.path().join("debian.tar");
    docker_archive(
        &["ci/debian:12"],
        &[Layer::from_tar(
            &sightline_testenv::images::debian_rootfs()?
        )?],
        &RunConfig::default(),
        &debian,
    )?;
    let o = sightline(
        &[
            "scan",
            "image",
            &format!("docker-archive:{}", debian.display()),
            "--db",
            &db_s,
            "--fail-on-eol",
        ],
        &[],
    )?;
    ensure!(
        code(&o) == 1 && text(&o.stderr).contains("EndOfLife"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // SARIF against the SARIF 2.1.0 schema.
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/schema");
    let load = |name: &str| -> Result<Value> {
        Ok(serde_json::from_slice(&std::fs::read(schemas.join(name))?)?)
    };
    let o = scan(&["--fail-on", "high", "-o", "sarif"])?;
    let sarif: Value = serde_json::from_slice(&o.stdout)?;
    let validator = jsonschema::validator_for(&load("sarif-2.1.0-rtm.5.json")?)?;
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    ensure!(errors.is_empty(), "{errors:?}");
    let results = sarif["runs"][0]["results"].as_array().context("results")?;
    ensure!(results.len() == 3);
    let level = |id: &str| {
        results
            .iter()
            .find(|r| r["ruleId"] == id)
            .map(|r| r["level"].clone())
    };
    ensure!(level("RUSTSEC-2021-0003") == Some(json!("error")));
    ensure!(level("GHSA-j8r2-6x86-q33q") == Some(json!("warning")));
    ensure!(
        results.iter().any(
            |r| r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                == "srv/web/package-lock.json"
        ),
        "{results:?}"
    );

    // CycloneDX against its schema (`-f cyclonedx`: the old spellings still work).
    let o = scan(&["-f", "cyclonedx"])?;
    let old: Value = serde_json::from_slice(&o.stdout)?;
    ensure!(old["bomFormat"] == "CycloneDX", "{old}");
    let o = scan(&["-o", "cyclonedx-json"])?;
    let bom: Value = serde_json::from_slice(&o.stdout)?;
    let cdx = jsonschema::options()
        .with_resource(
            "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json",
            jsonschema::Resource::from_contents(load("spdx.SNAPSHOT.schema.json")?)?,
        )
        .with_resource(
            "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json",
            jsonschema::Resource::from_contents(load("jsf-0.82.SNAPSHOT.schema.json")?)?,
        )
        .build(&load("bom-1.5.SNAPSHOT.schema.json")?)?;
    let errors: Vec<String> = cdx.iter_errors(&bom).map(|e| e.to_string()).collect();
    ensure!(errors.is_empty(), "{errors:?}");
    // Its vulnerabilities: each finding, affecting a component of the document.
    let refs: Vec<&Value> = bom["components"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["bom-ref"])
        .collect();
    let vulns = bom["vulnerabilities"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<&str> = vulns.iter().filter_map(|v| v["id"].as_str()).collect();
    for id in [
        "RUSTSEC-2021-0003",
        "GHSA-35jh-r3h4-6jhm",
        "GHSA-j8r2-6x86-q33q",
    ] {
        ensure!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    ensure!(
        vulns.iter().all(|v| v["affects"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| refs.contains(&&x["ref"])))),
        "a vulnerability affects no component: {vulns:?}"
    );

    // An SBOM alone needs no database; a gate does.
    let none = ["scan", "image", &image, "--db", "/nonexistent/vulns.db"];
    let o = sightline(&[&none[..], &["-o", "cyclonedx-json"]].concat(), &[])?;
    ensure!(code(&o) == 0, "{}", text(&o.stderr));
    let packages_only: Value = serde_json::from_slice(&o.stdout)?;
    ensure!(packages_only["components"] == bom["components"]);
    ensure!(packages_only.get("vulnerabilities").is_none());
    ensure!(
        text(&o.stderr).contains("without vulnerabilities"),
        "{}",
        text(&o.stderr)
    );
    let o = sightline(
        &[&none[..], &["-o", "cyclonedx-json", "--fail-on", "high"]].concat(),
        &[],
    )?;
    ensure!(code(&o) == 3, "{}", text(&o.stderr));

    // SPDX with the SPDX project's validator.
    let spdx = dir.path().join("app.spdx.json");
    let o = scan(&[
        "-o",
        "spdx-json",
        "--output-file",
        &spdx.display().to_string(),
    ])?;
    ensure!(code(&o) == 0);
    let v = Command::new(sightline_testenv::binaries::spdx_validator()?)
        .arg("-i")
        .arg(&spdx)
        .output()?;
    ensure!(
        v.status.success(),
        "pyspdxtools: {}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    // The validator tells: the same document without its creation info fails.
    let mut broken: Value = serde_json::from_slice(&std::fs::read(&spdx)?)?;
    broken
        .as_object_mut()
        .context("an SPDX object")?
        .remove("creationInfo");
    let broken_path = dir.path().join("broken.spdx.json");
    std::fs::write(&broken_path, serde_json::to_vec(&broken)?)?;
    let v = Command::new(sightline_testenv::binaries::spdx_validator()?)
        .arg("-i")
        .arg(&broken_path)
        .output()?;
    ensure!(
        !v.status.success(),
        "pyspdxtools accepted a document without creationInfo"
    );

    // JUnit, parsed back.
    let o = scan(&["--fail-on", "high", "-o", "junit"])?;
    ensure!(code(&o) == 1);
    let xml = text(&o.stdout);
    let doc = roxmltree::Document::parse(&xml)?;
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .context("testsuite")?;
    ensure!(
        suite.attribute("tests") == Some("4") && suite.attribute("failures") == Some("2"),
        "{xml}"
    );
    let failed: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase") && n.children().any(|c| c.has_tag_name("failure")))
        .filter_map(|n| n.attribute("name"))
        .collect();
    ensure!(
        failed.len() == 2 && failed.iter().any(|n| n.starts_with("RUSTSEC-2021-0003")),
        "{failed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_a_registry_image_and_reports_it_to_the_cluster() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = import_db(dir.path())?;
    let db_s = db.display().to_string();
    let reg = Registry::start(Auth::Anonymous, false)?;
    let (archive, id) = app_image(dir.path())?;
    reg.push(
        &format!("docker-archive:{}", archive.display()),
        "ci/app",
        "1.0",
    )?;
    let reference = format!("{}/ci/app:1.0", reg.host);

    // The cluster: a control plane, the operator, a key and its token.
    let cp = ControlPlane::start(Options::default()).await?;
    let client = cp.client();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "sightline-system"}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let port = free_port()?;
    let mut cmd = Command::new(sightline_testenv::binaries::workspace_binary(
        "sightline-operator",
    )?);
    cmd.env("KUBECONFIG", &cp.kubeconfig).args([
        "--namespace",
        "sightline-system",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--leader-election=false",
    ]);
    let _operator = Proc::spawn("operator", cmd, &dir.path().join("operator.log"))?;
    let key: ActivationKey = serde_json::from_value(json!({
        "metadata": {"name": "pipeline"},
        "spec": {"modules": ["inventory", "vulnerability"], "tags": {"stage": "build"}},
    }))?;
    Api::<ActivationKey>::all(client.clone())
        .create(&PostParams::default(), &key)
        .await?;
    let token = helpers::wait_for("the key's token", Duration::from_secs(60), || async {
        let out = sightline(
            &["keys", "token", "pipeline"],
            &[("KUBECONFIG", &cp.kubeconfig.display().to_string())],
        )
        .ok()?;
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_owned())
    })
    .await?;
    let api = format!("http://127.0.0.1:{port}");
    helpers::wait_for("the operator's API", Duration::from_secs(60), || async {
        reqwest::get(format!("{api}/readyz"))
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await?;

    let o = sightline(
        &[
            "scan", "image", &reference, "--db", &db_s, "-o", "json", "--report", &api,
        ],
        &[("SIGHTLINE_KEY_TOKEN", &token)],
    )?;
    ensure!(o.status.success(), "{}", text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout)?;
    ensure!(report["image"]["configDigest"] == id.as_str(), "{report}");
    ensure!(
        report["vulnerabilities"]
            .as_array()
            .is_some_and(|v| v.len() == 3)
    );

    let assets: Api<Asset> = Api::all(client.clone());
    let status = helpers::wait_for("the reported Asset", Duration::from_secs(30), || async {
        let a = assets
            .get_opt(&asset_name(AssetKind::ContainerImage, &id))
            .await
            .ok()??;
        serde_json::to_value(a.status?).ok()
    })
    .await?;
    ensure!(status["sources"][0]["sensor"] == "ci/pipeline", "{status}");
    ensure!(status["sources"][0]["type"] == "ci");
    ensure!(
        status["sources"][0]["reference"] == reference.as_str(),
        "{status}"
    );
    ensure!(
        status["findings"]["vulnerabilities"]["critical"] == 1,
        "{status}"
    );
    ensure!(
        status["findings"]["vulnerabilities"]["high"] == 1,
        "{status}"
    );

    // A token that is no key's: refused, and the scan says so (exit 3).
    let o = sightline(
        &["scan", "image", &reference, "--db", &db_s, "--report", &api],
        &[("SIGHTLINE_KEY_TOKEN", "not-a-token")],
    )?;
    ensure!(
        o.status.code() == Some(3) && text(&o.stderr).contains("401"),
        "{}",
        text(&o.stderr)
    );
    // A disabled key may not report.
    Api::<ActivationKey>::all(client.clone())
        .patch(
            "pipeline",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"disabled": true}})),
        )
        .await?;
    let o = sightline(
        &["scan", "image", &reference, "--db", &db_s, "--report", &api],
        &[("SIGHTLINE_KEY_TOKEN", &token)],
    )?;
    ensure!(
        o.status.code() == Some(3)
            && text(&o.stderr).contains("403")
            && text(&o.stderr).contains("disabled"),
        "{}",
        text(&o.stderr)
    );
    // --report without a token is wrong use.
    let o = sightline(
        &["scan", "image", &reference, "--db", &db_s, "--report", &api],
        &[],
    )?;
    ensure!(o.status.code() == Some(2), "{}", text(&o.stderr));
    Ok(())
}

#[test]
fn platform_picks_the_image_of_an_index() -> Result<()> {
    use sightline_testenv::archive::{PlatformImage, apk_layer, oci_index_layout};
    let dir = tempfile::tempdir()?;
    let layer = |name: &str, package: &str| {
        apk_layer(
            dir.path(),
            name,
            b"ID=alpine\nVERSION_ID=3.22.1\n",
            format!("P:{package}\nV:1.0-r0\nA:x86_64\no:{package}\n").as_bytes(),
        )
    };
    let (amd, arm) = (
        layer("amd", "only-on-amd64")?,
        layer("arm", "only-on-arm64")?,
    );
    let layout = dir.path().join("layout");
    oci_index_layout(
        &layout,
        "1",
        &[
            PlatformImage {
                architecture: "amd64",
                layers: &[amd],
                run: RunConfig::default(),
            },
            PlatformImage {
                architecture: "arm64",
                layers: &[arm],
                run: RunConfig::default(),
            },
        ],
    )?;
    let image = format!("oci-layout:{}:1", layout.display());
    let names = |o: &Output| -> Result<Vec<String>> {
        ensure!(o.status.success(), "{}", text(&o.stderr));
        let bom: Value = serde_json::from_slice(&o.stdout)?;
        Ok(bom["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] == "library")
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect())
    };
    for (platform, want) in [
        ("linux/arm64", "only-on-arm64"),
        ("linux/amd64", "only-on-amd64"),
    ] {
        let sbom = sightline(&["sbom", &image, "--platform", platform], &[])?;
        ensure!(names(&sbom)? == [want], "sbom --platform {platform}");
        let scan = sightline(
            &[
                "scan",
                "image",
                &image,
                "--platform",
                platform,
                "-o",
                "cyclonedx-json",
                "--db",
                "/nonexistent",
            ],
            &[],
        )?;
        ensure!(names(&scan)? == [want], "scan image --platform {platform}");
    }
    // A platform the index lacks is named, with those it has.
    let o = sightline(&["sbom", &image, "--platform", "linux/s390x"], &[])?;
    ensure!(!o.status.success());
    let err = text(&o.stderr);
    ensure!(
        err.contains("linux/s390x") && err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    // A malformed platform is wrong use.
    let o = sightline(&["sbom", &image, "--platform", "arm64"], &[])?;
    ensure!(o.status.code() == Some(2), "{}", text(&o.stderr));
    Ok(())
}
