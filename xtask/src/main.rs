//! `cargo xtask`: the commands people and CI run (see the README).

mod bench;
mod bench_cluster;
mod bench_registry;
mod bench_store;
mod cluster;
mod demo;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Sightline's project commands")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install and build what the tests and the local cluster need.
    Setup,
    /// Run every test: fmt, clippy, CRD drift, unit and integration tests.
    Test,
    /// Supply-chain checks only: cargo deny's licenses, bans, sources and
    /// advisories (from the RustSec snapshot in third_party/).
    Deny,
    /// The local cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Start a local cluster, run the operator, apply the examples, print the inventory.
    Demo,
    /// Regenerate the chart's CRD and sensor ClusterRole templates from the Rust types.
    Crdgen,
    /// Benchmarks, with ratios against a baseline measured in the same run.
    Bench {
        /// Sensors for the latency benchmark.
        #[arg(long, default_value_t = 200)]
        latency_sensors: usize,
        /// Sensors for the scale benchmark.
        #[arg(long, default_value_t = 1000)]
        scale_sensors: usize,
        /// Keys for the scale benchmark.
        #[arg(long, default_value_t = 100)]
        scale_keys: usize,
        /// Assets in the search index benchmark.
        #[arg(long, default_value_t = 100_000)]
        search_assets: usize,
        /// Assets created in the API server for the search baseline.
        #[arg(long, default_value_t = 10_000)]
        search_api_assets: usize,
        /// MiB of random data in the large image of the scan benchmark.
        #[arg(long, default_value_t = 1024)]
        scan_big_mib: u64,
        /// Images whose details the detail-store benchmark stores, per engine.
        #[arg(long, default_value_t = 10_000)]
        store_images: usize,
        /// Run only one benchmark: `operator`, `search`, `scan`, `cluster`, `registry`, `runtime`, `store` or `admission`.
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Start the local cluster.
    Up {
        /// Only etcd, kube-apiserver and kube-controller-manager (no node).
        #[arg(long)]
        control_plane_only: bool,
    },
    /// Stop every process the cluster started and remove its directory.
    Down,
    /// Print the shell exports that point kubectl at the cluster.
    Env,
    /// The local cluster's storage provisioner (`cluster up` starts it).
    #[command(hide = true)]
    Provisioner,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Test => test::run_all(),
        Cmd::Deny => test::supply_chain(),
        Cmd::Cluster {
            cmd: ClusterCmd::Up { control_plane_only },
        } => rt.block_on(cluster::up(control_plane_only)).map(|_| ()),
        Cmd::Cluster {
            cmd: ClusterCmd::Down,
        } => cluster::down(),
        Cmd::Cluster {
            cmd: ClusterCmd::Env,
        } => cluster::env(),
        Cmd::Cluster {
            cmd: ClusterCmd::Provisioner,
        } => rt.block_on(cluster::provisioner()),
        Cmd::Demo => rt.block_on(cluster::demo()),
        Cmd::Crdgen => crdgen(),
        Cmd::Bench {
            latency_sensors,
            scale_sensors,
            scale_keys,
            search_assets,
            search_api_assets,
            scan_big_mib,
            store_images,
            only,
        } => {
            let which = only.as_deref();
            if !matches!(
                which,
                None | Some("operator")
                    | Some("search")
                    | Some("scan")
                    | Some("cluster")
                    | Some("registry")
                    | Some("runtime")
                    | Some("store")
                    | Some("admission")
            ) {
                anyhow::bail!(
                    "--only takes operator, search, scan, cluster, registry, runtime, store or admission"
                );
            }
            let wanted = |name: &str| which.is_none_or(|w| w == name);
            if wanted("operator") {
                rt.block_on(bench::run(latency_sensors, scale_sensors, scale_keys))?;
            }
            if wanted("search") {
                bench::search(search_assets, search_api_assets)?;
            }
            if wanted("scan") {
                bench::scan(scan_big_mib)?;
            }
            if wanted("cluster") {
                rt.block_on(bench_cluster::run())?;
            }
            if wanted("registry") {
                rt.block_on(bench_registry::run())?;
            }
            if wanted("runtime") {
                bench::runtime()?;
            }
            if wanted("store") {
                rt.block_on(bench_store::run(store_images))?;
            }
            if wanted("admission") {
                bench::admission()?;
            }
            Ok(())
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set, as `.ci/run` does).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Runs a command in the workspace root, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Installs toolchain pieces and builds the Kubernetes binaries (cached).
pub fn setup() -> Result<()> {
    // rustfmt and clippy are rustup components; a minimal toolchain lacks them.
    for component in ["rustfmt", "clippy"] {
        let have = Command::new("cargo")
            .arg(component.replace("rustfmt", "fmt"))
            .arg("--version")
            .output();
        if !have.is_ok_and(|o| o.status.success()) {
            run(Command::new("rustup").args(["component", "add", component]))
                .with_context(|| format!("installing the {component} component"))?;
        }
    }
    install_debian_packages()?;
    install_ebpf_toolchain()?;
    let go = sightline_testenv::binaries::go_command();
    let go_ok = Command::new(&go)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_ok {
        bail!(
            "Go is needed to build the Kubernetes binaries and was not found (looked in PATH and /usr/local/go/bin); install Go 1.24 or newer"
        );
    }
    if std::env::var_os("KUBEBUILDER_ASSETS").is_some() {
        eprintln!("using the binaries in KUBEBUILDER_ASSETS");
    } else {
        eprintln!(
            "Kubernetes binaries: {}",
            sightline_testenv::Binaries::cached_dir().display()
        );
    }
    sightline_testenv::Binaries::ensure().context("getting the Kubernetes binaries")?;
    sightline_testenv::binaries::helm().context("getting helm")?;
    sightline_testenv::binaries::coredns().context("getting CoreDNS")?;
    Ok(())
}

/// The version of bpf-linker that built and loaded on these machines
/// (newer ones need a newer Rust than the pinned aya needs).
const BPF_LINKER: &str = "0.13.0";

/// Where `setup` installs bpf-linker.
pub fn bpf_linker_dir() -> std::path::PathBuf {
    sightline_testenv::binaries::cache_dir().join("bpf-linker")
}

/// `cargo` with bpf-linker on `PATH`: the runtime sensor's build script
/// compiles its eBPF programs with it.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    let mut paths = vec![bpf_linker_dir().join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    if let Ok(joined) = std::env::join_paths(paths) {
        cmd.env("PATH", joined);
    }
    cmd
}

/// Installs the nightly toolchain (minimal profile) when missing.
pub fn ensure_nightly() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nightly {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("installing the nightly toolchain")?;
    }
    Ok(())
}

/// The nightly toolchain with `rust-src` (eBPF programs and cargo-fuzz) and
/// bpf-linker built against LLVM 22, into the cache when missing.
fn install_ebpf_toolchain() -> Result<()> {
    ensure_nightly()?;
    let has_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        });
    if !has_src {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain")?;
    }
    let dir = bpf_linker_dir();
    let linker = dir.join("bin/bpf-linker");
    let works = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER)
        });
    if !works {
        run(Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER}"),
                "--locked",
                "--no-default-features",
            ])
            .args(["--features", "llvm-22", "--root"])
            .arg(&dir)
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env(
                "CARGO_TARGET_DIR",
                sightline_testenv::binaries::cache_dir().join("bpf-linker-target"),
            ))
        .context("building bpf-linker against LLVM 22")?;
    }
    Ok(())
}

/// Installs the Debian packages the tests start for real (dockerd,
/// containerd, runc, skopeo, debootstrap) when any is missing.
fn install_debian_packages() -> Result<()> {
    let missing: Vec<&str> = sightline_testenv::docker::PACKAGES
        .iter()
        .filter(|(path, _)| !std::path::Path::new(path).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {} (as root)", missing.join(" ")))
}

fn crdgen() -> Result<()> {
    for (file, text) in [
        ("crds.yaml", sightline_crds::crdgen::helm_template()?),
        (
            "sensor-clusterroles.yaml",
            sightline_crds::crdgen::sensor_cluster_roles_template()?,
        ),
    ] {
        let path = root().join("charts/sightline/templates").join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
