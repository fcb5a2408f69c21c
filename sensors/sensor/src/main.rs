//! `sightline-sensor`: the program the operator's sensor workloads run,
//! one subcommand per sensor type (`container` for now; `registry`,
//! `runtime` and `passive` come with their issues). Settings come from the
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
        tracing_subscriber::fmt().with_env_filter(filter).init();
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
            let db = match vuln_db {
                Some(path) => {
                    let db = tokio::task::spawn_blocking(move || Database::read(&path)).await??;
                    info!(advisories = db.meta.advisories, built = %db.meta.built, "vulnerability database loaded");
                    Some(db)
                }
                None => None,
            };
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?;
            sightline_container_sensor::run::run(cfg, client, db, shutdown()).await
        }
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
