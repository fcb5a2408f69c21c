//! `sightline` (also `kubectl sightline`): the command-line interface.
//!
//! For now it reads activation key tokens; search, image scans for CI, SBOMs
//! and vulnerability lists arrive with the inventory and scanner issues.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use sightline_crds::ActivationKey;

/// Sightline: Kubernetes-native asset inventory and container security.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Activation keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List keys with their modules, readiness and sensor count.
    List,
    /// Print a key's token (for agents and CI outside the cluster).
    Token {
        /// Name of the ActivationKey.
        name: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (is KUBECONFIG set?)")?;
    let keys: Api<ActivationKey> = Api::all(client.clone());
    match cli.cmd {
        Cmd::Keys { cmd: KeysCmd::List } => {
            println!("{:<24} {:<6} {:>7}  MODULES", "NAME", "READY", "SENSORS");
            for k in keys.list(&Default::default()).await?.items {
                let status = k.status.clone().unwrap_or_default();
                let ready = sightline_crds::conditions::find(&status.conditions, "Ready")
                    .map_or("?", |c| c.status.as_str());
                let modules: Vec<&str> = k.spec.modules.iter().map(|m| m.as_str()).collect();
                println!(
                    "{:<24} {:<6} {:>7}  {}",
                    k.metadata.name.clone().unwrap_or_default(),
                    ready,
                    status.sensors,
                    modules.join(",")
                );
            }
        }
        Cmd::Keys {
            cmd: KeysCmd::Token { name },
        } => {
            let key = keys
                .get_opt(&name)
                .await?
                .with_context(|| format!("no ActivationKey named {name}"))?;
            let Some(r) = key.status.and_then(|s| s.token_secret_ref) else {
                bail!("ActivationKey {name} has no token yet; is the operator running?");
            };
            let secret = Api::<Secret>::namespaced(client, &r.namespace)
                .get(&r.name)
                .await?;
            let token = secret
                .data
                .and_then(|mut d| d.remove(&r.key))
                .with_context(|| format!("Secret {}/{} has no {}", r.namespace, r.name, r.key))?;
            println!("{}", String::from_utf8_lossy(&token.0));
        }
    }
    Ok(())
}
