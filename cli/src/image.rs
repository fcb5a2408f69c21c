//! Local image analysis: `sightline db import|info`, `sightline vulns IMAGE`
//! and `sightline sbom IMAGE`, on images given as `docker-archive:PATH[:TAG]`
//! (a `docker save` file) or `oci-layout:DIR[:REF]`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sightline_container_sensor::docker::Docker;
use sightline_scan::Limits;
use sightline_scan::source::{Image, Platform, docker_archive, oci_layout};
use sightline_scan::vuln::db::Database;
use sightline_scan::vuln::{Level, Matches, match_analysis};

/// Output formats of `vulns`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum VulnsOutput {
    /// A table, most severe first, and counts by severity.
    Table,
    /// The findings and warnings as JSON.
    Json,
}

/// SBOM formats.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SbomFormat {
    /// CycloneDX 1.5, JSON.
    CyclonedxJson,
    /// SPDX 2.3, JSON.
    SpdxJson,
}

/// `sightline sbom IMAGE`.
pub async fn sbom(
    reference: &str,
    platform: &Platform,
    format: SbomFormat,
    out: &mut impl Write,
) -> Result<()> {
    let image = analyze(reference, platform).await?;
    let tool = sightline_scan::sbom::Tool {
        name: "sightline".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    // Whole seconds, as SPDX requires.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let doc = match format {
        SbomFormat::CyclonedxJson => sightline_scan::sbom::cyclonedx(&image, &tool, &now),
        SbomFormat::SpdxJson => sightline_scan::sbom::spdx(&image, &tool, &now),
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    for w in &image.analysis.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The default database file: `$SIGHTLINE_CACHE_DIR/vulns.db`, else
/// `~/.cache/sightline/vulns.db`.
pub fn default_db() -> PathBuf {
    let base = std::env::var_os("SIGHTLINE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sightline")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/sightline")
        });
    base.join("vulns.db")
}

/// `sightline db import PATH`.
pub fn db_import(source: &Path, output: &Path, out: &mut impl Write) -> Result<()> {
    let built = jiff::Timestamp::now().to_string();
    let (db, report) = Database::import_osv(source, built)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    db.write(output)?;
    writeln!(
        out,
        "{}: {} advisories from {} files ({} withdrawn, {} with nothing matchable, {} unreadable)",
        output.display(),
        report.kept,
        report.files,
        report.withdrawn,
        report.unmatchable,
        report.errors.len()
    )?;
    for (eco, n) in &db.meta.ecosystems {
        writeln!(out, "  {eco:<24} {n:>8} affected packages")?;
    }
    for e in report.errors.iter().take(20) {
        eprintln!("warning: {e}");
    }
    if report.errors.len() > 20 {
        eprintln!(
            "warning: … and {} more unreadable files",
            report.errors.len() - 20
        );
    }
    Ok(())
}

/// `sightline db info`.
pub fn db_info(path: &Path, out: &mut impl Write) -> Result<()> {
    let db = Database::read(path)?;
    writeln!(
        out,
        "{}: built {}, {} advisories",
        path.display(),
        db.meta.built,
        db.meta.advisories
    )?;
    if let Some(n) = &db.meta.newest {
        writeln!(out, "  newest record modified {n}")?;
    }
    for (eco, n) in &db.meta.ecosystems {
        writeln!(out, "  {eco:<24} {n:>8} affected packages")?;
    }
    Ok(())
}

/// Reads and analyses an image named by a transport reference:
/// `docker-archive:PATH[:TAG]`, `oci-layout:DIR[:REF]`, or `docker:IMAGE`
/// from the local Docker Engine (`DOCKER_HOST`, else its usual socket),
/// streamed out of the engine without a temporary file.
/// The platform of a multi-platform image analysed: `--platform`, else
/// this machine's.
pub fn platform_arg(s: &str) -> std::result::Result<Platform, String> {
    Platform::parse(s)
}

/// Analyses `reference`; of a multi-platform image (an OCI layout's or a
/// registry's index), the `platform` one.
pub async fn analyze(reference: &str, platform: &Platform) -> Result<Image> {
    let limits = Limits::default();
    if let Some(name) = reference.strip_prefix("docker:") {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| h.starts_with("unix://"))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let engine = Docker::connect(&endpoint).await?;
        return engine
            .analyze(name, &limits)
            .await
            .with_context(|| format!("analysing {reference}"));
    }
    let (transport, rest) = reference.split_once(':').unwrap_or(("", reference));
    let (path, name) = match rest.split_once(':') {
        Some((p, n)) => (p, Some(n)),
        None => (rest, None),
    };
    let image = match transport {
        "docker-archive" => docker_archive::analyze(Path::new(path), name, &limits),
        "oci-layout" | "oci" => oci_layout::analyze(Path::new(path), name, platform, &limits),
        _ => {
            let name = reference.strip_prefix("registry:").unwrap_or(reference);
            let parsed = sightline_registry::Reference::parse(name).map_err(|e| {
                anyhow::anyhow!(
                    "{e}; name an image as a registry reference (registry.example.com/app:1.2), docker-archive:PATH[:TAG] (a `docker save` file), oci-layout:DIR[:REF] or docker:IMAGE (the local Docker Engine)"
                )
            })?;
            return from_registry(&parsed, platform)
                .await
                .with_context(|| format!("analysing {reference}"));
        }
    };
    image.with_context(|| format!("analysing {reference}"))
}

/// Analyses the `platform` image of a reference straight from its registry.
///
/// Credentials: `SIGHTLINE_REGISTRY_USERNAME` and `SIGHTLINE_REGISTRY_PASSWORD`,
/// else the docker config (`$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`). `SIGHTLINE_REGISTRY_CA` names a PEM bundle to
/// trust. HTTPS, except to a loopback registry given no CA.
async fn from_registry(r: &sightline_registry::Reference, platform: &Platform) -> Result<Image> {
    use sightline_registry::auth::{Credentials, from_docker_config};
    let host = r.api_host();
    let credentials = match (
        std::env::var("SIGHTLINE_REGISTRY_USERNAME"),
        std::env::var("SIGHTLINE_REGISTRY_PASSWORD"),
    ) {
        (Ok(username), Ok(password)) => Some(Credentials { username, password }),
        _ => {
            let dir = std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
            match dir.map(|d| d.join("config.json")).filter(|p| p.is_file()) {
                Some(p) => {
                    from_docker_config(&std::fs::read(&p)?, &p.display().to_string(), &r.registry)?
                }
                None => None,
            }
        }
    };
    let ca_pem = match std::env::var_os("SIGHTLINE_REGISTRY_CA") {
        Some(p) => Some(std::fs::read(&p).with_context(|| {
            format!(
                "reading SIGHTLINE_REGISTRY_CA {}",
                PathBuf::from(&p).display()
            )
        })?),
        None => None,
    };
    let loopback = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|l| host == *l || host.starts_with(&format!("{l}:")));
    let scheme = if loopback && ca_pem.is_none() {
        "http"
    } else {
        "https"
    };
    let client = std::sync::Arc::new(sightline_registry::Client::new(
        sightline_registry::Registry {
            base: format!("{scheme}://{host}"),
            credentials,
            ca_pem,
        },
        sightline_registry::Limits::default(),
    )?);
    let (top, _) = client
        .manifest(&r.repository, r.manifest_reference())
        .await?;
    let store = sightline_registry::image::RepoBlobs::new(
        client,
        &r.repository,
        tokio::runtime::Handle::current(),
    );
    let tags = r.tag.iter().map(|t| format!("{}:{t}", r.name())).collect();
    let wanted = sightline_registry::image::Platforms::Only(vec![platform.clone()]);
    let mut images = tokio::task::spawn_blocking(move || {
        sightline_registry::image::analyze(&store, &top, &wanted, tags, &Limits::default())
    })
    .await??;
    images.pop().map(|p| p.image).with_context(|| {
        format!(
            "the registry holds no {platform} image of this reference (choose one with --platform)"
        )
    })
}

/// `sightline vulns IMAGE`.
pub async fn vulns(
    reference: &str,
    platform: &Platform,
    db_path: &Path,
    output: VulnsOutput,
    out: &mut impl Write,
) -> Result<()> {
    let db = Database::read(db_path).with_context(|| {
        format!("reading the vulnerability database (build it with `sightline db import OSV-DIR-OR-ZIP -o {}`)", db_path.display())
    })?;
    let image = analyze(reference, platform).await?;
    let matches = match_analysis(&image.analysis, &db);
    match output {
        VulnsOutput::Json => {
            serde_json::to_writer_pretty(&mut *out, &matches)?;
            writeln!(out)?;
        }
        VulnsOutput::Table => print_table(&image, &matches, out)?,
    }
    for w in image.analysis.warnings.iter().chain(&matches.warnings) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn print_table(image: &Image, m: &Matches, out: &mut impl Write) -> Result<()> {
    let os = image
        .analysis
        .os
        .as_ref()
        .map(|o| o.pretty_name())
        .unwrap_or_else(|| "unknown OS".into());
    let header = format!(
        "{} ({os}, {} packages)",
        image
            .repo_tags
            .first()
            .map(String::as_str)
            .unwrap_or(&image.config_digest),
        image.analysis.packages.len()
    );
    print_findings(&header, &m.findings, out)
}

/// `header`, then `findings` as a table, most severe first as given, and
/// their counts by severity.
pub fn print_findings(
    header: &str,
    findings: &[sightline_scan::vuln::Finding],
    out: &mut impl Write,
) -> Result<()> {
    writeln!(out, "{header}")?;
    let width = |f: &dyn Fn(&sightline_scan::vuln::Finding) -> usize, min: usize| {
        findings.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (wid, wpkg, wver) = (
        width(&|f| f.id.len(), 2),
        width(&|f| f.package.len(), 7),
        width(&|f| f.version.len(), 9),
    );
    writeln!(
        out,
        "{:<8}  {:<wid$}  {:<wpkg$}  {:<wver$}  FIXED",
        "SEVERITY", "ID", "PACKAGE", "INSTALLED"
    )?;
    for f in findings {
        writeln!(
            out,
            "{:<8}  {:<wid$}  {:<wpkg$}  {:<wver$}  {}",
            f.severity.level.as_str(),
            f.id,
            f.package,
            f.version,
            f.fixed.as_deref().unwrap_or("-")
        )?;
    }
    let mut counts = Vec::new();
    for level in [
        Level::Critical,
        Level::High,
        Level::Medium,
        Level::Low,
        Level::None,
        Level::Unknown,
    ] {
        let n = findings
            .iter()
            .filter(|f| f.severity.level == level)
            .count();
        if n > 0 {
            counts.push(format!("{n} {}", level.as_str()));
        }
    }
    writeln!(
        out,
        "{} findings{}",
        findings.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        }
    )?;
    Ok(())
}
