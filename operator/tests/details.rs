//! The detail store against a real control plane and the real operator
//! binary, with each engine: a SQLite file (kept across a restart) and a
//! real PostgreSQL server shared by two replicas. An image analysed by
//! the real analyser is reported, its details sent, and its SBOM served
//! back with exactly the packages a local SBOM of the same image has;
//! findings keep their history; whoever may not send or read is refused.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use sightline_report::client::{Client, Credentials, Error};
use sightline_report::details::{FindingHistory, ImageDetails, VulnerabilityList};
use sightline_report::facts::ImageFacts;
use sightline_report::{ImageObservation, Observation};
use sightline_scan::source::Image;
use sightline_scan::vuln::{Finding, Level, Severity};
use sightline_testenv::archive::{RunConfig, apk_layer, docker_archive};
use sightline_testenv::helpers;
use support::{Env, key_secret, service_account_token};

/// A real image (an Alpine-style layer with three packages), analysed by
/// the real analyser.
fn analysed_image(dir: &Path, tag: &str, extra: &str) -> Result<Image> {
    let installed = format!(
        "P:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\nP:zlib\nV:1.3-r2\nA:x86_64\no:zlib\n\n\
         P:busybox\nV:1.36.1-r15\nA:x86_64\no:busybox\n\n{extra}"
    );
    let layer = apk_layer(
        dir,
        tag,
        b"ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n",
        installed.as_bytes(),
    )?;
    let archive = dir.join(format!("{tag}.tar"));
    docker_archive(&[tag], &[layer], &RunConfig::default(), &archive)?;
    let image = sightline_scan::source::docker_archive::analyze(
        &archive,
        None,
        &sightline_scan::Limits::default(),
    )?;
    ensure!(image.analysis.packages.len() >= 3, "{:?}", image.analysis);
    Ok(image)
}

fn finding(id: &str, package: &str, version: &str, level: Level) -> Finding {
    Finding {
        id: id.into(),
        aliases: vec![],
        package: package.into(),
        version: version.into(),
        purl: format!("pkg:apk/alpine/{package}@{version}"),
        matched_name: package.into(),
        ecosystem: "Alpine:v3.19".into(),
        fixed: Some("99".into()),
        severity: Severity {
            level,
            score: None,
            source: None,
        },
        summary: None,
        layer: 0,
        path: String::new(),
    }
}

fn observation(image: &Image) -> Observation {
    Observation::ContainerImage(ImageObservation {
        identity: image.config_digest.clone(),
        facts: ImageFacts {
            image_id: Some(image.config_digest.clone()),
            ..ImageFacts::default()
        },
        vulnerabilities: None,
        runtime: None,
        reference: Some("registry.example/app:1".into()),
    })
}

fn status_of(e: &Error) -> (u16, String) {
    match e {
        Error::Refused { status, reason, .. } => (*status, reason.clone()),
        other => (0, other.to_string()),
    }
}

/// GETs `path` of the operator's API as the holder of `token`: status and body.
async fn read(port: u16, path: &str, token: &str) -> Result<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The packages of an SBOM: CycloneDX components or SPDX packages, minus
/// the document's own image entry.
fn packages(doc: &Value) -> Vec<Value> {
    let list = doc
        .get("components")
        .or_else(|| doc.get("packages"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image")
        .collect()
}

struct Fixture {
    image: Image,
    unreported: Image,
    key_token: String,
    reader: String,
    stranger: String,
}

async fn prepare(env: &Env, dir: &Path) -> Result<Fixture> {
    env.apply(
        r#"
apiVersion: sightline.dev/v1alpha1
kind: ActivationKey
metadata: {name: ci}
spec:
  modules: [containerSecurity, vulnerability]
"#,
    )
    .await?;
    let key_token = helpers::wait_for("the key's token", Duration::from_secs(30), || async {
        key_secret(env, "ci").await?.get("token").cloned()
    })
    .await?;
    Ok(Fixture {
        image: analysed_image(dir, "app", "")?,
        unreported: analysed_image(dir, "other", "P:curl\nV:8.5.0-r0\nA:x86_64\no:curl\n\n")?,
        key_token,
        reader: service_account_token(env, "reader", true).await?,
        stranger: service_account_token(env, "stranger", false).await?,
    })
}

/// Reports the image and its details through `port`, and checks what the
/// store serves back (the SBOM's packages equal a local SBOM's), who is
/// refused, and the findings' history.
async fn report_and_read(port: u16, f: &Fixture) -> Result<()> {
    let api = format!("http://127.0.0.1:{port}");
    let ci = Client::new(&api, Credentials::Token(f.key_token.clone()), None)?;
    let receipt = ci.send(vec![observation(&f.image)], None).await?;
    ensure!(receipt.refused.is_empty(), "{receipt:?}");
    let asset = receipt.accepted[0].asset.clone();
    // The receipt says the store lacks this caller's details, so it sends them.
    ensure!(
        receipt.accepted[0].details_kept == Some(false),
        "{receipt:?}"
    );

    let first = vec![
        finding("CVE-2024-0001", "zlib", "1.3-r2", Level::High),
        finding("CVE-2024-0002", "busybox", "1.36.1-r15", Level::Critical),
    ];
    let kept = ci
        .send_details(&ImageDetails::new(f.image.clone(), Some(first.clone())))
        .await?;
    ensure!(kept.asset == asset, "{kept:?}");
    ensure!(kept.packages == f.image.analysis.packages.len());
    ensure!(kept.vulnerabilities == Some(2));
    let receipt = ci.send(vec![observation(&f.image)], None).await?;
    ensure!(
        receipt.accepted[0].details_kept == Some(true),
        "{receipt:?}"
    );

    // Details of an image the key never reported are refused and not kept.
    let Err(e) = ci
        .send_details(&ImageDetails::new(f.unreported.clone(), None))
        .await
    else {
        anyhow::bail!("details of an unreported image were kept");
    };
    ensure!(status_of(&e) == (409, "NotReported".into()), "{e}");

    // The SBOM has exactly the packages of a local SBOM of the same image.
    let tool = sightline_scan::sbom::Tool {
        name: "sightline".into(),
        version: "local".into(),
    };
    for (format, local) in [
        (
            "cyclonedx-json",
            sightline_scan::sbom::cyclonedx(&f.image, &tool, "2026-01-01T00:00:00Z"),
        ),
        (
            "spdx-json",
            sightline_scan::sbom::spdx(&f.image, &tool, "2026-01-01T00:00:00Z"),
        ),
    ] {
        let (status, body) = read(
            port,
            &format!("/api/v1/assets/{asset}/sbom?format={format}"),
            &f.reader,
        )
        .await?;
        ensure!(status == 200, "{format}: {status} {body}");
        let served: Value = serde_json::from_str(&body)?;
        ensure!(
            packages(&served) == packages(&local),
            "{format}: served {served:#}\nlocal {local:#}"
        );
        ensure!(!packages(&served).is_empty());
        if format == "cyclonedx-json" {
            // With the findings the key sent.
            let ids: Vec<&str> = served["vulnerabilities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["id"].as_str())
                .collect();
            ensure!(ids == ["CVE-2024-0001", "CVE-2024-0002"], "{ids:?}");
        }
    }
    let (status, body) = read(
        port,
        &format!("/api/v1/assets/{asset}/sbom?format=xml"),
        &f.reader,
    )
    .await?;
    ensure!(
        status == 400 && body.contains("cyclonedx-json"),
        "{status} {body}"
    );

    // Who may not get Assets reads nothing; nor does a missing token.
    let (status, body) = read(port, &format!("/api/v1/assets/{asset}/sbom"), &f.stranger).await?;
    ensure!(status == 403, "{status} {body}");
    let (status, _) = read(port, &format!("/api/v1/assets/{asset}/sbom"), "").await?;
    ensure!(status == 401, "{status}");
    // Nor may a key's token read (it is not a Kubernetes identity).
    let (status, _) = read(port, &format!("/api/v1/assets/{asset}/sbom"), &f.key_token).await?;
    ensure!(status == 401 || status == 403, "{status}");
    let (status, body) = read(port, "/api/v1/assets/containerimage-00/sbom", &f.reader).await?;
    ensure!(status == 404, "{status} {body}");

    // A later report without one finding resolves it in the history.
    ci.send_details(&ImageDetails::new(
        f.image.clone(),
        Some(vec![first[1].clone()]),
    ))
    .await?;
    let (status, body) = read(
        port,
        &format!("/api/v1/assets/{asset}/vulnerabilities"),
        &f.reader,
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    let list: VulnerabilityList = serde_json::from_str(&body)?;
    ensure!(
        list.matched && list.findings == vec![first[1].clone()],
        "{list:?}"
    );
    ensure!(list.source == "ci/ci", "{list:?}");
    let history = findings(port, &asset, &f.reader).await?;
    ensure!(history.findings.len() == 2, "{history:?}");
    let open = &history.findings[0];
    let resolved = &history.findings[1];
    ensure!(
        open.id == "CVE-2024-0002" && open.resolved.is_none() && open.severity == "critical",
        "{history:?}"
    );
    ensure!(
        resolved.id == "CVE-2024-0001" && resolved.resolved.is_some(),
        "{history:?}"
    );

    // The same details again change nothing but the times.
    ci.send_details(&ImageDetails::new(
        f.image.clone(),
        Some(vec![first[1].clone()]),
    ))
    .await?;
    let again = findings(port, &asset, &f.reader).await?;
    ensure!(again.findings.len() == 2);
    ensure!(again.findings[0].first_seen == open.first_seen);
    ensure!(again.findings[1].resolved == resolved.resolved, "{again:?}");
    Ok(())
}

/// A sender that starts a details body and never finishes it gets 408
/// once the operator's body timeout passes, and frees its upload slot.
async fn a_trickled_body_times_out(port: u16, f: &Fixture) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "POST /api/v1/details HTTP/1.1\r\nHost: operator\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"identity\":",
        f.key_token
    );
    conn.write_all(head.as_bytes()).await?;
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(
        sightline_operator::details::BODY_TIMEOUT + Duration::from_secs(30),
        conn.read(&mut answer),
    )
    .await??;
    let answer = String::from_utf8_lossy(&answer[..n]);
    ensure!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The slot is free again: details go through.
    let ci = Client::new(
        &format!("http://127.0.0.1:{port}"),
        Credentials::Token(f.key_token.clone()),
        None,
    )?;
    ci.send_details(&ImageDetails::new(f.image.clone(), None))
        .await?;
    Ok(())
}

async fn findings(port: u16, asset: &str, token: &str) -> Result<FindingHistory> {
    let (status, body) = read(port, &format!("/api/v1/assets/{asset}/findings"), token).await?;
    ensure!(status == 200, "{status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The SBOM's packages served for the fixture's image through `port`.
async fn served_packages(port: u16, f: &Fixture) -> Result<Vec<Value>> {
    let asset = ImageDetails::new(f.image.clone(), None).asset_name();
    let (status, body) = read(port, &format!("/api/v1/assets/{asset}/sbom"), &f.reader).await?;
    ensure!(status == 200, "{status} {body}");
    Ok(packages(&serde_json::from_str(&body)?))
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_keeps_details_across_a_restart() -> Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("store/details.db");
    let db = db.to_str().context("path")?;
    let flags = [
        "--leader-election=false",
        "--detail-store",
        db,
        "--detail-sweep-seconds",
        "1",
    ];
    let result = async {
        let before = {
            let op = env.operator_with("sqlite", &flags)?;
            op.wait_serving().await?;
            let f = prepare(&env, dir.path()).await?;
            report_and_read(op.port, &f).await?;
            a_trickled_body_times_out(op.port, &f).await?;
            (served_packages(op.port, &f).await?, f)
        };
        let (before, f) = before;
        // A new process on the same file serves the same details.
        let op = env.operator_with("sqlite-again", &flags)?;
        op.wait_serving().await?;
        let after = helpers::wait_for(
            "details after a restart",
            Duration::from_secs(30),
            || async { served_packages(op.port, &f).await.ok() },
        )
        .await?;
        ensure!(before == after);

        // An Asset that leaves the inventory takes its details along.
        let asset = ImageDetails::new(f.image.clone(), None).asset_name();
        let assets: kube::Api<sightline_crds::Asset> = kube::Api::all(env.client.clone());
        assets.delete(&asset, &Default::default()).await?;
        helpers::wait_for(
            "the details to be dropped",
            Duration::from_secs(30),
            || async {
                let (status, _) = read(op.port, &format!("/api/v1/assets/{asset}/sbom"), &f.reader)
                    .await
                    .ok()?;
                (status == 404).then_some(())
            },
        )
        .await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", env.dump());
    }
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_is_shared_by_replicas() -> Result<()> {
    let env = Env::start().await?;
    let pg = sightline_testenv::postgres::Postgres::start()?;
    let url = pg.url();
    let dir = tempfile::tempdir()?;
    let result = async {
        let writer = env.operator_with(
            "pg-writer",
            &["--leader-election=false", "--detail-store", &url],
        )?;
        // A second replica, on the same server, reads what the first kept.
        let replica = env.operator_with("pg-replica", &["--detail-store", &url])?;
        writer.wait_serving().await?;
        replica.wait_serving().await?;
        let f = prepare(&env, dir.path()).await?;
        report_and_read(writer.port, &f).await?;
        ensure!(
            served_packages(replica.port, &f).await? == served_packages(writer.port, &f).await?
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", env.dump());
    }
    drop(pg);
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_store_location_is_a_clear_exit() -> Result<()> {
    let env = Env::start().await?;
    let mut op = env.operator_with(
        "bad-store",
        &[
            "--leader-election=false",
            "--detail-store",
            "mysql://user:secret@db/x",
        ],
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if op.proc.check_running().is_err() {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the operator kept running with a mysql:// store"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = std::fs::read_to_string(&op.proc.log)?;
    ensure!(text.contains("scheme \"mysql\""), "{text}");
    ensure!(!text.contains("secret"), "the password leaked: {text}");
    Ok(())
}
