//! `sightline scan image REF`: the CI sensor. Analyses an image from a
//! registry, a `docker save` archive, an OCI layout or the local Docker
//! Engine, matches it against the vulnerability database, applies the
//! gate, writes the result in the format asked for, and optionally
//! reports it to a cluster's inventory.
//!
//! Exit codes: 0 the gate passed, 1 it failed, 2 the command was used
//! wrong (a bad reference, option or policy file), 3 the scan could not
//! be done (the image, registry or database could not be read).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use sightline_crds::asset::LifecycleStage;
use sightline_scan::vuln::db::Database;
use sightline_scan::vuln::match_analysis;

use crate::formats::{self, Report};
use crate::gate::{self, Policy, Severity};

/// Exit code: the gate failed.
pub const EXIT_GATE: i32 = 1;
/// Exit code: wrong use (a bad reference, option or policy file).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the scan could not be done.
pub const EXIT_SCAN: i32 = 3;

/// Output formats of `scan image`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Findings and the verdict, for people.
    Table,
    /// Everything, as JSON.
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
    /// A CycloneDX 1.5 SBOM, JSON.
    #[value(name = "cyclonedx-json", alias = "cyclonedx")]
    CyclonedxJson,
    /// An SPDX 2.3 SBOM, JSON.
    #[value(name = "spdx-json", alias = "spdx")]
    SpdxJson,
    /// JUnit XML, for CI test reports.
    Junit,
}

/// `scan image`'s options.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// The image: a registry reference (`registry.example.com/app:1.2`,
    /// `nginx:1.25`), `docker-archive:PATH[:TAG]`, `oci-layout:DIR[:REF]`
    /// or `docker:IMAGE`.
    pub image: String,
    /// The vulnerability database (`sightline db import`).
    #[arg(long, env = "SIGHTLINE_DB", default_value_os_t = crate::image::default_db())]
    pub db: PathBuf,
    /// Of a multi-platform image (a registry's or an OCI layout's index),
    /// the platform to scan: `os/arch[/variant]`, this machine's by default.
    #[arg(long, value_parser = crate::image::platform_arg, default_value_t = sightline_scan::source::Platform::host())]
    pub platform: sightline_scan::source::Platform,
    /// Fail on a finding at or above this severity.
    #[arg(long, value_enum)]
    pub fail_on: Option<Severity>,
    /// An advisory ID or alias not to count (repeatable).
    #[arg(long)]
    pub ignore: Vec<String>,
    /// Do not count findings without a fixed version.
    #[arg(long)]
    pub ignore_unfixed: bool,
    /// Fail when the image's operating system is end of life or end of service.
    #[arg(long)]
    pub fail_on_eol: bool,
    /// A YAML policy file (`failOn`, `ignore`, `ignoreUnfixed`, `failOnEol`);
    /// flags add to it.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Output format.
    // `-f`/`--format`: the old spellings, hidden.
    #[arg(
        short = 'o',
        long = "output",
        alias = "format",
        short_alias = 'f',
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
    /// Write the output to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Report the result to a cluster's inventory: the operator's API URL
    /// (`http://…:8080`); authenticated with an activation key's token.
    #[arg(long, env = "SIGHTLINE_API")]
    pub report: Option<String>,
    /// The activation key's token for `--report` (`sightline keys token KEY`).
    #[arg(long, env = "SIGHTLINE_KEY_TOKEN", hide_env_values = true)]
    pub key_token: Option<String>,
}

/// Where progress goes: a spinner on a terminal, plain lines in CI logs.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = interactive.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    fn step(&self, what: &str) {
        match &self.bar {
            Some(b) => b.set_message(what.to_owned()),
            None => eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64()),
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// An error with the exit code it deserves.
#[derive(Debug)]
pub struct Exit {
    /// The code.
    pub code: i32,
    /// What to print.
    pub error: anyhow::Error,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

fn exit(code: i32) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |error| Exit { code, error }.into()
}

/// The OS's lifecycle stage today, from the catalog.
fn os_stage(image: &sightline_scan::source::Image) -> Option<LifecycleStage> {
    let os = image.analysis.os.as_ref()?;
    let catalog = sightline_inventory::catalog::Catalog::builtin().ok()?;
    let observed = [("osRelease".to_owned(), serde_json::json!(os.fields))]
        .into_iter()
        .collect();
    let today = jiff::Zoned::now().date();
    catalog
        .normalize(
            Some(sightline_crds::AssetKind::ContainerImage),
            &observed,
            today,
        )
        .os?
        .lifecycle
        .map(|l| l.stage)
}

/// Runs `scan image`; returns the exit code.
pub async fn image(args: ImageArgs) -> Result<i32> {
    let mut policy = match &args.policy {
        Some(p) => Policy::read(p).map_err(|e| exit(EXIT_USAGE)(e.into()))?,
        None => Policy::default(),
    };
    policy = policy.with(Policy {
        fail_on: args.fail_on,
        ignore: args.ignore.iter().cloned().collect(),
        ignore_unfixed: args.ignore_unfixed,
        fail_on_eol: args.fail_on_eol,
    });
    if args.report.is_some() && args.key_token.is_none() {
        return Err(exit(EXIT_USAGE)(anyhow::anyhow!(
            "--report needs an activation key's token (--key-token or SIGHTLINE_KEY_TOKEN)"
        )));
    }
    let progress = Progress::new();
    progress.step(&format!(
        "reading the vulnerability database {}",
        args.db.display()
    ));
    let db_path = args.db.clone();
    let db = tokio::task::spawn_blocking(move || Database::read(&db_path))
        .await?
        .with_context(|| {
            format!(
                "reading the vulnerability database (build it with `sightline db import OSV-DIR-OR-ZIP -o {}`)",
                args.db.display()
            )
        });
    // An SBOM alone needs no database; a gate or a report does.
    let sbom_only = matches!(args.output, Format::CyclonedxJson | Format::SpdxJson)
        && policy == Policy::default()
        && args.report.is_none();
    let db = match db {
        Ok(db) => Some(db),
        Err(e) if sbom_only => {
            eprintln!("note: {e:#}; the SBOM lists packages without vulnerabilities");
            None
        }
        Err(e) => return Err(exit(EXIT_SCAN)(e)),
    };
    progress.step(&format!("analysing {}", args.image));
    let image = crate::image::analyze(&args.image, &args.platform)
        .await
        .map_err(|e| {
            let usage = e
                .downcast_ref::<sightline_registry::reference::BadReference>()
                .is_some()
                || e.to_string().contains("name an image as");
            exit(if usage { EXIT_USAGE } else { EXIT_SCAN })(e)
        })?;
    let matches = match &db {
        Some(db) => {
            progress.step(&format!(
                "matching {} packages against {} advisories",
                image.analysis.packages.len(),
                db.meta.advisories
            ));
            match_analysis(&image.analysis, db)
        }
        None => Default::default(),
    };
    let stage = os_stage(&image);
    let verdict = gate::evaluate(&policy, &matches, stage);
    progress.done();
    let report = Report {
        reference: &args.image,
        image: &image,
        matches: &matches,
        verdict: &verdict,
        os_stage: stage.map(|s| format!("{s:?}")),
    };
    let tool = sightline_scan::sbom::Tool {
        name: "sightline".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let text = match args.output {
        Format::Table => formats::table(&report),
        Format::Json => serde_json::to_string_pretty(&formats::json(&report))? + "\n",
        Format::Sarif => serde_json::to_string_pretty(&formats::sarif(&report))? + "\n",
        Format::CyclonedxJson => {
            let mut doc = sightline_scan::sbom::cyclonedx(&image, &tool, &now);
            if db.is_some() {
                sightline_scan::sbom::add_vulnerabilities(&mut doc, &matches.findings);
            }
            serde_json::to_string_pretty(&doc)? + "\n"
        }
        Format::SpdxJson => {
            serde_json::to_string_pretty(&sightline_scan::sbom::spdx(&image, &tool, &now))? + "\n"
        }
        Format::Junit => formats::junit(&report),
    };
    crate::write_output(args.output_file.as_deref(), text.as_bytes())?;
    for w in image.analysis.warnings.iter().chain(&matches.warnings) {
        eprintln!("warning: {w}");
    }
    if let (Some(api), Some(token)) = (&args.report, &args.key_token) {
        let asset = crate::report::send(api, token, &args.image, &image, &matches)
            .await
            .map_err(exit(EXIT_SCAN))?;
        eprintln!("reported {} to {api} (Asset {asset})", image.config_digest);
    }
    if !verdict.passed {
        eprintln!("gate failed: {}", verdict.reasons.join("; "));
        return Ok(EXIT_GATE);
    }
    Ok(0)
}
