//! `sightline-sensor`: the program the operator's sensor workloads run,
//! one subcommand per sensor type (`container`, `registry` and `runtime`;
//! `passive` comes with its issue). Settings come from the
//! environment the operator sets (see `sightline_container_sensor::config`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sightline_container_sensor::config::Config;
use sightline_scan::vuln::Database;
use tracing::info;

/// Sightline's node and cluster sensors.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log format: text or json.
    #[arg(
        long,
        env = "SIGHTLINE_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inventory and analyse the images and containers of this node's runtimes.
    Container {
        /// The vulnerability database (`sightline db import`); matching is
        /// off without it, or without the key's `vulnerability` module.
        #[arg(long, env = "SIGHTLINE_VULN_DB")]
        vuln_db: Option<PathBuf>,
        /// How often images and containers are listed again (seconds).
        #[arg(long, env = "SIGHTLINE_REFRESH_SECONDS", default_value_t = 300)]
        refresh_seconds: u64,
    },
    /// Scan a registry's images once (the operator's CronJob for
    /// `type: registry`) and exit: 0 when every repository was scanned, 1
    /// when some failed (each is logged; the rest are reported).
    Registry {
        /// The vulnerability database; matching is off without it, or
        /// without the key's `vulnerability` module.
        #[arg(long, env = "SIGHTLINE_VULN_DB")]
        vuln_db: Option<PathBuf>,
    },
    /// Watch what containers on this node run, open and connect to, and
    /// enforce the RuntimePolicies that select their pods (the operator's
    /// DaemonSet for `type: runtime`). Violations are printed as OCSF JSON
    /// lines on stdout.
    Runtime,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only on a terminal: pod logs and CI logs stay plain text.
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    if let Err(e) = run(cli.cmd).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Container {
            vuln_db,
            refresh_seconds,
        } => {
            let mut cfg = Config::from_env(|k| std::env::var(k).ok())?;
            cfg.refresh = std::time::Duration::from_secs(refresh_seconds.max(1));
            let db = load_db(vuln_db).await?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            sightline_container_sensor::run::run(cfg, client, db, shutdown()).await
        }
        Cmd::Runtime => {
            let cfg = sightline_runtime_sensor::daemon::Config::from_env(|k| std::env::var(k).ok())
                .map_err(anyhow::Error::msg)?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            sightline_runtime_sensor::daemon::run(cfg, client, shutdown()).await
        }
        Cmd::Registry { vuln_db } => {
            use sightline_registry::sensor;
            let cfg = sensor::Config::from_env(|k| std::env::var(k).ok())?;
            let mut db = load_db(vuln_db).await?;
            // From the operator, when it serves one and the key wants matching.
            if db.is_none()
                && cfg.vulnerabilities()
                && let Some(url) = std::env::var("SIGHTLINE_VULN_DB_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
            {
                let mut fetcher = sightline_container_sensor::vulndb::Fetcher::new(
                    url,
                    cfg.token_file.clone(),
                    PathBuf::from("/tmp/sightline-vulns.db"),
                    cfg.api_ca.as_deref(),
                )
                .with_bundle_keys(sightline_scan::bundle::parse_keys(
                    &std::env::var(sightline_scan::bundle::KEYS_ENV).unwrap_or_default(),
                )?);
                let refused = match fetcher.refresh().await {
                    Ok(fetched) => {
                        db = fetched;
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no vulnerability database; reporting packages only");
                        e.refusal()
                    }
                };
                // Say which database this scan matches with, and what was
                // refused, for the Sensor's status.
                if let Some(api) = cfg.api_url.as_deref() {
                    let reporter = sightline_container_sensor::report::Reporter::to(
                        api,
                        &cfg.token_file,
                        cfg.api_ca.as_deref(),
                    )?;
                    reporter
                        .send_database(sightline_container_sensor::vulndb::state(
                            db.as_ref(),
                            refused,
                        ))
                        .await;
                }
            }
            let registry = std::sync::Arc::new(sensor::client_for(&cfg)?);
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            let summary =
                sensor::scan_once(&cfg, registry.clone(), client, db.map(std::sync::Arc::new))
                    .await?;
            info!(
                repositories = summary.repositories,
                images = summary.images,
                analysed = summary.analysed,
                blob_fetches = registry
                    .stats
                    .blob_fetches
                    .load(std::sync::atomic::Ordering::Relaxed),
                "registry scanned"
            );
            for f in &summary.failures {
                tracing::warn!(failure = %f, "not scanned");
            }
            if !summary.failures.is_empty() {
                anyhow::bail!(
                    "{} repositories or images could not be scanned",
                    summary.failures.len()
                );
            }
            Ok(())
        }
    }
}

/// Reads the vulnerability database file, if one is given.
async fn load_db(path: Option<PathBuf>) -> Result<Option<Database>> {
    match path {
        Some(path) => {
            let db = tokio::task::spawn_blocking(move || Database::read(&path)).await??;
            info!(advisories = db.meta.advisories, built = %db.meta.built, "vulnerability database loaded");
            Ok(Some(db))
        }
        None => Ok(None),
    }
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    info!("stopping");
}
