//! `sightline` (also `kubectl sightline`): the command-line interface.
//!
//! Search and summarize the inventory, read activation key tokens, build
//! the vulnerability database, list an image's vulnerabilities and write
//! its SBOM. Image scans for CI arrive with the CI sensor issue.

mod bundle;
mod dbupdate;
mod details;
mod formats;
mod gate;
mod image;
mod registry;
mod report;
mod scan;
mod search;

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
    /// The CA (PEM file) the operator's API certificate is issued by, the
    /// only CA trusted for `--api`: `kubectl -n sightline-system get
    /// configmap sightline-ca -o jsonpath='{.data.ca\.crt}' > ca.crt`.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SIGHTLINE_API_CA_FILE"
    )]
    api_ca: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Search the inventory: `sightline search 'kind:Node AND os.lifecycle.stage:EndOfLife'`.
    Search {
        /// The query (see `--fields` and the README's query language section).
        #[arg(required_unless_present = "fields")]
        query: Option<String>,
        /// List the fields a query can use, with their types.
        #[arg(long)]
        fields: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: search::Output,
        /// Most Assets to print.
        #[arg(long, default_value_t = 500)]
        limit: usize,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Counts by kind, hardware category, lifecycle stage and severity.
    Inventory {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: search::SummaryOutput,
        /// The old spelling of `-o json`.
        #[arg(long, hide = true)]
        json: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Activation keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// The vulnerability database.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Signed bundles of the vulnerability database (and the catalog and
    /// image digests) for clusters that cannot download them.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// An image's SBOM: `sightline sbom docker-archive:debian.tar -o spdx-json`,
    /// or the inventory's: `sightline sbom --asset nginx:1.25 --api URL`.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["image", "asset"]))]
    Sbom {
        /// The image: `docker-archive:PATH[:TAG]`, `oci-layout:DIR[:REF]` or `docker:IMAGE`.
        image: Option<String>,
        /// Instead of analysing an image here, read what the operator's
        /// detail store keeps for an image: its Asset's name, its image ID
        /// (`sha256:…`), or a tag or reference a sensor saw it under.
        #[arg(long, value_name = "ASSET|ID|REFERENCE")]
        asset: Option<String>,
        /// The operator's API, for `--asset`.
        #[arg(long, env = "SIGHTLINE_API")]
        api: Option<String>,
        /// Of a multi-platform image (a registry's or an OCI layout's
        /// index), the platform: `os/arch[/variant]`, this machine's by default.
        #[arg(long, value_parser = image::platform_arg, default_value_t = sightline_scan::source::Platform::host())]
        platform: sightline_scan::source::Platform,
        /// Document format.
        // `--format`: the old spelling, hidden.
        #[arg(
            short,
            long,
            alias = "format",
            value_enum,
            default_value = "cyclonedx-json"
        )]
        output: image::SbomFormat,
        /// Write the document to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output_file: Option<std::path::PathBuf>,
    },
    /// An image's vulnerabilities: `sightline vulns docker-archive:debian.tar`,
    /// or the inventory's: `sightline vulns --asset nginx:1.25 --api URL`.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["image", "asset"]))]
    Vulns {
        /// The image: `docker-archive:PATH[:TAG]`, `oci-layout:DIR[:REF]` or `docker:IMAGE`.
        image: Option<String>,
        /// Instead of analysing an image here, read the findings the
        /// operator's detail store keeps for an image (as for `sbom --asset`).
        #[arg(long, value_name = "ASSET|ID|REFERENCE")]
        asset: Option<String>,
        /// The operator's API, for `--asset`.
        #[arg(long, env = "SIGHTLINE_API")]
        api: Option<String>,
        /// Of a multi-platform image (a registry's or an OCI layout's
        /// index), the platform: `os/arch[/variant]`, this machine's by default.
        #[arg(long, value_parser = image::platform_arg, default_value_t = sightline_scan::source::Platform::host())]
        platform: sightline_scan::source::Platform,
        /// The database file (`sightline db import`).
        #[arg(long, env = "SIGHTLINE_DB", default_value_os_t = image::default_db())]
        db: std::path::PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: image::VulnsOutput,
        /// Write the output to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output_file: Option<std::path::PathBuf>,
    },
    /// Scan an image in CI and gate the build (exit codes: 0 passed, 1 the
    /// gate failed, 2 wrong use, 3 the scan could not be done).
    Scan {
        #[command(subcommand)]
        cmd: ScanCmd,
    },
    /// Registry sensors on demand.
    Registry {
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// Print a shell completion script: `source <(sightline completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Writes `bytes` to `file`, or to standard output when there is none.
pub fn write_output(file: Option<&std::path::Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match file {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => std::io::stdout()
            .lock()
            .write_all(bytes)
            .context("writing to standard output"),
    }
}

#[derive(Subcommand)]
enum ScanCmd {
    /// Scan one image: `sightline scan image registry.example.com/app:1.2 --fail-on high`.
    Image(scan::ImageArgs),
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Run a registry Sensor's scan now, as its CronJob would, with your
    /// credentials: `sightline registry scan -n team registry --api URL`.
    Scan {
        /// The Sensor's name.
        sensor: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The operator's API, which takes the reports.
        #[arg(long, env = "SIGHTLINE_API")]
        api: String,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Build the database from OSV records: a directory of JSON files or a
    /// zip of them (the OSV dumps' `all.zip` per ecosystem).
    Import {
        /// The directory or zip.
        source: std::path::PathBuf,
        /// Where to write the database.
        // `-o`/`--output`: the old spellings, hidden.
        #[arg(long, value_name = "FILE", alias = "output", short_alias = 'o', env = "SIGHTLINE_DB", default_value_os_t = image::default_db())]
        output_file: std::path::PathBuf,
    },
    /// Download the OSV dumps of the ecosystems the scanner matches (or
    /// those named) and build the database from them. Interrupted
    /// downloads resume; each is checked against the size and MD5 the
    /// server announced; unchanged dumps are not downloaded again.
    Update {
        /// An OSV ecosystem to download (repeat it); default: every
        /// ecosystem the scanner matches.
        #[arg(long = "ecosystem", value_name = "NAME")]
        ecosystems: Vec<String>,
        /// Where the dumps are: `{mirror}/{ecosystem}/all.zip`.
        #[arg(long, env = "SIGHTLINE_OSV_MIRROR", default_value = dbupdate::DEFAULT_MIRROR)]
        mirror: String,
        /// Where the downloaded dumps are kept (for resuming and for the
        /// next update).
        #[arg(long, value_name = "DIR", default_value_os_t = image::default_db().with_file_name("osv"))]
        download_dir: std::path::PathBuf,
        /// Where to write the database.
        #[arg(long, value_name = "FILE", env = "SIGHTLINE_DB", default_value_os_t = image::default_db())]
        output_file: std::path::PathBuf,
    },
    /// What a database holds.
    Info {
        /// The database file.
        #[arg(env = "SIGHTLINE_DB", default_value_os_t = image::default_db())]
        path: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Make a signing key; prints the public key to pin in the chart.
    Keygen {
        /// Where to write the signing key (never overwritten; mode 0600).
        #[arg(long, value_name = "FILE")]
        output_file: std::path::PathBuf,
    },
    /// Write a signed bundle of a database (`sightline db update`).
    Export {
        /// The database to bundle.
        #[arg(long, env = "SIGHTLINE_DB", default_value_os_t = image::default_db())]
        db: std::path::PathBuf,
        /// The signing key (`sightline bundle keygen`).
        #[arg(long, value_name = "FILE", env = "SIGHTLINE_BUNDLE_SIGNING_KEY_FILE")]
        key: std::path::PathBuf,
        /// Also carry the asset catalog: a directory with taxonomy.yaml,
        /// normalization.yaml and lifecycle.yaml (checked before it is bundled).
        #[arg(long, value_name = "DIR")]
        catalog: Option<std::path::PathBuf>,
        /// An image to mirror with the bundle, pinned by digest:
        /// `sensor=registry.example/sightline@sha256:…` (repeat it).
        #[arg(long = "image", value_name = "NAME=REFERENCE", value_parser = bundle::image_arg)]
        images: Vec<(String, String)>,
        /// Where to write the bundle.
        #[arg(long, value_name = "FILE")]
        output_file: std::path::PathBuf,
    },
    /// Check a bundle's signature and every member, and show what it holds.
    Verify {
        /// The bundle.
        file: std::path::PathBuf,
        /// A trusted public key (`ed25519:…`; repeat it).
        #[arg(long = "public-key", value_name = "KEY", env = "SIGHTLINE_BUNDLE_KEYS")]
        public_keys: Vec<String>,
    },
    /// Send a bundle to the operator, which checks it against the keys it
    /// pins and then serves its database to the sensors.
    Import {
        /// The bundle.
        file: std::path::PathBuf,
        /// The operator's API.
        #[arg(long, env = "SIGHTLINE_API")]
        api: String,
    },
}

/// Where searches run.
#[derive(clap::Args)]
struct TargetArgs {
    /// The operator's API (e.g. http://127.0.0.1:8080 after
    /// `kubectl -n sightline-system port-forward deploy/sightline-operator 8080`).
    /// Without it, the CLI lists Assets and searches them itself.
    #[arg(long, env = "SIGHTLINE_API")]
    api: Option<String>,
    /// Search client-side even when an API is configured.
    #[arg(long)]
    client_side: bool,
}

impl From<TargetArgs> for search::Target {
    fn from(t: TargetArgs) -> Self {
        search::Target {
            api: t.api,
            client_side: t.client_side,
        }
    }
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
    /// Give a key a new token (a leaked one, or routine rotation): the old
    /// one stays valid for `--grace`, then the operator refuses it.
    Rotate {
        /// Name of the ActivationKey.
        name: String,
        /// How long the old token keeps working (`24h`, `90m`; `0` revokes
        /// it at once).
        #[arg(long, default_value = "24h", value_parser = parse_grace)]
        grace: std::time::Duration,
    },
}

/// `--grace`: a Go-style duration, or zero.
fn parse_grace(s: &str) -> std::result::Result<std::time::Duration, String> {
    if s.starts_with('0') && ["", "s", "m", "h"].contains(&s.trim_start_matches('0')) {
        return Ok(std::time::Duration::ZERO);
    }
    sightline_crds::duration::parse(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 24h, 90m or 0"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = report::trust_api_ca(cli.api_ca.as_deref()) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    if let Cmd::Scan {
        cmd: ScanCmd::Image(args),
    } = cli.cmd
    {
        let code = match scan::image(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                e.downcast_ref::<scan::Exit>()
                    .map_or(scan::EXIT_SCAN, |x| x.code)
            }
        };
        std::process::exit(code);
    }
    if let Err(e) = run(cli).await {
        if let Some(bad) = e.downcast_ref::<search::BadQuery>() {
            eprintln!("{bad}");
            std::process::exit(search::EXIT_BAD_QUERY);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Search { fields: true, .. } => search::print_fields(&mut stdout),
        Cmd::Search {
            query,
            output,
            limit,
            target,
            ..
        } => {
            let query = query.unwrap_or_default();
            search::search(&query, limit, output, target.into(), &mut stdout).await
        }
        Cmd::Inventory {
            output,
            json,
            target,
        } => {
            let output = if json {
                search::SummaryOutput::Json
            } else {
                output
            };
            search::inventory(target.into(), output, &mut stdout).await
        }
        Cmd::Keys { cmd } => keys(cmd).await,
        Cmd::Db {
            cmd: DbCmd::Import {
                source,
                output_file,
            },
        } => image::db_import(&source, &output_file, &mut stdout),
        Cmd::Db {
            cmd:
                DbCmd::Update {
                    ecosystems,
                    mirror,
                    download_dir,
                    output_file,
                },
        } => {
            let ecosystems = if ecosystems.is_empty() {
                dbupdate::DEFAULT_ECOSYSTEMS
                    .iter()
                    .map(|e| (*e).to_owned())
                    .collect()
            } else {
                ecosystems
            };
            dbupdate::update(
                &ecosystems,
                &mirror,
                &download_dir,
                &output_file,
                &mut stdout,
            )
            .await
        }
        Cmd::Db {
            cmd: DbCmd::Info { path },
        } => image::db_info(&path, &mut stdout),
        Cmd::Vulns {
            image,
            asset,
            api,
            platform,
            db,
            output,
            output_file,
        } => {
            let mut text = Vec::new();
            match (image, asset) {
                (_, Some(asset)) => {
                    details::vulns(&asset, api.as_deref(), output, &mut text).await?
                }
                (Some(image), None) => {
                    image::vulns(&image, &platform, &db, output, &mut text).await?
                }
                (None, None) => anyhow::bail!("name an image, or --asset"),
            }
            write_output(output_file.as_deref(), &text)
        }
        Cmd::Sbom {
            image,
            asset,
            api,
            platform,
            output,
            output_file,
        } => {
            let mut text = Vec::new();
            match (image, asset) {
                (_, Some(asset)) => {
                    details::sbom(&asset, api.as_deref(), output, &mut text).await?
                }
                (Some(image), None) => image::sbom(&image, &platform, output, &mut text).await?,
                (None, None) => anyhow::bail!("name an image, or --asset"),
            }
            write_output(output_file.as_deref(), &text)
        }
        Cmd::Bundle { cmd } => match cmd {
            BundleCmd::Keygen { output_file } => bundle::keygen(&output_file, &mut stdout),
            BundleCmd::Export {
                db,
                key,
                catalog,
                images,
                output_file,
            } => bundle::export(
                &db,
                &key,
                catalog.as_deref(),
                images,
                &output_file,
                &mut stdout,
            ),
            BundleCmd::Verify { file, public_keys } => {
                bundle::verify(&file, &bundle::trusted(&public_keys)?, &mut stdout)
            }
            BundleCmd::Import { file, api } => bundle::import(&file, &api, &mut stdout).await,
        },
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "sightline", &mut stdout);
            Ok(())
        }
        Cmd::Scan { .. } => Ok(()),
        Cmd::Registry {
            cmd:
                RegistryCmd::Scan {
                    sensor,
                    namespace,
                    api,
                },
        } => registry::scan(&namespace, &sensor, &api, &mut stdout).await,
    }
}

async fn keys(cmd: KeysCmd) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (is KUBECONFIG set?)")?;
    let keys: Api<ActivationKey> = Api::all(client.clone());
    match cmd {
        KeysCmd::List => {
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
        KeysCmd::Rotate { name, grace } => {
            let patch =
                sightline_crds::activation_key::rotation_request(jiff::Timestamp::now(), grace);
            keys.patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("asking for a new token of ActivationKey {name}"))?;
            if grace.is_zero() {
                println!(
                    "asked the operator for a new token for {name}; the old one is refused once it is issued"
                );
            } else {
                let until = jiff::Timestamp::now()
                    + jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
                println!(
                    "asked the operator for a new token for {name}; the old one works until {until}"
                );
            }
            println!(
                "`sightline keys token {name}` prints the new one once the operator has issued it"
            );
        }
        KeysCmd::Token { name } => {
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
